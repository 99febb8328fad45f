package header

import (
	"strings"
	"testing"
)

func TestDecodeWord(t *testing.T) {
	ok := map[string]string{
		"=?utf-8?q?a_b=20c?=":          "a b c",
		"=?UTF-8?Q?=c3=a9?=":           "é",
		"=?us-ascii?q?plain?=":         "plain",
		"=?iso-8859-15?q?=A4?=":        "€",
		"=?iso-8859-2?q?=B1?=":         "ą",
		"=?windows-1252?q?=80?=":       "€",
		"=?utf-8?b?" + b64("ü") + "?=": "ü",
		"=?ISO-8859-1*fr?Q?=E9t=E9?=":  "été",
	}
	for in, want := range ok {
		got, err := decodeWord(in)
		if err != nil || got != want {
			t.Errorf("decodeWord(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"=?utf-8?q?a?", "=??q?a?=", "=?utf-8??a?=", "=?utf-8?q?a b?=", "=?utf-8?q?=4?=", "=?utf-8?q?=G0?=",
		"=?utf-8?b?YQ?=", "=?utf-8?b?YR==?=", "=?iso-8859-3?q?=A5?=", "=?koi8-r?q?a?=", "=?utf-8?q?a?b?=",
		"=?utf-8?q?" + "\x01" + "?=",
	}
	for _, in := range bad {
		if got, err := decodeWord(in); err == nil {
			t.Errorf("decodeWord(%q) = %q, want an error", in, got)
		}
	}
}

func TestDecodeText(t *testing.T) {
	cases := map[string]string{
		"plain text":                         "plain text",
		"=?utf-8?q?a?= =?utf-8?q?b?=":        "ab", // RFC 2047 §6.2: white space between encoded words is dropped
		"=?utf-8?q?a?=  x =?utf-8?q?b?=":     "a  x b",
		" lead =?utf-8?q?J=C3=B6rg?= trail ": " lead Jörg trail ",
	}
	for in, want := range cases {
		got, err := decodeText(in)
		if err != nil || got != want {
			t.Errorf("decodeText(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"a =?utf-8?q?x", "=?", "x=?utf-8?q?a?=", "=?bogus?q?a?="} {
		if got, err := decodeText(in); err == nil {
			t.Errorf("decodeText(%q) = %q, want an error", in, got)
		}
	}
	if _, err := decodeText("=?utf-8?q?" + strings.Repeat("=41", 1000) + "?="); err != nil {
		t.Errorf("long encoded word: %v", err)
	}
}
