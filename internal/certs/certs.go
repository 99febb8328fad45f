// Package certs provides the TLS configuration of the listeners of
// `mailgate serve` (SPEC §8): STARTTLS on submission (RFC 3207) and implicit
// TLS on submissions (RFC 8314 §3.3), and the inbound MX's STARTTLS.
//
// # Given certificate
//
// With --tls-cert and --tls-key, the server presents that certificate (the
// PEM file may hold the chain after the leaf; the key may be PKCS #8,
// PKCS #1 RSA or SEC 1 EC, unencrypted). The files are checked at most once
// every few seconds, during a handshake, and re-read when the modification
// time, size or identity (device and inode) of either has changed, so that a
// renewed certificate (certbot, acme.sh, …) takes effect without a restart;
// a file replaced by a rename, or a symbolic link pointed at another file as
// certbot does, counts as changed even on a file system with coarse time
// stamps. A new pair that cannot be used — unreadable, not PEM, a key that
// does not match the certificate (as happens for a moment when a renewal
// writes one file before the other) — is logged with the name of the file at
// fault, once per change, and the previous certificate stays in use until
// the files change again.
//
// Load warns, without failing, when the certificate is expired or does not
// cover the server's host name.
//
// # Self-signed certificate
//
// Without either flag, the server uses a self-signed certificate for its host
// name, kept in DATA/tls/cert.pem and DATA/tls/key.pem (mode 0600, restored
// if it was loosened), generated on first use and reused afterwards, so that
// clients that pin it on first use (trust on first use) keep seeing the same
// one. The key is ECDSA P-256:
// its handshakes cost a fraction of an RSA-2048 signature. The certificate
// names the host name as its subjectAltName (RFC 6125 §6.4: clients match
// the SAN, not the CN), is valid for ten years, and is regenerated — with a
// log message — when it no longer covers the host name, expires within 30
// days, or either file is missing or unusable. Each file is written to a
// temporary file, synced and renamed into place (the key first), so a crash
// never leaves a truncated key; a crash between the two renames leaves a key
// that does not match the certificate, which the next start regenerates.
//
// A self-signed certificate authenticates nothing: a client that verifies
// certificates refuses it, and one that does not is open to a
// man-in-the-middle. Every Load that uses one logs a warning saying so.
//
// # Protocol
//
// The configuration requires TLS 1.2 or later (RFC 8996 deprecates 1.0 and
// 1.1; RFC 8314 §4.1 asks for TLS 1.2 or later) and otherwise keeps
// crypto/tls's defaults for cipher suites and curves.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// checkInterval bounds how often the given files are stat'ed.
	checkInterval = 5 * time.Second
	// validity is the lifetime of a generated certificate (ten years).
	validity = 3652 * 24 * time.Hour
	// renewBefore regenerates a self-signed certificate this close to its
	// expiry.
	renewBefore = 30 * 24 * time.Hour
)

// Load returns a server *tls.Config (MinVersion TLS 1.2) for certFile/keyFile,
// or, when both are empty, for a self-signed certificate for hostname kept in
// dataDir/tls/ (cert.pem, key.pem; key file mode 0600), generated once on
// first use (ECDSA P-256: cheap handshakes) and reused afterwards; a warning
// is logged when the self-signed certificate is used or generated. Exactly one
// of certFile/keyFile empty is an error naming the missing flag (--tls-cert /
// --tls-key). A nil logger means slog.Default().
func Load(certFile, keyFile, dataDir, hostname string, logger *slog.Logger) (*tls.Config, error) {
	return load(certFile, keyFile, dataDir, hostname, logger, checkInterval, time.Now)
}

// load is Load with the reload interval and clock as parameters.
func load(certFile, keyFile, dataDir, hostname string, logger *slog.Logger, every time.Duration, now func() time.Time) (*tls.Config, error) {
	if logger == nil {
		logger = slog.Default()
	}
	hostname = strings.TrimSuffix(strings.ToLower(hostname), ".")
	switch {
	case certFile == "" && keyFile == "":
		cert, err := selfSigned(dataDir, hostname, logger, now())
		if err != nil {
			return nil, err
		}
		return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}}, nil
	case certFile == "":
		return nil, fmt.Errorf("--tls-cert is missing: --tls-key %s was given without it", keyFile)
	case keyFile == "":
		return nil, fmt.Errorf("--tls-key is missing: --tls-cert %s was given without it", certFile)
	}
	s := &fileSource{certFile: certFile, keyFile: keyFile, hostname: hostname, log: logger, every: every, now: now}
	st, err := s.stat()
	if err == nil {
		var cert *tls.Certificate
		if cert, err = readPair(certFile, keyFile); err == nil {
			s.cert.Store(cert)
			s.loaded, s.checked = st, now()
			s.warn(cert)
			return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.get}, nil
		}
	}
	return nil, err
}

