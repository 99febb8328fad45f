package passwd

import (
	"errors"
	"strings"
	"testing"
)

// The docker-mailserver fixture's hash of "mypassword".
const fixtureHash = "{SHA512-CRYPT}$6$xhk2X0AAfBxG3KDc$rq9ul79FovObaVCGkZD8Acvv76FIYVxhOS999buqpC38n4US0ZKBZKt9Z6nFQJX2ZBKy6FOId3hQRBXNk7tQg/"

func TestVerifyKnownHashes(t *testing.T) {
	cases := []struct {
		stored, password string
		want             error
	}{
		{fixtureHash, "mypassword", nil},
		{fixtureHash, "mypassword2", ErrMismatch},
		{fixtureHash, "", ErrMismatch},
		// computed with glibc's crypt(3)
		{"{SHA256-CRYPT}$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", "Hello world!", nil},
		{"{SHA256-CRYPT}$5$rounds=5000$usesomesillystri$nViAs7UqwrYeJrTx4cWcAqrVvbGN0mAadtOVhxzMx93", "Hello world!", nil},
		{"{SHA256-CRYPT}$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", "Hello world", ErrMismatch},
		// bcrypt test vector
		{"{BLF-CRYPT}$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U", nil},
		{"{BLF-CRYPT}$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*V", ErrMismatch},
	}
	for _, c := range cases {
		if err := Verify(c.stored, c.password); !errors.Is(err, c.want) && !(err == nil && c.want == nil) {
			t.Errorf("Verify(%s, %q) = %v, want %v", c.stored, c.password, err, c.want)
		}
	}
	for _, bad := range []string{"nobraces", "{PLAIN}x", "{SHA512-CRYPT}$5$x$y", "{SHA256-CRYPT}$6$x", "{BLF-CRYPT}garbage"} {
		if err := Verify(bad, "x"); err == nil || errors.Is(err, ErrMismatch) {
			t.Errorf("Verify(%q): %v, want a usage error", bad, err)
		}
	}
}

func TestHash(t *testing.T) {
	h1, err := Hash("mypassword")
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := Hash("mypassword")
	if !strings.HasPrefix(h1, "{SHA512-CRYPT}$6$") || len(h1) != len(fixtureHash) || h1 == h2 {
		t.Errorf("hashes %q %q", h1, h2)
	}
	if err := Verify(h1, "mypassword"); err != nil {
		t.Errorf("verify own hash: %v", err)
	}
	for _, bad := range []string{"", "a\nb", "a\x00", "a\rb", strings.Repeat("x", MaxLength+1), "\xff"} {
		if _, err := Hash(bad); err == nil {
			t.Errorf("Hash(%q) accepted", bad)
		}
	}
	if _, err := Hash("pässwörd with spaces"); err != nil {
		t.Errorf("unicode password: %v", err)
	}
}
