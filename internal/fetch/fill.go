package fetch

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/berth-mirror/berth/internal/store"
)

// BufferSize is the size of the pooled copy buffers.
const BufferSize = 128 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, BufferSize); return &b }}

// GetBuffer returns a pooled copy buffer; PutBuffer gives it back.
func GetBuffer() *[]byte { return buffers.Get().(*[]byte) }

// PutBuffer returns b to the pool.
func PutBuffer(b *[]byte) { buffers.Put(b) }

// fill is one download into a temporary file, shared by its readers.
type fill struct {
	c    *Coalescer
	req  Request
	file *os.File // the temporary file; after commit, the stored content

	mu      sync.Mutex
	cond    sync.Cond
	started bool // meta is known
	meta    Meta
	written int64
	done    bool  // finished: err says how
	err     error // nil on success
	refs    int   // readers plus the fill itself; the file closes at zero
}

func newFill(c *Coalescer, req Request, tmp *os.File) *fill {
	f := &fill{c: c, req: req, file: tmp, refs: 1}
	f.cond.L = &f.mu
	return f
}

func (f *fill) acquire() {
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
}

func (f *fill) release() {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	f.mu.Unlock()
	if last {
		_ = f.file.Close()
	}
}

// finish records the outcome and wakes every reader.
func (f *fill) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	f.cond.Broadcast()
	f.mu.Unlock()
}

func (f *fill) run(src Source) {
	defer f.c.wg.Done()
	defer f.release()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), f.c.opts.Timeout)
	defer cancel()
	log := f.c.log.With(slog.String("digest", f.req.Digest.String()),
		slog.String("upstream", f.req.Registry), slog.String("repo", f.req.Repository))

	f.c.opts.Observer.FillStarted(f.req)
	n, err := f.download(ctx, src, log)
	if err == nil {
		err = f.commit()
	}
	if err != nil {
		_ = os.Remove(f.file.Name())
		log.LogAttrs(ctx, slog.LevelWarn, "fetch failed", slog.Int64("bytes", n), slog.String("error", err.Error()))
	} else {
		log.LogAttrs(ctx, slog.LevelInfo, "fetched", slog.Int64("bytes", n), slog.Duration("took", time.Since(start)))
	}
	// Order matters: the content is in the store before the fill leaves the
	// map, so a request arriving now finds one or the other.
	f.finish(err)
	f.c.remove(f)
	f.c.opts.Observer.FillDone(f.req, n, time.Since(start), err)
}

// download copies from src into the file, hashing as it goes, resuming an
// interrupted transfer where it stopped. It returns the bytes received.
func (f *fill) download(ctx context.Context, src Source, log *slog.Logger) (int64, error) {
	if err := f.c.acquireSlot(ctx); err != nil {
		return 0, err
	}
	defer f.c.releaseSlot()

	h := f.req.Digest.Algorithm().Hash()
	bp := GetBuffer()
	defer PutBuffer(bp)
	buf := *bp
	var received int64
	for attempt := 0; ; attempt++ {
		err := f.copyOnce(ctx, src, h, buf, &received)
		if err == nil {
			break
		}
		if attempt >= f.c.opts.Resumes || ctx.Err() != nil || errors.Is(err, ErrVerify) || !f.resumable() {
			return received, err
		}
		log.LogAttrs(ctx, slog.LevelWarn, "resuming interrupted fetch",
			slog.Int64("offset", f.written), slog.String("error", err.Error()))
	}
	f.mu.Lock()
	size, written := f.meta.Size, f.written
	f.mu.Unlock()
	if size >= 0 && written != size {
		return received, fmt.Errorf("%w: got %d bytes, expected %d", ErrVerify, written, size)
	}
	if hex.EncodeToString(h.Sum(nil)) != f.req.Digest.Encoded() {
		return received, fmt.Errorf("%w: %s", ErrVerify, f.req.Digest)
	}
	return received, nil
}

// resumable reports whether a failed transfer can continue from f.written.
func (f *fill) resumable() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started
}

type hasher interface{ Write([]byte) (int, error) }

// copyOnce opens the source at the current offset and copies until EOF.
func (f *fill) copyOnce(ctx context.Context, src Source, h hasher, buf []byte, received *int64) error {
	f.mu.Lock()
	offset := f.written
	f.mu.Unlock()
	body, meta, err := src.Open(ctx, f.req, offset)
	if err != nil {
		return err
	}
	defer body.Close()
	f.mu.Lock()
	if !f.started {
		f.meta, f.started = meta, true
		f.cond.Broadcast()
	} else if meta.Size >= 0 && f.meta.Size >= 0 && meta.Size != f.meta.Size {
		f.mu.Unlock()
		return fmt.Errorf("%w: source changed size on resume (%d, was %d)", ErrVerify, meta.Size, f.meta.Size)
	}
	size := f.meta.Size
	f.mu.Unlock()
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if size >= 0 && offset+int64(n) > size {
				return fmt.Errorf("%w: source sent more than %d bytes", ErrVerify, size)
			}
			// Write before hashing: a failed write leaves hash and offset
			// consistent for a resume.
			if _, err := f.file.WriteAt(buf[:n], offset); err != nil {
				return fmt.Errorf("fetch: writing %s: %w", f.req.Digest, err)
			}
			_, _ = h.Write(buf[:n])
			offset += int64(n)
			*received += int64(n)
			f.mu.Lock()
			f.written = offset
			f.cond.Broadcast()
			f.mu.Unlock()
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("fetch: reading %s from %s: %w", f.req.Digest, f.req.Registry, rerr)
		}
	}
}

func (f *fill) commit() error {
	f.mu.Lock()
	info := store.Info{
		Digest:     f.req.Digest,
		Size:       f.written,
		MediaType:  f.meta.MediaType,
		Repository: f.req.Registry + "/" + f.req.Repository,
	}
	f.mu.Unlock()
	return f.c.store.Commit(f.file, info, true)
}
