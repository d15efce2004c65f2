package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// upstreamSource reads blobs from an upstream registry.
type upstreamSource struct {
	c *upstream.Client
	// pieces: the fetcher fetches big blobs in pieces (fetch.Options.NoPieces
	// unset).
	pieces bool
}

// Open opens the blob from offset. A blob with pieces whose size a
// manifest gave (fetch.Request.Size) is opened as its first piece only
// (fetch.Meta.End): a whole-blob stream would carry on past that piece
// while the other pieces come by range, and what it has in flight when it
// is closed is fetched twice.
func (s upstreamSource) Open(ctx context.Context, req fetch.Request, offset int64) (io.ReadCloser, fetch.Meta, error) {
	if offset == 0 && s.pieces && req.Piece == nil {
		if plan := fetch.PlanFor(req.Size); plan.Count > 1 {
			_, end := plan.Bounds(0)
			body, d, err := s.c.GetBlobRange(ctx, req.Repository, req.Digest, 0, end)
			switch {
			case err == nil && d.Size == req.Size:
				return body, fetch.Meta{Size: d.Size, MediaType: d.MediaType, End: end}, nil
			case err == nil: // the manifest's size was wrong: take the blob whole
				_ = body.Close()
			case upstream.Classify(err).Definite() || ctx.Err() != nil:
				return nil, fetch.Meta{}, err
			}
		}
	}
	body, d, err := s.c.GetBlob(ctx, req.Repository, req.Digest, offset)
	if err != nil {
		return nil, fetch.Meta{}, err
	}
	return body, fetch.Meta{Size: d.Size, MediaType: d.MediaType}, nil
}

// OpenRange reads one piece of a blob with a ranged GET; an upstream that
// answers with the whole blob serves no ranges (fetch.ErrNoRange).
func (s upstreamSource) OpenRange(ctx context.Context, req fetch.Request, _ int, start, end int64) (io.ReadCloser, fetch.Meta, error) {
	body, d, err := s.c.GetBlobRange(ctx, req.Repository, req.Digest, start, end)
	if errors.Is(err, upstream.ErrNoRange) {
		return nil, fetch.Meta{}, fmt.Errorf("%w: %w", fetch.ErrNoRange, err)
	}
	if err != nil {
		return nil, fetch.Meta{}, err
	}
	return body, fetch.Meta{Size: d.Size, MediaType: d.MediaType}, nil
}

// serveBlob answers GET/HEAD /v2/<name>/blobs/<digest>.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-blobs
func (h *Handler) serveBlob(w http.ResponseWriter, r *http.Request, req *request) error {
	dg := digest.Digest(req.path.Reference)
	// A store hit may race with eviction; a fill may finish between our
	// store miss and joining it. Two rounds settle both.
	for range 2 {
		f, info, err := h.opts.Store.OpenBlob(dg)
		if err == nil {
			defer f.Close()
			if err := h.recheckShared(r.Context(), req); err != nil {
				return err
			}
			h.m.Cache.WithLabelValues("blob", "hit").Inc()
			return h.serveFile(w, r, f, info)
		}
		if !store.IsNotFound(err) {
			return err
		}
		if req.heldOnly {
			return newError(http.StatusNotFound, CodeBlobUnknown, "blob %s is not held by this node", dg)
		}
		if r.Method == http.MethodHead {
			return h.headBlobUpstream(w, r, req, dg)
		}
		// The upstream takes one of the node's upstream turns while it
		// sends; a cluster source around it takes peer turns for peers.
		src := h.opts.Fetcher.Upstream().Limit(upstreamSource{req.client, h.opts.Fetcher.Pieces()})
		if h.opts.Source != nil {
			src = h.opts.Source(src)
		}
		rd, joined, err := h.opts.Fetcher.Get(r.Context(), fetch.Request{
			Verified: req.private, UpstreamToken: req.token, From: req.from, PrivateOrigin: privateOrigin(req),
			Digest: dg, Registry: req.target.Registry, Repository: req.target.Repository, Size: h.sizes.size(dg),
		}, src)
		if err != nil {
			return h.fetchRefused(err)
		}
		if rd == nil {
			continue // committed meanwhile: serve it from the store
		}
		defer rd.Close()
		if joined {
			h.m.Cache.WithLabelValues("blob", "coalesced").Inc()
		} else {
			h.m.Cache.WithLabelValues("blob", "miss").Inc()
		}
		return h.serveFill(w, r, req, dg, rd)
	}
	return newError(http.StatusServiceUnavailable, CodeUnavailable, "blob %s is being evicted; retry", dg)
}

