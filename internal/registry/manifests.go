package registry

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// defaultMaxManifestBytes is distribution's cap on a manifest; config's
// max_manifest_bytes replaces it.
const defaultMaxManifestBytes = 4 << 20

// manifest is a manifest ready to serve: info.MediaType is its type for the
// repository it was asked through.
type manifest struct {
	body []byte
	info store.Info
}

// serveManifest answers GET/HEAD /v2/<name>/manifests/<reference>. The
// client's Accept header plays no part: a tag resolves to its real content
// (asked upstream with every modern type), served with its real type, as
// modern registries do; a narrowed answer would be cached for every client.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
func (h *Handler) serveManifest(w http.ResponseWriter, r *http.Request, req *request) error {
	ref := req.path.Reference
	var m manifest
	var err error
	if IsDigest(ref) {
		m, err = h.manifestByDigest(r.Context(), req, digest.Digest(ref))
	} else {
		m, err = h.manifestByTag(r.Context(), req, ref)
	}
	if err != nil {
		return err
	}
	hd := w.Header()
	hd.Set("Content-Type", m.info.MediaType)
	hd.Set("Docker-Content-Digest", m.info.Digest.String())
	hd.Set("Etag", `"`+m.info.Digest.String()+`"`)
	hd.Set("Content-Length", strconv.Itoa(len(m.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(m.body)
	}
	return nil
}

func (h *Handler) maxManifestBytes() int64 {
	if m := h.live().MaxManifestBytes; m > 0 {
		return m
	}
	return defaultMaxManifestBytes
}

// cachedManifest reads dg from the store as a manifest for req's repository.
// It reports a miss (false, nil) for anything the upstream must answer: not
// stored, stored as a blob (a layer's digest asked as a manifest is never
// read into memory), over the cap, or with no type known for this repository.
//
// A blob stored larger than the cap cannot be a manifest this node would
// serve: that is a 404 at once. Asking the upstream would make it read the
// whole layer (docker-registry answers 500 for a 128 MiB layer there, and
// each retry reads it again).
func (h *Handler) cachedManifest(req *request, dg digest.Digest) (manifest, bool, error) {
	max := h.maxManifestBytes()
	body, info, err := h.opts.Store.ReadManifest(req.target.String(), dg, max)
	switch {
	case err == nil:
		if isImageManifest(info.MediaType) {
			h.sizes.learn(body) // after a restart the hints are gone; the manifests are not
		}
		return manifest{body, info}, true, nil
	case errors.Is(err, store.ErrNotManifest):
		if bi, serr := h.opts.Store.Stat(dg); serr == nil && bi.Size > max {
			return manifest{}, false, newError(http.StatusNotFound, CodeManifestUnknown,
				"%s is a blob of %d bytes, larger than any manifest served here (%d)", dg, bi.Size, max)
		}
		return manifest{}, false, nil
	case store.IsNotFound(err), errors.Is(err, store.ErrTooLarge):
		return manifest{}, false, nil
	default:
		return manifest{}, false, err
	}
}

func (h *Handler) manifestByDigest(ctx context.Context, req *request, dg digest.Digest) (manifest, error) {
	m, ok, err := h.cachedManifest(req, dg)
	if err != nil {
		return manifest{}, err
	}
	if ok {
		if err := h.recheckShared(ctx, req); err != nil {
			return manifest{}, err
		}
		h.m.Cache.WithLabelValues("manifest", "hit").Inc()
		return m, nil
	}
	if req.heldOnly {
		return manifest{}, newError(http.StatusNotFound, CodeManifestUnknown, "manifest %s is not held by this node", dg)
	}
	h.m.Cache.WithLabelValues("manifest", "miss").Inc()
	m, err = h.fetchByDigest(ctx, req, dg)
	if err != nil {
		return manifest{}, upstreamError(req.target, err, CodeManifestUnknown)
	}
	return m, nil
}

// fetchByDigest fetches dg once for all concurrent askers of req's
// repository: clients asking by digest, tag resolutions on this node, and
// peers asking this node as the digest's owner.
func (h *Handler) fetchByDigest(ctx context.Context, req *request, dg digest.Digest) (manifest, error) {
	v, err, _ := h.manifests.Do("m\x00"+req.target.String()+"\x00"+dg.String(), func() (any, error) {
		// Detached: the result serves every waiter, not just the first client.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.live().UpstreamTimeout)
		defer cancel()
		return h.fetchManifest(fctx, req, dg.String())
	})
	if err != nil {
		return manifest{}, err
	}
	return v.(manifest), nil
}

// fetchManifest asks the digest's owner in a cluster (peer.go), else GETs ref upstream (its bytes verified against its digest,
// and capped), checks its type and stores it. Failures are counted here.
func (h *Handler) fetchManifest(ctx context.Context, req *request, ref string) (manifest, error) {
	if m, ok := h.manifestFromPeer(ctx, req, ref); ok {
		return m, nil
	}
	t := req.target
	body, d, err := req.client.GetManifest(ctx, t.Repository, ref, h.maxManifestBytes())
	var nm store.NewManifest
	if err == nil {
		nm, err = newManifest(t, d, body)
	}
	if err != nil {
		h.countFailure(ctx, t, err)
		return manifest{}, err
	}
	info, err := h.putManifest(req, body, nm)
	if err != nil {
		return manifest{}, err
	}
	return manifest{body, info}, nil
}

// manifestByTag resolves a tag at most once per TagTTL, serving the last known
// digest when the upstream cannot be reached.
func (h *Handler) manifestByTag(ctx context.Context, req *request, tag string) (manifest, error) {
	t := req.target
	known, kerr := h.opts.Store.Tag(t.Registry, t.Repository, tag)
	if kerr == nil && h.opts.Now().Sub(known.Resolved) < h.live().TagTTL {
		if m, ok, err := h.cachedManifest(req, known.Digest); ok && err == nil {
			h.m.Cache.WithLabelValues("manifest", "hit").Inc()
			return m, nil
		}
	}
	m, err := h.resolveTag(ctx, req, tag)
	if err == nil {
		return m, nil
	}
	var rerr *resolveError
	if kerr == nil && errors.As(err, &rerr) && upstream.IsUnavailable(rerr.err) {
		if m, ok, serr := h.cachedManifest(req, known.Digest); ok && serr == nil {
			h.m.StaleTags.WithLabelValues(t.Registry).Inc()
			h.m.Cache.WithLabelValues("manifest", "stale").Inc()
			h.log.LogAttrs(ctx, slog.LevelWarn, "serving stale tag: upstream unavailable",
				slog.String("upstream", t.Registry), slog.String("repo", t.Repository), slog.String("tag", tag),
				slog.String("digest", known.Digest.String()), slog.Time("resolved", known.Resolved),
				slog.String("error", rerr.err.Error()))
			return m, nil
		}
	}
	if errors.As(err, &rerr) {
		return manifest{}, upstreamError(t, rerr.err, CodeManifestUnknown)
	}
	return manifest{}, err
}

// resolveError carries an upstream error out of resolveTag unmapped, so the
// caller can decide on stale-if-error.
type resolveError struct{ err error }

func (e *resolveError) Error() string { return e.err.Error() }
func (e *resolveError) Unwrap() error { return e.err }

// resolveTag asks the upstream what tag is now (one HEAD for all concurrent
// askers, whatever their Accept), fetches the manifest if it is not cached,
// and records the resolution.
func (h *Handler) resolveTag(ctx context.Context, req *request, tag string) (manifest, error) {
	t := req.target
	v, err, _ := h.manifests.Do("t\x00"+t.String()+"\x00"+tag, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.live().UpstreamTimeout)
		defer cancel()
		m, err := h.headTag(fctx, req, tag)
		if err != nil {
			return nil, err
		}
		rec := store.Tag{Digest: m.info.Digest, MediaType: m.info.MediaType, Resolved: h.opts.Now()}
		if err := h.opts.Store.SetTag(t.Registry, t.Repository, tag, rec); err != nil {
			h.log.Warn("recording tag", "upstream", t.Registry, "repo", t.Repository, "tag", tag, "error", err)
		}
		return m, nil
	})
	if err != nil {
		return manifest{}, err
	}
	return v.(manifest), nil
}

func (h *Handler) headTag(ctx context.Context, req *request, tag string) (manifest, error) {
	d, err := req.client.HeadManifest(ctx, req.target.Repository, tag)
	if err != nil {
		h.countFailure(ctx, req.target, err)
		return manifest{}, &resolveError{err}
	}
	if d.Digest == "" {
		h.m.Cache.WithLabelValues("manifest", "miss").Inc()
		m, err := h.fetchManifest(ctx, req, tag)
		if err != nil {
			return manifest{}, &resolveError{err}
		}
		return m, nil
	}
	m, ok, err := h.cachedManifest(req, d.Digest)
	if err != nil {
		return manifest{}, err
	}
	if ok {
		h.m.Cache.WithLabelValues("manifest", "hit").Inc()
		return m, nil
	}
	// By digest, so the bytes are verified against what HEAD said.
	h.m.Cache.WithLabelValues("manifest", "miss").Inc()
	m, err = h.fetchByDigest(ctx, req, d.Digest)
	if err != nil {
		return manifest{}, &resolveError{err}
	}
	return m, nil
}
