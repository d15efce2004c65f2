package fetch

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/store"
)

// BufferSize is the size of the pooled copy buffers.
const BufferSize = 128 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, BufferSize); return &b }}

// GetBuffer returns a pooled copy buffer; PutBuffer gives it back.
func GetBuffer() *[]byte { return buffers.Get().(*[]byte) }

// PutBuffer returns b to the pool.
func PutBuffer(b *[]byte) { buffers.Put(b) }

// errWrite marks a failure to write the fill's own file (a full disk): a
// local failure, which resuming the transfer would not cure.
var errWrite = errors.New("fetch: writing the fill's file")

// source is one way to the blob: the repository a client asked through.
type source struct {
	req Request
	src Source
	err error // why it refused, once tried
}

// fill is one download into a temporary file, shared by its readers.
type fill struct {
	c    *Coalescer
	dg   digest.Digest
	file *os.File // the temporary file; after commit, the stored content

	mu   sync.Mutex
	cond sync.Cond
	// sources[cur] is being tried. A blob is fetched through the repository
	// of its first client; a client asking through another repository
	// before the source has answered is added here, so that a refusal
	// meant for one repository (not found, not allowed) does not answer for
	// another: the fill tries the next one instead.
	sources []source
	cur     int
	settled bool // no further source will be tried: a new repository needs a new fill
	started bool // meta is known
	meta    Meta
	written int64 // contiguous bytes from the start on disk
	// pc, in piece mode (pieces.go), is the blob's pieces; set with meta.
	pc   *pieceSet
	done bool  // finished: err says how
	err  error // nil on success
	refs int   // readers plus the fill itself; the file closes at zero
}

// newFill returns a fill with one reader reference for its first client.
func newFill(c *Coalescer, req Request, src Source, tmp *os.File) *fill {
	f := &fill{c: c, dg: req.Digest, file: tmp, sources: []source{{req: req, src: src}}, refs: 2}
	f.cond.L = &f.mu
	return f
}

// join adds a reader for req. It reports false when this fill cannot serve
// req: it has ended, or it has given up on its sources before trying req's
// repository.
func (f *fill) join(req Request, src Source) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return false
	}
	if !f.asked(req) && (req.Verified || f.verified()) {
		// Private content is not shared across repositories in a fill:
		// bytes one client's credentials let in must not reach a reader
		// asking through another repository (its own checks decide that),
		// nor may a private client's source answer for an anonymous one.
		// Such a request gets a fill of its own.
		return false
	}
	if !f.started && !f.asked(req) {
		if f.settled {
			return false
		}
		f.sources = append(f.sources, source{req: req, src: src})
	}
	f.refs++
	return true
}

// joinRunning adds a reader for req if the fill has not ended and already
// asks through req's repository or may serve it (public content). It need
// not have started: its reader's Meta waits for the source's answer, so two
// askers racing to the first byte share one download.
func (f *fill) joinRunning(req Request) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done || f.err != nil {
		return false
	}
	if !f.asked(req) && (req.Verified || f.verified()) {
		return false
	}
	f.refs++
	return true
}

// verified reports whether a source is a verified client's. f.mu is held.
func (f *fill) verified() bool {
	for i := range f.sources {
		if f.sources[i].req.Verified {
			return true
		}
	}
	return false
}

// asked reports whether req's repository is among the sources. f.mu is held.
func (f *fill) asked(req Request) bool {
	for i := range f.sources {
		if f.sources[i].req.sameRepository(req) {
			return true
		}
	}
	return false
}

// errFor is the error a reader asking through req's repository sees: its
// own repository's refusal if that was tried, else the fill's. f.mu is held.
func (f *fill) errFor(req Request) error {
	for i := range f.sources {
		if s := &f.sources[i]; s.err != nil && s.req.sameRepository(req) {
			return s.err
		}
	}
	return f.err
}

// current returns the source being tried.
func (f *fill) current() (Request, Source) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sources[f.cur]
	return s.req, s.src
}

