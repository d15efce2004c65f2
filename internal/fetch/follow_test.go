package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// plainWriter is an io.Writer and nothing more: WriteTo copies to it.
type plainWriter struct{ buf bytes.Buffer }

func (w *plainWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }

// destination is where WriteTo sends: a file (an io.ReaderFrom, as
// net/http's response is, so the sendfile path) or a plain writer.
type destination struct {
	name  string
	open  func(t *testing.T) io.Writer
	bytes func(w io.Writer) []byte
}

var destinations = []destination{
	{"sendfile", func(t *testing.T) io.Writer {
		f, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}, func(w io.Writer) []byte { b, _ := os.ReadFile(w.(*os.File).Name()); return b }},
	{"copy", func(*testing.T) io.Writer { return &plainWriter{} }, func(w io.Writer) []byte { return w.(*plainWriter).buf.Bytes() }},
}

// waitWritten waits until the fill behind r has written n bytes.
func waitWritten(t *testing.T, r *Reader, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.f.mu.Lock()
		w := r.f.written
		r.f.mu.Unlock()
		if w >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fill wrote %d bytes, waiting for %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWriteTo(t *testing.T) {
	blob := data(3<<20 + 12345)
	dg := digest.FromBytes(blob)
	for _, d := range destinations {
		for _, rg := range []struct {
			name     string
			off, end int64
		}{{"whole", 0, -1}, {"range", 1000, 2<<20 + 7}, {"tail", int64(len(blob)) - 10, int64(len(blob))}} {
			t.Run(d.name+"/"+rg.name, func(t *testing.T) {
				g := newGate(t)
				c, st := newCoalescer(t, Options{})
				r, _, err := c.Get(context.Background(), Request{Digest: dg}, &gatedSource{data: blob, gateAt: 1 << 20, release: g.ch})
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				r.Limit(rg.off, rg.end)
				w := d.open(t)
				done := make(chan error, 1)
				var n int64
				go func() { n, err = r.WriteTo(w); done <- err }()
				waitWritten(t, r, 1<<20)
				g.open()
				within(t, "WriteTo", func() { err = <-done })
				want := blob[rg.off:]
				if rg.end >= 0 {
					want = blob[rg.off:rg.end]
				}
				if err != nil || n != int64(len(want)) || !bytes.Equal(d.bytes(w), want) {
					t.Errorf("WriteTo = %d, %v; wrote %d bytes, want %d", n, err, len(d.bytes(w)), len(want))
				}
				c.Wait()
				if _, err := st.Stat(dg); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// TestWriteToHoldsLastByte: with every byte of the blob landed but the
// fill not yet verified, a follower whose range ends at the blob's end
// sends nothing that completes it. The reader's context is cancelled
// first, so WriteTo returns with what it may send instead of waiting.
func TestWriteToHoldsLastByte(t *testing.T) {
	blob := data(50_000)
	for _, d := range destinations {
		t.Run(d.name, func(t *testing.T) {
			g := newGate(t)
			c, _ := newCoalescer(t, Options{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r, _, err := c.Get(ctx, Request{Digest: digest.FromBytes(blob)}, &gatedSource{data: blob, gateAt: len(blob), release: g.ch})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			r.Limit(int64(len(blob))-100, int64(len(blob)))
			waitWritten(t, r, int64(len(blob)))
			cancel()
			w := d.open(t)
			n, err := r.WriteTo(w)
			if !errors.Is(err, context.Canceled) || n >= 100 || len(d.bytes(w)) >= 100 {
				t.Errorf("before verification WriteTo = %d, %v; sent %d of the last 100 bytes", n, err, len(d.bytes(w)))
			}
		})
	}
}

func TestWriteToCorrupt(t *testing.T) {
	blob := data(3 << 20)
	for _, d := range destinations {
		t.Run(d.name, func(t *testing.T) {
			c, st := newCoalescer(t, Options{})
			dg := digest.FromBytes(blob)
			r, _, err := c.Get(context.Background(), Request{Digest: dg}, &gatedSource{data: blob, corrupt: true})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			w := d.open(t)
			n, err := r.WriteTo(w)
			if !errors.Is(err, ErrVerify) || n >= int64(len(blob)) {
				t.Errorf("WriteTo = %d, %v; want ErrVerify short of %d", n, err, len(blob))
			}
			c.Wait()
			assertNothingKept(t, c, st, dg)
		})
	}
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n += len(p); w.n > 100_000 {
		return 0, errors.New("broken pipe")
	}
	return len(p), nil
}

// TestWriteToClientGone: a failed write is the client's going away, not the
// blob's failure; the fill goes on and commits.
func TestWriteToClientGone(t *testing.T) {
	blob := data(1 << 20)
	dg := digest.FromBytes(blob)
	c, st := newCoalescer(t, Options{})
	r, _, err := c.Get(context.Background(), Request{Digest: dg}, &gatedSource{data: blob})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteTo(&failingWriter{}); !errors.Is(err, ErrClientGone) {
		t.Errorf("WriteTo = %v, want ErrClientGone", err)
	}
	r.Close()
	c.Wait()
	if _, err := st.Stat(dg); err != nil {
		t.Errorf("fill did not commit after its client left: %v", err)
	}
}

// TestWriteToAfterCommit: once the fill is committed, the rest goes out in
// one write (from the committed file), with its deadline sized to it.
func TestWriteToAfterCommit(t *testing.T) {
	blob := data(5<<20 + 3)
	for _, d := range destinations {
		t.Run(d.name, func(t *testing.T) {
			c, _ := newCoalescer(t, Options{})
			r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(blob)}, &gatedSource{data: blob})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			c.Wait()
			var sizes []int64
			r.OnWrite(func(n int64) { sizes = append(sizes, n) })
			w := d.open(t)
			if n, err := r.WriteTo(w); err != nil || !bytes.Equal(d.bytes(w), blob) {
				t.Fatalf("WriteTo = %d, %v", n, err)
			}
			if len(sizes) != 1 || sizes[0] != int64(len(blob)) {
				t.Errorf("writes announced %v, want one of %d", sizes, len(blob))
			}
		})
	}
}
