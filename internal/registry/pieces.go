package registry

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/fetch"
)

// servePiece answers a peer's request for bytes of piece i of the blob
// req names, of size bytes (fetch.PlanFor(size) is the plan both nodes
// compute), the Range header naming bytes inside the piece (none: the whole
// piece). The answer is a 206 with the blob's Content-Range, from, in order:
//   - the whole blob on disk;
//   - this node's own fill of the blob, running now (its pieces covering
//     the range jump its queue);
//   - the piece kept here (store.KindPiece);
//   - a fill of the piece alone from the upstream, coalesced, streamed
//     while it lands and then kept: this node owns the piece.
//
// Nothing of it is verified (a piece cannot be): the asking node verifies
// the whole blob before it serves its last byte or commits it. Pieces of
// private content are not served: the asking node fetches those whole.
func (h *Handler) servePiece(w http.ResponseWriter, r *http.Request, req *request, i int, size int64) error {
	dg := digest.Digest(req.path.Reference)
	plan := fetch.PlanFor(size)
	if plan.Count < 2 || i < 0 || i >= plan.Count {
		return newError(http.StatusBadRequest, CodeRangeInvalid, "piece %d of a blob of %d bytes does not exist", i, size)
	}
	if req.private {
		return newError(http.StatusNotFound, CodeBlobUnknown, "pieces of private content are not served; ask for the blob")
	}
	pstart, pend := plan.Bounds(i)
	start, length := pstart, pend-pstart
	if hr := r.Header.Get("Range"); hr != "" {
		rg, err := checkRange(hr, size)
		if err != nil {
			return err
		}
		if rg == nil || rg.start < pstart || rg.start+rg.length > pend {
			return newError(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid, "the range must be one range inside piece %d", i)
		}
		start, length = rg.start, rg.length
	}
	blob := fetch.Request{Digest: dg, Registry: req.target.Registry, Repository: req.target.Repository, From: req.from}
	for range 2 {
		if f, info, err := h.opts.Store.OpenBlob(dg); err == nil {
			defer f.Close()
			if info.Size != size {
				return newError(http.StatusNotFound, CodeBlobUnknown, "blob %s has %d bytes here, not %d", dg, info.Size, size)
			}
			return h.sendPiece(w, f, info.MediaType, dg, start, length, size, start)
		}
		if rd := h.opts.Fetcher.Join(r.Context(), blob); rd != nil {
			defer rd.Close()
			return h.streamPiece(w, r, rd, dg, start, length, size, start, true)
		}
		preq := fetch.PieceRequest(blob, size, i)
		if f, info, err := h.opts.Store.OpenPiece(preq.Digest); err == nil {
			defer f.Close()
			return h.sendPiece(w, f, info.MediaType, dg, start, length, size, start-pstart)
		}
		src := h.opts.Fetcher.Upstream().Limit(upstreamSource{req.client, false})
		rd, _, err := h.opts.Fetcher.Get(r.Context(), preq, src)
		if err != nil {
			return h.fetchRefused(err)
		}
		if rd == nil {
			continue // committed meanwhile: serve it from the store
		}
		defer rd.Close()
		return h.streamPiece(w, r, rd, dg, start, length, size, start-pstart, false)
	}
	return newError(http.StatusServiceUnavailable, CodeUnavailable, "piece %d of %s is being evicted; retry", i, dg)
}

// pieceHeaders sets a piece answer's headers: a 206 with the blob's
// Content-Range.
func pieceHeaders(w http.ResponseWriter, mediaType string, dg digest.Digest, start, length, size int64) {
	hd := w.Header()
	hd.Set("Docker-Content-Digest", dg.String())
	hd.Set("Content-Type", blobMediaType(mediaType))
	hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size))
	hd.Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(http.StatusPartialContent)
}

// sendPiece sends length bytes of f from off (by sendfile).
func (h *Handler) sendPiece(w http.ResponseWriter, f *os.File, mediaType string, dg digest.Digest, start, length, size, off int64) error {
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return fmt.Errorf("registry: seeking in %s: %w", dg, err)
	}
	extendWriteDeadline(w, length)
	defer clearWriteDeadline(w)
	pieceHeaders(w, mediaType, dg, start, length, size)
	n, err := io.Copy(w, &io.LimitedReader{R: f, N: length})
	h.m.ServedBytes.WithLabelValues("cache").Add(float64(n))
	if err != nil || n < length {
		panic(http.ErrAbortHandler) // cut short of Content-Length: the peer sees a failed transfer
	}
	return nil
}

// streamPiece sends length bytes from off of a fill (the blob's own, or the
// piece's: whole false) as they land.
func (h *Handler) streamPiece(w http.ResponseWriter, r *http.Request, rd *fetch.Reader, dg digest.Digest, start, length, size, off int64, whole bool) error {
	meta, err := rd.Meta()
	if err != nil {
		if r.Context().Err() != nil {
			return newError(499, CodeUnavailable, "peer went away")
		}
		return newError(http.StatusNotFound, CodeBlobUnknown, "blob %s: %v", dg, err)
	}
	if whole && meta.Size != size {
		return newError(http.StatusNotFound, CodeBlobUnknown, "blob %s has %d bytes here, not %d", dg, meta.Size, size)
	}
	rd.Limit(off, off+length)
	rd.SendUnverified()
	pieceHeaders(w, meta.MediaType, dg, start, length, size)
	defer clearWriteDeadline(w)
	rc := http.NewResponseController(w)
	rd.OnWrite(func(n int64) { _ = rc.SetWriteDeadline(deadlineFor(n)) })
	sent, err := rd.WriteTo(w)
	h.m.ServedBytes.WithLabelValues("fill").Add(float64(sent))
	if err == nil || errors.Is(err, fetch.ErrClientGone) || r.Context().Err() != nil {
		return nil
	}
	h.log.Warn("aborting piece response", "digest", dg, "offset", start, "error", err)
	panic(http.ErrAbortHandler)
}
