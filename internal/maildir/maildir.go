// Package maildir delivers messages into local mailboxes in the Maildir
// format, in the docker-mailserver layout that Dovecot reads
// (mail_location = maildir:/var/mail/%d/%n, SPEC §8):
//
//	ROOT/<domain>/<localpart>/{tmp,new,cur}
//
// where <domain> and <localpart> are the canonical form of the mailbox
// address (internal/address: lowercase local part, IDNA A-label domain).
// Missing directories are created with mode 0700 and their parent directory
// is fsynced, so a new mailbox survives a crash.
//
// # Delivery protocol
//
// The Maildir protocol (https://cr.yp.to/proto/maildir.html, "How a message
// is delivered"), with the durability steps a crash-safe MTA needs:
//
//  1. create tmp/<unique> with O_CREAT|O_EXCL (never reuses or follows an
//     existing name);
//  2. write the delivery header fields, then the message, converting CRLF
//     line endings to LF (Maildir files hold Unix line endings, as Postfix's
//     virtual(8) and Dovecot's LDA write them); a lone CR is kept;
//  3. fsync the file and close it;
//  4. rename tmp/<unique> to new/<unique>,S=<size> (Dovecot's size field:
//     <size> is the size of the file in bytes, so a reader never sees a file
//     in new/ that is still being written);
//  5. fsync the new/ directory, so the rename itself is durable.
//
// Only after step 5 does a delivery return successfully; a crash before it
// leaves at most a file in tmp/, which Dovecot removes after 36 hours, and
// never a partial file in new/.
//
// # Unique names
//
// <unique> is "<sec>.M<usec>P<pid>Q<seq>R<rand>.<host>": the time in seconds
// and microseconds, the process ID, a per-process delivery counter, 64
// random bits and the host name, as the Maildir specification's modern
// naming describes ("M", "P", "Q", "R"). In the host name "/", ":" and ","
// and every byte outside [A-Za-z0-9.-_] are written as "\ooo" octal escapes
// ("/" is "\057", ":" is "\072"), since ":" starts the info part in cur/ and
// "," separates Dovecot's fields.
//
// # Header fields
//
// Before the message, in this order (the order Postfix's virtual(8) uses):
//
//	Return-Path: <sender>        the envelope sender, "<>" for the null sender (RFC 5321 §4.4)
//	X-Original-To: recipient     the recipient as given in RCPT TO
//	Delivered-To: mailbox        the mailbox delivered to (canonical address)
//
// Values containing CR, LF, NUL or other control characters are refused, so
// no field can be injected.
//
// # Safety
//
// All file operations go through an os.Root opened on ROOT, so nothing is
// ever created, written or renamed outside it, even through a symbolic link
// swapped in at the wrong moment. In addition every directory of a mailbox
// path (domain, local part, tmp, new, cur) is checked with lstat and a
// symbolic link is refused (ErrSymlink) rather than followed: a user who can
// write into the mail tree cannot redirect someone else's mail. The mailbox
// must be a canonical address (address.Parse of its string form gives it
// back); local parts and domains containing "/" or NUL, or starting with "."
// are refused (ErrUnsafeName). ROOT itself may be a symbolic link.
package maildir

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/internal/address"
)

// Errors reported (wrapped, with the path) by Deliver.
var (
	ErrSymlink      = errors.New("refusing symbolic link in mailbox path")
	ErrNotDir       = errors.New("not a directory")
	ErrUnsafeName   = errors.New("unsafe mailbox name")
	ErrBadHeader    = errors.New("invalid header value")
	ErrNotCanonical = errors.New("mailbox address is not canonical")
)

// Headers are the values of the delivery header fields.
type Headers struct {
	// Sender is the envelope sender (reverse-path) without angle brackets;
	// "" is the null sender and is written "Return-Path: <>".
	Sender string
	// OriginalTo is the recipient as given in RCPT TO, for X-Original-To;
	// "" means the mailbox itself.
	OriginalTo string
}

// Options configure a Store.
type Options struct {
	// Hostname goes into the unique file names; default os.Hostname().
	Hostname string
	// Now is the clock for file names; default time.Now.
	Now func() time.Time
}

// Store delivers into the Maildirs under one root directory. It is safe for
// concurrent use.
type Store struct {
	dir  string
	root *os.Root
	host string // escaped
	pid  string
	now  func() time.Time
}

// seq counts deliveries in this process (the "Q" of unique names).
var seq atomic.Uint64

