package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/berth-mirror/berth/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gatedSource serves data, pausing after gateAt bytes until release is closed.
type gatedSource struct {
	data    []byte
	gateAt  int
	release chan struct{}
	opens   atomic.Int32
	offsets []int64
	mu      sync.Mutex
	// failAt, if > 0, makes the first transfer fail after that many bytes.
	failAt  int
	corrupt bool
}

func (s *gatedSource) Open(ctx context.Context, _ Request, offset int64) (io.ReadCloser, Meta, error) {
	n := s.opens.Add(1)
	s.mu.Lock()
	s.offsets = append(s.offsets, offset)
	s.mu.Unlock()
	data := s.data
	if s.corrupt {
		data = bytes.Clone(data)
		data[len(data)-1] ^= 0xff
	}
	r := &gatedReader{src: s, data: data[offset:], pos: offset, ctx: ctx, fail: n == 1 && s.failAt > 0}
	return io.NopCloser(r), Meta{Size: int64(len(s.data)), MediaType: "application/x-test"}, nil
}

type gatedReader struct {
	src  *gatedSource
	data []byte
	pos  int64
	ctx  context.Context
	fail bool
}

func (r *gatedReader) Read(p []byte) (int, error) {
	if r.src.release != nil && r.pos >= int64(r.src.gateAt) {
		select {
		case <-r.src.release:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if r.fail && r.pos >= int64(r.src.failAt) {
		return 0, errors.New("connection reset")
	}
	n := min(len(p), len(r.data), 1000)
	if r.src.release != nil && r.pos < int64(r.src.gateAt) {
		n = min(n, r.src.gateAt-int(r.pos))
	}
	if r.fail {
		n = min(n, r.src.failAt-int(r.pos))
	}
	copy(p, r.data[:n])
	r.data = r.data[n:]
	r.pos += int64(n)
	return n, nil
}

// newCoalescer returns a Coalescer on a fresh store. Its cleanup shuts the
// Coalescer down with a bound, so a test that fails before releasing a
// gate fails fast instead of waiting out the fill timeout.
func newCoalescer(t *testing.T, opts Options) (*Coalescer, *store.Store) {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := New(st, opts)
	t.Cleanup(func() {
		// A test that needs its fills to end waits for them; here they are
		// cancelled soon (gates may still be shut: they open after this).
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		done := make(chan struct{})
		go func() {
			_ = c.Shutdown(ctx)
			close(done)
		}()
		select {
		case <-done:
			st.Close()
		case <-time.After(15 * time.Second):
			t.Error("fills still running 10s after their cancellation")
		}
	})
	return c, st
}

// gate holds a source until opened; a test's cleanup opens it, so a failed
// assertion before the test opens it cannot hang the package.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{ch: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

func data(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func TestCoalescesAndStreamsBeforeEnd(t *testing.T) {
	blob := data(50_000)
	g := newGate(t)
	src := &gatedSource{data: blob, gateAt: 20_000, release: g.ch}
	c, st := newCoalescer(t, Options{})
	req := Request{Digest: digest.FromBytes(blob), Registry: "r", Repository: "x"}

	const readers = 8
	var rs []*Reader
	for i := range readers {
		r, joined, err := c.Get(context.Background(), req, src)
		if err != nil || r == nil {
			t.Fatal(err)
		}
		if joined != (i > 0) {
			t.Errorf("reader %d joined=%v", i, joined)
		}
		rs = append(rs, r)
	}
	// Every reader gets the bytes that landed while the source is paused.
	for i, r := range rs {
		buf := make([]byte, 20_000)
		if _, err := io.ReadFull(r, buf[:19_000]); err != nil {
			t.Fatalf("reader %d before the end: %v", i, err)
		}
		if !bytes.Equal(buf[:19_000], blob[:19_000]) {
			t.Fatalf("reader %d: wrong bytes", i)
		}
	}
	g.open()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			rest, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(rest, blob[19_000:]) {
				t.Errorf("rest: %d bytes, %v", len(rest), err)
			}
		}()
	}
	wg.Wait()
	if n := src.opens.Load(); n != 1 {
		t.Errorf("source opened %d times, want 1", n)
	}
	c.Wait()
	if _, err := st.Stat(req.Digest); err != nil {
		t.Errorf("not committed: %v", err)
	}
	// Once committed, Get says so instead of starting another fill.
	r, _, err := c.Get(context.Background(), req, src)
	if err != nil || r != nil {
		t.Errorf("Get after commit = %v, %v; want nil, nil", r, err)
	}
}

func TestLastByteHeldUntilVerified(t *testing.T) {
	blob := data(10_000)
	g := newGate(t)
	src := &gatedSource{data: blob, gateAt: len(blob), release: g.ch}
	c, _ := newCoalescer(t, Options{})
	r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(blob)}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, len(blob))
	n, err := io.ReadAtLeast(r, buf, len(blob)-1)
	if err != nil || n != len(blob)-1 {
		t.Fatalf("read %d, %v", n, err)
	}
	got := make(chan int, 1)
	go func() { m, _ := r.Read(buf); got <- m }()
	select {
	case <-got:
		t.Fatal("last byte released before the fill ended")
	case <-time.After(50 * time.Millisecond):
	}
	g.open()
	if m := <-got; m != 1 {
		t.Fatalf("last read %d bytes", m)
	}
}

