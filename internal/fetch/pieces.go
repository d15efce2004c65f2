package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
)

// Pieces. A blob larger than PieceThreshold is fetched as fixed pieces,
// several at once, each with a ranged request, into the fill's one file at
// their offsets. Registries' CDNs cap what one connection carries (tens of
// MB/s), so a huge layer is as slow as one connection when fetched whole;
// and a lazy-pulling snapshotter (stargz, SOCI, Nydus) reads a blob's table
// of contents at its end first, which a sequential fill reaches last. With
// pieces, a Range reader's pieces jump the queue and it waits only for
// them; sequential readers follow the contiguous prefix as before.
//
// Pieces cannot be verified alone (registries publish whole-blob digests
// only): the fill hashes the contiguous prefix as it grows, reading it back
// from the file, and releases the last byte only once the whole digest
// matches, as for every blob. A range that does not include the last byte
// may be served before the blob is verified, as the registry itself would.
//
// The plan (piece size and count) is a pure function of the blob size, so
// every node computes the same one.

const (
	// PieceThreshold: blobs of this size or smaller are one piece (fetched
	// whole, exactly as without pieces).
	PieceThreshold = 16 << 20
	// MinPieceSize is the smallest piece: small enough that a Range reader
	// waits little for the piece that covers it (4 MiB at 16 MiB/s: 0.25 s),
	// large enough that a piece's request costs little against its bytes.
	MinPieceSize = 4 << 20
	// MaxPieces bounds a blob's piece count (and a fill's piece table): the
	// piece size doubles until the plan fits. 1024 pieces of 64 MiB: 64 GiB.
	MaxPieces = 1024
	// defaultPieceFetches is Options.PieceFetches's default; a Range
	// reader's pieces may add urgentPieceFetches more workers.
	defaultPieceFetches = 4
	urgentPieceFetches  = 8
)

// Plan is how a blob of a given size is split into pieces.
type Plan struct {
	Size      int64 // the blob's size
	PieceSize int64
	Count     int
}

// PlanFor returns the piece plan of a blob of size bytes: one piece up to
// PieceThreshold, else pieces of MinPieceSize doubled until at most
// MaxPieces cover the blob. A size < 0 (unknown) is one piece.
func PlanFor(size int64) Plan {
	if size <= PieceThreshold {
		return Plan{Size: size, PieceSize: max(size, 0), Count: 1}
	}
	ps := int64(MinPieceSize)
	for (size+ps-1)/ps > MaxPieces {
		ps *= 2
	}
	return Plan{Size: size, PieceSize: ps, Count: int((size + ps - 1) / ps)}
}

// Bounds returns piece i's byte range [start, end).
func (p Plan) Bounds(i int) (start, end int64) {
	start = int64(i) * p.PieceSize
	return start, min(start+p.PieceSize, p.Size)
}

// Index returns the piece holding byte off.
func (p Plan) Index(off int64) int {
	if p.PieceSize <= 0 {
		return 0
	}
	return int(off / p.PieceSize)
}

// PieceKey names piece i of blob in plan: a cluster member keeps the
// pieces it owns under their keys (store.KindPiece), and the piece's owners
// are the rendezvous owners of its key. The plan is part of the key, so
// two versions with different plans never mistake one piece for another.
func PieceKey(blob digest.Digest, plan Plan, i int) digest.Digest {
	return digest.FromString(fmt.Sprintf("berth-piece/v1 %s %d %d %d", blob, plan.Size, plan.PieceSize, i))
}

// ErrNoRange means a source cannot serve a byte range of the blob (an
// upstream that answers a ranged GET with the whole blob, a source with no
// ranged requests): the fill takes the blob whole from its first stream.
var ErrNoRange = errors.New("fetch: source does not serve byte ranges")

// RangeSource is a Source that can also open bytes [start, end) of a blob.
// OpenRange returns Meta with the blob's total size, or an error wrapping
// ErrNoRange when it cannot serve ranges. Piece is the index of the piece
// the range belongs to in PlanFor(size) (a cluster source routes it to the
// piece's owner). The caller closes the body.
type RangeSource interface {
	Source
	OpenRange(ctx context.Context, req Request, piece int, start, end int64) (io.ReadCloser, Meta, error)
}

// LocalPiece opens bytes [start, end) of the blob from the piece preq names
// (PieceRequest) if this node keeps it or is fetching it now for a peer
// (as its owner), so that the node's own fill of the blob does not fetch
// the piece from the upstream a second time. ok false: neither.
func (c *Coalescer) LocalPiece(ctx context.Context, preq Request, start, end int64) (body io.ReadCloser, meta Meta, ok bool) {
	p := preq.Piece
	if p == nil || start < p.Start || end > p.End || end <= start {
		return nil, Meta{}, false
	}
	meta = Meta{Size: p.BlobSize}
	if f, info, err := c.store.OpenPiece(preq.Digest); err == nil {
		if _, err := f.Seek(start-p.Start, io.SeekStart); err != nil || info.Size != p.End-p.Start {
			_ = f.Close()
			return nil, Meta{}, false
		}
		meta.MediaType = info.MediaType
		return &limitedFile{LimitedReader: io.LimitedReader{R: f, N: end - start}, f: f}, meta, true
	}
	if r := c.Join(ctx, preq); r != nil {
		m, err := r.Meta()
		if err != nil {
			_ = r.Close()
			return nil, Meta{}, false
		}
		meta.MediaType = m.MediaType
		r.Limit(start-p.Start, end-p.Start)
		return r, meta, true
	}
	return nil, Meta{}, false
}

// limitedFile reads a stored piece's range and closes the file.
type limitedFile struct {
	io.LimitedReader
	f interface{ Close() error }
}

func (l *limitedFile) Close() error { return l.f.Close() }
