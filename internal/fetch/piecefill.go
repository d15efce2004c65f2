package fetch

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"sync"
)

// pieceBufferSize is a piece worker's copy buffer: a fill runs several
// workers, and each holds its buffer while its body streams, so they are
// smaller than a whole-blob fill's one (BufferSize); a socket read rarely
// returns more at once anyway.
const pieceBufferSize = 32 << 10

var pieceBuffers = sync.Pool{New: func() any { b := make([]byte, pieceBufferSize); return &b }}

// pieceState is one piece of a fill. Guarded by the fill's mu.
type pieceState struct {
	got     int64  // bytes written from the piece's start, contiguous
	claimed bool   // a worker fetches it (or has)
	urgent  bool   // a Range reader waits for it: fetched before the others
	peer    string // the cluster peer that sent (part of) it, "" for none
}

// pieceSet is a fill's pieces (pieces.go). Guarded by the fill's mu; the
// table has at most MaxPieces entries.
type pieceSet struct {
	plan    Plan
	st      []pieceState
	first   int // the first piece not complete: the fill's prefix ends in it
	next    int // no unclaimed piece below this, urgent ones aside
	urgent  int // urgent pieces not claimed yet
	workers int // workers running
	normal  int // workers for sequential readers (Options.PieceFetches)
	// streamEnd is where the first stream ends (Meta.End, else the blob's end).
	streamEnd int64
	ranged    bool  // a ranged open has succeeded: the source serves ranges
	noRange   bool  // a ranged open failed with ErrNoRange: the first stream takes every piece
	err       error // the first failure that ends the fill
}

func newPieceSet(plan Plan, workers int) *pieceSet {
	pc := &pieceSet{plan: plan, st: make([]pieceState, plan.Count), normal: workers}
	pc.st[0].claimed = true // the fill's first stream starts there
	pc.next = 1
	return pc
}

// length returns piece i's size.
func (pc *pieceSet) length(i int) int64 {
	s, e := pc.plan.Bounds(i)
	return e - s
}

// reach returns how far the bytes from off are contiguous on disk: a Range
// reader beyond the prefix may read up to there.
func (pc *pieceSet) reach(off int64) int64 {
	for i := pc.plan.Index(off); i < pc.plan.Count; i++ {
		s, e := pc.plan.Bounds(i)
		if have := s + pc.st[i].got; have < e {
			return max(have, off)
		}
	}
	return pc.plan.Size
}

// prefix returns the contiguous bytes from the start, advancing first.
func (pc *pieceSet) prefix() int64 {
	for pc.first < pc.plan.Count && pc.st[pc.first].got == pc.length(pc.first) {
		pc.first++
	}
	if pc.first == pc.plan.Count {
		return pc.plan.Size
	}
	s, _ := pc.plan.Bounds(pc.first)
	return s + pc.st[pc.first].got
}

// want marks the pieces covering [off, end) urgent.
func (pc *pieceSet) want(off, end int64) {
	if end <= off {
		return
	}
	for i := pc.plan.Index(off); i <= pc.plan.Index(end-1) && i < pc.plan.Count; i++ {
		if st := &pc.st[i]; !st.claimed && !st.urgent {
			st.urgent = true
			pc.urgent++
		}
	}
}

// claim picks the next piece for a new worker or one that finished: an
// urgent one first, else the lowest unclaimed one unless only urgent work
// may start now (extra workers beyond the normal count). It returns -1 for none.
func (pc *pieceSet) claim(urgentOnly bool) int {
	if pc.err != nil || pc.noRange {
		return -1
	}
	if pc.urgent > 0 {
		for i := range pc.st {
			if st := &pc.st[i]; st.urgent && !st.claimed {
				st.claimed = true
				pc.urgent--
				return i
			}
		}
	}
	if urgentOnly {
		return -1
	}
	for ; pc.next < pc.plan.Count; pc.next++ {
		if st := &pc.st[pc.next]; !st.claimed {
			st.claimed = true
			return pc.next
		}
	}
	return -1
}

// unclaim gives a piece back (its worker could not fetch it by range).
func (pc *pieceSet) unclaim(i int) {
	pc.st[i].claimed = false
	if pc.st[i].urgent {
		pc.urgent++
	}
	pc.next = min(pc.next, i)
}

// workersWanted reports whether the fill should start another worker.
func (pc *pieceSet) workersWanted() bool {
	if pc.err != nil || pc.noRange {
		return false
	}
	if pc.urgent > 0 {
		return pc.workers < pc.normal+urgentPieceFetches
	}
	return pc.workers < pc.normal && pc.next < pc.plan.Count
}