// Open returns a Store for the mail root dir (DATA/mail), creating it with
// mode 0700 if it does not exist.
func Open(dir string, opts Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("maildir: creating root %s: %w", dir, err)
	}
	if err := syncPath(filepath.Dir(dir)); err != nil { // the entry of a new root
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("maildir: opening root %s: %w", dir, err)
	}
	host := opts.Hostname
	if host == "" {
		host, err = os.Hostname()
		if err != nil || host == "" {
			host = "localhost"
		}
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Store{dir: dir, root: root, host: escapeHost(host), pid: strconv.Itoa(os.Getpid()), now: now}, nil
}

// Close releases the root directory.
func (s *Store) Close() error { return s.root.Close() }

// Deliver delivers one message to one mailbox with a Store opened for root
// and closed again. A server delivering many messages keeps a Store.
func Deliver(root string, mailbox address.Address, hdr Headers, body io.Reader) (path string, err error) {
	s, err := Open(root, Options{})
	if err != nil {
		return "", err
	}
	defer s.Close()
	return s.Deliver(mailbox, hdr, body)
}

// Dir returns the Maildir directory of mailbox (ROOT/<domain>/<localpart>),
// or an error wrapping ErrUnsafeName or ErrNotCanonical.
func (s *Store) Dir(mailbox address.Address) (string, error) {
	rel, err := mailboxRel(mailbox)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.dir, filepath.FromSlash(rel)), nil
}

// Deliver writes body (the message as received, CRLF or LF line endings)
// into the Maildir of mailbox, preceded by the header fields of hdr, and
// returns the path of the new file in new/ once the file and the rename are
// durable. Every error names the path concerned.
func (s *Store) Deliver(mailbox address.Address, hdr Headers, body io.Reader) (path string, err error) {
	p, err := s.stage(mailbox, hdr, body)
	if err != nil {
		return "", err
	}
	if err := p.sync(); err != nil {
		p.abort()
		return "", err
	}
	if err := p.rename(); err != nil {
		p.abort()
		return "", err
	}
	defer p.mb.Close()
	if err := syncDir(p.mb, "new", p.abs("new")); err != nil {
		return "", err
	}
	return p.abs(p.newRel), nil
}

// Target is one mailbox of DeliverAll.
type Target struct {
	Mailbox    address.Address
	OriginalTo string // the recipient as given; "" means Mailbox
}

// Result is the outcome of DeliverAll for one Target.
type Result struct {
	Target
	Path string // the file in new/, on success
	Err  error
}

// DeliverAll delivers one message to several mailboxes, reading it from
// body (size bytes, e.g. a spool file or a queue entry) once per mailbox
// without buffering it. The work is batched: every file is written, then
// all are fsynced concurrently (the file system commits them together),
// renamed, and each distinct new/ directory is fsynced once, concurrently. The results
// are in the order of targets; a failure for one mailbox does not stop the
// others.
func (s *Store) DeliverAll(sender string, targets []Target, body io.ReaderAt, size int64) []Result {
	res := make([]Result, len(targets))
	staged := make([]*pending, len(targets))
	for i, t := range targets {
		res[i].Target = t
		p, err := s.stage(t.Mailbox, Headers{Sender: sender, OriginalTo: t.OriginalTo}, io.NewSectionReader(body, 0, size))
		if err != nil {
			res[i].Err = err
			continue
		}
		staged[i] = p
	}
	// fsync concurrently: ext4 and XFS merge concurrent fsyncs into one
	// journal commit; a sequential loop would pay one commit per file.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, p := range staged {
		if p == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := p.sync(); err != nil {
				res[i].Err = err
				p.abort()
				staged[i] = nil
			}
		}()
	}
	wg.Wait()
	dirs := map[string]*pending{} // new/ directory → one delivery into it
	for i, p := range staged {
		if p == nil {
			continue
		}
		if err := p.rename(); err != nil {
			res[i].Err = err
			p.abort()
			staged[i] = nil
			continue
		}
		if _, ok := dirs[p.mbRel]; !ok {
			dirs[p.mbRel] = p
		}
	}
	dirErr := map[string]error{}
	var mu sync.Mutex
	for rel, p := range dirs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := syncDir(p.mb, "new", p.abs("new"))
			mu.Lock()
			dirErr[rel] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	for i, p := range staged {
		if p == nil {
			continue
		}
		if err := dirErr[p.mbRel]; err != nil {
			res[i].Err = err
		} else {
			res[i].Path = p.abs(p.newRel)
		}
		p.mb.Close()
	}
	return res
}