func TestCorruptBlobNeverCompletes(t *testing.T) {
	blob := data(30_000)
	src := &gatedSource{data: blob, corrupt: true}
	c, st := newCoalescer(t, Options{})
	dg := digest.FromBytes(blob)
	var wg sync.WaitGroup
	for range 4 {
		r, _, err := c.Get(context.Background(), Request{Digest: dg}, src)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			got, err := io.ReadAll(r)
			if !errors.Is(err, ErrVerify) {
				t.Errorf("err = %v, want ErrVerify", err)
			}
			if len(got) >= len(blob) {
				t.Errorf("reader received the whole corrupt body")
			}
		}()
	}
	wg.Wait()
	c.Wait()
	if _, err := st.Stat(dg); !store.IsNotFound(err) {
		t.Errorf("corrupt blob stored: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(st.Dir(), "tmp")); len(left) != 0 {
		t.Errorf("temporary files left: %d", len(left))
	}
}

func TestFillOutlivesClient(t *testing.T) {
	blob := data(40_000)
	g := newGate(t)
	src := &gatedSource{data: blob, gateAt: 1000, release: g.ch}
	c, st := newCoalescer(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	r, _, err := c.Get(ctx, Request{Digest: digest.FromBytes(blob)}, src)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(r); !errors.Is(err, context.Canceled) {
		t.Errorf("reader err = %v, want canceled", err)
	}
	r.Close()
	g.open()
	c.Wait()
	if _, err := st.Stat(digest.FromBytes(blob)); err != nil {
		t.Errorf("fill did not complete after the client left: %v", err)
	}
}

func TestResumeAfterInterruption(t *testing.T) {
	blob := data(60_000)
	src := &gatedSource{data: blob, failAt: 25_000}
	c, _ := newCoalescer(t, Options{Resumes: 2})
	r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(blob)}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	if src.offsets[1] != 25_000 {
		t.Errorf("resumed at %v, want 25000", src.offsets)
	}
}

func TestSourceErrorReachesEveryReader(t *testing.T) {
	boom := errors.New("upstream said no")
	src := SourceFunc(func(context.Context, Request, int64) (io.ReadCloser, Meta, error) { return nil, Meta{}, boom })
	c, _ := newCoalescer(t, Options{})
	r, _, err := c.Get(context.Background(), Request{Digest: digest.FromString("x")}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Meta(); !errors.Is(err, boom) {
		t.Errorf("Meta err = %v", err)
	}
	c.Wait()
	if c.InFlight() != 0 {
		t.Error("failed fill still in flight")
	}
}

func TestRangeLimit(t *testing.T) {
	blob := data(5000)
	c, _ := newCoalescer(t, Options{})
	r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(blob)}, &gatedSource{data: blob})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Limit(100, 200)
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, blob[100:200]) {
		t.Fatalf("range read %d bytes, %v", len(got), err)
	}
}

func TestNextBatchesUntilEnough(t *testing.T) {
	blob := data(30_000)
	g := newGate(t)
	src := &gatedSource{data: blob, gateAt: 10_000, release: g.ch}
	c, _ := newCoalescer(t, Options{})
	r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(blob)}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make(chan int64, 1)
	go func() { n, _ := r.next(20_000); got <- n }()
	select {
	case n := <-got:
		t.Fatalf("next returned %d before enough bytes landed", n)
	case <-time.After(50 * time.Millisecond):
	}
	g.open()
	if n := <-got; n < 20_000 {
		t.Fatalf("next = %d, want >= 20000", n)
	}
	c.Wait()
	// At the end it returns what is left, however little.
	r.off = 29_990
	if n, err := r.next(20_000); err != nil || n != 10 {
		t.Errorf("tail next = %d, %v; want 10", n, err)
	}
}
