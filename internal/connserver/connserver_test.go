package connserver

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

var errClosed = errors.New("closed")

func TestServeAndClose(t *testing.T) {
	started := make(chan struct{}, 1)
	s := &Server{Closed: errClosed, Handle: func(c net.Conn) {
		started <- struct{}{}
		io.Copy(io.Discard, c) // until Close closes the connection
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("handler not started")
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not close the connection and return")
	}
	if err := <-done; !errors.Is(err, errClosed) {
		t.Errorf("Serve returned %v, want the Closed error", err)
	}
	if !s.IsClosed() {
		t.Error("IsClosed false after Close")
	}
	// Serve after Close returns at once and closes the listener.
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := s.Serve(l2); !errors.Is(err, errClosed) {
		t.Errorf("Serve after Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", l2.Addr().String(), time.Second); err == nil {
		t.Error("listener still open after Serve returned")
	}
}

func TestMaxConns(t *testing.T) {
	release := make(chan struct{})
	s := &Server{Closed: errClosed, MaxConns: 1, Handle: func(c net.Conn) {
		c.Write([]byte("hi\n"))
		<-release
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	defer s.Close()
	defer close(release)
	read := func() (string, error) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 3)
		n, err := io.ReadFull(c, b)
		return string(b[:n]), err
	}
	if got, err := read(); got != "hi\n" {
		t.Fatalf("first connection: %q, %v", got, err)
	}
	if got, err := read(); err == nil {
		t.Errorf("second connection over MaxConns was served: %q", got)
	}
}
