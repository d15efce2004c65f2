package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/bufchain"
)

// fakeConn is a net.Conn whose reads come from in, split into the given
// chunk sizes (cycled; none means all at once), and whose writes are kept.
type fakeConn struct {
	in     []byte
	chunks []int
	k      int
	out    bytes.Buffer
	mu     sync.Mutex
}

func (c *fakeConn) Read(p []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := len(c.in)
	if len(c.chunks) > 0 {
		n = max(1, c.chunks[c.k%len(c.chunks)])
		c.k++
	}
	n = min(n, len(p), len(c.in))
	copy(p, c.in[:n])
	c.in = c.in[n:]
	return n, nil
}

func (c *fakeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *fakeConn) Close() error                     { return nil }
func (c *fakeConn) LocalAddr() net.Addr              { return &net.UnixAddr{Name: "fake", Net: "unix"} }
func (c *fakeConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Name: "fake", Net: "unix"} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

// testMux has methods for framing tests: echo returns its params, panic
// panics, fail returns a plain error, add sums {a,b}.
func testMux() *Mux {
	m := NewMux(nil)
	m.Handle("echo", func(_ context.Context, p json.RawMessage) (any, error) {
		if p == nil {
			return nil, nil
		}
		return p, nil
	})
	m.Handle("panic", func(context.Context, json.RawMessage) (any, error) { panic("boom") })
	m.Handle("fail", func(context.Context, json.RawMessage) (any, error) { return nil, errors.New("it failed") })
	Handle(m, "add", func(_ context.Context, p struct{ A, B int }) (int, error) { return p.A + p.B, nil })
	return m
}

// converse runs one connection over input read in chunks and returns the
// response lines and the pool, to check that every block came back.
func converse(t testing.TB, input string, chunks []int, opts Options) []string {
	t.Helper()
	if opts.Pool == nil {
		opts.Pool = bufchain.NewPool(64) // small blocks: messages span many
	}
	s := newServer(opts, testMux())
	defer s.cancel()
	c := &fakeConn{in: []byte(input), chunks: chunks}
	s.newConn(c).serve(s.ctx)
	if n := opts.Pool.Outstanding(); n != 0 {
		t.Fatalf("%d pool blocks still held after the connection ended", n)
	}
	out := c.out.String()
	if out == "" {
		return nil
	}
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("output does not end with a newline: %q", out)
	}
	return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
}
