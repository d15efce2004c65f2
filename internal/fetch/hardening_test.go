package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// tempFiles counts the files in the store's temporary directory.
func tempFiles(t *testing.T, st *store.Store) int {
	t.Helper()
	left, err := os.ReadDir(filepath.Join(st.Dir(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return len(left)
}

// assertNothingKept checks that a failed fill left nothing: not in the
// store, no temporary file, no fill in flight.
func assertNothingKept(t *testing.T, c *Coalescer, st *store.Store, dg digest.Digest) {
	t.Helper()
	if _, err := st.Stat(dg); !store.IsNotFound(err) {
		t.Errorf("failed fill stored: %v", err)
	}
	if n := tempFiles(t, st); n != 0 {
		t.Errorf("temporary files left: %d", n)
	}
	if n := c.InFlight(); n != 0 {
		t.Errorf("fills in flight: %d", n)
	}
}

// within fails the test if fn does not return in a while: for calls that
// would hang if the property under test broke.
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

// sizedSource sends data but declares size; after the data it waits for
// its gate before EOF, so the fill has every byte but has not ended.
type sizedSource struct {
	data []byte
	size int64
	gate chan struct{}
}

func (s sizedSource) Open(ctx context.Context, _ Request, offset int64) (io.ReadCloser, Meta, error) {
	return io.NopCloser(io.MultiReader(bytes.NewReader(s.data[offset:]), gateReader{ctx, s.gate})), Meta{Size: s.size}, nil
}

type gateReader struct {
	ctx  context.Context
	gate chan struct{}
}

func (g gateReader) Read([]byte) (int, error) {
	select {
	case <-g.gate:
		return 0, io.EOF
	case <-g.ctx.Done():
		return 0, g.ctx.Err()
	}
}

// TestDeclaredSizeChecked: the digest of what arrived matches, but the
// source declared another size: the fill fails, nothing is cached, and no
// reader gets the whole body (nor the declared length). Bytes past the
// declared size fail the fill at once, before the source's EOF: a reader
// could otherwise receive a complete-looking declared length.
func TestDeclaredSizeChecked(t *testing.T) {
	blob := data(20_000)
	for _, tt := range []struct {
		name string
		size int64
		eof  bool // the source must reach EOF before the fill can tell
	}{
		{"sends fewer than declared", int64(len(blob)) + 1, true},
		{"sends more than declared", int64(len(blob)) - 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(t)
			if tt.eof {
				g.open()
			}
			c, st := newCoalescer(t, Options{})
			dg := digest.FromBytes(blob)
			r, _, err := c.Get(context.Background(), Request{Digest: dg}, sizedSource{blob, tt.size, g.ch})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var got []byte
			within(t, "reading the fill", func() { got, err = io.ReadAll(r) })
			if !errors.Is(err, ErrVerify) {
				t.Errorf("err = %v, want ErrVerify", err)
			}
			if int64(len(got)) >= min(tt.size, int64(len(blob))) {
				t.Errorf("reader received %d bytes", len(got))
			}
			c.Wait()
			assertNothingKept(t, c, st, dg)
		})
	}
}

// repoSource refuses every repository but allowed with refusal, pausing
// each Open until its gate opens.
type repoSource struct {
	data    []byte
	allowed string
	refusal error
	gate    chan struct{}
	opens   sync.Map // repository -> *atomic.Int32
}

func (s *repoSource) Open(ctx context.Context, req Request, offset int64) (io.ReadCloser, Meta, error) {
	n, _ := s.opens.LoadOrStore(req.Repository, new(atomic.Int32))
	n.(*atomic.Int32).Add(1)
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, Meta{}, ctx.Err()
	}
	if req.Repository != s.allowed {
		return nil, Meta{}, fmt.Errorf("through %s: %w", req.Repository, s.refusal)
	}
	return io.NopCloser(bytes.NewReader(s.data[offset:])), Meta{Size: int64(len(s.data))}, nil
}

func (s *repoSource) opened(repo string) int32 {
	n, ok := s.opens.Load(repo)
	if !ok {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

// TestRefusalNotInherited: a fill started through a repository that cannot
// see the blob must not answer for a client asking through one that can:
// the fill tries that one too. A refusal reaches only the clients of its
// repository; any other failure is the blob's and is shared.
func TestRefusalNotInherited(t *testing.T) {
	blob := data(30_000)
	dg := digest.FromBytes(blob)
	notFound := &upstream.StatusError{Upstream: "r", Status: http.StatusNotFound, Code: "BLOB_UNKNOWN"}
	for _, tt := range []struct {
		name      string
		allowed   string
		refusal   error
		wantBlob  bool   // both clients receive the blob
		wantErrB  string // else B's error names this repository
		wantOpens int32  // opens through B
	}{
		{"404 for A, B can see it", "b", notFound, true, "", 1},
		{"401 for A", "b", &upstream.StatusError{Status: http.StatusUnauthorized}, true, "", 1},
		{"403 for A", "b", &upstream.StatusError{Status: http.StatusForbidden}, true, "", 1},
		{"404 for both: each its own", "", notFound, false, "through b", 1},
		{"503 is the upstream's, not A's", "b", &upstream.StatusError{Status: http.StatusServiceUnavailable}, false, "through a", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(t)
			src := &repoSource{data: blob, allowed: tt.allowed, refusal: tt.refusal, gate: g.ch}
			c, st := newCoalescer(t, Options{})
			ra, joinedA, err := c.Get(context.Background(), Request{Digest: dg, Registry: "r", Repository: "a"}, src)
			if err != nil {
				t.Fatal(err)
			}
			defer ra.Close()
			rb, joinedB, err := c.Get(context.Background(), Request{Digest: dg, Registry: "r", Repository: "b"}, src)
			if err != nil {
				t.Fatal(err)
			}
			defer rb.Close()
			if joinedA || !joinedB {
				t.Fatalf("joined A=%v B=%v; want B to join A's fill", joinedA, joinedB)
			}
			g.open()
			gotA, errA := io.ReadAll(ra)
			gotB, errB := io.ReadAll(rb)
			if tt.wantBlob {
				if errA != nil || !bytes.Equal(gotA, blob) || errB != nil || !bytes.Equal(gotB, blob) {
					t.Errorf("A: %d bytes, %v; B: %d bytes, %v", len(gotA), errA, len(gotB), errB)
				}
			} else {
				if !errors.Is(errA, tt.refusal) || !strings.Contains(errA.Error(), "through a") {
					t.Errorf("A: %v, want A's %v", errA, tt.refusal)
				}
				if !errors.Is(errB, tt.refusal) || !strings.Contains(errB.Error(), tt.wantErrB) {
					t.Errorf("B: %v, want %v %s", errB, tt.refusal, tt.wantErrB)
				}
			}
			c.Wait()
			if n := src.opened("b"); n != tt.wantOpens {
				t.Errorf("source opened through B %d times, want %d", n, tt.wantOpens)
			}
			if _, err := st.Stat(dg); (err == nil) != tt.wantBlob {
				t.Errorf("stored: %v", err)
			}
		})
	}
}

// TestRefusedFillTakesNoNewRepository: a client asking through a new
// repository after the fill gave up gets a fill of its own, not the
// other repository's refusal.
func TestRefusedFillTakesNoNewRepository(t *testing.T) {
	blob := data(1000)
	dg := digest.FromBytes(blob)
	notFound := &upstream.StatusError{Status: http.StatusNotFound}
	g := newGate(t)
	g.open()
	src := &repoSource{data: blob, allowed: "b", refusal: notFound, gate: g.ch}
	c, _ := newCoalescer(t, Options{})
	ra, _, err := c.Get(context.Background(), Request{Digest: dg, Repository: "a"}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	if _, err := ra.Meta(); !errors.Is(err, notFound) {
		t.Fatalf("A: %v", err)
	}
	// A's fill has given up (it may still be in the map): B starts anew.
	rb, _, err := c.Get(context.Background(), Request{Digest: dg, Repository: "b"}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	if got, err := io.ReadAll(rb); err != nil || !bytes.Equal(got, blob) {
		t.Errorf("B: %d bytes, %v", len(got), err)
	}
}

// TestBoundedQueue: past MaxFetches running and MaxQueued waiting, Get
// refuses a new digest at once and allocates nothing; joining a fill and,
// once one ends, starting another still work.
func TestBoundedQueue(t *testing.T) {
	g := newGate(t)
	c, st := newCoalescer(t, Options{MaxFetches: 1, MaxQueued: 2})
	var readers []*Reader
	defer func() {
		for _, r := range readers {
			r.Close()
		}
	}()
	blobs := make([][]byte, 4)
	for i := range blobs {
		blobs[i] = data(5000 + i)
	}
	for _, b := range blobs[:3] {
		r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(b)}, &gatedSource{data: b, gateAt: 10, release: g.ch})
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, r)
	}
	goroutines, temps := runtime.NumGoroutine(), tempFiles(t, st)
	r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(blobs[3])}, &gatedSource{data: blobs[3]})
	if !errors.Is(err, ErrOverloaded) || r != nil {
		t.Fatalf("Get past the queue = %v, %v; want ErrOverloaded", r, err)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("a refused Get left %d goroutines", n-goroutines)
	}
	if n := tempFiles(t, st); n != temps || temps != 3 {
		t.Errorf("temporary files %d, then %d; want 3", temps, n)
	}
	if n := c.InFlight(); n != 3 {
		t.Errorf("in flight %d, want 3", n)
	}
	// Joining a fill is no new fill.
	rj, joined, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(blobs[0])}, &gatedSource{data: blobs[0]})
	if err != nil || !joined {
		t.Fatalf("joining a running fill: %v, joined %v", err, joined)
	}
	rj.Close()
	g.open()
	c.Wait()
	r, _, err = c.Get(context.Background(), Request{Digest: digest.FromBytes(blobs[3])}, &gatedSource{data: blobs[3]})
	if err != nil {
		t.Fatalf("Get after the queue drained: %v", err)
	}
	readers = append(readers, r)
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, blobs[3]) {
		t.Errorf("read %d bytes, %v", len(got), err)
	}
}