// pending is a delivery between its steps.
type pending struct {
	s      *Store
	mb     *os.Root // the mailbox directory
	mbRel  string   // "<domain>/<local>"
	f      *os.File // open until sync
	tmpRel string   // "tmp/<unique>", relative to mb
	newRel string   // "new/<unique>,S=<size>"
	closed bool
}

func (p *pending) abs(rel string) string {
	return filepath.Join(p.s.dir, filepath.FromSlash(p.mbRel), filepath.FromSlash(rel))
}

// stage runs steps 1 and 2: checks the mailbox, creates the directories and
// writes the file into tmp/.
func (s *Store) stage(mailbox address.Address, hdr Headers, body io.Reader) (*pending, error) {
	rel, err := mailboxRel(mailbox)
	if err != nil {
		return nil, err
	}
	fields, err := headerFields(mailbox, hdr)
	if err != nil {
		return nil, fmt.Errorf("maildir: delivering to %s: %w", filepath.Join(s.dir, filepath.FromSlash(rel)), err)
	}
	if err := s.ensureMaildir(rel); err != nil {
		return nil, err
	}
	mb, err := s.root.OpenRoot(rel)
	if err != nil {
		return nil, fmt.Errorf("maildir: opening %s: %w", s.abs(rel), err)
	}
	p := &pending{s: s, mb: mb, mbRel: rel}
	unique := s.uniqueName()
	p.tmpRel = "tmp/" + unique
	// O_EXCL: never reuse an existing name, never follow a symlink there.
	f, err := mb.OpenFile(p.tmpRel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		mb.Close()
		return nil, fmt.Errorf("maildir: creating %s: %w", p.abs(p.tmpRel), err)
	}
	p.f = f
	cw := &countWriter{w: f}
	bw := bufio.NewWriterSize(cw, 32<<10)
	lw := &lfWriter{w: bw}
	_, err = io.WriteString(bw, fields)
	if err == nil {
		_, err = io.Copy(lw, body)
	}
	if err == nil {
		err = lw.flush()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		p.abort()
		return nil, fmt.Errorf("maildir: writing %s: %w", p.abs(p.tmpRel), err)
	}
	p.newRel = "new/" + unique + ",S=" + strconv.FormatInt(cw.n, 10)
	return p, nil
}

// sync runs step 3.
func (p *pending) sync() error {
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("maildir: fsync %s: %w", p.abs(p.tmpRel), err)
	}
	p.closed = true
	if err := p.f.Close(); err != nil {
		return fmt.Errorf("maildir: closing %s: %w", p.abs(p.tmpRel), err)
	}
	return nil
}

// rename runs step 4.
func (p *pending) rename() error {
	if err := p.mb.Rename(p.tmpRel, p.newRel); err != nil {
		return fmt.Errorf("maildir: renaming %s to %s: %w", p.abs(p.tmpRel), p.abs(p.newRel), err)
	}
	return nil
}

// abort removes the temporary file after a failure.
func (p *pending) abort() {
	if !p.closed {
		p.f.Close()
		p.closed = true
	}
	p.mb.Remove(p.tmpRel)
	p.mb.Close()
}

func (s *Store) abs(rel string) string { return filepath.Join(s.dir, filepath.FromSlash(rel)) }