// fileSource serves the certificate of the given files, re-reading them
// when they change.
type fileSource struct {
	certFile, keyFile string
	hostname          string
	log               *slog.Logger
	every             time.Duration
	now               func() time.Time

	cert atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // held by the handshake that checks the files
	checked time.Time  // last check
	loaded  stamps     // the files as they were when cert was read
	failed  stamps     // the files as they were when reading them last failed
	lastErr string     // the error logged last, not repeated at every check
}

// stamps identify a version of the two files.
type stamps struct{ cert, key stamp }

// stamp identifies a version of a file: its modification time, its size and
// the file itself (device and inode), so that a file replaced by a rename is
// noticed even on a file system with coarse time stamps.
type stamp struct {
	mod  time.Time
	size int64
	fi   fs.FileInfo // for os.SameFile; nil in the zero stamp
}

func (s stamp) same(o stamp) bool {
	return s.fi != nil && o.fi != nil && s.mod.Equal(o.mod) && s.size == o.size && os.SameFile(s.fi, o.fi)
}

func (s stamps) same(o stamps) bool { return s.cert.same(o.cert) && s.key.same(o.key) }

func (s *fileSource) stat() (stamps, error) {
	c, err := os.Stat(s.certFile)
	if err != nil {
		return stamps{}, fileError("TLS certificate", s.certFile, err)
	}
	k, err := os.Stat(s.keyFile)
	if err != nil {
		return stamps{}, fileError("TLS key", s.keyFile, err)
	}
	return stamps{stamp{c.ModTime(), c.Size(), c}, stamp{k.ModTime(), k.Size(), k}}, nil
}

// get is tls.Config.GetCertificate: it returns the current certificate,
// first checking the files when the last check is old enough and no other
// handshake is checking them.
func (s *fileSource) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.mu.TryLock() {
		if now := s.now(); now.Sub(s.checked) >= s.every {
			s.checked = now
			s.refresh()
		}
		s.mu.Unlock()
	}
	return s.cert.Load(), nil
}

