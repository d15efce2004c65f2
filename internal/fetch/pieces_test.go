package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

// pieceSource serves data whole (Open) and by range (OpenRange), counting
// the bytes it sends. The first stream may be held at holdAt bytes until
// hold is opened; ranged opens may be refused (noRange), corrupted
// (corruptPiece), broken once midway (breakPiece) or lie about the size.
type pieceSource struct {
	data         []byte
	holdAt       int64
	hold         *gate
	noRange      bool
	corruptPiece int // -1: none
	breakPiece   int // -1: none
	wrongTotal   bool
	// firstOnly: Open from 0 sends the first piece only (Meta.End), as a
	// cluster source does.
	firstOnly bool

	sent   atomic.Int64
	ranged atomic.Int32
	mu     sync.Mutex
	opened []string // "whole@off" / "range start-end"
	broken bool
	blamed []string
}

// Blame records the peers a fill blamed (fetch.Blamer).
func (s *pieceSource) Blame(_ Request, peers []string) {
	s.mu.Lock()
	s.blamed = append(s.blamed, peers...)
	s.mu.Unlock()
}

func newPieceSource(n int) *pieceSource {
	return &pieceSource{data: data(n), corruptPiece: -1, breakPiece: -1}
}

func (s *pieceSource) log(e string) {
	s.mu.Lock()
	s.opened = append(s.opened, e)
	s.mu.Unlock()
}

func (s *pieceSource) Open(ctx context.Context, _ Request, offset int64) (io.ReadCloser, Meta, error) {
	s.log(fmt.Sprintf("whole@%d", offset))
	meta := Meta{Size: int64(len(s.data)), MediaType: "application/x-test"}
	data := s.data[offset:]
	if s.firstOnly && offset == 0 {
		_, meta.End = PlanFor(meta.Size).Bounds(0)
		data = data[:meta.End]
	}
	r := &pieceReader{s: s, ctx: ctx, data: data, pos: offset, hold: s.hold, holdAt: s.holdAt}
	return io.NopCloser(r), meta, nil
}

func (s *pieceSource) OpenRange(ctx context.Context, req Request, piece int, start, end int64) (io.ReadCloser, Meta, error) {
	if s.noRange {
		return nil, Meta{}, fmt.Errorf("test: %w", ErrNoRange)
	}
	s.ranged.Add(1)
	s.log(fmt.Sprintf("range %d-%d", start, end))
	b := s.data[start:end]
	verify := req.From == FromVerify // the upstream's bytes, to compare a peer's with
	if piece == s.corruptPiece && !verify {
		b = bytes.Clone(b)
		b[0] ^= 0xff
	}
	r := &pieceReader{s: s, ctx: ctx, data: b, pos: start}
	s.mu.Lock()
	if piece == s.breakPiece && !s.broken {
		s.broken = true
		r.breakAfter = int64(len(b) / 2)
	}
	s.mu.Unlock()
	size := int64(len(s.data))
	if s.wrongTotal {
		size++
	}
	meta := Meta{Size: size, MediaType: "application/x-test"}
	switch {
	case verify:
	case piece == s.corruptPiece:
		meta.Peer = "bad-peer" // as a cluster source says who sent it
	case piece == 1:
		meta.Peer = "good-peer"
	}
	return io.NopCloser(r), meta, nil
}

type pieceReader struct {
	s          *pieceSource
	ctx        context.Context
	data       []byte
	pos        int64
	n          int64
	hold       *gate
	holdAt     int64
	breakAfter int64
}

