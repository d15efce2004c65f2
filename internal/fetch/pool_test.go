package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
)

// peerWaiter stands for a cluster source that asks a busy peer: it takes a
// turn from the peer pool and waits until released.
type peerWaiter struct {
	pool    *Pool
	data    []byte
	release chan struct{}
	opened  chan struct{}
}

func (peerWaiter) TakesTurns() {}

func (s peerWaiter) Open(ctx context.Context, req Request, offset int64) (io.ReadCloser, Meta, error) {
	return s.pool.Limit(SourceFunc(func(ctx context.Context, _ Request, _ int64) (io.ReadCloser, Meta, error) {
		s.opened <- struct{}{}
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, Meta{}, ctx.Err()
		}
		return io.NopCloser(bytes.NewReader(s.data)), Meta{Size: int64(len(s.data))}, nil
	})).Open(ctx, req, offset)
}

// TestPeerWaitsHoldNoUpstreamTurn: fills waiting on a peer (every upstream
// turn's worth of them) leave the upstream turns free, so this node's own
// upstream fills (a peer's request it owns) still run. With one pool for
// both, the upstream fill below would wait for the peer fills: two busy
// nodes owning each other's digests stalled each other.
func TestPeerWaitsHoldNoUpstreamTurn(t *testing.T) {
	c, _ := newCoalescer(t, Options{MaxFetches: 2})
	release := make(chan struct{})
	opened := make(chan struct{}, 4)
	var readers []*Reader
	defer func() {
		for _, r := range readers {
			r.Close()
		}
	}()
	waiting := make([][]byte, 2)
	for i := range waiting {
		waiting[i] = data(3000 + i)
		r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(waiting[i])},
			peerWaiter{pool: c.Peers(), data: waiting[i], release: release, opened: opened})
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, r)
		within(t, "the peer fill to ask its peer", func() { <-opened })
	}
	if n := c.Upstream().InUse(); n != 0 {
		t.Errorf("fills waiting on peers hold %d upstream turns, want 0", n)
	}
	own := data(5000)
	r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(own)}, &gatedSource{data: own})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	within(t, "an upstream fill while peer fills wait", func() {
		if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, own) {
			t.Errorf("upstream fill: %d bytes, %v", len(got), err)
		}
	})
	close(release)
	for i, rd := range readers {
		if got, err := io.ReadAll(rd); err != nil || !bytes.Equal(got, waiting[i]) {
			t.Errorf("peer fill %d: %d bytes, %v", i, len(got), err)
		}
	}
	c.Wait()
	if u, p := c.Upstream().InUse(), c.Peers().InUse(); u != 0 || p != 0 {
		t.Errorf("turns still taken after every fill ended: upstream %d, peers %d", u, p)
	}
}

// TestPlainSourceTakesUpstreamTurn: a Source that takes no turns itself
// runs under an upstream turn, so max_fetches still bounds it.
func TestPlainSourceTakesUpstreamTurn(t *testing.T) {
	g := newGate(t)
	c, _ := newCoalescer(t, Options{MaxFetches: 1})
	blob := data(20_000)
	r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(blob)}, &gatedSource{data: blob, gateAt: 100, release: g.ch})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Meta(); err != nil {
		t.Fatal(err)
	}
	if n := c.Upstream().InUse(); n != 1 {
		t.Errorf("upstream turns in use %d, want 1", n)
	}
	g.open()
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
	c.Wait()
	if n := c.Upstream().InUse(); n != 0 {
		t.Errorf("turn not given back: %d in use", n)
	}
}

// TestGetHoldsNoLockAcrossDiskIO: while one Get is between its store lookup
// and its temporary file (disk I/O), another request joins a running fill.
// Holding the node-wide lock there made every miss and join on the node
// wait behind the disk.
func TestGetHoldsNoLockAcrossDiskIO(t *testing.T) {
	c, st := newCoalescer(t, Options{})
	running := data(8000)
	g := newGate(t)
	r1, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(running)}, &gatedSource{data: running, gateAt: 10, release: g.ch})
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()

	slow := data(9000)
	inIO, resume := make(chan struct{}), make(chan struct{})
	c.beforeTemp = func(req Request) {
		if req.Digest == digest.FromBytes(slow) {
			close(inIO)
			<-resume
		}
	}
	done := make(chan error, 1)
	go func() {
		r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(slow)}, &gatedSource{data: slow})
		if err == nil {
			_, err = io.ReadAll(r)
			r.Close()
		}
		done <- err
	}()
	<-inIO
	within(t, "a join while another Get does disk I/O", func() {
		r2, joined, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(running)}, &gatedSource{data: running})
		if err != nil || !joined {
			t.Errorf("join: %v, joined %v", err, joined)
			return
		}
		r2.Close()
	})
	close(resume)
	g.open()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r1); err != nil || !bytes.Equal(got, running) {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
	c.Wait()
	if n := tempFiles(t, st); n != 0 {
		t.Errorf("%d temporary files left", n)
	}
}

// TestConcurrentGetsOneFill: many Gets of one missing digest at once, each
// possibly creating a temporary file outside the lock, make one fill and
// leave no temporary file behind.
func TestConcurrentGetsOneFill(t *testing.T) {
	c, st := newCoalescer(t, Options{})
	blob := data(50_000)
	src := &gatedSource{data: blob}
	errs := make(chan error, 32)
	for range 32 {
		go func() {
			r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(blob)}, src)
			if err != nil {
				errs <- err
				return
			}
			if r == nil { // committed meanwhile
				errs <- nil
				return
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err == nil && !bytes.Equal(got, blob) {
				err = errors.New("wrong bytes")
			}
			errs <- err
		}()
	}
	for range 32 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	c.Wait()
	if n := src.opens.Load(); n != 1 {
		t.Errorf("source opened %d times, want 1", n)
	}
	if n := tempFiles(t, st); n != 0 {
		t.Errorf("%d temporary files left", n)
	}
}