// closeGatedSource serves data whole, but its body's Close waits for a gate:
// the fill then has every byte and is about to verify and commit.
type closeGatedSource struct {
	data   []byte
	gate   chan struct{}
	closed chan struct{} // Close was called
}

func (s *closeGatedSource) Open(context.Context, Request, int64) (io.ReadCloser, Meta, error) {
	return &gatedCloser{Reader: bytes.NewReader(s.data), s: s}, Meta{Size: int64(len(s.data))}, nil
}

type gatedCloser struct {
	*bytes.Reader
	s *closeGatedSource
}

func (g *gatedCloser) Close() error {
	close(g.s.closed)
	<-g.s.gate
	return nil
}

func TestShutdown(t *testing.T) {
	t.Run("a fill that has all its bytes is committed", func(t *testing.T) {
		blob := data(40_000)
		dg := digest.FromBytes(blob)
		g := newGate(t)
		src := &closeGatedSource{data: blob, gate: g.ch, closed: make(chan struct{})}
		c, st := newCoalescer(t, Options{})
		r, _, err := c.Get(context.Background(), Request{Digest: dg}, src)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		<-src.closed
		// The shutdown's grace period is over before it starts: the fill is
		// cancelled, but what it has verified it still commits.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan error, 1)
		go func() { done <- c.Shutdown(ctx) }()
		g.open()
		within(t, "Shutdown", func() { err = <-done })
		t.Logf("Shutdown: %v", err)
		if _, _, err := c.Get(context.Background(), Request{Digest: digest.FromString("other")}, src); !errors.Is(err, ErrClosed) {
			t.Errorf("Get after Shutdown: %v, want ErrClosed", err)
		}
		if _, err := st.Stat(dg); err != nil {
			t.Fatalf("not committed after Shutdown: %v", err)
		}
		f, _, err := st.OpenBlob(dg)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if got, _ := io.ReadAll(f); !bytes.Equal(got, blob) {
			t.Error("stored content differs")
		}
		if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, blob) {
			t.Errorf("reader: %d bytes, %v", len(got), err)
		}
	})
	t.Run("a downloading fill is cancelled at the deadline and leaves nothing", func(t *testing.T) {
		blob := data(40_000)
		dg := digest.FromBytes(blob)
		g := newGate(t)
		c, st := newCoalescer(t, Options{MaxFetches: 1})
		r, _, err := c.Get(context.Background(), Request{Digest: dg}, &gatedSource{data: blob, gateAt: 5000, release: g.ch})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		buf := make([]byte, 4000)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		// A second fill waits for the only turn: shutdown drops it at once.
		queued, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(blob[1:])}, &gatedSource{data: blob[1:]})
		if err != nil {
			t.Fatal(err)
		}
		defer queued.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		within(t, "Shutdown", func() { err = c.Shutdown(ctx) })
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "cancelled") {
			t.Errorf("Shutdown = %v, want a cancellation at the deadline", err)
		}
		if _, err := io.ReadAll(r); err == nil {
			t.Error("reader of a cancelled fill saw no error")
		}
		if _, err := queued.Meta(); !errors.Is(err, ErrClosed) {
			t.Errorf("queued fill: %v, want ErrClosed", err)
		}
		assertNothingKept(t, c, st, dg)
	})
}

