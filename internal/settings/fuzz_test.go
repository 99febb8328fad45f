package settings

import (
	"testing"

	"github.com/mailgate/mailgate/internal/address"
)

// FuzzLoad: any mailgate.toml either loads into valid settings or fails
// with an error naming the file or the setting; never a panic.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{"", "hostname = \"a.example\"\n", "spoof_protection = 0\n", "excluded_domains = [\"x\", 1]\n",
		"relay_host = \"[h]:25\"\n", "message_size_limit = \"9G\"\n", "recipient_delimiter = \"+-\"\n", "[table]\nx=1\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		s, err := parse(FileName, []byte(data), envOf(), nil)
		if err != nil {
			return
		}
		if _, err := address.ParseDomain(s.Hostname); err != nil {
			t.Fatalf("hostname %q accepted: %v", s.Hostname, err)
		}
		if _, err := address.Parse(s.PostmasterAddress, address.Options{}); err != nil {
			t.Fatalf("postmaster_address %q accepted: %v", s.PostmasterAddress, err)
		}
		if s.RecipientDelimiter == "" || s.MessageSizeLimit < 0 {
			t.Fatalf("bad values accepted: %+v", s)
		}
	})
}