// ensureMaildir checks every directory of the mailbox path with lstat,
// refusing symbolic links and non-directories, and creates missing ones
// (0700), fsyncing the parent of each directory it creates.
func (s *Store) ensureMaildir(rel string) error {
	domain, _, _ := strings.Cut(rel, "/")
	for _, d := range []string{domain, rel, rel + "/tmp", rel + "/new", rel + "/cur"} {
		if err := s.ensureDir(d); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) ensureDir(rel string) error {
	for try := 0; ; try++ {
		fi, err := s.root.Lstat(rel)
		switch {
		case err == nil && fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("maildir: %s: %w", s.abs(rel), ErrSymlink)
		case err == nil && !fi.IsDir():
			return fmt.Errorf("maildir: %s: %w", s.abs(rel), ErrNotDir)
		case err == nil:
			return nil
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("maildir: checking %s: %w", s.abs(rel), err)
		}
		err = s.root.Mkdir(rel, 0o700)
		if errors.Is(err, fs.ErrExist) && try == 0 {
			continue // created concurrently: check what it is
		}
		if err != nil {
			return fmt.Errorf("maildir: creating %s: %w", s.abs(rel), err)
		}
		parent := path.Dir(rel)
		return syncDir(s.root, parent, s.abs(parent))
	}
}

// syncDir fsyncs the directory rel of root; abs is its path for errors.
func syncDir(root *os.Root, rel, abs string) error {
	d, err := root.Open(rel)
	if err != nil {
		return fmt.Errorf("maildir: opening directory %s to fsync it: %w", abs, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("maildir: fsync directory %s: %w", abs, err)
	}
	return nil
}

// syncPath fsyncs the directory dir.
func syncPath(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("maildir: opening directory %s to fsync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("maildir: fsync directory %s: %w", dir, err)
	}
	return nil
}

// mailboxRel returns "<domain>/<local>" for a canonical, safe mailbox.
func mailboxRel(mailbox address.Address) (string, error) {
	for _, part := range []string{mailbox.Local, mailbox.Domain} {
		if part == "" || part == "." || part == ".." || strings.HasPrefix(part, ".") ||
			strings.ContainsAny(part, "/\\\x00") {
			return "", fmt.Errorf("maildir: mailbox %q: %w (%q)", mailbox.String(), ErrUnsafeName, part)
		}
	}
	a, err := address.Parse(mailbox.String(), address.Options{UTF8Local: true})
	if err != nil {
		return "", fmt.Errorf("maildir: mailbox %q: %w: %w", mailbox.String(), ErrNotCanonical, err)
	}
	if a != mailbox {
		return "", fmt.Errorf("maildir: mailbox %q: %w (canonical form %q)", mailbox.String(), ErrNotCanonical, a.String())
	}
	return mailbox.Domain + "/" + mailbox.Local, nil
}

// headerFields returns the delivery header fields (see the package comment).
func headerFields(mailbox address.Address, hdr Headers) (string, error) {
	orig := hdr.OriginalTo
	if orig == "" {
		orig = mailbox.String()
	}
	for _, v := range []struct{ name, val string }{{"sender", hdr.Sender}, {"original recipient", orig}} {
		if err := checkValue(v.val); err != nil {
			return "", fmt.Errorf("%w: %s %q: %v", ErrBadHeader, v.name, v.val, err)
		}
	}
	var b strings.Builder
	b.WriteString("Return-Path: <")
	b.WriteString(hdr.Sender)
	b.WriteString(">\nX-Original-To: ")
	b.WriteString(orig)
	b.WriteString("\nDelivered-To: ")
	b.WriteString(mailbox.String())
	b.WriteString("\n")
	return b.String(), nil
}

// checkValue refuses what could break out of a header field or the angle
// brackets of Return-Path.
func checkValue(v string) error {
	if len(v) > 512 {
		return errors.New("too long")
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == ' ' {
			return fmt.Errorf("byte 0x%02x at offset %d", c, i)
		}
	}
	return nil
}

// uniqueName returns a new unique file name (see the package comment).
func (s *Store) uniqueName() string {
	now := s.now()
	var r [8]byte
	rand.Read(r[:])
	var b strings.Builder
	b.Grow(80)
	b.WriteString(strconv.FormatInt(now.Unix(), 10))
	b.WriteString(".M")
	b.WriteString(strconv.Itoa(now.Nanosecond() / 1000))
	b.WriteString("P")
	b.WriteString(s.pid)
	b.WriteString("Q")
	b.WriteString(strconv.FormatUint(seq.Add(1), 10))
	b.WriteString("R")
	b.WriteString(hex.EncodeToString(r[:]))
	b.WriteString(".")
	b.WriteString(s.host)
	return b.String()
}

// escapeHost escapes a host name for a Maildir file name.
func escapeHost(h string) string {
	var b strings.Builder
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "\\%03o", c)
		}
	}
	return b.String()
}

// countWriter counts the bytes written.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// lfWriter converts CRLF to LF; a CR not followed by LF is kept. flush
// writes a CR held back at the end.
type lfWriter struct {
	w  io.Writer
	cr bool // a CR is held back
}

func (l *lfWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if l.cr {
			l.cr = false
			if p[0] != '\n' {
				if _, err := l.w.Write([]byte{'\r'}); err != nil {
					return 0, err
				}
			}
		}
		i := 0
		for i < len(p) && p[i] != '\r' {
			i++
		}
		if _, err := l.w.Write(p[:i]); err != nil {
			return 0, err
		}
		if i < len(p) { // p[i] == '\r'
			l.cr = true
			i++
		}
		p = p[i:]
	}
	return n, nil
}

func (l *lfWriter) flush() error {
	if l.cr {
		l.cr = false
		_, err := l.w.Write([]byte{'\r'})
		return err
	}
	return nil
}
