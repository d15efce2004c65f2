// Package fetch downloads each missing blob once, however many clients ask
// for it at the same time. The download (a "fill") writes to a temporary file
// in the store's data directory; every client streams from that file as it
// grows, not after the end. The last byte is released only once the digest
// has been verified and the file committed, so a client never receives a
// complete but corrupt body: on a mismatch every reader gets an error and
// its connection is closed short of Content-Length.
//
// A fill runs detached from the request that started it, bounded by its own
// timeout, so the cache fills even if the first client goes away.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/store"
)

// Request names a blob and where it was asked for.
type Request struct {
	Digest digest.Digest
	// Registry and Repository say which upstream repository holds it.
	Registry, Repository string
	// Verified: the client asking proved, with its own credentials, that
	// it may read Repository (a private one). A peer owner serves private
	// content only to such requests (docs/private-images.md).
	Verified bool
	// UpstreamToken, if set, is a short-lived bearer token for pulling
	// Repository, from the registry's token service with the verified
	// client's credentials: a peer owner fetches with it (never with the
	// client's password). Secret: never logged.
	UpstreamToken string
}

// Meta is what a source says about the blob it is sending.
type Meta struct {
	// Size is the total blob size, or -1 when the source does not say.
	Size int64
	// MediaType is the Content-Type the source gave.
	MediaType string
}

// Source is where a blob comes from: the upstream registry is one; a peer
// node is another. Open returns the blob's bytes from offset on (offset > 0
// only to resume an interrupted transfer); the caller closes the body.
type Source interface {
	Open(ctx context.Context, req Request, offset int64) (io.ReadCloser, Meta, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, req Request, offset int64) (io.ReadCloser, Meta, error)

// Open calls f.
func (f SourceFunc) Open(ctx context.Context, req Request, offset int64) (io.ReadCloser, Meta, error) {
	return f(ctx, req, offset)
}

// ErrVerify means the fetched bytes did not match the digest.
var ErrVerify = errors.New("fetch: content does not match its digest")

// Observer receives fill events (metrics). Methods must be cheap and safe for
// concurrent use. The zero Options uses a no-op observer.
type Observer interface {
	FillStarted(req Request)
	// FillDone reports the bytes received from the source (resumes included).
	FillDone(req Request, bytes int64, d time.Duration, err error)
}

// Options tune a Coalescer. The zero value is usable.
type Options struct {
	// MaxFetches caps fills talking to a source at once (default 32).
	MaxFetches int
	// Timeout bounds one fill from start to commit (default 30m).
	Timeout time.Duration
	// Resumes is how many times an interrupted transfer is resumed from the
	// byte it reached (default 0).
	Resumes int
	// Logger receives fill events (default: discard).
	Logger *slog.Logger
	// Observer receives metrics events.
	Observer Observer
}

// Coalescer runs at most one fill per digest. It is safe for concurrent use.
type Coalescer struct {
	store *store.Store
	opts  Options
	sem   chan struct{}
	log   *slog.Logger

	mu       sync.Mutex
	inflight map[digest.Digest]*fill
	wg       sync.WaitGroup
}

// New returns a Coalescer that commits into st.
func New(st *store.Store, opts Options) *Coalescer {
	if opts.MaxFetches <= 0 {
		opts.MaxFetches = 32
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	return &Coalescer{
		store:    st,
		opts:     opts,
		sem:      make(chan struct{}, opts.MaxFetches),
		log:      opts.Logger,
		inflight: map[digest.Digest]*fill{},
	}
}

type nopObserver struct{}

func (nopObserver) FillStarted(Request)                           {}
func (nopObserver) FillDone(Request, int64, time.Duration, error) {}

// InFlight returns the number of fills running.
func (c *Coalescer) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inflight)
}

// Wait blocks until every fill has ended (for shutdown and tests).
func (c *Coalescer) Wait() { c.wg.Wait() }

// Get joins the fill of req.Digest, starting one from src if none runs. It
// returns (nil, false, nil) when the content is already in the store (check
// it there), or a Reader over the growing file; joined reports whether an
// existing fill was joined. ctx bounds only the reader, never the fill.
func (c *Coalescer) Get(ctx context.Context, req Request, src Source) (r *Reader, joined bool, err error) {
	c.mu.Lock()
	f, ok := c.inflight[req.Digest]
	if !ok {
		if _, err := c.store.Stat(req.Digest); err == nil {
			c.mu.Unlock()
			return nil, false, nil
		}
		tmp, err := c.store.TempFile()
		if err != nil {
			c.mu.Unlock()
			return nil, false, err
		}
		f = newFill(c, req, tmp)
		c.inflight[req.Digest] = f
		c.wg.Add(1)
		go f.run(src)
	}
	f.acquire()
	c.mu.Unlock()
	return newReader(ctx, f), ok, nil
}

// remove takes a finished fill out of the map.
func (c *Coalescer) remove(f *fill) {
	c.mu.Lock()
	if c.inflight[f.req.Digest] == f {
		delete(c.inflight, f.req.Digest)
	}
	c.mu.Unlock()
}

func (c *Coalescer) acquireSlot(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fetch: waiting for a fetch slot: %w", context.Cause(ctx))
	}
}

func (c *Coalescer) releaseSlot() { <-c.sem }