// nextSource records why the current source failed and, if that was a
// refusal about its repository only and nothing has been received, moves to
// the next repository a client is waiting through. It reports false when
// the fill must fail with err.
func (f *fill) nextSource(ctx context.Context, err error) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sources[f.cur].err = err
	if f.started || ctx.Err() != nil || !f.c.opts.RepositoryScoped(err) || f.cur+1 >= len(f.sources) {
		f.settled = true
		return false
	}
	f.cur++
	return true
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
	f.done, f.err, f.settled = true, err, true
	f.cond.Broadcast()
	f.mu.Unlock()
}

func (f *fill) run() {
	defer f.c.wg.Done()
	defer f.release()
	start := time.Now()
	ctx, cancel := context.WithTimeout(f.c.base, f.c.opts.Timeout)
	defer cancel()
	first, _ := f.current()
	f.c.opts.Observer.FillStarted(first)
	n, err := f.fetch(ctx)
	if err != nil {
		_ = os.Remove(f.file.Name())
	}
	req, _ := f.current()
	f.logOutcome(ctx, req, n, time.Since(start), err)
	// Order matters: the content is in the store before the fill leaves the
	// map, so a request arriving now finds one or the other.
	f.finish(err)
	f.c.remove(f)
	f.c.opts.Observer.FillDone(req, n, time.Since(start), err)
}

