// Package fetch downloads each missing blob once, however many clients ask
// for it at the same time. The download (a "fill") writes to a temporary file
// in the store's data directory; every client streams from that file as it
// grows, not after the end. The last byte is released only once the digest
// has been verified and the file committed, so a client never receives a
// complete but corrupt body: on a mismatch every reader gets an error and
// its connection is closed short of Content-Length.
//
// A fill runs detached from the request that started it, bounded by its own
// timeout, so the cache fills even if the first client goes away; it is not
// detached from the process: Shutdown stops new fills, lets running ones
// finish for as long as it is given, then cancels them and waits for their
// cleanup, so that the store can be closed under nothing.
//
// Fills are bounded: at most MaxFetches talk to the upstream and at most
// MaxPeerFetches to cluster peers (see Pool), at most MaxFetches+MaxQueued
// run or wait in all, and past that Get refuses at once (ErrOverloaded),
// before anything (goroutine, temporary file, map entry) is allocated.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
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
	// From names the cluster member that asked this node for the blob
	// (the peer API), "" for a client of this node. A peer's request is
	// never forwarded to another owner: this node asks others only whether
	// they already hold the blob, then the upstream.
	From string
	// PrivateOrigin, if set, names the private repository (as the store's
	// private marks do) the blob is fetched for: it is committed marked as
	// private content first fetched there (store.Info.PrivateOrigin), in
	// the transaction that records it. A fill of a verified request serves
	// that repository only (fill.join), so its origin is its source's.
	PrivateOrigin string
	// Size, if > 0, is the blob's size as a manifest gave it: a hint that
	// lets a source plan pieces before it asks anyone (the bytes must
	// agree; 0: unknown). In piece mode the fill sets it for its workers.
	Size int64
	// Piece, if set, makes this the fill of one piece of a blob, kept by
	// the cluster member that owns it (pieces.go): Digest is then the
	// piece's key (PieceKey); the source is asked for the piece's range of
	// the blob; nothing is verified (a piece cannot be); the piece is
	// committed as a store.KindPiece entry. Readers' offsets are relative
	// to the piece's start.
	Piece *Piece
}

// Piece names one piece of a blob.
type Piece struct {
	Blob       digest.Digest
	BlobSize   int64
	Index      int
	Start, End int64 // the piece's bytes [Start, End) of the blob
}

// PieceRequest returns the request for piece i of req's blob of size bytes.
func PieceRequest(req Request, size int64, i int) Request {
	plan := PlanFor(size)
	start, end := plan.Bounds(i)
	p := &Piece{Blob: req.Digest, BlobSize: size, Index: i, Start: start, End: end}
	req.Digest, req.Piece = PieceKey(req.Digest, plan, i), p
	return req
}

// sameRepository reports whether a and b ask through the same repository,
// the same way: a client verified with its own credentials (private
// content) may be let in where an anonymous request was refused.
func (a Request) sameRepository(b Request) bool {
	return a.Registry == b.Registry && a.Repository == b.Repository && a.Verified == b.Verified
}

// Meta is what a source says about the blob it is sending.
type Meta struct {
	// Size is the total blob size, or -1 when the source does not say.
	Size int64
	// MediaType is the Content-Type the source gave.
	MediaType string
	// End, if > 0, says that the body of an Open from 0 ends there, at the
	// end of the blob's first piece, not at Size: a RangeSource (a cluster
	// source, whose pieces have different owners) sends only the first
	// piece, and the fill fetches the others by range.
	End int64
	// Peer names the cluster member sending the bytes, "" for the upstream.
	Peer string
}