// TestSourcePanic: a panicking source ends its fill with an error for every
// reader and leaves nothing behind; the Coalescer goes on working.
func TestSourcePanic(t *testing.T) {
	blob := data(10_000)
	for _, tt := range []struct {
		name string
		src  Source
	}{
		{"in Open", SourceFunc(func(context.Context, Request, int64) (io.ReadCloser, Meta, error) {
			var c *upstream.Client // what a reload could once hand a fill
			_, _, err := c.GetBlob(context.Background(), "x", digest.FromBytes(blob), 0)
			return nil, Meta{}, err
		})},
		{"in Read", SourceFunc(func(context.Context, Request, int64) (io.ReadCloser, Meta, error) {
			return io.NopCloser(io.MultiReader(bytes.NewReader(blob[:5000]), panicReader{})), Meta{Size: int64(len(blob))}, nil
		})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, st := newCoalescer(t, Options{Resumes: 3})
			dg := digest.FromBytes(blob)
			var rs []*Reader
			for range 3 {
				r, _, err := c.Get(context.Background(), Request{Digest: dg}, tt.src)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				rs = append(rs, r)
			}
			for i, r := range rs {
				if _, err := io.ReadAll(r); !errors.Is(err, ErrPanic) {
					t.Errorf("reader %d: %v, want ErrPanic", i, err)
				}
			}
			c.Wait()
			assertNothingKept(t, c, st, dg)
			r, _, err := c.Get(context.Background(), Request{Digest: dg}, &gatedSource{data: blob})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, blob) {
				t.Errorf("after the panic: %d bytes, %v", len(got), err)
			}
		})
	}
}

type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("source bug") }
