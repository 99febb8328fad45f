package conffile

import (
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/internal/address"
)

// CheckMailboxName checks that an account's address can name its Maildir,
// DATA/mail/DOMAIN/LOCAL: '/' is valid in a local part (RFC 5322 atext) but
// would make a path, so it is refused for accounts; the dot-atom rules
// already exclude "", "." and "..".
func CheckMailboxName(a address.Address) error {
	if strings.ContainsRune(a.Local, '/') {
		return fmt.Errorf("%s: '/' is not allowed in an account's local part (it names the mailbox directory)", a)
	}
	if a.Local == "" || a.Domain == "" || strings.HasPrefix(a.Local, ".") {
		return fmt.Errorf("%s: not usable as a mailbox name", a)
	}
	return nil
}

// CheckWritable checks that an address can be written into the DMS files
// without changing their meaning: '|' separates the fields of
// postfix-accounts.cf, and a line whose first character is '#' is a comment.
// Both are valid in a local part (RFC 5322 atext), so the writing commands
// refuse them rather than write a line that reads back as something else.
func CheckWritable(a address.Address) error {
	if strings.ContainsRune(a.Local, '|') {
		return fmt.Errorf("%s: '|' is not allowed (it separates the fields of %s)", a, AccountsFile)
	}
	if strings.HasPrefix(a.Local, "#") {
		return fmt.Errorf("%s: a leading '#' is not allowed (the line would be read as a comment)", a)
	}
	return nil
}
