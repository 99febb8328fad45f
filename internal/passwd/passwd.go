// Package passwd hashes and verifies account passwords in the
// "{SCHEME}hash" form of postfix-accounts.cf, as Dovecot does: new hashes are
// SHA512-CRYPT (what docker-mailserver writes); SHA512-CRYPT, SHA256-CRYPT
// and BLF-CRYPT (bcrypt) are verified.
package passwd

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/GehirnInc/crypt"
	"github.com/GehirnInc/crypt/sha256_crypt"
	"github.com/GehirnInc/crypt/sha512_crypt"
	"golang.org/x/crypto/bcrypt"
)

// MaxLength bounds a password: longer input is refused rather than hashed
// (a DoS guard, and bcrypt ignores everything past 72 bytes).
const MaxLength = 1024

// ErrMismatch is returned by Verify for a wrong password.
var ErrMismatch = errors.New("password does not match")

// cryptAlphabet is the crypt(3) base-64 alphabet used for salts.
const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Check validates a new password: not empty, at most MaxLength bytes, valid
// UTF-8 without control characters (a password read from a line must not
// carry its line ending, and a NUL would truncate it in C consumers).
func Check(password string) error {
	if password == "" {
		return errors.New("the password is empty")
	}
	if len(password) > MaxLength {
		return fmt.Errorf("the password is longer than %d bytes", MaxLength)
	}
	if !utf8.ValidString(password) {
		return errors.New("the password is not valid UTF-8")
	}
	for _, r := range password {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("the password contains the control character U+%04X", r)
		}
	}
	return nil
}

// Hash returns "{SHA512-CRYPT}$6$salt$hash" with a fresh 16-character salt
// from crypto/rand and the default 5000 rounds (as `doveadm pw -s
// SHA512-CRYPT` writes).
func Hash(password string) (string, error) {
	if err := Check(password); err != nil {
		return "", err
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("reading random salt: %w", err)
	}
	salt := make([]byte, len(raw))
	for i, b := range raw {
		salt[i] = cryptAlphabet[int(b)%len(cryptAlphabet)]
	}
	h, err := sha512_crypt.New().Generate([]byte(password), append([]byte("$6$"), salt...))
	if err != nil {
		return "", fmt.Errorf("hashing: %w", err)
	}
	return "{SHA512-CRYPT}" + h, nil
}

// Verify checks password against a stored "{SCHEME}hash". It returns nil on
// a match, ErrMismatch on a wrong password, and another error when the
// stored value cannot be used (unknown scheme, malformed hash).
func Verify(stored, password string) error {
	if len(password) > MaxLength {
		return ErrMismatch
	}
	end := strings.IndexByte(stored, '}')
	if !strings.HasPrefix(stored, "{") || end < 0 {
		return errors.New("stored password has no {SCHEME}")
	}
	scheme, hash := strings.ToUpper(stored[1:end]), stored[end+1:]
	var err error
	switch scheme {
	case "SHA512-CRYPT":
		if !strings.HasPrefix(hash, "$6$") {
			return errors.New("SHA512-CRYPT hash does not start with $6$")
		}
		err = sha512_crypt.New().Verify(hash, []byte(password))
	case "SHA256-CRYPT":
		if !strings.HasPrefix(hash, "$5$") {
			return errors.New("SHA256-CRYPT hash does not start with $5$")
		}
		err = sha256_crypt.New().Verify(hash, []byte(password))
	case "BLF-CRYPT":
		err = bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return ErrMismatch
		}
		if err != nil {
			return fmt.Errorf("BLF-CRYPT: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("password scheme {%s} is not supported", scheme)
	}
	if errors.Is(err, crypt.ErrKeyMismatch) {
		return ErrMismatch
	}
	if err != nil {
		return fmt.Errorf("%s: %w", scheme, err)
	}
	return nil
}
