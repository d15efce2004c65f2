package bufchain

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// liar claims to have read more than it was given.
type liar struct{}

func (liar) Read(p []byte) (int, error) { return len(p) + 1, nil }

func TestFillRejectsBadCount(t *testing.T) {
	pool := NewPool(testBlock)
	c := New(pool, 0)
	if n, err := c.Fill(liar{}); n != 0 || !errors.Is(err, errBadRead) {
		t.Errorf("Fill = %d, %v; want 0, errBadRead", n, err)
	}
	if c.Len() != 0 || pool.Outstanding() != 0 {
		t.Errorf("Len = %d, Outstanding = %d; want 0, 0", c.Len(), pool.Outstanding())
	}
}

// shortWriter accepts at most one byte per Write.
type shortWriter struct{ bytes.Buffer }

func (w *shortWriter) Write(p []byte) (int, error) { return w.Buffer.Write(p[:min(len(p), 1)]) }

func TestWriteToErrors(t *testing.T) {
	c := New(NewPool(testBlock), 0)
	if err := fillAll(c, bytes.NewReader(patternBytes(2*testBlock))); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if n, err := c.Reader().WriteTo(errWriter{boom}); n != 0 || !errors.Is(err, boom) {
		t.Errorf("WriteTo failing writer = %d, %v; want 0, boom", n, err)
	}
	if n, err := c.Reader().WriteTo(&shortWriter{}); n != 1 || !errors.Is(err, io.ErrShortWrite) {
		t.Errorf("WriteTo short writer = %d, %v; want 1, io.ErrShortWrite", n, err)
	}
	r := c.Reader()
	c.Discard(1)
	if _, err := r.WriteTo(io.Discard); !errors.Is(err, ErrDiscarded) {
		t.Errorf("stale WriteTo = %v, want ErrDiscarded", err)
	}
	r = c.Reader()
	if _, err := r.WriteTo(io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("ReadByte at the end = %v, want io.EOF", err)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }
