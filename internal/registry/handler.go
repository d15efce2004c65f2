// Package registry serves the OCI Distribution pull API
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pull):
// it routes each /v2/ request to an upstream registry, serves content from
// the store, and fills the store through the coalescing fetcher on a miss.
// Handlers return errors; one wrapper writes them as OCI error bodies.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/berth-mirror/berth/internal/access"
	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/metrics"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// Upstreams finds the client for a registry name.
type Upstreams interface {
	// Lookup returns the client for a configured or built-in registry name.
	Lookup(name string) (*upstream.Client, bool)
}

// Options configure a Handler. Store, Fetcher, Upstreams and Metrics are required.
type Options struct {
	Store     *store.Store
	Fetcher   *fetch.Coalescer
	Upstreams Upstreams
	Metrics   *metrics.Metrics
	// DefaultRegistry serves names without a registry prefix (default docker.io).
	DefaultRegistry string
	// TagTTL is how long a tag resolution is trusted (0: always ask upstream).
	TagTTL time.Duration
	// UpstreamTimeout bounds a manifest or tag resolution upstream (default 60s).
	UpstreamTimeout time.Duration
	// MaxHeaderBytes rejects requests with larger headers with 431 (0: no check).
	MaxHeaderBytes int
	// MaxManifestBytes caps a manifest read from upstream or from the store
	// (0: 4 MiB, distribution's cap).
	MaxManifestBytes int64
	// Source, if set, replaces the upstream as where blobs come from (it gets
	// the upstream source to fall back on).
	Source func(up fetch.Source) fetch.Source
	// PeerManifest, if set, gets a manifest by digest from the cluster before
	// the upstream; any error means: ask the upstream.
	PeerManifest func(ctx context.Context, req fetch.Request, accept string) (body []byte, mediaType string, err error)
	// PeerHead, if set, answers a HEAD of a blob missing here from the
	// cluster before the upstream; any error means: ask the upstream.
	PeerHead func(ctx context.Context, req fetch.Request) (fetch.Meta, error)
	// Manifests, if set, coalesces manifest fetches across handlers over the
	// same store (the /v2/ and peer APIs of one node).
	Manifests *singleflight.Group

	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Access configures the access gate the handler builds, which decides
	// who may read private repositories and content for /v2/, the peer API
	// and admin prefetch alike (Gate). Its Store, Logger, Now,
	// UpstreamTimeout, Failed and PeerTokens are the handler's when unset.
	Access access.Options
}

// Live are the options a configuration reload changes while a Handler
// runs. They are swapped atomically and read per request, so the Handler
// (its tags/list slots, its overload log) lives as long as the server, and
// the /v2/ and peer APIs, sharing one Handler, share one of each limit.
type Live struct {
	// DefaultRegistry serves names without a registry prefix.
	DefaultRegistry string
	// TagTTL is how long a tag resolution is trusted (0: always ask upstream).
	TagTTL time.Duration
	// UpstreamTimeout bounds a manifest or tag resolution upstream (default 60s).
	UpstreamTimeout time.Duration
	// MaxManifestBytes caps a manifest read from upstream, a peer or the
	// store (0: 4 MiB, distribution's cap).
	MaxManifestBytes int64
}

// Handler serves /v2/.
type Handler struct {
	opts Options
	// cur holds the reloadable options (SetLive); opts keeps the rest.
	cur    atomic.Pointer[Live]
	lookup func(name string) (*upstream.Client, bool)
	log    *slog.Logger
	m      *metrics.Metrics
	// manifests coalesces concurrent manifest and tag resolutions.
	// It is shared with the peer API (Options.Manifests).
	manifests *singleflight.Group
	// tagLists holds a token per tags/list request in flight.
	tagLists chan struct{}
	// referrers caches referrers answers (the handler lives as long as the
	// server: a reload keeps it).
	referrers *ReferrersCache
	// gate decides who may read what (internal/access).
	gate *access.Gate
	// sizes are blob sizes learned from manifests (sizes.go).
	sizes *sizeHints
	// overloadLogged is when an overload refusal was last logged (unix
	// nanoseconds): under load, one line per interval, not one per client.
	overloadLogged atomic.Int64
}

// New returns a Handler.
func New(opts Options) *Handler {
	if opts.DefaultRegistry == "" {
		opts.DefaultRegistry = "docker.io"
	}
	if opts.UpstreamTimeout <= 0 {
		opts.UpstreamTimeout = 60 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &Handler{opts: opts, log: opts.Logger, m: opts.Metrics, manifests: opts.Manifests,
		tagLists: make(chan struct{}, maxTagLists), sizes: newSizeHints()}
	if h.manifests == nil {
		h.manifests = new(singleflight.Group)
	}
	h.referrers = NewReferrersCache(0, 0)
	h.lookup = opts.Upstreams.Lookup
	h.SetLive(Live{DefaultRegistry: opts.DefaultRegistry, TagTTL: opts.TagTTL,
		UpstreamTimeout: opts.UpstreamTimeout, MaxManifestBytes: opts.MaxManifestBytes})
	h.gate = access.New(h.accessOptions(opts.Access))
	return h
}

// accessOptions completes the gate's options with the handler's store,
// logger, clock, live upstream timeout and failure counting.
func (h *Handler) accessOptions(ao access.Options) access.Options {
	if ao.Store == nil && h.opts.Store != nil { // a nil *store.Store must not become a non-nil access.Store
		ao.Store = h.opts.Store
	}
	if ao.Logger == nil {
		ao.Logger = h.log
	}
	if ao.Now == nil {
		ao.Now = h.opts.Now
	}
	if ao.UpstreamTimeout == nil {
		ao.UpstreamTimeout = func() time.Duration { return h.live().UpstreamTimeout }
	}
	if ao.Failed == nil {
		ao.Failed = func(ctx context.Context, registry, repository string, err error) {
			h.countFailure(ctx, Target{Registry: registry, Repository: repository}, err)
		}
	}
	// A cluster owner may fetch what this node lacks: private requests get
	// an upstream pull token to hand it.
	ao.PeerTokens = ao.PeerTokens || h.opts.Source != nil || h.opts.PeerManifest != nil
	return ao
}

// Gate is the access gate of this handler, for the peer API: one gate for
// every path that hands out bytes.
func (h *Handler) Gate() *access.Gate { return h.gate }

// SetLive puts reloaded options into force for the requests that start
// from now on; requests in flight finish with those they started with.
// Safe for concurrent use.
func (h *Handler) SetLive(l Live) {
	if l.DefaultRegistry == "" {
		l.DefaultRegistry = "docker.io"
	}
	if l.UpstreamTimeout <= 0 {
		l.UpstreamTimeout = 60 * time.Second
	}
	h.cur.Store(&l)
}

// Live returns the reloadable options in force.
func (h *Handler) Live() Live { return *h.cur.Load() }

func (h *Handler) live() *Live { return h.cur.Load() }

// route routes a repository name (and ?ns=) with the default registry in
// force (Router.Route).
func (h *Handler) route(name, ns string) (Target, *upstream.Client, error) {
	r := Router{Lookup: h.lookup, Default: h.live().DefaultRegistry}
	return r.Route(name, ns)
}

// request is one parsed API request. It is not changed once built: the
// gate's grant makes a new one (granted).
type request struct {
	path   Path
	target Target
	// ask is what the access gate is asked for this request.
	ask access.Request
	// client, private, origin and token are what the gate granted
	// (access.Grant): before it decides, client is the routed client.
	client  *upstream.Client
	private bool
	origin  string
	token   string
	// peer: asked over the peer API; from names the member that asked;
	// heldOnly: it asks only whether this node holds the content (answered
	// from the store alone).
	peer     bool
	from     string
	heldOnly bool
	// referrers: a referrers listing of the manifest path.Reference, gated
	// as that manifest (referrers.go).
	referrers bool
}

// newRequest is the request for p routed to t and c, with its question to
// the gate (credentials and the client's address are the caller's to add).
func newRequest(p Path, t Target, c *upstream.Client) *request {
	kind := access.Manifest
	switch p.Kind {
	case KindBlob:
		kind = access.Blob
	case KindTags:
		kind = access.Tags
	case KindReferrers:
		kind = access.Referrers
	}
	return &request{path: p, target: t, client: c, ask: access.Request{
		Registry: t.Registry, Repository: t.Repository, Kind: kind, Reference: p.Reference, Client: c,
	}}
}

// granted is req served as g grants.
func (req *request) granted(g access.Grant) *request {
	out := *req
	out.client, out.private, out.origin, out.token = g.Client, g.Private, g.Origin, g.Token
	return &out
}

// grant is what the gate granted req.
func (req *request) grant() access.Grant {
	return access.Grant{Client: req.client, Private: req.private, Origin: req.origin, Token: req.token}
}

// ServeHTTP implements the pull API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.opts.Now()
	rec := &recorder{ResponseWriter: w}
	route := "other"
	var attrs []slog.Attr
	err := func() error {
		if err := h.checkHeaders(r); err != nil {
			return err
		}
		p, err := ParsePath(r.URL.Path)
		if err != nil {
			return err
		}
		route = p.Kind.String()
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			rec.Header().Set("Allow", "GET, HEAD")
			return newError(http.StatusMethodNotAllowed, CodeUnsupported, "%s is not supported: berth is a read-only mirror", r.Method)
		}
		if p.Kind == KindBase {
			return h.serveBase(rec, r)
		}
		if p.Kind == KindUpload {
			return newError(http.StatusMethodNotAllowed, CodeUnsupported, "uploads are not supported: berth is a read-only mirror")
		}
		t, c, err := h.route(p.Name, r.URL.Query().Get("ns"))
		if err != nil {
			return err
		}
		attrs = append(attrs, slog.String("upstream", t.Registry), slog.String("repo", t.Repository))
		if p.Kind == KindBlob {
			attrs = append(attrs, slog.String("digest", p.Reference))
		}
		req := newRequest(p, t, c)
		req.ask.Source = clientHost(r.RemoteAddr)
		req.ask.Credentials, req.ask.CredentialsErr = access.ParseAuthorization(r.Header)
		if p.Kind == KindReferrers {
			// Who may read the subject manifest may list what refers to it:
			// the gate decides as for the manifest by digest
			// (access.Referrers), the manifest path serves the listing.
			req.path.Kind, req.referrers = KindManifest, true
		}
		return h.authorized(rec, r, req)
	}()
	if err != nil {
		e := asError(err)
		if e.Status >= 500 {
			// 502/503 were logged and counted once where they arose (the
			// upstream call, the fill, the full queue): one line per client
			// that waited on them would flood the log under load.
			level := slog.LevelDebug
			if e.Status == http.StatusInternalServerError {
				level = slog.LevelWarn
			}
			h.log.LogAttrs(r.Context(), level, "request failed", append(attrs,
				slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("error", err.Error()))...)
		} else if e.Status == http.StatusBadRequest || e.Status == http.StatusRequestHeaderFieldsTooLarge ||
			e.Status == http.StatusRequestedRangeNotSatisfiable {
			h.m.BadRequests.WithLabelValues(codeLabel(e.Code)).Inc()
			h.log.LogAttrs(r.Context(), slog.LevelInfo, "rejected request", append(attrs,
				slog.String("method", r.Method), slog.String("code", e.Code), slog.String("error", e.Message))...)
		}
		if !rec.wrote {
			writeError(rec, r, e)
		}
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	h.m.Requests.WithLabelValues(route, methodLabel(r.Method), statusLabel(status)).Inc()
	d := h.opts.Now().Sub(start)
	h.m.RequestDuration.WithLabelValues(route).Observe(d.Seconds())
	if h.log.Enabled(r.Context(), slog.LevelDebug) {
		h.log.LogAttrs(r.Context(), slog.LevelDebug, "request", append(attrs,
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", status),
			slog.Int64("bytes", rec.bytes), slog.Duration("took", d))...)
	}
	if errors.Is(err, errAbortResponse) {
		// net/http closes the connection without ending the response.
		panic(http.ErrAbortHandler)
	}
}

