package postfixconf

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mailgate/mailgate/internal/confedit"
	"github.com/mailgate/mailgate/internal/directory"
)

// VMailboxFile is the mailbox table for Postfix's virtual(8), relative to
// the data directory.
//
// virtual(8) refuses network tables (socketmap, tcp) for
// virtual_mailbox_maps: it is the lookup that chooses a file to write as
// root ("map is not allowed for security-sensitive data"). So the delivery
// agent reads this file instead, a texthash table that `mailgate serve`
// rewrites atomically at start and after every reload, exactly as
// docker-mailserver generates /etc/postfix/vmailbox; smtpd keeps asking the
// socketmap, which is always current.
const VMailboxFile = "postfix/vmailbox"

// VMailbox returns the texthash table of the accounts of snap: one
// "address domain/local/" line each, sorted (the trailing slash means a
// Maildir to virtual(8)).
func VMailbox(snap *directory.Snapshot) []byte {
	lines := make([]string, 0, len(snap.Accounts))
	for a := range snap.Accounts {
		lines = append(lines, a.String()+" "+a.Domain+"/"+a.Local+"/")
	}
	sort.Strings(lines)
	return []byte("# written by mailgate serve; do not edit\n" + strings.Join(lines, "\n") + "\n")
}

// WriteVMailbox writes VMailbox(snap) to dataDir/VMailboxFile atomically.
func WriteVMailbox(dataDir string, snap *directory.Snapshot) error {
	path := filepath.Join(dataDir, VMailboxFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("postfix mailbox table: %w", err)
	}
	if err := confedit.WriteFile(path, VMailbox(snap), 0o644); err != nil {
		return fmt.Errorf("postfix mailbox table: %w", err)
	}
	return nil
}