// fetch downloads, verifies and commits. A panic in a source ends the fill
// with ErrPanic, logged once with its stack, instead of the daemon: the
// caller then wakes the readers and removes the temporary file as for any
// failure.
func (f *fill) fetch(ctx context.Context) (n int64, err error) {
	defer func() {
		if p := recover(); p != nil {
			f.c.log.LogAttrs(ctx, slog.LevelError, "fill panicked", slog.String("digest", f.dg.String()),
				slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
			err = fmt.Errorf("%w: %v", ErrPanic, p)
		}
	}()
	n, err = f.download(ctx)
	if err == nil {
		err = f.commit()
	}
	return n, err
}

func (f *fill) logOutcome(ctx context.Context, req Request, n int64, took time.Duration, err error) {
	attrs := []slog.Attr{slog.String("digest", f.dg.String()), slog.String("upstream", req.Registry),
		slog.String("repo", req.Repository), slog.Int64("bytes", n)}
	switch {
	case err == nil:
		f.c.log.LogAttrs(ctx, slog.LevelInfo, "fetched", append(attrs, slog.Duration("took", took))...)
	case errors.Is(err, ErrPanic):
		// Logged with its stack where it was recovered.
	case errors.Is(err, syscall.ENOSPC):
		f.c.log.LogAttrs(ctx, slog.LevelError, "disk full: fill failed and was discarded",
			append(attrs, slog.String("data_dir", f.c.store.Dir()), slog.String("error", err.Error()))...)
	default:
		f.c.log.LogAttrs(ctx, slog.LevelWarn, "fetch failed", append(attrs, slog.String("error", err.Error()))...)
	}
}

// download copies from the sources into the file, hashing as it goes, and
// verifies size and digest. It returns the bytes received.
//
// The fill holds a turn (Pool) only while it talks to a source: a source
// that takes its own turns (a cluster source: a peer turn for a peer, an
// upstream turn for the upstream) gets none around it.
func (f *fill) download(ctx context.Context) (int64, error) {
	h := f.dg.Algorithm().Hash()
	var received int64
	for {
		req, src := f.current()
		if _, ok := src.(TurnTaker); !ok {
			src = f.c.upstream.Limit(src)
		}
		err := f.transfer(ctx, req, src, h, &received)
		if err == nil {
			break
		}
		if !f.nextSource(ctx, err) {
			return received, err
		}
		next, _ := f.current()
		f.c.log.LogAttrs(ctx, slog.LevelInfo, "source refused; trying another repository",
			slog.String("digest", f.dg.String()), slog.String("upstream", req.Registry), slog.String("repo", req.Repository),
			slog.String("next_upstream", next.Registry), slog.String("next_repo", next.Repository), slog.String("error", err.Error()))
	}
	f.mu.Lock()
	size, written := f.meta.Size, f.written
	f.mu.Unlock()
	if size >= 0 && written != size {
		return received, fmt.Errorf("%w: got %d bytes, expected %d", ErrVerify, written, size)
	}
	if first, _ := f.current(); first.Piece != nil {
		return received, nil // a piece cannot be verified: its blob is, where it is assembled
	}
	if hex.EncodeToString(h.Sum(nil)) != f.dg.Encoded() {
		f.blamePeers(ctx)
		return received, fmt.Errorf("%w: %s", ErrVerify, f.dg)
	}
	return received, nil
}

// Blamer is a Source told which cluster peers sent pieces of a blob that
// did not verify, pieces that differ from the upstream's: it skips them
// for the blob for a while, so that the next fill takes those pieces
// elsewhere.
type Blamer interface {
	Blame(req Request, peers []string)
}

// FromVerify, as Request.From, asks a cluster source for bytes of the
// upstream itself (never a peer), to compare a peer's piece with.
const FromVerify = "berth:verify"

// blamePeers, after a blob assembled with peers' pieces failed to verify,
// fetches each of those pieces again from the upstream and compares it with
// what the peer sent (a piece cannot be verified alone): the peers whose
// pieces differ are blamed (Blamer). If none differs, the upstream sent
// the wrong bytes and no peer is blamed. The fill fails either way: its
// readers have had the bytes already.
func (f *fill) blamePeers(ctx context.Context) {
	req, src := f.current()
	b, ok := src.(Blamer)
	rs, ranged := src.(RangeSource)
	if !ok || !ranged {
		return
	}
	f.mu.Lock()
	type sent struct {
		i    int
		peer string
	}
	var pieces []sent
	if f.pc != nil {
		for i := range f.pc.st {
			if p := f.pc.st[i].peer; p != "" {
				pieces = append(pieces, sent{i, p})
			}
		}
	}
	var plan Plan
	if f.pc != nil {
		plan = f.pc.plan
	}
	f.mu.Unlock()
	var culprits []string
	up := req
	up.From, up.Size = FromVerify, plan.Size
	for _, p := range pieces {
		if slices.Contains(culprits, p.peer) {
			continue
		}
		start, end := plan.Bounds(p.i)
		same, err := f.sameAsSource(ctx, rs, up, p.i, start, end)
		if err != nil {
			f.c.log.LogAttrs(ctx, slog.LevelWarn, "could not compare a peer's piece with the upstream's",
				slog.String("digest", f.dg.String()), slog.Int("piece", p.i), slog.String("peer", p.peer), slog.String("error", err.Error()))
			continue
		}
		if !same {
			culprits = append(culprits, p.peer)
		}
	}
	if len(culprits) > 0 {
		f.c.log.LogAttrs(ctx, slog.LevelWarn, "peers sent pieces that differ from the upstream's; skipping them for this blob",
			slog.String("digest", f.dg.String()), slog.Any("peers", culprits))
		b.Blame(req, culprits)
	}
}

// sameAsSource reports whether bytes [start, end) of the fill's file are
// those rs sends for them.
func (f *fill) sameAsSource(ctx context.Context, rs RangeSource, req Request, i int, start, end int64) (bool, error) {
	body, _, err := rs.OpenRange(ctx, req, i, start, end)
	if err != nil {
		return false, err
	}
	defer body.Close()
	a, b := GetBuffer(), GetBuffer()
	defer PutBuffer(a)
	defer PutBuffer(b)
	for off := start; off < end; {
		n, rerr := io.ReadFull(body, (*a)[:min(int64(len(*a)), end-off)])
		if n > 0 {
			if _, err := f.file.ReadAt((*b)[:n], off); err != nil {
				return false, err
			}
			if !bytes.Equal((*a)[:n], (*b)[:n]) {
				return false, nil
			}
			off += int64(n)
		}
		if rerr != nil && off < end {
			return false, rerr
		}
	}
	return true, nil
}

// transfer copies from src until EOF, resuming an interrupted transfer from
// the byte it reached up to Resumes times.
func (f *fill) transfer(ctx context.Context, req Request, src Source, h hash.Hash, received *int64) error {
	for attempt := 0; ; attempt++ {
		err := f.copyOnce(ctx, req, src, h, received)
		if err == nil {
			return nil
		}
		if attempt >= f.c.opts.Resumes || ctx.Err() != nil || errors.Is(err, ErrVerify) || errors.Is(err, errWrite) || !f.resumable() {
			return err
		}
		f.c.log.LogAttrs(ctx, slog.LevelWarn, "resuming interrupted fetch", slog.String("digest", f.dg.String()),
			slog.String("upstream", req.Registry), slog.String("repo", req.Repository),
			slog.Int64("offset", f.offset()), slog.String("error", err.Error()))
	}
}

// resumable reports whether a failed transfer can continue from f.written.
func (f *fill) resumable() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started && f.pc == nil // pieces resume piece by piece
}

