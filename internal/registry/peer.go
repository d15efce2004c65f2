package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// PeerPrefix is the path prefix of the peer API (DESIGN.md, Cluster).
const PeerPrefix = "/peer/v1/"

// ErrNoCredentials marks a peer request without credentials (401); any
// other Verify error is a refusal (403).
var ErrNoCredentials = errors.New("registry: peer request without credentials")

// PeerOptions configure the peer API.
type PeerOptions struct {
	// Verify checks a peer request's token for the digest it names, before
	// anything else is done (nil: peer requests are not authenticated).
	Verify func(r *http.Request, digest string) error
	// Served, if set, is told the result and blob bytes of each peer request.
	Served func(result string, bytes int64)
}

// Peer serves the peer API: GET/HEAD of /peer/v1/blobs/<digest> and
// /peer/v1/manifests/<digest>?registry=…&repository=…, from the store or
// from this node's own coalesced upstream fill, which it streams while it
// runs, exactly as /v2/ does. It never asks another peer: a node asked by
// a peer is the owner, and the chain ends there.
type Peer struct {
	h    *Handler
	opts PeerOptions
}

// NewPeer returns the peer API over the same store, fetcher and upstreams
// as the /v2/ handler. opts.Source and opts.PeerManifest are ignored:
// content comes from the upstream.
func NewPeer(opts Options, popts PeerOptions) *Peer {
	opts.Source, opts.PeerManifest = nil, nil
	return &Peer{h: New(opts), opts: popts}
}

// ServeHTTP implements the peer API.
func (p *Peer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w}
	err := p.serve(rec, r)
	result := "ok"
	if err != nil {
		e := asError(err)
		switch e.Status {
		case http.StatusUnauthorized:
			result = "unauthorized"
		case http.StatusForbidden:
			result = "denied"
		case http.StatusNotFound:
			result = "not_found"
		case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusRequestedRangeNotSatisfiable:
			result = "bad_request"
		default:
			result = "error"
		}
		if e.Status >= 500 || e.Status == http.StatusForbidden || e.Status == http.StatusUnauthorized {
			p.h.log.LogAttrs(r.Context(), slog.LevelWarn, "peer request failed", slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.String("remote", r.RemoteAddr), slog.String("error", err.Error()))
		}
		if !rec.wrote {
			writeError(rec, r, e)
		}
	}
	if p.opts.Served != nil {
		p.opts.Served(result, rec.bytes)
	}
}

func (p *Peer) serve(w http.ResponseWriter, r *http.Request) error {
	rest, ok := strings.CutPrefix(r.URL.Path, PeerPrefix)
	if !ok {
		return newError(http.StatusNotFound, CodeUnsupported, "not a peer API path")
	}
	kind, ref, ok := strings.Cut(rest, "/")
	if !ok || (kind != "blobs" && kind != "manifests") {
		return newError(http.StatusNotFound, CodeUnsupported, "not a peer API path")
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return newError(http.StatusMethodNotAllowed, CodeUnsupported, "%s is not supported", r.Method)
	}
	// The token first: a request without a valid one costs nothing more.
	if p.opts.Verify != nil {
		if err := p.opts.Verify(r, ref); err != nil {
			if errors.Is(err, ErrNoCredentials) {
				e := newError(http.StatusUnauthorized, CodeUnauthorized, "peer request without a token")
				e.Header = http.Header{"Www-Authenticate": {"Berth-Peer"}}
				return e
			}
			return newError(http.StatusForbidden, CodeDenied, "peer token refused: %v", err)
		}
	}
	dg, err := digest.Parse(ref)
	if err != nil {
		return newError(http.StatusBadRequest, CodeDigestInvalid, "invalid digest %q", truncate(ref, 80))
	}
	q := r.URL.Query()
	registry, repository := q.Get("registry"), q.Get("repository")
	if registry == "" || repository == "" {
		return newError(http.StatusBadRequest, CodeNameInvalid, "the registry and repository parameters are required")
	}
	// The same routing rules as /v2/: only configured registries, checked
	// before any connection is made.
	t, c, err := p.h.router.Route(repository, registry)
	if err != nil {
		return err
	}
	req := &request{target: t, client: c, path: Path{Name: t.String(), Reference: dg.String(), Kind: KindManifest}}
	if kind == "blobs" {
		req.path.Kind = KindBlob
	}
	// Private content goes only to a peer that checked its client (and
	// only with tokens: without a cluster secret anyone could claim it).
	verified := p.opts.Verify != nil && q.Get("verified") == "1"
	req.peer, req.verifiedPeer = true, verified
	if err := p.h.peerAllowed(r.Context(), req, verified); err != nil {
		return err
	}
	if err := p.h.peerFetchAs(req, verified, r.Header.Get(PeerUpstreamTokenHeader)); err != nil {
		return err
	}
	if kind == "blobs" {
		return p.h.serveBlob(w, r, req)
	}
	return p.h.serveManifest(w, r, req)
}

// manifestFromPeer gets a manifest by digest from its owner in the
// cluster, verifies and stores it; false: ask the upstream. The caller
// coalesces (fetchManifest).
func (h *Handler) manifestFromPeer(ctx context.Context, req *request, ref string) (manifest, bool) {
	if h.opts.PeerManifest == nil || !IsDigest(ref) {
		return manifest{}, false
	}
	dg, err := digest.Parse(ref)
	if err != nil {
		return manifest{}, false
	}
	body, mt, err := h.opts.PeerManifest(ctx, fetch.Request{Digest: dg, Registry: req.target.Registry, Repository: req.target.Repository, Verified: req.private, UpstreamToken: req.token}, "")
	if err != nil {
		return manifest{}, false
	}
	// The same checks as for an upstream's answer: the cap, the digest (in
	// PutManifest: wrong bytes from a peer are never stored) and the type.
	nm, err := newManifest(req.target, upstream.Descriptor{Digest: dg, MediaType: mt, Size: int64(len(body))}, body)
	if err == nil && int64(len(body)) > h.maxManifestBytes() {
		err = fmt.Errorf("%w: %d bytes", upstream.ErrTooLarge, len(body))
	}
	var info store.Info
	if err == nil {
		info, err = h.putManifest(req, body, nm)
	}
	if err != nil {
		h.log.LogAttrs(ctx, slog.LevelWarn, "manifest from a peer refused", slog.String("digest", ref), slog.String("error", err.Error()))
		return manifest{}, false
	}
	return manifest{body, info}, true
}
