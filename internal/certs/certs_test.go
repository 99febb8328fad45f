package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const host = "mail.example.test"

// logBuf collects log output; handshakes log from other goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}

func newLogger() (*slog.Logger, *logBuf) {
	b := &logBuf{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// handshake runs a real TLS handshake over 127.0.0.1 between a server
// with cfg and a client verifying the certificate against roots for
// serverName; it returns the certificate the server presented.
func handshake(t *testing.T, cfg *tls.Config, client *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srv <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, cfg)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		srv <- tc.Handshake()
	}()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: client}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	serr := <-srv
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if serr != nil {
		return nil, serr
	}
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// trusting returns a client configuration that trusts exactly certs.
func trusting(name string, certs ...*x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &tls.Config{RootCAs: pool, ServerName: name}
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pair is a test certificate and key in PEM.
type pair struct {
	cert    *x509.Certificate
	certPEM []byte
	keyPEM  []byte
}

// newPair creates a self-signed certificate for names with a key of the
// given kind: "ec" (PKCS #8), "ec-sec1", "rsa" (PKCS #1).
func newPair(t *testing.T, kind string, notAfter time.Time, names ...string) pair {
	t.Helper()
	var key crypto.Signer
	var keyBlock *pem.Block
	switch kind {
	case "ec", "ec-sec1":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key = k
		if kind == "ec" {
			der, _ := x509.MarshalPKCS8PrivateKey(k)
			keyBlock = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
		} else {
			der, _ := x509.MarshalECPrivateKey(k)
			keyBlock = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
		}
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		key = k
		keyBlock = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	default:
		t.Fatalf("key kind %q", kind)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return pair{c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(keyBlock)}
}

func (p pair) write(t *testing.T, certFile, keyFile string) {
	t.Helper()
	if err := os.WriteFile(certFile, p.certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, p.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

var inAYear = time.Now().AddDate(1, 0, 0)

func TestSelfSigned(t *testing.T) {
	data := t.TempDir()
	log, logs := newLogger()
	cfg, err := Load("", "", data, "Mail.Example.TEST.", log)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x", cfg.MinVersion)
	}
	certFile, keyFile := filepath.Join(data, "tls", "cert.pem"), filepath.Join(data, "tls", "key.pem")
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Dir(keyFile)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("tls dir: %v, %v", fi, err)
	}
	if s := logs.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "generated a self-signed") {
		t.Errorf("no warning about the generated certificate:\n%s", s)
	}
	first := readCert(t, certFile)
	if _, ok := first.PublicKey.(*ecdsa.PublicKey); !ok || first.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Errorf("key is %T, want ECDSA P-256", first.PublicKey)
	}
	if len(first.DNSNames) != 1 || first.DNSNames[0] != host {
		t.Errorf("SAN = %v, want [%s]", first.DNSNames, host)
	}
	if years := time.Until(first.NotAfter).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Errorf("valid for %.1f years, want about 10", years)
	}
	if first.IsCA || first.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || first.SerialNumber.Sign() <= 0 {
		t.Errorf("certificate fields: CA %v, EKU %v, serial %v", first.IsCA, first.ExtKeyUsage, first.SerialNumber)
	}
	got, err := handshake(t, cfg, trusting(host, first))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if !got.Equal(first) {
		t.Error("the server presented another certificate than cert.pem")
	}
	// A client that verifies against the system roots refuses it.
	if _, err := handshake(t, cfg, &tls.Config{ServerName: host}); err == nil {
		t.Error("a self-signed certificate was accepted without being trusted")
	}

	// Reused on the next start, with a warning, without regenerating.
	logs.Reset()
	keyBefore, _ := os.ReadFile(keyFile)
	cfg, err = Load("", "", data, host, log)
	if err != nil {
		t.Fatal(err)
	}
	if s := logs.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "self-signed") || strings.Contains(s, "generated") {
		t.Errorf("reuse log:\n%s", s)
	}
	if keyAfter, _ := os.ReadFile(keyFile); !bytes.Equal(keyBefore, keyAfter) || !readCert(t, certFile).Equal(first) {
		t.Fatal("the self-signed certificate was not reused")
	}
	if got, err := handshake(t, cfg, trusting(host, first)); err != nil || !got.Equal(first) {
		t.Fatalf("handshake after reuse: %v", err)
	}

	// A loosened key mode is restored.
	os.Chmod(keyFile, 0o644)
	logs.Reset()
	if _, err := Load("", "", data, host, log); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 || !strings.Contains(logs.String(), "readable by others") {
		t.Errorf("loosened key mode not restored: %v %v\n%s", fi, err, logs.String())
	}
	if !readCert(t, certFile).Equal(first) {
		t.Error("a loosened key mode regenerated the certificate")
	}

	// Another host name: a new certificate.
	logs.Reset()
	cfg, err = Load("", "", data, "other.example.test", log)
	if err != nil {
		t.Fatal(err)
	}
	second := readCert(t, certFile)
	if second.Equal(first) || !strings.Contains(logs.String(), "not valid for other.example.test") {
		t.Fatalf("host name change: regenerated %v, log:\n%s", !second.Equal(first), logs.String())
	}
	if _, err := handshake(t, cfg, trusting("other.example.test", second)); err != nil {
		t.Fatalf("handshake for the new name: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(certFile))
	if len(entries) != 2 {
		t.Errorf("tls dir holds %d entries, want cert.pem and key.pem only", len(entries))
	}
}

func TestSelfSignedIPHostname(t *testing.T) {
	cfg, err := Load("", "", t.TempDir(), "127.0.0.1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	leaf := cfg.Certificates[0].Leaf
	if len(leaf.IPAddresses) != 1 || len(leaf.DNSNames) != 0 {
		t.Fatalf("SAN: IPs %v, DNS %v", leaf.IPAddresses, leaf.DNSNames)
	}
	if _, err := handshake(t, cfg, trusting("127.0.0.1", leaf)); err != nil {
		t.Fatal(err)
	}
}

// Broken, partial or expiring self-signed files are replaced.
func TestSelfSignedRegenerates(t *testing.T) {
	expiring := newPair(t, "ec", time.Now().Add(10*24*time.Hour), host)
	other := newPair(t, "ec", inAYear, host)
	cases := []struct {
		name  string
		setup func(certFile, keyFile string)
		log   string
	}{
		{"key missing", func(c, k string) { other.write(t, c, k); os.Remove(k) }, "no such file"},
		{"cert missing", func(c, k string) { other.write(t, c, k); os.Remove(c) }, "no such file"},
		{"truncated key", func(c, k string) {
			other.write(t, c, k)
			os.WriteFile(k, other.keyPEM[:len(other.keyPEM)/2], 0o600)
		}, "no PEM PRIVATE KEY"},
		{"mismatch after a crash between the renames", func(c, k string) {
			other.write(t, c, k)
			os.WriteFile(k, expiring.keyPEM, 0o600)
		}, "does not match"},
		{"expiring", func(c, k string) { expiring.write(t, c, k) }, "expires on"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := t.TempDir()
			dir := filepath.Join(data, "tls")
			os.Mkdir(dir, 0o700)
			certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			c.setup(certFile, keyFile)
			log, logs := newLogger()
			cfg, err := Load("", "", data, host, log)
			if err != nil {
				t.Fatal(err)
			}
			if s := logs.String(); !strings.Contains(s, "replacing the self-signed") || !strings.Contains(s, c.log) || !strings.Contains(s, "generated") {
				t.Errorf("log:\n%s", s)
			}
			cur := readCert(t, certFile)
			if cur.Equal(other.cert) || cur.Equal(expiring.cert) {
				t.Fatal("not regenerated")
			}
			if _, err := handshake(t, cfg, trusting(host, cur)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSelfSignedErrors(t *testing.T) {
	if _, err := Load("", "", "", host, nil); err == nil || !strings.Contains(err.Error(), "data directory") {
		t.Errorf("no data dir: %v", err)
	}
	if _, err := Load("", "", t.TempDir(), "", nil); err == nil || !strings.Contains(err.Error(), "host name") {
		t.Errorf("no host name: %v", err)
	}
	// dataDir/tls is a file: an error, not a silent fallback.
	data := t.TempDir()
	os.WriteFile(filepath.Join(data, "tls"), nil, 0o600)
	if _, err := Load("", "", data, host, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "tls") {
		t.Errorf("tls is a file: %v", err)
	}
	// cert.pem is a directory: reading it fails with an I/O error, which
	// must not be papered over by overwriting.
	data = t.TempDir()
	os.MkdirAll(filepath.Join(data, "tls", "cert.pem"), 0o700)
	os.WriteFile(filepath.Join(data, "tls", "key.pem"), []byte("x"), 0o600)
	if _, err := Load("", "", data, host, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "cert.pem") {
		t.Errorf("cert.pem is a directory: %v", err)
	}
}

func TestWriteAtomicFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "key.pem")
	os.Mkdir(target, 0o700)
	os.WriteFile(filepath.Join(target, "keep"), []byte("x"), 0o600) // rename over a non-empty directory fails
	if err := writeAtomic(target, []byte("secret"), 0o600); err == nil || !strings.Contains(err.Error(), target) {
		t.Fatalf("writeAtomic over a directory: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
	file := filepath.Join(dir, "cert.pem")
	if err := writeAtomic(file, []byte("new"), 0o640); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(file); string(b) != "new" {
		t.Errorf("content %q", b)
	}
}

// The benchmark's certificate: RSA-2048 made by openssl req -x509, PKCS #8
// key.
func TestGivenRSAFromOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed; TestGivenFiles covers RSA keys generated in Go")
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	out, err := exec.Command(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", certFile,
		"-days", "30", "-subj", "/CN="+host, "-addext", "subjectAltName=DNS:"+host).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	log, logs := newLogger()
	cfg, err := Load(certFile, keyFile, t.TempDir(), host, log)
	if err != nil {
		t.Fatal(err)
	}
	want := readCert(t, certFile)
	got, err := handshake(t, cfg, trusting(host, want))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(want) {
		t.Error("another certificate was presented")
	}
	if _, ok := got.PublicKey.(*rsa.PublicKey); !ok {
		t.Errorf("key type %T", got.PublicKey)
	}
	// TLS 1.2 explicitly, with an RSA key (ECDHE-RSA suites).
	c := trusting(host, want)
	c.MaxVersion = tls.VersionTLS12
	if _, err := handshake(t, cfg, c); err != nil {
		t.Errorf("TLS 1.2: %v", err)
	}
	if s := logs.String(); strings.Contains(s, "level=WARN") || strings.Contains(s, "level=ERROR") {
		t.Errorf("unexpected log:\n%s", s)
	}
}

func TestGivenFiles(t *testing.T) {
	for _, kind := range []string{"rsa", "ec", "ec-sec1"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
			p := newPair(t, kind, inAYear, host)
			// The file may hold the chain after the leaf.
			ca := newPair(t, "ec", inAYear, "ca.example.test")
			p.certPEM = append(p.certPEM, ca.certPEM...)
			p.write(t, certFile, keyFile)
			cfg, err := Load(certFile, keyFile, "", host, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			got, err := handshake(t, cfg, trusting(host, p.cert))
			if err != nil || !got.Equal(p.cert) {
				t.Fatalf("handshake: %v", err)
			}
			// TLS 1.0 and 1.1 are refused.
			old := trusting(host, p.cert)
			old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			if _, err := handshake(t, cfg, old); err == nil {
				t.Error("a TLS 1.1 handshake succeeded")
			}
		})
	}
}

func TestGivenFilesWarnings(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	newPair(t, "ec", time.Now().Add(-time.Minute), "www.example.test").write(t, certFile, keyFile)
	log, logs := newLogger()
	if _, err := Load(certFile, keyFile, "", host, log); err != nil {
		t.Fatal(err)
	}
	s := logs.String()
	if !strings.Contains(s, "expired") || !strings.Contains(s, "does not cover the host name") || !strings.Contains(s, certFile) {
		t.Errorf("warnings:\n%s", s)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	a := newPair(t, "ec", inAYear, host)
	b := newPair(t, "ec", inAYear, host)
	certA, keyA, keyB := file("a.crt", a.certPEM), file("a.key", a.keyPEM), file("b.key", b.keyPEM)
	encrypted := file("enc.key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}))
	legacyEnc := file("legacy.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}}))
	garbage := file("garbage", []byte("hello\n"))
	badDER := file("bad.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}))
	badKey := file("bad.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	badChain := file("chain.crt", append(append([]byte{}, a.certPEM...), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{9}})...))
	missing := filepath.Join(dir, "missing.pem")

	cases := []struct {
		cert, key string
		want      []string
	}{
		{certA, "", []string{"--tls-key is missing", certA}},
		{"", keyA, []string{"--tls-cert is missing", keyA}},
		{missing, keyA, []string{"TLS certificate", missing, "no such file"}},
		{certA, missing, []string{"TLS key", missing, "no such file"}},
		{garbage, keyA, []string{"TLS certificate", garbage, "no PEM CERTIFICATE"}},
		{badDER, keyA, []string{"TLS certificate", badDER}},
		{badChain, keyA, []string{badChain, "certificate 2 of the chain"}},
		{certA, garbage, []string{"TLS key", garbage, "no PEM PRIVATE KEY"}},
		{certA, badKey, []string{"TLS key", badKey}},
		{certA, encrypted, []string{encrypted, "encrypted"}},
		{certA, legacyEnc, []string{legacyEnc, "encrypted"}},
		{keyA, certA, []string{keyA, "swapped"}},
		{certA, keyB, []string{"TLS key " + keyB + " does not match the certificate in " + certA}},
		{dir, keyA, []string{"TLS certificate", dir}},
	}
	for _, c := range cases {
		cfg, err := Load(c.cert, c.key, t.TempDir(), host, slog.New(slog.DiscardHandler))
		if err == nil || cfg != nil {
			t.Errorf("Load(%s, %s) succeeded", c.cert, c.key)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Load(%s, %s) = %q, want it to mention %q", c.cert, c.key, err, w)
			}
		}
		if strings.Count(err.Error(), dir) > 2 {
			t.Errorf("the error repeats file names: %q", err)
		}
	}
	if _, err := Load(missing, keyA, "", host, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file is not ErrNotExist: %v", err)
	}
}

// fakeClock is a clock that tests advance.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	p1, p2, p3 := newPair(t, "ec", inAYear, host), newPair(t, "rsa", inAYear, host), newPair(t, "ec", inAYear, host)
	p1.write(t, certFile, keyFile)
	mtime := time.Now().Add(-time.Hour)
	touch := func(files ...string) {
		t.Helper()
		mtime = mtime.Add(time.Second)
		for _, f := range files {
			if err := os.Chtimes(f, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
	}
	touch(certFile, keyFile)
	clk := &fakeClock{now: time.Now()}
	log, logs := newLogger()
	cfg, err := load(certFile, keyFile, "", host, log, 5*time.Second, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	client := trusting(host, p1.cert, p2.cert, p3.cert)
	serves := func(what string, want pair) {
		t.Helper()
		got, err := handshake(t, cfg, client)
		if err != nil {
			t.Fatalf("%s: handshake: %v", what, err)
		}
		if !got.Equal(want.cert) {
			t.Fatalf("%s: the server presented %s (serial %v), want serial %v", what, got.Subject, got.SerialNumber, want.cert.SerialNumber)
		}
	}
	serves("initial", p1)

	// Renewal: the new pair is used once the check interval has passed.
	p2.write(t, certFile, keyFile)
	touch(certFile, keyFile)
	serves("within the check interval", p1)
	clk.Advance(5 * time.Second)
	serves("after a renewal", p2)
	if s := logs.String(); !strings.Contains(s, "TLS certificate reloaded") {
		t.Errorf("no reload logged:\n%s", s)
	}

	// A renewal that writes the certificate first: the half-renewed pair
	// does not match, the old one stays; the error is logged once.
	logs.Reset()
	os.WriteFile(certFile, p3.certPEM, 0o644)
	touch(certFile)
	for range 3 {
		clk.Advance(5 * time.Second)
		serves("half renewed", p2)
	}
	if s := logs.String(); strings.Count(s, "level=ERROR") != 1 || !strings.Contains(s, "does not match") || !strings.Contains(s, keyFile) {
		t.Errorf("half renewal log:\n%s", s)
	}
	os.WriteFile(keyFile, p3.keyPEM, 0o600)
	touch(keyFile)
	clk.Advance(5 * time.Second)
	serves("renewal completed", p3)

	// A file that disappears keeps the old certificate too.
	logs.Reset()
	os.Rename(keyFile, keyFile+".old")
	clk.Advance(5 * time.Second)
	serves("key removed", p3)
	if s := logs.String(); !strings.Contains(s, "level=ERROR") || !strings.Contains(s, keyFile) {
		t.Errorf("removed key log:\n%s", s)
	}
	// Garbage in the certificate file: the error names it.
	logs.Reset()
	os.Rename(keyFile+".old", keyFile)
	os.WriteFile(certFile, []byte("garbage"), 0o644)
	touch(certFile)
	clk.Advance(5 * time.Second)
	serves("garbage certificate", p3)
	if s := logs.String(); !strings.Contains(s, "level=ERROR") || !strings.Contains(s, certFile) || !strings.Contains(s, "no PEM CERTIFICATE") {
		t.Errorf("garbage log:\n%s", s)
	}
	// Back to the first pair, same size as before is no obstacle: the
	// modification time differs.
	p1.write(t, certFile, keyFile)
	touch(certFile, keyFile)
	clk.Advance(5 * time.Second)
	serves("back to the first pair", p1)
}

// A pair replaced by renames, with the same sizes and modification times,
// is still noticed: the files are other files.
func TestReloadRenamedSameStamp(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	p1 := newPair(t, "ec", inAYear, host)
	var p2 pair
	for i := 0; ; i++ {
		if p2 = newPair(t, "ec", inAYear, host); len(p2.certPEM) == len(p1.certPEM) && len(p2.keyPEM) == len(p1.keyPEM) {
			break
		}
		if i == 50 {
			t.Fatal("no pair of the same size")
		}
	}
	mt := time.Now().Add(-time.Hour).Truncate(time.Second)
	p1.write(t, certFile, keyFile)
	p2.write(t, certFile+".new", keyFile+".new")
	for _, f := range []string{certFile, keyFile, certFile + ".new", keyFile + ".new"} {
		os.Chtimes(f, mt, mt)
	}
	clk := &fakeClock{now: time.Now()}
	cfg, err := load(certFile, keyFile, "", host, slog.New(slog.DiscardHandler), time.Second, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	client := trusting(host, p1.cert, p2.cert)
	if got, err := handshake(t, cfg, client); err != nil || !got.Equal(p1.cert) {
		t.Fatalf("initial: %v", err)
	}
	os.Rename(certFile+".new", certFile)
	os.Rename(keyFile+".new", keyFile)
	clk.Advance(time.Second)
	if got, err := handshake(t, cfg, client); err != nil || !got.Equal(p2.cert) {
		t.Fatalf("after the renames: %v, new certificate %v", err, err == nil && got.Equal(p2.cert))
	}
}

// Concurrent handshakes while the files change, for the race detector.
func TestReloadConcurrent(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pairs := []pair{newPair(t, "ec", inAYear, host), newPair(t, "ec", inAYear, host)}
	pairs[0].write(t, certFile, keyFile)
	cfg, err := load(certFile, keyFile, "", host, slog.New(slog.DiscardHandler), 0, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	client := trusting(host, pairs[0].cert, pairs[1].cert)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				if _, err := handshake(t, cfg, client); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for i := range 10 {
		p := pairs[i%2]
		p.write(t, certFile, keyFile)
		mt := time.Now().Add(time.Duration(i) * time.Second)
		os.Chtimes(certFile, mt, mt)
		os.Chtimes(keyFile, mt, mt)
	}
	wg.Wait()
	// Settled on the last pair written.
	got, err := handshake(t, cfg, client)
	if err != nil || !got.Equal(pairs[1].cert) {
		t.Errorf("after the changes: %v", err)
	}
}