func (r *pieceReader) Read(p []byte) (int, error) {
	if r.hold != nil && r.pos >= r.holdAt {
		select {
		case <-r.hold.ch:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if r.breakAfter > 0 && r.n >= r.breakAfter {
		return 0, errors.New("connection reset")
	}
	n := min(len(p), len(r.data), 64<<10)
	if r.hold != nil && r.pos < r.holdAt {
		n = min(n, int(r.holdAt-r.pos))
	}
	if r.breakAfter > 0 {
		n = min(n, int(r.breakAfter-r.n))
	}
	copy(p, r.data[:n])
	r.data, r.pos, r.n = r.data[n:], r.pos+int64(n), r.n+int64(n)
	r.s.sent.Add(int64(n))
	return n, nil
}

func TestPlanFor(t *testing.T) {
	for _, tc := range []struct {
		size      int64
		pieceSize int64
		count     int
	}{
		{-1, 0, 1},
		{0, 0, 1},
		{PieceThreshold, PieceThreshold, 1},
		{PieceThreshold + 1, MinPieceSize, 5},
		{128 << 20, MinPieceSize, 32},
		{4 << 30, 4 << 20, 1024},
		{4<<30 + 1, 8 << 20, 513},
		{40 << 30, 64 << 20, 640},
	} {
		p := PlanFor(tc.size)
		if p.PieceSize != tc.pieceSize || p.Count != tc.count {
			t.Errorf("PlanFor(%d) = %d pieces of %d, want %d of %d", tc.size, p.Count, p.PieceSize, tc.count, tc.pieceSize)
		}
		if p.Count > 1 {
			if s, e := p.Bounds(p.Count - 1); e != tc.size || s >= e {
				t.Errorf("PlanFor(%d): last piece [%d, %d)", tc.size, s, e)
			}
			if p.Index(tc.size-1) != p.Count-1 || p.Index(p.PieceSize) != 1 {
				t.Errorf("PlanFor(%d): Index wrong", tc.size)
			}
		}
	}
}

func getAll(t *testing.T, c *Coalescer, blob []byte, src Source) []byte {
	t.Helper()
	r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(blob)}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	return got
}

// TestPiecesFetchInParallel: a blob above the threshold is fetched as
// pieces by ranged requests, committed whole and verified, each byte sent
// by the source once.
func TestPiecesFetchInParallel(t *testing.T) {
	src := newPieceSource(PieceThreshold + 3*MinPieceSize + 12345)
	c, st := newCoalescer(t, Options{})
	if got := getAll(t, c, src.data, src); !bytes.Equal(got, src.data) {
		t.Fatal("wrong bytes")
	}
	c.Wait()
	if _, err := st.Stat(digest.FromBytes(src.data)); err != nil {
		t.Fatalf("not committed: %v", err)
	}
	if src.ranged.Load() == 0 {
		t.Errorf("no ranged request: %v", src.opened)
	}
	if n := src.sent.Load(); n != int64(len(src.data)) {
		t.Errorf("source sent %d bytes for a blob of %d", n, len(src.data))
	}
}

// TestPiecesRangeJumpsQueue: a Range reader of the blob's last bytes gets
// them while the first stream is still held at byte 0 (the fill has no
// prefix at all), before the blob is verified; a whole reader gets its last
// byte only after.
func TestPiecesRangeJumpsQueue(t *testing.T) {
	src := newPieceSource(PieceThreshold + 5*MinPieceSize)
	src.hold, src.holdAt = newGate(t), 0
	c, _ := newCoalescer(t, Options{})
	dg := digest.FromBytes(src.data)
	r, _, err := c.Get(context.Background(), Request{Digest: dg}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Meta(); err != nil {
		t.Fatal(err)
	}
	size := int64(len(src.data))
	r.Limit(size-1<<20, size)
	r.SendUnverified()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, src.data[size-1<<20:]) {
		t.Fatalf("range: %d bytes, %v", len(got), err)
	}
	// Still held: nothing hashed, nothing committed.
	whole, _, err := c.Get(context.Background(), Request{Digest: dg}, src)
	if err != nil || whole == nil {
		t.Fatalf("join: %v", err)
	}
	defer whole.Close()
	src.hold.open()
	all, err := io.ReadAll(whole)
	if err != nil || !bytes.Equal(all, src.data) {
		t.Fatalf("whole: %d bytes, %v", len(all), err)
	}
	if n := src.sent.Load(); n != size {
		t.Errorf("source sent %d bytes for a blob of %d", n, size)
	}
}

// TestPiecesNoRange: a source that serves no ranges gives the blob whole
// through the first stream, once.
func TestPiecesNoRange(t *testing.T) {
	src := newPieceSource(PieceThreshold + 2*MinPieceSize)
	src.noRange = true
	c, _ := newCoalescer(t, Options{})
	if got := getAll(t, c, src.data, src); !bytes.Equal(got, src.data) {
		t.Fatal("wrong bytes")
	}
	if n := src.sent.Load(); n != int64(len(src.data)) {
		t.Errorf("source sent %d bytes for a blob of %d", n, len(src.data))
	}
}

// TestPiecesCorruptNeverCommits: one wrong byte in one piece fails the
// whole blob for every reader; nothing is committed; of the peers that sent
// pieces, only the one whose piece differs from the upstream's is blamed.
func TestPiecesCorruptNeverCommits(t *testing.T) {
	src := newPieceSource(PieceThreshold + 2*MinPieceSize)
	src.corruptPiece = 3
	c, st := newCoalescer(t, Options{})
	dg := digest.FromBytes(src.data)
	r, _, err := c.Get(context.Background(), Request{Digest: dg}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if !errors.Is(err, ErrVerify) || len(got) >= len(src.data) {
		t.Fatalf("read %d of %d bytes, err %v: want ErrVerify short of the end", len(got), len(src.data), err)
	}
	c.Wait()
	if _, err := st.Stat(dg); err == nil {
		t.Fatal("corrupt blob committed")
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.blamed) != 1 || src.blamed[0] != "bad-peer" {
		t.Errorf("blamed %v, want only the peer whose piece differs from the upstream's", src.blamed)
	}
}

// TestPiecesWrongTotal: a ranged answer about another size is refused.
func TestPiecesWrongTotal(t *testing.T) {
	src := newPieceSource(PieceThreshold + 2*MinPieceSize)
	src.wrongTotal = true
	c, _ := newCoalescer(t, Options{})
	r, _, err := c.Get(context.Background(), Request{Digest: digest.FromBytes(src.data)}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadAll(r); !errors.Is(err, ErrVerify) {
		t.Fatalf("err %v, want ErrVerify", err)
	}
}

// TestPiecesResumeBrokenPiece: a piece broken midway is resumed from the
// byte it reached: only that piece's rest is fetched again.
func TestPiecesResumeBrokenPiece(t *testing.T) {
	src := newPieceSource(PieceThreshold + 2*MinPieceSize)
	src.breakPiece = 2
	c, _ := newCoalescer(t, Options{Resumes: 1})
	if got := getAll(t, c, src.data, src); !bytes.Equal(got, src.data) {
		t.Fatal("wrong bytes")
	}
	if n := src.sent.Load(); n != int64(len(src.data)) {
		t.Errorf("source sent %d bytes for a blob of %d (a resume fetches only the rest)", n, len(src.data))
	}
	s, e := PlanFor(int64(len(src.data))).Bounds(2)
	want := fmt.Sprintf("range %d-%d", s+(e-s)/2, e)
	src.mu.Lock()
	defer src.mu.Unlock()
	for _, o := range src.opened {
		if o == want {
			return
		}
	}
	t.Errorf("no resume %q in %v", want, src.opened)
}

// TestPiecesOff: NoPieces fetches whole.
func TestPiecesOff(t *testing.T) {
	src := newPieceSource(PieceThreshold + 2*MinPieceSize)
	c, _ := newCoalescer(t, Options{NoPieces: true})
	if got := getAll(t, c, src.data, src); !bytes.Equal(got, src.data) {
		t.Fatal("wrong bytes")
	}
	if src.ranged.Load() != 0 {
		t.Errorf("ranged requests with NoPieces: %v", src.opened)
	}
}

// TestPiecesFirstPieceOnly: a source whose first stream is the first piece
// only (Meta.End) gets the rest asked by range, even with NoPieces.
func TestPiecesFirstPieceOnly(t *testing.T) {
	src := newPieceSource(PieceThreshold + 2*MinPieceSize)
	src.firstOnly = true
	c, _ := newCoalescer(t, Options{NoPieces: true})
	if got := getAll(t, c, src.data, src); !bytes.Equal(got, src.data) {
		t.Fatal("wrong bytes")
	}
	if n := src.sent.Load(); n != int64(len(src.data)) {
		t.Errorf("source sent %d bytes for a blob of %d", n, len(src.data))
	}
}

// TestPieceFill: a fill of one piece fetches the piece's range, commits it
// as a piece that only OpenPiece reads, under its key.
func TestPieceFill(t *testing.T) {
	src := newPieceSource(PieceThreshold + 2*MinPieceSize + 100)
	size := int64(len(src.data))
	blob := Request{Digest: digest.FromBytes(src.data), Registry: "r.test", Repository: "org/app"}
	plan := PlanFor(size)
	req := PieceRequest(blob, size, plan.Count-1)
	if req.Digest != PieceKey(blob.Digest, plan, plan.Count-1) || req.Piece.End != size {
		t.Fatalf("piece request %+v", req.Piece)
	}
	c, st := newCoalescer(t, Options{})
	r, _, err := c.Get(context.Background(), req, src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	want := src.data[req.Piece.Start:]
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("piece: %d bytes, %v", len(got), err)
	}
	c.Wait()
	if _, _, err := st.OpenBlob(req.Digest); err == nil {
		t.Error("a piece was opened as a blob")
	}
	f, info, err := st.OpenPiece(req.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if info.Size != int64(len(want)) || info.Kind.String() != "piece" {
		t.Errorf("stored piece %+v", info)
	}
	// Stored: a second Get finds it (nil reader) without the source.
	if r, _, err := c.Get(context.Background(), req, src); err != nil || r != nil {
		t.Errorf("second Get: %v, %v", r, err)
	}
	if n := src.sent.Load(); n != int64(len(want)) {
		t.Errorf("source sent %d bytes for a piece of %d", n, len(want))
	}
}

// TestJoinNeverStarts: Join gives a reader on a running fill only.
func TestJoinNeverStarts(t *testing.T) {
	src := newPieceSource(PieceThreshold + 2*MinPieceSize)
	src.hold, src.holdAt = newGate(t), MinPieceSize
	c, _ := newCoalescer(t, Options{})
	req := Request{Digest: digest.FromBytes(src.data)}
	if r := c.Join(context.Background(), req); r != nil {
		t.Fatal("Join started a fill")
	}
	r, _, err := c.Get(context.Background(), req, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Meta(); err != nil {
		t.Fatal(err)
	}
	j := c.Join(context.Background(), req)
	if j == nil {
		t.Fatal("Join found no running fill")
	}
	defer j.Close()
	size := int64(len(src.data))
	j.Limit(size-10, size)
	j.SendUnverified()
	got, err := io.ReadAll(j)
	if err != nil || !bytes.Equal(got, src.data[size-10:]) {
		t.Fatalf("joined range: %d bytes, %v", len(got), err)
	}
	src.hold.open()
}
