package fetch

import (
	"context"
	"fmt"
	"io"
)

// Reader streams one client's view of a fill. It is not safe for concurrent use.
type Reader struct {
	f       *fill
	ctx     context.Context
	stop    func() bool
	req     Request // what this client asked for, for its own error
	off     int64
	end     int64 // exclusive; -1 for the whole blob
	onWrite func(n int64)
	// unverified: the reader's range may end with the blob's last byte
	// before the blob is verified (SendUnverified).
	unverified bool
}

func newReader(ctx context.Context, f *fill, req Request) *Reader {
	r := &Reader{f: f, ctx: ctx, req: req, end: -1}
	// Wake this reader's waits when its client goes away.
	r.stop = context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	})
	return r
}

// Meta waits until the source has answered and returns the blob's size and
// media type, or the fill's error: for a source's refusal (not found, not
// allowed), the refusal of the repository this reader asked through.
func (r *Reader) Meta() (Meta, error) {
	f := r.f
	f.mu.Lock()
	defer f.mu.Unlock()
	for !f.started && !f.done {
		if err := r.ctx.Err(); err != nil {
			return Meta{}, err
		}
		f.cond.Wait()
	}
	if f.started {
		return f.meta, nil
	}
	return Meta{}, f.errFor(r.req)
}

// Limit restricts the reader to [off, end) (end -1: to the end of the
// blob). Call it after Meta. When the blob is fetched in pieces, the pieces
// covering the range are fetched before the others.
func (r *Reader) Limit(off, end int64) {
	r.off, r.end = off, end
	f := r.f
	f.mu.Lock()
	if f.pc != nil && !f.done {
		if end < 0 {
			end = f.pc.plan.Size
		}
		f.pc.want(off, end)
		f.cond.Broadcast()
	}
	f.mu.Unlock()
}

// SendUnverified lets a ranged reader receive the blob's last byte before
// the whole blob is verified: a client's Range is answered with the bytes
// the upstream sent, as the registry itself would answer it, without
// waiting for every other piece of the blob (a lazy-pulling snapshotter
// asks for the table of contents at the end first, and checks it against
// its own digests). A whole-blob response never ends before verification.
func (r *Reader) SendUnverified() { r.unverified = true }

// next waits until bytes past the reader's position may be sent and returns
// how many (up to the reader's end), at least min unless the fill has ended
// or the end is reached: fewer, larger sends cost fewer system calls and
// wake-ups. The blob's last byte is held back until the digest is verified
// and the file committed; if it does not verify, next returns an error
// wrapping ErrVerify. At the end it returns io.EOF.
func (r *Reader) next(min int64) (int64, error) {
	f := r.f
	if r.end >= 0 && r.off >= r.end {
		return 0, io.EOF
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		if f.done && f.err != nil {
			return 0, f.errFor(r.req)
		}
		avail := f.written
		if f.pc != nil && r.off >= avail {
			avail = f.pc.reach(r.off) // a Range reader beyond the prefix
		}
		ranged := r.unverified && r.end >= 0
		if !f.done && !ranged && (f.pc == nil || avail == f.pc.plan.Size) {
			avail-- // hold back the last byte until verified
		}
		if r.end >= 0 && r.end < avail {
			avail = r.end
		}
		if r.off < avail && (avail-r.off >= min || f.done || (r.end >= 0 && avail == r.end)) {
			return avail - r.off, nil
		}
		if f.done {
			if r.end >= 0 && r.off < r.end {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, io.EOF
		}
		if err := r.ctx.Err(); err != nil {
			return 0, err
		}
		f.cond.Wait()
	}
}

// Read reads the next bytes that have landed, waiting for more as needed
// (the last byte only once verified).
func (r *Reader) Read(p []byte) (int, error) {
	avail, err := r.next(1)
	if err != nil {
		return 0, err
	}
	n := min(int64(len(p)), avail)
	m, err := r.f.file.ReadAt(p[:n], r.off)
	r.off += int64(m)
	if err == io.EOF && int64(m) == n {
		err = nil
	}
	if err != nil {
		return m, fmt.Errorf("fetch: reading fill of %s: %w", r.f.dg, err)
	}
	return m, nil
}

// Close releases the reader; the fill goes on.
func (r *Reader) Close() error {
	r.stop()
	r.f.release()
	return nil
}

// committed reports whether the fill has been verified and committed to the
// store, with the reader's position and end.
func (r *Reader) committed() (ok bool, off, end int64) {
	f := r.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.done || f.err != nil {
		return false, 0, 0
	}
	end = r.end
	if end < 0 {
		end = f.written
	}
	return true, r.off, end
}