func (f *fill) offset() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written
}

// copyOnce opens the source at the current offset and copies until EOF.
// The copy buffer is taken once the source has answered: a fill waiting for
// a turn or a slow source holds none.
func (f *fill) copyOnce(ctx context.Context, req Request, src Source, h hash.Hash, received *int64) error {
	offset := f.offset()
	body, meta, err := f.open(ctx, req, src, offset)
	if err != nil {
		return err
	}
	defer body.Close()
	bp := GetBuffer()
	defer PutBuffer(bp)
	buf := *bp
	f.mu.Lock()
	if !f.started {
		f.meta, f.started = meta, true
		// A blob a cluster peer streams whole (its owner, or a member
		// holding it) comes whole: its pieces are for blobs this node
		// assembles itself (Meta.End, or a stream from the upstream).
		if rs, ok := src.(RangeSource); ok && offset == 0 && req.Piece == nil && (meta.End > 0 || (!f.c.opts.NoPieces && meta.Peer == "")) {
			if plan := PlanFor(meta.Size); plan.Count > 1 {
				f.pc = newPieceSet(plan, f.c.opts.PieceFetches)
				f.pc.st[0].peer = meta.Peer
				f.cond.Broadcast()
				f.mu.Unlock()
				return f.runPieces(ctx, req, rs, body, meta.End, h, received)
			}
		}
		if meta.End > 0 {
			f.mu.Unlock()
			return fmt.Errorf("fetch: %s: source sent a first piece of a blob this node does not fetch in pieces", f.dg)
		}
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
				return fmt.Errorf("%w %s: %w", errWrite, f.dg, err)
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
			return fmt.Errorf("fetch: reading %s from %s: %w", f.dg, req.Registry, rerr)
		}
	}
}

// open opens the source at offset: for a piece fill, the piece's range of
// its blob, with Meta describing the piece (Size: its length).
func (f *fill) open(ctx context.Context, req Request, src Source, offset int64) (io.ReadCloser, Meta, error) {
	p := req.Piece
	if p == nil {
		return src.Open(ctx, req, offset)
	}
	rs, ok := src.(RangeSource)
	if !ok {
		return nil, Meta{}, ErrNoRange
	}
	blob := req
	blob.Digest, blob.Piece = p.Blob, nil
	body, meta, err := rs.OpenRange(ctx, blob, p.Index, p.Start+offset, p.End)
	if err != nil {
		return nil, Meta{}, err
	}
	if meta.Size != p.BlobSize {
		_ = body.Close()
		return nil, Meta{}, fmt.Errorf("%w: source says %d bytes for a range of a blob of %d", ErrVerify, meta.Size, p.BlobSize)
	}
	meta.Size, meta.End = p.End-p.Start, 0
	return body, meta, nil
}

func (f *fill) commit() error {
	req, _ := f.current()
	f.mu.Lock()
	info := store.Info{
		Digest:        f.dg,
		Size:          f.written,
		MediaType:     f.meta.MediaType,
		Repository:    req.Registry + "/" + req.Repository,
		PrivateOrigin: req.PrivateOrigin,
	}
	if req.Piece != nil {
		info.Kind = store.KindPiece
	}
	f.mu.Unlock()
	return f.c.store.Commit(f.file, info, true)
}