// serveBase answers GET /v2/: the API version check.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#determining-support
func (h *Handler) serveBase(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	// Not a challenge (the status stays 200, public pulls need nothing): it
	// tells clients that only honour challenges seen at the ping
	// (containers/image: skopeo, podman) to send their credentials for
	// berth, which private repositories need (internal/access).
	w.Header().Set("Www-Authenticate", access.ChallengeHeader)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte("{}"))
	}
	return nil
}

func (h *Handler) checkHeaders(r *http.Request) error {
	if h.opts.MaxHeaderBytes <= 0 {
		return nil
	}
	n := len(r.RequestURI)
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	if n > h.opts.MaxHeaderBytes {
		return newError(http.StatusRequestHeaderFieldsTooLarge, CodeTooLarge, "request headers of %d bytes exceed the limit of %d", n, h.opts.MaxHeaderBytes)
	}
	return nil
}

// Metric labels come from closed sets: every distinct value is a series kept
// for the life of the process, so a value taken from a request (any method
// token, any status) would let clients grow berth's memory without bound.

// methodLabel is the method as a metric label: GET, HEAD or other.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead:
		return m
	}
	return "other"
}

// statusLabels are the statuses berth answers with; anything else is "other".
var statusLabels = func() map[int]string {
	m := map[int]string{}
	for _, c := range []int{200, 206, 304, 400, 401, 403, 404, 405, 412, 416, 429, 431, 500, 502, 503, 504} {
		m[c] = strconv.Itoa(c)
	}
	return m
}()

func statusLabel(code int) string {
	if l, ok := statusLabels[code]; ok {
		return l
	}
	return "other"
}

