package admin

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shortDir returns a temporary directory short enough for socket paths.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func startTest(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Socket == "" {
		opts.Socket = filepath.Join(shortDir(t), "run", "admin.sock")
	}
	s, err := Start(opts, testMux())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestSocketFile(t *testing.T) {
	s := startTest(t, Options{})
	fi, err := os.Lstat(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(s.Addr()))
	if err != nil || di.Mode().Perm() != 0o750 {
		t.Errorf("socket directory mode %v (%v), want 0750", di.Mode(), err)
	}
	c, err := Dial(context.Background(), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var sum int
	if err := c.Call(context.Background(), "add", map[string]int{"a": 2, "b": 3}, &sum); err != nil || sum != 5 {
		t.Errorf("add = %d, %v", sum, err)
	}
	err = c.Call(context.Background(), "nope", nil, nil)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeMethodNotFound {
		t.Errorf("unknown method: %v", err)
	}
	_ = c.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.Addr()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(shortDir(t), "admin.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = ln.Close() // the file stays, nobody listens: stale
	s := startTest(t, Options{Socket: path})
	c, err := Dial(context.Background(), s.Addr())
	if err != nil {
		t.Fatalf("after replacing the stale socket: %v", err)
	}
	_ = c.Close()
}

func TestLiveSocketRefused(t *testing.T) {
	s := startTest(t, Options{})
	_, err := Start(Options{Socket: s.Addr()}, testMux())
	if err == nil || !strings.Contains(err.Error(), "admin socket "+s.Addr()+" is in use by another process") {
		t.Fatalf("second Start: %v", err)
	}
	// The first server is untouched.
	c, err := Dial(context.Background(), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
}

func TestNotASocketRefused(t *testing.T) {
	path := filepath.Join(shortDir(t), "admin.sock")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(Options{Socket: path}, testMux()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Start over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Error("the regular file was touched")
	}
}

func TestConnectionCap(t *testing.T) {
	s := startTest(t, Options{MaxConns: 1})
	first, err := Dial(context.Background(), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = first.Close() }()
	if err := first.Call(context.Background(), "add", nil, nil); err != nil {
		t.Fatal(err) // the first connection holds the only slot now
	}
	c, err := net.Dial("unix", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, `"code":-32000`) || !strings.Contains(line, "too many admin connections (limit 1)") {
		t.Fatalf("over the cap: %q, %v", line, err)
	}
	if err := first.Call(context.Background(), "add", nil, nil); err != nil {
		t.Errorf("first connection after the refusal: %v", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	s := startTest(t, Options{IdleTimeout: 50 * time.Millisecond})
	c, err := net.Dial("unix", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle connection not closed by the server: %v", err)
	}
}

func TestCloseEndsConnections(t *testing.T) {
	s := startTest(t, Options{})
	c, err := net.Dial("unix", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(`{"jsonrpc":"2.0","id":1,`)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs with a connection mid-request")
	}
}