// serveFile serves committed content with Range support; net/http sends an
// *os.File with sendfile.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, f io.ReadSeeker, info store.Info) error {
	if _, err := checkRange(r.Header.Get("Range"), info.Size); err != nil {
		return err
	}
	hd := w.Header()
	hd.Set("Docker-Content-Digest", info.Digest.String())
	hd.Set("Content-Type", blobMediaType(info.MediaType))
	hd.Set("Etag", `"`+info.Digest.String()+`"`)
	hd.Set("Cache-Control", "max-age=31536000")
	extendWriteDeadline(w, info.Size)
	defer clearWriteDeadline(w)
	var before int64
	rec, _ := w.(*recorder)
	if rec != nil {
		before = rec.bytes
	}
	http.ServeContent(w, r, "", info.Added, f)
	if rec != nil {
		h.m.ServedBytes.WithLabelValues("cache").Add(float64(rec.bytes - before))
	}
	return nil
}

// serveFill streams a blob from a fill in progress, honouring a single Range.
func (h *Handler) serveFill(w http.ResponseWriter, r *http.Request, req *request, dg digest.Digest, rd *fetch.Reader) error {
	meta, err := rd.Meta()
	if err != nil {
		if r.Context().Err() != nil {
			return newError(499, CodeUnavailable, "client went away")
		}
		if errors.Is(err, fetch.ErrClosed) {
			return h.fetchRefused(err) // queued when the shutdown began
		}
		return upstreamError(req.target, err, CodeBlobUnknown) // counted by the fill observer
	}
	hd := w.Header()
	hd.Set("Docker-Content-Digest", dg.String())
	hd.Set("Content-Type", blobMediaType(meta.MediaType))
	hd.Set("Etag", `"`+dg.String()+`"`)
	status := http.StatusOK
	length := meta.Size
	if meta.Size >= 0 {
		hd.Set("Accept-Ranges", "bytes")
		rg, err := checkRange(r.Header.Get("Range"), meta.Size)
		if err != nil {
			return err
		}
		if rg != nil {
			status, length = http.StatusPartialContent, rg.length
			rd.Limit(rg.start, rg.start+rg.length)
			if !req.peer {
				rd.SendUnverified() // a client's Range: as the registry would answer it (fetch.Reader)
			}
			hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rg.start, rg.start+rg.length-1, meta.Size))
		}
		hd.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	defer clearWriteDeadline(w)
	// After the commit one write can be the whole rest of the blob: give
	// each write time for its size, not one chunk's idle timeout.
	rc := http.NewResponseController(w)
	rd.OnWrite(func(n int64) { _ = rc.SetWriteDeadline(deadlineFor(n)) })
	sent, err := rd.WriteTo(w)
	h.m.ServedBytes.WithLabelValues("fill").Add(float64(sent))
	if err == nil || errors.Is(err, fetch.ErrClientGone) || errors.Is(err, context.Canceled) || r.Context().Err() != nil {
		return nil // done, or the client went away; the fill goes on
	}
	// The body is already partly sent: close the connection short of
	// Content-Length so the client sees a failed transfer.
	h.log.Warn("aborting blob response", "digest", dg, "error", err)
	panic(http.ErrAbortHandler)
}

// fetchRefused maps a fill the fetcher would not start to a 503 the client
// retries after a while, and counts it.
func (h *Handler) fetchRefused(err error) error {
	var e *Error
	switch {
	case errors.Is(err, fetch.ErrOverloaded):
		h.m.FetchRejected.WithLabelValues("overloaded").Inc()
		h.logOverload()
		e = newError(http.StatusServiceUnavailable, CodeTooManyRequests, "too many blob downloads in progress on this mirror; retry later")
	case errors.Is(err, fetch.ErrClosed):
		h.m.FetchRejected.WithLabelValues("shutdown").Inc()
		e = newError(http.StatusServiceUnavailable, CodeUnavailable, "this mirror is shutting down; retry")
	default:
		return err
	}
	e.Header = http.Header{"Retry-After": {retryAfterSeconds}}
	return e
}

