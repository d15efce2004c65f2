package fetch

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// Pool is a bounded set of turns to talk to one kind of source. A fill holds
// a turn only while it talks to a source, not while it waits for one: a
// fill that asks a cluster peer holds a peer turn, and that peer's own fill
// from the upstream holds one of the peer's upstream turns. With one pool
// for both, two busy nodes that own each other's digests would each hold
// every turn waiting on the other.
type Pool struct {
	sem chan struct{}
	// closing is the Coalescer's: a fill waiting for a turn when the
	// shutdown begins must not start.
	closing <-chan struct{}
}

func newPool(n int, closing <-chan struct{}) *Pool {
	return &Pool{sem: make(chan struct{}, n), closing: closing}
}

// Acquire waits for a turn; Release gives it back.
func (p *Pool) Acquire(ctx context.Context) error {
	select {
	case <-p.closing: // before a free turn: a queued fill must not start now
		return ErrClosed
	default:
	}
	select {
	case p.sem <- struct{}{}:
		return nil
	case <-p.closing:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("fetch: waiting for a fetch slot: %w", context.Cause(ctx))
	}
}

// Release gives back a turn taken with Acquire.
func (p *Pool) Release() { <-p.sem }

// InUse is the number of turns taken.
func (p *Pool) InUse() int { return len(p.sem) }

// Limit returns src taking a turn from p for each Open, held until the body
// is closed (or Open fails).
func (p *Pool) Limit(src Source) Source { return limited{p, src} }

// TurnTaker is a Source that takes its turns from the Coalescer's pools
// itself (as Pool.Limit's sources do): a fill takes none around it. A fill
// takes an upstream turn around any other Source.
type TurnTaker interface {
	Source
	// TakesTurns marks the Source; it is never called.
	TakesTurns()
}

type limited struct {
	p   *Pool
	src Source
}

func (limited) TakesTurns() {}

func (l limited) Open(ctx context.Context, req Request, offset int64) (io.ReadCloser, Meta, error) {
	if err := l.p.Acquire(ctx); err != nil {
		return nil, Meta{}, err
	}
	body, meta, err := l.src.Open(ctx, req, offset)
	if err != nil {
		l.p.Release()
		return nil, meta, err
	}
	return &turnBody{ReadCloser: body, p: l.p}, meta, nil
}

// OpenRange takes a turn around a ranged open of the source, if it has one.
func (l limited) OpenRange(ctx context.Context, req Request, piece int, start, end int64) (io.ReadCloser, Meta, error) {
	rs, ok := l.src.(RangeSource)
	if !ok {
		return nil, Meta{}, ErrNoRange
	}
	if err := l.p.Acquire(ctx); err != nil {
		return nil, Meta{}, err
	}
	body, meta, err := rs.OpenRange(ctx, req, piece, start, end)
	if err != nil {
		l.p.Release()
		return nil, meta, err
	}
	return &turnBody{ReadCloser: body, p: l.p}, meta, nil
}

// turnBody gives the turn back when the body is closed.
type turnBody struct {
	io.ReadCloser
	p    *Pool
	once sync.Once
}

func (b *turnBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.p.Release)
	return err
}