// codeLabels are berth's OCI error codes.
var codeLabels = map[string]bool{
	CodeBlobUnknown: true, CodeDigestInvalid: true, CodeManifestUnknown: true, CodeManifestInvalid: true,
	CodeNameInvalid: true, CodeNameUnknown: true, CodeUnauthorized: true, CodeDenied: true,
	CodeUnsupported: true, CodeRangeInvalid: true, CodeTooManyRequests: true, CodeUnavailable: true,
	CodeTooLarge: true, CodePaginationInvalid: true,
}

func codeLabel(code string) string {
	if codeLabels[code] {
		return code
	}
	return "other"
}

// ErrorBody is the OCI error body for code and message, for answers written
// outside a handler (the connection gate's 431).
func ErrorBody(code, message string) []byte {
	b, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: code, Message: message}}})
	return b
}

// WriteError writes err as the OCI error body with its status, as the
// handler does, for answers decided in front of it (connection overload).
func WriteError(w http.ResponseWriter, r *http.Request, err error) { writeError(w, r, asError(err)) }

// upstreamError maps an upstream failure to what the client sees. notFound is
// the code for a 404 (MANIFEST_UNKNOWN or BLOB_UNKNOWN). It counts and logs
// nothing: that happens once where the upstream was called (countFailure, or
// the fill observer for blobs), not once per client that waited on it.
func upstreamError(t Target, err error, notFound string) error {
	var se *upstream.StatusError
	if errors.As(err, &se) && se.Status < 500 {
		switch se.Status {
		case http.StatusNotFound:
			code := notFound
			if se.Code == CodeNameUnknown {
				code = CodeNameUnknown
			}
			return newError(http.StatusNotFound, code, "%s not found in %s", t.Repository, t.Registry)
		case http.StatusUnauthorized:
			return newError(http.StatusUnauthorized, CodeUnauthorized, "upstream %s refused access to %s (configure credentials for it)", t.Registry, t.Repository)
		case http.StatusForbidden:
			return newError(http.StatusForbidden, CodeDenied, "upstream %s denied access to %s", t.Registry, t.Repository)
		case http.StatusTooManyRequests:
			e := newError(http.StatusTooManyRequests, CodeTooManyRequests, "upstream %s is rate limiting", t.Registry)
			if d, ok := upstream.RetryAfter(err); ok {
				// Whole seconds, rounded up: never ask the client back early.
				e.Header = http.Header{"Retry-After": {strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)}}
			}
			return e
		}
	}
	if errors.Is(err, upstream.ErrRefused) {
		return newError(http.StatusBadGateway, CodeUnavailable, "upstream %s pointed berth where it does not follow (scheme or address refused)", t.Registry)
	}
	return newError(http.StatusBadGateway, CodeUnavailable, "upstream %s failed: %s", t.Registry, failureReason(err))
}

// failureReason is the reason label of an upstream failure: a closed set.
func failureReason(err error) string {
	var se *upstream.StatusError
	switch {
	case errors.Is(err, upstream.ErrDigestMismatch), errors.Is(err, fetch.ErrVerify), errors.Is(err, store.ErrDigestMismatch):
		return "digest_mismatch"
	case errors.Is(err, upstream.ErrTooLarge):
		return "too_large"
	case errors.Is(err, upstream.ErrRefused):
		return "refused"
	case errors.As(err, &se) && se.Status == http.StatusTooManyRequests:
		return "rate_limited"
	case errors.Is(err, errInvalidManifest):
		return "invalid_manifest"
	}
	return "unavailable"
}

// countFailure records one failed upstream call: counted and logged, unless
// it was a definite answer (404, 401, 403), which is no failure of the
// upstream, or the call ended because the client that made it went away
// (ctx is that client's request context).
func (h *Handler) countFailure(ctx context.Context, t Target, err error) {
	if upstream.Classify(err).Definite() {
		return
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		h.log.LogAttrs(ctx, slog.LevelDebug, "client went away during an upstream request",
			slog.String("upstream", t.Registry), slog.String("repo", t.Repository))
		return
	}
	reason := failureReason(err)
	if reason == "digest_mismatch" {
		h.m.VerifyFailures.Inc()
	}
	h.m.UpstreamErrors.WithLabelValues(t.Registry, reason).Inc()
	h.log.LogAttrs(ctx, slog.LevelWarn, "upstream failed", slog.String("upstream", t.Registry),
		slog.String("repo", t.Repository), slog.String("reason", reason), slog.String("error", err.Error()))
}

// recorder notes the status and bytes written, for metrics and logs.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (deadlines, and
// io.Copy's ReadFrom for sendfile via the embedded writer).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// ReadFrom keeps the sendfile path: net/http's response implements
// io.ReaderFrom and hands an *os.File to the kernel.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{r.ResponseWriter}, src)
	}
	r.bytes += n
	return n, err
}

type writerOnly struct{ io.Writer }

// clientHost is the host part of a RemoteAddr.
func clientHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