// overloadLogInterval spaces the log lines of a sustained overload; the
// counter berth_fetch_rejected_total has every refusal.
const overloadLogInterval = 10 * time.Second

// logOverload logs a full fill queue at most once per overloadLogInterval.
func (h *Handler) logOverload() {
	now := h.opts.Now().UnixNano()
	last := h.overloadLogged.Load()
	if now-last < int64(overloadLogInterval) || !h.overloadLogged.CompareAndSwap(last, now) {
		return
	}
	h.log.Warn("blob fill queue full: refusing new downloads with 503 (see berth_fetch_rejected_total; max_fetches bounds the running fills)")
}

// retryAfterSeconds is the Retry-After sent with a refused fill: long enough
// for a few fills to finish, short against a pull's patience.
const retryAfterSeconds = "2"

// headBlobUpstream answers HEAD for a blob not in the store by asking its
// owner in a cluster (which may hold it), else the upstream, without
// fetching the blob.
func (h *Handler) headBlobUpstream(w http.ResponseWriter, r *http.Request, req *request, dg digest.Digest) error {
	d, err := h.headFromPeer(r.Context(), req, dg)
	if err != nil {
		d, err = req.client.HeadBlob(r.Context(), req.target.Repository, dg)
	}
	if err != nil {
		h.countFailure(r.Context(), req.target, err)
		return upstreamError(req.target, err, CodeBlobUnknown)
	}
	hd := w.Header()
	hd.Set("Docker-Content-Digest", dg.String())
	hd.Set("Content-Type", blobMediaType(d.MediaType))
	hd.Set("Etag", `"`+dg.String()+`"`)
	hd.Set("Accept-Ranges", "bytes")
	if d.Size >= 0 {
		hd.Set("Content-Length", strconv.FormatInt(d.Size, 10))
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// headFromPeer asks the cluster for a blob's size and type (Options.PeerHead).
func (h *Handler) headFromPeer(ctx context.Context, req *request, dg digest.Digest) (upstream.Descriptor, error) {
	if h.opts.PeerHead == nil || req.peer {
		// A peer's HEAD is answered here or by the upstream, never
		// forwarded to another member.
		return upstream.Descriptor{}, errors.New("no cluster")
	}
	meta, err := h.opts.PeerHead(ctx, fetch.Request{Digest: dg, Registry: req.target.Registry, Repository: req.target.Repository,
		Verified: req.private, UpstreamToken: req.token, From: req.from})
	if err != nil {
		return upstream.Descriptor{}, err
	}
	return upstream.Descriptor{Digest: dg, Size: meta.Size, MediaType: meta.MediaType}, nil
}

func blobMediaType(mt string) string {
	if mt == "" {
		return "application/octet-stream"
	}
	return mt
}

// writeIdleTimeout is how long one write to a client may stall before the
// connection is dropped, so a stalled client cannot pin a buffer forever.
const writeIdleTimeout = 60 * time.Second

// extendWriteDeadline gives a sendfile transfer of size bytes time to finish
// at a modest minimum rate, plus slack.
func extendWriteDeadline(w http.ResponseWriter, size int64) {
	_ = http.NewResponseController(w).SetWriteDeadline(deadlineFor(size))
}

// deadlineFor is when a write of size bytes must have finished.
func deadlineFor(size int64) time.Time {
	const minRate = 1 << 20 // bytes per second
	return time.Now().Add(writeIdleTimeout + time.Duration(size/minRate)*time.Second)
}

// clearWriteDeadline removes the deadline set for a transfer: net/http does
// not reset it between requests on a kept-alive connection (without a
// server-wide WriteTimeout), and a stale one would fail the next response.
func clearWriteDeadline(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
}