// runPieces fetches the blob as pieces (pieces.go). body is the fill's
// first stream from byte 0, which fetches piece 0 and goes on with the
// following pieces for as long as no other worker has claimed them (and
// alone, through every piece, when the source turns out to serve no
// ranges). Workers fetch the other pieces with ranged opens. This goroutine
// hashes the contiguous prefix as it grows; it returns once the whole blob
// is on disk and hashed into h (the caller verifies), or with the error
// that ended the fill: in piece mode a fill is never resumed as a whole.
func (f *fill) runPieces(ctx context.Context, req Request, src RangeSource, body io.ReadCloser, streamEnd int64, h hash.Hash, received *int64) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Wake the waits below when the fill is cancelled.
	stop := context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	})
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	f.mu.Lock()
	pc := f.pc
	req.Size = pc.plan.Size // the workers' sources plan by it
	pc.workers++
	if streamEnd > 0 {
		pc.streamEnd = streamEnd
	} else {
		pc.streamEnd = pc.plan.Size
	}
	f.mu.Unlock()
	wg.Go(func() { f.pieceWorker(ctx, req, src, 0, body, received) })

	var hashed int64
	for {
		f.mu.Lock()
		for pc.workersWanted() {
			i := pc.claim(pc.workers >= pc.normal)
			if i < 0 {
				break
			}
			pc.workers++
			wg.Go(func() { f.pieceWorker(ctx, req, src, i, nil, received) })
		}
		err := pc.err
		if err == nil && ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		if err == nil && pc.workers == 0 && f.written < pc.plan.Size {
			err = fmt.Errorf("fetch: %s: no source left for %d bytes from %d", f.dg, pc.plan.Size-f.written, f.written)
		}
		avail := f.written
		if err == nil && avail == hashed {
			if hashed == pc.plan.Size {
				f.mu.Unlock()
				return nil
			}
			f.cond.Wait()
			f.mu.Unlock()
			continue
		}
		if err == nil {
			f.mu.Unlock()
			if err = f.hashFile(h, hashed, avail); err == nil {
				hashed = avail
				continue
			}
			f.mu.Lock()
		}
		// Every worker sees it and stops (the first stream waiting for a
		// claimed piece too).
		if pc.err == nil {
			pc.err = err
		}
		f.cond.Broadcast()
		f.mu.Unlock()
		cancel(err)
		return err
	}
}

// hashFile feeds bytes [from, to) of the fill's file to h.
func (f *fill) hashFile(h hash.Hash, from, to int64) error {
	bp := GetBuffer()
	defer PutBuffer(bp)
	buf := *bp
	for from < to {
		n, err := f.file.ReadAt(buf[:min(int64(len(buf)), to-from)], from)
		_, _ = h.Write(buf[:n])
		from += int64(n)
		if err != nil && from < to {
			return fmt.Errorf("%w %s: reading back for the digest: %w", errWrite, f.dg, err)
		}
	}
	return nil
}

// pieceWorker fetches piece i, then the next pieces it can claim, until
// none is left. body, for the first worker, is the fill's stream from byte
// 0: it goes on into the next piece while nobody else has claimed it.
func (f *fill) pieceWorker(ctx context.Context, req Request, src RangeSource, i int, body io.ReadCloser, received *int64) {
	defer func() {
		if body != nil {
			_ = body.Close()
		}
	}()
	for i >= 0 {
		err := f.fetchPiece(ctx, req, src, i, &body, received)
		f.mu.Lock()
		if err != nil {
			pc := f.pc
			if errors.Is(err, ErrNoRange) && pc.st[i].got == 0 && !pc.ranged {
				pc.noRange = true
				pc.unclaim(i)
				f.c.log.LogAttrs(ctx, slog.LevelDebug, "source serves no ranges; fetching the blob whole",
					slog.String("digest", f.dg.String()), slog.String("upstream", req.Registry))
			} else if pc.err == nil {
				pc.err = err
			}
			pc.workers--
			f.cond.Broadcast()
			f.mu.Unlock()
			return
		}
		i = f.nextPieceLocked(i, &body)
		if i < 0 {
			f.pc.workers--
			f.cond.Broadcast()
		}
		f.mu.Unlock()
	}
}

// nextPieceLocked picks what a worker that finished a piece does next. The
// first stream goes on into the next piece if nobody has claimed it;
// otherwise (once the source is known to serve ranges) it is closed and
// the worker claims a piece as the others do. f.mu is held.
func (f *fill) nextPieceLocked(done int, body *io.ReadCloser) int {
	pc := f.pc
	if *body != nil {
		for {
			next := done + 1
			if next >= pc.plan.Count || pc.err != nil {
				return -1
			}
			if start, _ := pc.plan.Bounds(next); start >= pc.streamEnd {
				break // the first stream was the first piece only
			}
			if st := &pc.st[next]; !st.claimed {
				st.claimed = true
				if st.urgent {
					pc.urgent--
				}
				return next
			}
			if pc.ranged {
				break
			}
			// Whether the source serves ranges is not known yet, or it
			// serves none and the piece's worker is about to give it back:
			// this stream may be the only way to the rest.
			f.cond.Wait()
		}
		_ = (*body).Close()
		*body = nil
	}
	return pc.claim(pc.workers > pc.normal)
}

