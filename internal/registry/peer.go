package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/access"
	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/peer"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// PeerPrefix is the path prefix of the peer API (DESIGN.md, Cluster).
const PeerPrefix = peer.Path

// ErrNoCredentials marks a peer request without credentials (401); any
// other Verify error is a refusal (403).
var ErrNoCredentials = errors.New("registry: peer request without credentials")

// PeerErrorHeader marks an answer about the peer request itself ("token":
// its cluster token was refused), as opposed to an answer relayed from the
// upstream or the access rules: only the former says the cluster secrets
// differ (the cluster package reads it under the same name).
const PeerErrorHeader = peer.ErrorHeader

// defaultHeartbeat is how often a peer request that has no answer yet gets
// a "102 Processing": the asking node waits as long as they come.
const defaultHeartbeat = peer.Heartbeat

// PeerOptions configure the peer API.
type PeerOptions struct {
	// Heartbeat is how often "102 Processing" is sent while an answer is
	// not ready (the fill waits for a turn or for the upstream), so that the
	// asking node tells a busy owner from a dead one (default 2s).
	Heartbeat time.Duration
	// Verify checks a peer request's token for the digest it names, before
	// anything else is done (nil: peer requests are not authenticated).
	Verify func(r *http.Request, digest string) error
	// Served, if set, is told the result and blob bytes of each peer request.
	Served func(result string, bytes int64)
}

// Peer serves the peer API: GET/HEAD of /peer/v1/blobs/<digest> and
// /peer/v1/manifests/<digest>?registry=…&repository=…&from=<member>, from
// the store or from this node's own coalesced fill, which it streams while
// it runs, exactly as /v2/ does. The fill's source sees the request came
// from a peer (fetch.Request.From): it asks other members only whether they
// hold the content, never to fetch it, so a request is forwarded once at
// most. With held=1 only the store answers: nothing is fetched.
type Peer struct {
	h    *Handler
	opts PeerOptions
}

// NewPeer returns the peer API over a new Handler built from opts.
// opts.PeerHead is not used for peer requests: a peer's HEAD is answered
// here or by the upstream.
func NewPeer(opts Options, popts PeerOptions) *Peer { return NewPeerFor(New(opts), popts) }

// NewPeerFor returns the peer API served by h, the /v2/ handler: one gate,
// one set of limits and one manifest cap for both APIs, and a reload
// (Handler.SetLive) applies to both.
func NewPeerFor(h *Handler, popts PeerOptions) *Peer {
	if popts.Heartbeat <= 0 {
		popts.Heartbeat = defaultHeartbeat
	}
	return &Peer{h: h, opts: popts}
}

// ServeHTTP implements the peer API.
func (p *Peer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hb := startHeartbeat(w, p.opts.Heartbeat)
	defer hb.end()
	rec := &recorder{ResponseWriter: hb}
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
				e.Header = http.Header{"Www-Authenticate": {peer.AuthScheme}, PeerErrorHeader: {peer.ErrorToken}}
				return e
			}
			e := newError(http.StatusForbidden, CodeDenied, "peer token refused: %v", err)
			e.Header = http.Header{PeerErrorHeader: {peer.ErrorToken}}
			return e
		}
	}
	dg, err := digest.Parse(ref)
	if err != nil {
		return newError(http.StatusBadRequest, CodeDigestInvalid, "invalid digest %q", truncate(ref, 80))
	}
	q := r.URL.Query()
	registry, repository := q.Get(peer.QueryRegistry), q.Get(peer.QueryRepository)
	if registry == "" || repository == "" {
		return newError(http.StatusBadRequest, CodeNameInvalid, "the registry and repository parameters are required")
	}
	// The same routing rules as /v2/: only configured registries, checked
	// before any connection is made.
	t, c, err := p.h.route(repository, registry)
	if err != nil {
		return err
	}
	pk := KindManifest
	if kind == "blobs" {
		pk = KindBlob
	}
	req := newRequest(Path{Name: t.String(), Reference: dg.String(), Kind: pk}, t, c)
	// Private content goes only to a peer that checked its client (and
	// only with tokens: without a cluster secret anyone could claim it).
	req.ask.Peer = &access.Peer{
		Verified: p.opts.Verify != nil && q.Get(peer.QueryVerified) == "1",
		Token:    r.Header.Get(peer.UpstreamTokenHeader),
		HeldOnly: q.Get(peer.QueryHeld) == "1",
	}
	req.peer, req.heldOnly = true, req.ask.Peer.HeldOnly
	// An older node names no member: the request is still a peer's.
	if req.from = q.Get(peer.QueryFrom); req.from == "" {
		req.from = "peer"
	}
	dec, err := p.h.gate.Authorize(r.Context(), req.ask)
	if err != nil {
		return p.h.accessError(req, err)
	}
	if dec.Challenge != nil { // the owner's rules answer 404, never a challenge
		return newError(http.StatusNotFound, notFoundCode(req), "%s", dec.Challenge.Message)
	}
	req = req.granted(dec.Grant)
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
	body, mt, err := h.opts.PeerManifest(ctx, fetch.Request{Digest: dg, Registry: req.target.Registry, Repository: req.target.Repository,
		Verified: req.private, UpstreamToken: req.token, From: req.from}, "")
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

// heartbeatWriter sends "102 Processing" every interval until the handler
// starts its answer. The handler's headers are kept apart until then: a 1xx
// response carries the writer's current headers, and the handler sets them
// from its own goroutine.
type heartbeatWriter struct {
	w      http.ResponseWriter
	every  time.Duration
	header http.Header
	mu     sync.Mutex
	done   bool // the answer has begun (or the request ended): no more beats
	timer  *time.Timer
}

func startHeartbeat(w http.ResponseWriter, every time.Duration) *heartbeatWriter {
	hb := &heartbeatWriter{w: w, every: every, header: http.Header{}}
	hb.mu.Lock()
	hb.timer = time.AfterFunc(every, hb.beat)
	hb.mu.Unlock()
	return hb
}

func (hb *heartbeatWriter) beat() {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	if hb.done {
		return
	}
	hb.w.WriteHeader(http.StatusProcessing) // net/http sends and flushes a 1xx at once
	hb.timer.Reset(hb.every)
}

// answer stops the beats and hands the handler's headers to the connection.
func (hb *heartbeatWriter) answer() {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	if hb.done {
		return
	}
	hb.done = true
	hb.timer.Stop()
	dst := hb.w.Header()
	for k, v := range hb.header {
		dst[k] = v
	}
}

// end stops the beats when the handler returns; a beat waiting for the
// lock then sees done and leaves the connection alone.
func (hb *heartbeatWriter) end() { hb.answer() }

func (hb *heartbeatWriter) Header() http.Header {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	if hb.done {
		return hb.w.Header()
	}
	return hb.header
}

func (hb *heartbeatWriter) WriteHeader(code int) {
	hb.answer()
	hb.w.WriteHeader(code)
}

func (hb *heartbeatWriter) Write(p []byte) (int, error) {
	hb.answer()
	return hb.w.Write(p)
}

// ReadFrom keeps sendfile (see recorder.ReadFrom).
func (hb *heartbeatWriter) ReadFrom(src io.Reader) (int64, error) {
	hb.answer()
	if rf, ok := hb.w.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{hb.w}, src)
}

// Flush begins the answer: http.ResponseController finds it before Unwrap.
func (hb *heartbeatWriter) Flush() {
	hb.answer()
	_ = http.NewResponseController(hb.w).Flush()
}

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (hb *heartbeatWriter) Unwrap() http.ResponseWriter { return hb.w }