// refresh re-reads the files if they changed. It is called with mu held.
func (s *fileSource) refresh() {
	st, err := s.stat()
	if err == nil && (st.same(s.loaded) || st.same(s.failed)) {
		return
	}
	var cert *tls.Certificate
	if err == nil {
		cert, err = readPair(s.certFile, s.keyFile)
	}
	if err != nil {
		s.failed = st
		if msg := err.Error(); msg != s.lastErr {
			s.lastErr = msg
			s.log.Error("TLS certificate not reloaded, the previous one stays in use", "err", err)
		}
		return
	}
	s.cert.Store(cert)
	s.loaded, s.failed, s.lastErr = st, stamps{}, ""
	s.log.Info("TLS certificate reloaded", "cert", s.certFile, "key", s.keyFile,
		"subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	s.warn(cert)
}

// warn logs the problems of a usable certificate.
func (s *fileSource) warn(cert *tls.Certificate) {
	leaf := cert.Leaf
	if now := s.now(); now.After(leaf.NotAfter) {
		s.log.Warn("the TLS certificate has expired", "cert", s.certFile, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	} else if now.Before(leaf.NotBefore) {
		s.log.Warn("the TLS certificate is not valid yet", "cert", s.certFile, "not_before", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if s.hostname != "" {
		if err := leaf.VerifyHostname(s.hostname); err != nil {
			s.log.Warn("the TLS certificate does not cover the host name", "cert", s.certFile, "hostname", s.hostname, "err", err)
		}
	}
}

// contentError is a file that was read but cannot be used.
type contentError struct{ msg string }

func (e *contentError) Error() string { return e.msg }

func badContent(format string, args ...any) error {
	return &contentError{fmt.Sprintf(format, args...)}
}

// fileError describes an I/O error on file, keeping the errno wrapped
// (errors.Is(err, fs.ErrNotExist) holds) without repeating the path.
func fileError(what, file string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s %s: %s: %w", what, file, pe.Op, pe.Err)
	}
	return fmt.Errorf("%s %s: %w", what, file, err)
}

// readPair reads and checks a certificate chain and its private key, with
// errors that name the file at fault.
func readPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fileError("TLS certificate", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fileError("TLS key", keyFile, err)
	}
	var chain [][]byte
	var hasKey bool
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		switch {
		case b.Type == "CERTIFICATE":
			chain = append(chain, b.Bytes)
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			hasKey = true
		}
	}
	if len(chain) == 0 {
		if hasKey {
			return nil, badContent("TLS certificate %s holds a private key but no certificate (are --tls-cert and --tls-key swapped?)", certFile)
		}
		return nil, badContent("TLS certificate %s: no PEM CERTIFICATE block", certFile)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, badContent("TLS certificate %s: %v", certFile, err)
	}
	for i, der := range chain[1:] {
		if _, err := x509.ParseCertificate(der); err != nil {
			return nil, badContent("TLS certificate %s: certificate %d of the chain: %v", certFile, i+2, err)
		}
	}
	key, err := parseKey(keyFile, keyPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, badContent("TLS key %s does not match the certificate in %s", keyFile, certFile)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// parseKey returns the first private key of a PEM file.
func parseKey(keyFile string, data []byte) (crypto.Signer, error) {
	var hasCert bool
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			hasCert = true
		}
		if !strings.HasSuffix(b.Type, "PRIVATE KEY") {
			continue
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] != "" {
			return nil, badContent("TLS key %s is encrypted with a passphrase; mailgate needs an unencrypted key", keyFile)
		}
		var key any
		var err error
		switch b.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		}
		if err != nil {
			return nil, badContent("TLS key %s: %v", keyFile, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, badContent("TLS key %s: unsupported key type %T", keyFile, key)
		}
		return s, nil
	}
	if hasCert {
		return nil, badContent("TLS key %s holds a certificate but no private key (are --tls-cert and --tls-key swapped?)", keyFile)
	}
	return nil, badContent("TLS key %s: no PEM PRIVATE KEY block", keyFile)
}

// selfSigned returns the self-signed certificate kept in dataDir/tls,
// generating it when needed.
func selfSigned(dataDir, hostname string, log *slog.Logger, now time.Time) (*tls.Certificate, error) {
	if dataDir == "" {
		return nil, errors.New("no data directory to keep a self-signed TLS certificate in: give --tls-cert and --tls-key")
	}
	if hostname == "" {
		return nil, errors.New("no host name for the self-signed TLS certificate: give --hostname, or --tls-cert and --tls-key")
	}
	dir := filepath.Join(dataDir, "tls")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert, err := readPair(certFile, keyFile)
	var bad *contentError
	switch {
	case err == nil:
		problem := ""
		if err := cert.Leaf.VerifyHostname(hostname); err != nil {
			problem = fmt.Sprintf("it is not valid for %s", hostname)
		} else if now.Add(renewBefore).After(cert.Leaf.NotAfter) {
			problem = "it expires on " + cert.Leaf.NotAfter.UTC().Format(time.DateOnly)
		}
		if problem == "" {
			if fi, err := os.Stat(keyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
				log.Warn("the self-signed TLS key was readable by others; setting its mode to 0600", "key", keyFile, "mode", fi.Mode().Perm().String())
				if err := os.Chmod(keyFile, 0o600); err != nil {
					return nil, fmt.Errorf("self-signed TLS key: %w", err)
				}
			}
			log.Warn("TLS uses a self-signed certificate: clients cannot verify it; give --tls-cert and --tls-key",
				"cert", certFile, "hostname", hostname, "not_after", cert.Leaf.NotAfter.UTC().Format(time.DateOnly))
			return cert, nil
		}
		log.Warn("replacing the self-signed TLS certificate: "+problem, "cert", certFile)
	case notExist(certFile) && notExist(keyFile):
		// First use.
	case errors.Is(err, fs.ErrNotExist), errors.As(err, &bad):
		log.Warn("replacing the self-signed TLS certificate", "err", err)
	default:
		return nil, err
	}
	cert, err = generate(hostname, now)
	if err != nil {
		return nil, fmt.Errorf("generating a self-signed TLS certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("self-signed TLS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("generating a self-signed TLS certificate: %w", err)
	}
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		return nil, err
	}
	log.Warn("generated a self-signed TLS certificate: clients cannot verify it; give --tls-cert and --tls-key",
		"cert", certFile, "key", keyFile, "hostname", hostname, "not_after", cert.Leaf.NotAfter.UTC().Format(time.DateOnly))
	return cert, nil
}

func notExist(file string) bool {
	_, err := os.Lstat(file)
	return errors.Is(err, fs.ErrNotExist)
}

// generate creates a self-signed ECDSA P-256 certificate for hostname.
func generate(hostname string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)), // positive, RFC 5280 §4.1.2.2
		NotBefore:             now.Add(-time.Hour),               // tolerate clients whose clock is a little behind
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if len(hostname) <= 64 { // the CN's upper bound, RFC 5280 Appendix A
		tmpl.Subject = pkix.Name{CommonName: hostname}
	}
	if ip, err := netip.ParseAddr(hostname); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
	} else {
		tmpl.DNSNames = []string{hostname}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// writeAtomic replaces file with data: a temporary file in the same
// directory is written, synced and renamed over it, then the directory is
// synced, so that file is either the old or the complete new content.
func writeAtomic(file string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(file)
	f, err := os.CreateTemp(dir, "."+filepath.Base(file)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", file, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("writing %s: %w", file, err)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), file); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