// Source is where a blob comes from: the upstream registry is one; a peer
// node is another. Open returns the blob's bytes from offset on (offset > 0
// only to resume an interrupted transfer); the caller closes the body.
// Open and the body's Read must return once ctx is done: that is how a fill
// is cancelled at shutdown or at its timeout.
type Source interface {
	Open(ctx context.Context, req Request, offset int64) (io.ReadCloser, Meta, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, req Request, offset int64) (io.ReadCloser, Meta, error)

// Open calls f.
func (f SourceFunc) Open(ctx context.Context, req Request, offset int64) (io.ReadCloser, Meta, error) {
	return f(ctx, req, offset)
}

var (
	// ErrVerify means the fetched bytes did not match the digest.
	ErrVerify = errors.New("fetch: content does not match its digest")
	// ErrOverloaded means Get refused to start a fill: MaxFetches fills are
	// running and MaxQueued more are waiting. The client should retry later.
	ErrOverloaded = errors.New("fetch: too many blob fetches running and waiting")
	// ErrClosed means the Coalescer is shutting down and starts no fill.
	ErrClosed = errors.New("fetch: shutting down")
	// ErrPanic means a fill ended because its source panicked.
	ErrPanic = errors.New("fetch: fill panicked")
)

// Observer receives fill events (metrics). Methods must be cheap and safe for
// concurrent use. The zero Options uses a no-op observer.
type Observer interface {
	FillStarted(req Request)
	// FillDone reports the bytes received from the source (resumes included).
	FillDone(req Request, bytes int64, d time.Duration, err error)
}

// Options tune a Coalescer. The zero value is usable.
type Options struct {
	// MaxFetches caps fills talking to the upstream at once (default 32).
	MaxFetches int
	// MaxPeerFetches caps fills talking to cluster peers at once (default
	// MaxFetches): a separate pool, so that fills waiting on a busy peer
	// never hold the turns its own requests need here (Pool).
	MaxPeerFetches int
	// MaxQueued caps the fills waiting for a turn beyond MaxFetches
	// (default 4×MaxFetches): past MaxFetches+MaxQueued fills, running or
	// waiting, Get refuses a new one with ErrOverloaded.
	MaxQueued int
	// Timeout bounds one fill from start to commit (default 30m).
	Timeout time.Duration
	// Resumes is how many times an interrupted transfer is resumed from the
	// byte it reached (default 0).
	Resumes int
	// RepositoryScoped reports whether a source's refusal answers only for
	// the repository it was asked through (not found, not allowed), so a
	// client asking through another repository deserves its own attempt.
	// The default recognises an upstream 401, 403 or 404.
	RepositoryScoped func(error) bool
	// NoPieces fetches every blob whole, in one stream (pieces.go).
	NoPieces bool
	// PieceFetches is how many pieces one fill fetches at once for its
	// sequential readers (default 4); a Range reader's pieces may add up to
	// 8 more, so that it does not wait behind them.
	PieceFetches int
	// Logger receives fill events (default: discard).
	Logger *slog.Logger
	// Observer receives metrics events.
	Observer Observer
}

// Coalescer runs at most one fill per digest. It is safe for concurrent use.
type Coalescer struct {
	store *store.Store
	opts  Options
	// upstream and peers hand out the turns to talk to a source.
	upstream, peers *Pool
	log             *slog.Logger
	// base is the parent of every fill's context: Shutdown cancels it.
	base   context.Context
	cancel context.CancelCauseFunc
	// closing is closed when Shutdown starts: queued fills give up their turn.
	closing chan struct{}

	mu sync.Mutex
	// inflight holds a fill per digest; bounded by MaxFetches+MaxQueued.
	inflight map[digest.Digest]*fill
	fills    int    // fills started and not ended, running or queued
	ended    uint64 // fills removed from inflight so far (Get re-checks the store when it moved)
	closed   bool   // Shutdown has started: no new fill
	wg       sync.WaitGroup

	// beforeTemp, in tests, runs in Get between the store lookup and the
	// temporary file, where the node-wide lock must not be held.
	beforeTemp func(Request)
}

// New returns a Coalescer that commits into st.
func New(st *store.Store, opts Options) *Coalescer {
	if opts.MaxFetches <= 0 {
		opts.MaxFetches = 32
	}
	if opts.MaxPeerFetches <= 0 {
		opts.MaxPeerFetches = opts.MaxFetches
	}
	if opts.MaxQueued <= 0 {
		opts.MaxQueued = 4 * opts.MaxFetches
	}
	if opts.PieceFetches <= 0 {
		opts.PieceFetches = defaultPieceFetches
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Minute
	}
	if opts.RepositoryScoped == nil {
		opts.RepositoryScoped = upstreamRefused
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	base, cancel := context.WithCancelCause(context.Background())
	closing := make(chan struct{})
	return &Coalescer{
		store:    st,
		opts:     opts,
		upstream: newPool(opts.MaxFetches, closing),
		peers:    newPool(opts.MaxPeerFetches, closing),
		log:      opts.Logger,
		base:     base,
		cancel:   cancel,
		closing:  closing,
		inflight: map[digest.Digest]*fill{},
	}
}

// Upstream is the pool of turns to talk to an upstream registry: a fill
// takes one around any Source that is not a TurnTaker.
func (c *Coalescer) Upstream() *Pool { return c.upstream }

// Pieces reports whether big blobs are fetched in pieces (Options.NoPieces
// unset).
func (c *Coalescer) Pieces() bool { return !c.opts.NoPieces }

// Peers is the pool of turns to talk to cluster peers.
func (c *Coalescer) Peers() *Pool { return c.peers }

// upstreamRefused reports an upstream 401, 403 or 404: an answer about the
// repository asked through, not about the blob.
func upstreamRefused(err error) bool { return upstream.Classify(err).Definite() }

// PieceObserver, implemented by an Observer, receives the piece fetches of
// fills in piece mode (pieces.go), one pair per ranged open.
type PieceObserver interface {
	// PieceStarted: a ranged fetch of bytes bytes begins.
	PieceStarted(req Request, bytes int64)
	// PieceDone: it ended (err nil: all bytes arrived). peer: the bytes
	// came from a cluster peer (Meta.Peer), else from the upstream.
	PieceDone(req Request, peer bool, bytes int64, err error)
}

type nopObserver struct{}

func (nopObserver) FillStarted(Request)                           {}
func (nopObserver) FillDone(Request, int64, time.Duration, error) {}

// InFlight returns the number of fills running or waiting for a turn.
func (c *Coalescer) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fills
}

// Wait blocks until every fill has ended (for tests; servers call Shutdown).
func (c *Coalescer) Wait() { c.wg.Wait() }

// Get joins the fill of req.Digest, starting one from src if none runs. It
// returns (nil, false, nil) when the content is already in the store (check
// it there), or a Reader over the growing file; joined reports whether an
// existing fill was joined. ctx bounds only the reader, never the fill. It
// fails with ErrOverloaded or ErrClosed, having allocated nothing, when no
// fill may start.
//
// The node-wide lock is never held across disk I/O (the store lookup, the
// temporary file): every miss and join on the node would wait behind it.
// Two Gets may then both create a temporary file; the second to take the
// lock joins the first's fill and drops its own.
func (c *Coalescer) Get(ctx context.Context, req Request, src Source) (r *Reader, joined bool, err error) {
	for round := 0; ; round++ {
		c.mu.Lock()
		if r, err := c.joinLocked(ctx, req, src); r != nil || err != nil {
			c.mu.Unlock()
			return r, r != nil, err
		}
		ended := c.ended
		c.mu.Unlock()

		if info, err := c.store.Stat(req.Digest); err == nil && (info.Kind == store.KindPiece) == (req.Piece != nil) {
			return nil, false, nil
		}
		if !c.room() {
			return nil, false, ErrOverloaded
		}
		if c.beforeTemp != nil {
			c.beforeTemp(req)
		}
		tmp, err := c.store.TempFile()
		if err != nil {
			return nil, false, err
		}

		c.mu.Lock()
		r, err := c.joinLocked(ctx, req, src)
		// A fill that ended since the store lookup may have committed the
		// content: look again (a few rounds at most; a fill started after
		// that costs one extra download, never a wrong byte).
		retry := r == nil && err == nil && c.ended != ended && round < 3
		start := r == nil && err == nil && !retry && c.fills < c.opts.MaxFetches+c.opts.MaxQueued
		if start {
			// A fill that cannot serve this request (it has ended, or has
			// given up on its sources) may still be in the map: this one
			// takes its place.
			f := newFill(c, req, src, tmp)
			c.inflight[req.Digest] = f
			c.fills++
			c.wg.Add(1)
			go f.run()
			c.mu.Unlock()
			return newReader(ctx, f, req), false, nil
		}
		c.mu.Unlock()
		discard(tmp)
		switch {
		case r != nil || err != nil:
			return r, r != nil, err
		case !retry:
			return nil, false, ErrOverloaded
		}
	}
}

// joinLocked returns a reader on the running fill of req.Digest if it can
// serve req, or ErrClosed once Shutdown has begun; (nil, nil): start one.
// c.mu is held.
func (c *Coalescer) joinLocked(ctx context.Context, req Request, src Source) (*Reader, error) {
	if c.closed {
		return nil, ErrClosed
	}
	if f, ok := c.inflight[req.Digest]; ok && f.join(req, src) {
		return newReader(ctx, f, req), nil
	}
	return nil, nil
}

// Join returns a reader on the fill of req.Digest running now, or nil: it
// never starts a fill. A cluster member
// asked for one piece of a blob it is fetching whole serves the piece from
// that fill instead of fetching it again.
func (c *Coalescer) Join(ctx context.Context, req Request) *Reader {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if f, ok := c.inflight[req.Digest]; ok && f.joinRunning(req) {
		return newReader(ctx, f, req)
	}
	return nil
}

// room reports whether another fill may start now.
func (c *Coalescer) room() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fills < c.opts.MaxFetches+c.opts.MaxQueued
}

// discard removes a temporary file that no fill took.
func discard(f *os.File) {
	_ = f.Close()
	_ = os.Remove(f.Name())
}

// remove takes a finished fill out of the map and the count.
func (c *Coalescer) remove(f *fill) {
	c.mu.Lock()
	if c.inflight[f.dg] == f {
		delete(c.inflight, f.dg)
	}
	c.fills--
	c.ended++
	c.mu.Unlock()
}

// Shutdown stops new fills (Get fails with ErrClosed), gives up the turns of
// queued ones, lets running ones finish until ctx is done, then cancels them,
// and returns once every fill has ended and cleaned up: content verified in
// time is committed, nothing else is left in the store's temporary
// directory. It returns an error saying how many fills it cancelled, if any.
// The store may be closed after it returns.
func (c *Coalescer) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.closing)
	}
	c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	n := c.fills
	c.mu.Unlock()
	c.cancel(ErrClosed)
	<-done
	if n == 0 {
		return nil
	}
	return fmt.Errorf("fetch: %d fills still running at the shutdown deadline were cancelled (any already verified was committed): %w", n, context.Cause(ctx))
}
