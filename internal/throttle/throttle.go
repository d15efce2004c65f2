// Package throttle caps the bytes per second this node uploads to its
// cluster peers (cluster.upload_rate). Operators ask for it to keep a node's
// NIC for its workloads while it serves a hot blob's pieces to the cluster;
// the benchmarks use it to stand in for per-node links on loopback.
//
// The cap is one token bucket (golang.org/x/time/rate) shared by every peer
// response of the node, changed live on reload. Paced responses are sent in
// chunks of at most Chunk bytes, each by sendfile when the response takes a
// file (io.ReaderFrom), so pacing costs no copy through user space.
package throttle

import (
	"context"
	"io"
	"sync/atomic"

	"golang.org/x/time/rate"
)

// Chunk is the most one paced write sends: small enough that the pacing is
// smooth at a few MB/s, large enough that a sendfile call carries a lot.
const Chunk = 256 << 10

// Limiter is a live-adjustable byte rate. The zero value and nil are
// unlimited. Safe for concurrent use.
type Limiter struct {
	on atomic.Bool
	l  *rate.Limiter
}

// New returns a Limiter at bytesPerSec (0: unlimited).
func New(bytesPerSec int64) *Limiter {
	l := &Limiter{l: rate.NewLimiter(rate.Inf, Chunk)}
	l.Set(bytesPerSec)
	return l
}

// Set changes the rate (0: unlimited). The burst is one chunk, or a tenth
// of a second's worth at high rates, so the cap holds over short windows.
func (l *Limiter) Set(bytesPerSec int64) {
	if bytesPerSec <= 0 {
		l.on.Store(false)
		l.l.SetLimit(rate.Inf)
		return
	}
	l.l.SetBurst(max(Chunk, int(bytesPerSec/10)))
	l.l.SetLimit(rate.Limit(bytesPerSec))
	l.on.Store(true)
}

// Rate returns the rate in force (0: unlimited).
func (l *Limiter) Rate() int64 {
	if l == nil || !l.on.Load() {
		return 0
	}
	return int64(l.l.Limit())
}

// wait takes n bytes' tokens (n <= Chunk).
func (l *Limiter) wait(ctx context.Context, n int) error {
	if l == nil || !l.on.Load() {
		return nil
	}
	return l.l.WaitN(ctx, n)
}

// Writer paces w: writes and ReadFrom go out in chunks, each after its
// tokens. With no cap in force it passes straight through (one ReadFrom,
// one sendfile). ctx (the request's) ends a wait when the peer goes away.
// before, if set, is called before each chunk with its size (a write
// deadline per chunk).
func (l *Limiter) Writer(ctx context.Context, w io.Writer, before func(n int)) io.Writer {
	if l == nil {
		return w
	}
	return &writer{l: l, ctx: ctx, w: w, before: before}
}

type writer struct {
	l      *Limiter
	ctx    context.Context
	w      io.Writer
	before func(n int)
	lr     io.LimitedReader // reused: no allocation per chunk
}

func (w *writer) chunk(n int) error {
	if err := w.l.wait(w.ctx, n); err != nil {
		return err
	}
	if w.before != nil {
		w.before(n)
	}
	return nil
}

func (w *writer) Write(p []byte) (int, error) {
	var sent int
	for len(p) > 0 {
		n := min(len(p), Chunk)
		if err := w.chunk(n); err != nil {
			return sent, err
		}
		m, err := w.w.Write(p[:n])
		sent += m
		if err != nil {
			return sent, err
		}
		p = p[n:]
	}
	return sent, nil
}

// ReadFrom sends r through w's ReadFrom (sendfile for a file) chunk by
// chunk when paced.
func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := w.w.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{w}, r) // Write paces
	}
	if !w.l.on.Load() {
		return rf.ReadFrom(r)
	}
	// Keep an outer limit (the caller's LimitedReader) in force.
	outer, limited := r.(*io.LimitedReader)
	var sent int64
	for {
		n := int64(Chunk)
		if limited {
			if outer.N <= 0 {
				return sent, nil
			}
			n = min(n, outer.N)
		}
		if err := w.chunk(int(n)); err != nil {
			return sent, err
		}
		w.lr.R, w.lr.N = r, n
		if limited {
			w.lr.R = outer.R
		}
		m, err := rf.ReadFrom(&w.lr)
		sent += m
		if limited {
			outer.N -= m
		}
		if err != nil {
			return sent, err
		}
		if m < n {
			return sent, nil // the source ended
		}
	}
}
