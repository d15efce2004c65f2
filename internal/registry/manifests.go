package registry

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// manifest is a manifest ready to serve.
type manifest struct {
	body []byte
	info store.Info
}

// serveManifest answers GET/HEAD /v2/<name>/manifests/<reference>.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
func (h *Handler) serveManifest(w http.ResponseWriter, r *http.Request, req *request) error {
	ref := req.path.Reference
	accept := upstreamAccept(r.Header.Values("Accept"))
	var m manifest
	var err error
	if IsDigest(ref) {
		m, err = h.manifestByDigest(r.Context(), req, digest.Digest(ref), accept)
	} else {
		m, err = h.manifestByTag(r.Context(), req, ref, accept)
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

func (h *Handler) manifestByDigest(ctx context.Context, req *request, dg digest.Digest, accept string) (manifest, error) {
	if body, info, err := h.opts.Store.ReadManifest(dg); err == nil {
		h.m.Cache.WithLabelValues("manifest", "hit").Inc()
		return manifest{body, info}, nil
	} else if !store.IsNotFound(err) {
		return manifest{}, err
	}
	h.m.Cache.WithLabelValues("manifest", "miss").Inc()
	return h.fetchManifest(ctx, req, dg.String(), accept)
}

// fetchManifest GETs a manifest upstream (coalesced), verifies and stores it.
func (h *Handler) fetchManifest(ctx context.Context, req *request, ref, accept string) (manifest, error) {
	key := "m\x00" + req.target.String() + "\x00" + ref + "\x00" + accept
	v, err, _ := h.manifests.Do(key, func() (any, error) {
		// Detached: the result serves every waiter, not just the first client.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.opts.UpstreamTimeout)
		defer cancel()
		if m, ok := h.manifestFromPeer(fctx, req, ref, accept); ok { // [cluster] peer.go
			return m, nil
		}
		body, d, err := req.client.GetManifest(fctx, req.target.Repository, ref, accept)
		if err != nil {
			h.countFailure(ctx, req.target, err)
			return nil, err
		}
		info := store.Info{Digest: d.Digest, MediaType: manifestMediaType(d.MediaType, body), Repository: req.target.String()}
		if err := h.opts.Store.PutManifest(body, info); err != nil {
			return nil, err
		}
		info.Size = int64(len(body))
		return manifest{body, info}, nil
	})
	if err != nil {
		return manifest{}, upstreamError(req.target, err, CodeManifestUnknown)
	}
	return v.(manifest), nil
}

// manifestByTag resolves a tag at most once per TagTTL, serving the last known
// digest when the upstream cannot be reached.
func (h *Handler) manifestByTag(ctx context.Context, req *request, tag, accept string) (manifest, error) {
	t := req.target
	known, kerr := h.opts.Store.Tag(t.Registry, t.Repository, tag)
	if kerr == nil && h.opts.Now().Sub(known.Resolved) < h.opts.TagTTL && accepts(accept, known.MediaType) {
		if body, info, err := h.opts.Store.ReadManifest(known.Digest); err == nil {
			h.m.Cache.WithLabelValues("manifest", "hit").Inc()
			return manifest{body, info}, nil
		}
	}
	m, err := h.resolveTag(ctx, req, tag, accept)
	if err == nil {
		return m, nil
	}
	var rerr *resolveError
	if kerr == nil && errors.As(err, &rerr) && upstream.IsUnavailable(rerr.err) {
		if body, info, serr := h.opts.Store.ReadManifest(known.Digest); serr == nil {
			h.m.StaleTags.WithLabelValues(t.Registry).Inc()
			h.m.Cache.WithLabelValues("manifest", "stale").Inc()
			h.log.LogAttrs(ctx, slog.LevelWarn, "serving stale tag: upstream unavailable",
				slog.String("upstream", t.Registry), slog.String("repo", t.Repository), slog.String("tag", tag),
				slog.String("digest", known.Digest.String()), slog.Time("resolved", known.Resolved),
				slog.String("error", rerr.err.Error()))
			return manifest{body, info}, nil
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

func (h *Handler) resolveTag(ctx context.Context, req *request, tag, accept string) (manifest, error) {
	t := req.target
	key := "t\x00" + t.String() + "\x00" + tag + "\x00" + accept
	v, err, _ := h.manifests.Do(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.opts.UpstreamTimeout)
		defer cancel()
		d, err := req.client.HeadManifest(fctx, t.Repository, tag, accept)
		if err != nil {
			h.countFailure(ctx, t, err)
			return nil, &resolveError{err}
		}
		var body []byte
		var info store.Info
		if d.Digest != "" {
			body, info, err = h.opts.Store.ReadManifest(d.Digest)
		}
		if d.Digest != "" && err != nil && h.opts.PeerManifest != nil { // [cluster] by digest: from its owner, coalesced
			if m, ferr := h.fetchManifest(fctx, req, d.Digest.String(), accept); ferr == nil {
				body, info, err = m.body, m.info, nil
			}
		}
		if d.Digest == "" || err != nil {
			// Not cached (or the upstream gave no digest on HEAD): GET it,
			// by digest when known so the bytes are verified against it.
			ref := tag
			if d.Digest != "" {
				ref = d.Digest.String()
			}
			h.m.Cache.WithLabelValues("manifest", "miss").Inc()
			b, gd, gerr := req.client.GetManifest(fctx, t.Repository, ref, accept)
			if gerr != nil {
				h.countFailure(ctx, t, gerr)
				return nil, &resolveError{gerr}
			}
			info = store.Info{Digest: gd.Digest, MediaType: manifestMediaType(gd.MediaType, b), Repository: t.String()}
			if err := h.opts.Store.PutManifest(b, info); err != nil {
				return nil, err
			}
			info.Size = int64(len(b))
			body = b
		} else {
			h.m.Cache.WithLabelValues("manifest", "hit").Inc()
		}
		rec := store.Tag{Digest: info.Digest, MediaType: info.MediaType, Resolved: h.opts.Now()}
		if err := h.opts.Store.SetTag(t.Registry, t.Repository, tag, rec); err != nil {
			h.log.Warn("recording tag", "error", err)
		}
		return manifest{body, info}, nil
	})
	if err != nil {
		return manifest{}, err
	}
	return v.(manifest), nil
}

// manifestMediaType is the upstream's Content-Type, or the mediaType field of
// the manifest when the upstream sent none useful.
func manifestMediaType(ct string, body []byte) string {
	ct = strings.TrimSpace(strings.Split(ct, ";")[0])
	if ct != "" && ct != "application/octet-stream" && ct != "text/plain" {
		return ct
	}
	var probe struct {
		MediaType     string          `json:"mediaType"`
		SchemaVersion int             `json:"schemaVersion"`
		Manifests     json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(body, &probe) == nil {
		switch {
		case probe.MediaType != "":
			return probe.MediaType
		case probe.Manifests != nil:
			return "application/vnd.oci.image.index.v1+json"
		case probe.SchemaVersion == 1:
			return "application/vnd.docker.distribution.manifest.v1+prettyjws"
		}
	}
	return "application/vnd.oci.image.manifest.v1+json"
}

// accepts reports whether a client's Accept header admits mediaType. An
// empty header or */* admits anything.
func accepts(accept, mediaType string) bool {
	if accept == "" {
		return true
	}
	for _, a := range strings.Split(accept, ",") {
		a = strings.TrimSpace(strings.Split(a, ";")[0])
		if a == mediaType || a == "*/*" {
			return true
		}
	}
	return false
}

// schema1Prefix starts Docker's deprecated schema 1 manifest types, which
// registries convert to on the fly with unstable digests: never asked for.
const schema1Prefix = "application/vnd.docker.distribution.manifest.v1+"

// upstreamAccept keeps the manifest media types of a client's Accept
// headers; with none (no header, or only */*) it returns "" so the upstream
// client sends its full default list.
func upstreamAccept(values []string) string {
	var keep []string
	for _, v := range values {
		for _, a := range strings.Split(v, ",") {
			mt := strings.TrimSpace(strings.Split(a, ";")[0])
			if strings.HasPrefix(mt, "application/vnd.") && !strings.HasPrefix(mt, schema1Prefix) {
				keep = append(keep, mt)
			}
		}
	}
	return strings.Join(keep, ", ")
}