// fetchPiece fetches the rest of piece i into the file: from the stream in
// *body when there is one (positioned at the piece's next byte), else by a
// ranged open, which it resumes after a break up to Resumes times (at least
// once). A ranged body is closed when the piece is done; the first stream
// is left open for the next piece.
func (f *fill) fetchPiece(ctx context.Context, req Request, src RangeSource, i int, body *io.ReadCloser, received *int64) error {
	start, end := f.pc.plan.Bounds(i)
	for attempt := 0; ; attempt++ {
		f.mu.Lock()
		off := start + f.pc.st[i].got
		f.mu.Unlock()
		if off == end {
			return nil
		}
		retry, err := f.fetchPieceOnce(ctx, req, src, i, body, off, end, received)
		if err == nil || !retry || ctx.Err() != nil || attempt >= max(f.c.opts.Resumes, 1) {
			return err
		}
		f.logPieceRetry(ctx, req, i, off, err)
	}
}

// fetchPieceOnce fetches bytes [off, end) of piece i: from *body when it
// is the first stream, else by a ranged open. It reports whether a failure
// may be retried from where it stopped.
func (f *fill) fetchPieceOnce(ctx context.Context, req Request, src RangeSource, i int, body *io.ReadCloser, off, end int64, received *int64) (retry bool, err error) {
	ranged := *body == nil
	if ranged {
		var peer string
		if po, ok := f.c.opts.Observer.(PieceObserver); ok {
			po.PieceStarted(req, end-off)
			defer func() { po.PieceDone(req, peer != "", end-off, err) }()
		}
		b, meta, err := src.OpenRange(ctx, req, i, off, end)
		if err != nil {
			return !errors.Is(err, ErrNoRange), err
		}
		peer = meta.Peer
		if peer != "" {
			f.mu.Lock()
			f.pc.st[i].peer = peer
			f.mu.Unlock()
		}
		if meta.Size != f.pc.plan.Size {
			_ = b.Close()
			return false, fmt.Errorf("%w: source says %d bytes for a range of a blob of %d", ErrVerify, meta.Size, f.pc.plan.Size)
		}
		f.mu.Lock()
		if !f.pc.ranged {
			f.pc.ranged = true
			f.cond.Broadcast()
		}
		f.mu.Unlock()
		*body = b
	}
	err = f.copyPiece(i, *body, off, end, ranged, received)
	if err == nil && !ranged {
		return false, nil // the first stream stays open for the next piece
	}
	_ = (*body).Close()
	*body = nil
	return !errors.Is(err, errWrite) && !errors.Is(err, ErrVerify), err
}

func (f *fill) logPieceRetry(ctx context.Context, req Request, i int, off int64, err error) {
	f.c.log.LogAttrs(ctx, slog.LevelWarn, "resuming interrupted piece", slog.String("digest", f.dg.String()),
		slog.String("upstream", req.Registry), slog.String("repo", req.Repository), slog.Int("piece", i),
		slog.Int64("offset", off), slog.String("error", err.Error()))
}

// copyPiece copies bytes [off, end) of piece i from body into the file. A
// ranged body must end there (more is an error); the first stream is read
// no further than end.
func (f *fill) copyPiece(i int, body io.Reader, off, end int64, ranged bool, received *int64) error {
	bp := pieceBuffers.Get().(*[]byte)
	defer pieceBuffers.Put(bp)
	buf := *bp
	for {
		want := buf
		if !ranged {
			if off == end {
				return nil
			}
			want = buf[:min(int64(len(buf)), end-off)]
		}
		n, rerr := body.Read(want)
		if n > 0 {
			if off+int64(n) > end {
				return fmt.Errorf("%w: source sent more than the %d bytes of the range", ErrVerify, end-off)
			}
			if _, err := f.file.WriteAt(want[:n], off); err != nil {
				return fmt.Errorf("%w %s: %w", errWrite, f.dg, err)
			}
			off += int64(n)
			f.mu.Lock()
			f.pc.st[i].got += int64(n)
			*received += int64(n)
			f.written = f.pc.prefix()
			f.cond.Broadcast()
			f.mu.Unlock()
		}
		switch {
		case rerr == io.EOF && off == end:
			return nil
		case rerr == io.EOF:
			return fmt.Errorf("fetch: %s: piece %d ended %d bytes short", f.dg, i, end-off)
		case rerr != nil:
			return fmt.Errorf("fetch: reading piece %d of %s: %w", i, f.dg, rerr)
		}
	}
}
