package peer

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/throttle"
)

// Kinds of content the peer API serves: the path segment after Path.
const (
	KindBlob     = "blobs"
	KindManifest = "manifests"
)

// Request is a peer request as the server checked and parsed it: its token
// was valid (or the cluster has no secret), its digest and parameters well
// formed. It is what a Backend serves.
type Request struct {
	// Kind is KindBlob or KindManifest.
	Kind   string
	Digest digest.Digest
	// Registry and Repository name the upstream repository the asking node
	// would fetch from; the backend routes them by its own rules.
	Registry, Repository string
	// From names the asking member ("peer" when an older node names none):
	// the backend's own fill never forwards the request to another owner.
	From string
	// Verified: the asking node checked its client's credentials for the
	// repository. Only ever true when tokens are checked: without a cluster
	// secret anyone could claim it.
	Verified bool
	// UpstreamToken is a verified client's upstream pull token, handed to
	// the owner that fetches for it (covered by the peer token).
	UpstreamToken string
	// HeldOnly: answer only from the store; fetch nothing, ask no one.
	HeldOnly bool
	// Piece, if >= 0, asks for that piece of the blob of Size bytes (its
	// Range inside the piece); -1: the blob.
	Piece int
	Size  int64
}

// Backend is what the peer API needs of the node that serves it (the
// registry handler): the same routing, access gate, limits and store as its
// /v2/ API.
type Backend interface {
	// ServePeer answers req on w: it routes the repository, asks the access
	// gate (a refusal is a 404, never a challenge), and sends the content
	// from the store or from this node's coalesced fill, honouring a single
	// Range for a resume. It returns an error only while nothing is written:
	// an *Error to answer with, any other error a 500. It is called
	// concurrently.
	ServePeer(w http.ResponseWriter, r *http.Request, req Request) error
}

// ServerOptions configure the peer API. The zero value is usable.
type ServerOptions struct {
	// Heartbeat is how often "102 Processing" is sent while an answer is
	// not ready (the fill waits for a turn or for the upstream), so that the
	// asking node tells a busy owner from a dead one (default Heartbeat).
	Heartbeat time.Duration
	// Verify checks a peer request's token for the digest it names, before
	// anything else is done: ErrNoToken is answered 401, any other error
	// 403 (nil: peer requests are not authenticated, and no asking node is
	// trusted to have verified its client). Keys.Verify in production.
	Verify func(r *http.Request, digest string) error
	// Served, if set, is told the result and bytes written of each request
	// (Metrics.Served).
	Served func(result string, bytes int64)
	// Logger receives refused and failed requests (default: discard).
	Logger *slog.Logger
	// Upload, if set, caps what the answers send (cluster.upload_rate, live).
	Upload *throttle.Limiter
}

// Server serves the peer API: GET/HEAD of Path+"blobs/<digest>" and
// Path+"manifests/<digest>"?registry=…&repository=…&from=<member>. It
// checks the token first, so a request without a valid one costs nothing
// more, then parses the request and hands it to its Backend, sending 102
// heartbeats until the answer begins. Safe for concurrent use.
type Server struct {
	b    Backend
	opts ServerOptions
}

// NewServer returns the peer API served by b.
func NewServer(b Backend, opts ServerOptions) *Server {
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = Heartbeat
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{b: b, opts: opts}
}

// ServeHTTP implements the peer API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hb := startHeartbeat(w, s.opts.Heartbeat)
	defer hb.end()
	err := s.serve(hb, r)
	result := "ok"
	if err != nil {
		e := asError(err)
		result = resultOf(e.Status)
		if e.Status >= 500 || e.Status == http.StatusForbidden || e.Status == http.StatusUnauthorized {
			s.opts.Logger.LogAttrs(r.Context(), slog.LevelWarn, "peer request failed", slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.String("remote", r.RemoteAddr), slog.String("error", err.Error()))
		}
		if !hb.wrote {
			writeError(hb, r, e)
		}
	}
	if s.opts.Served != nil {
		s.opts.Served(result, hb.bytes)
	}
}

// resultOf is the berth_peer_requests_total{side="server"} result of an
// answer's status.
func resultOf(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "denied"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusRequestedRangeNotSatisfiable:
		return "bad_request"
	}
	return "error"
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) error {
	rest, ok := strings.CutPrefix(r.URL.Path, Path)
	if !ok {
		return newError(http.StatusNotFound, codeUnsupported, "not a peer API path")
	}
	kind, ref, ok := strings.Cut(rest, "/")
	if !ok || (kind != KindBlob && kind != KindManifest) {
		return newError(http.StatusNotFound, codeUnsupported, "not a peer API path")
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return newError(http.StatusMethodNotAllowed, codeUnsupported, "%s is not supported", r.Method)
	}
	// The token first: a request without a valid one costs nothing more.
	if err := s.verify(r, ref); err != nil {
		return err
	}
	dg, err := digest.Parse(ref)
	if err != nil {
		return newError(http.StatusBadRequest, codeDigestInvalid, "invalid digest %q", truncate(ref, 80))
	}
	q := r.URL.Query()
	req := Request{
		Kind: kind, Digest: dg, Registry: q.Get(QueryRegistry), Repository: q.Get(QueryRepository),
		From: q.Get(QueryFrom),
		// Private content goes only to a peer that checked its client (and
		// only with tokens: without a cluster secret anyone could claim it).
		Verified:      s.opts.Verify != nil && q.Get(QueryVerified) == "1",
		UpstreamToken: r.Header.Get(UpstreamTokenHeader),
		HeldOnly:      q.Get(QueryHeld) == "1",
	}
	if req.Registry == "" || req.Repository == "" {
		return newError(http.StatusBadRequest, codeNameInvalid, "the registry and repository parameters are required")
	}
	if req.Piece, req.Size, err = pieceParams(q); err != nil {
		return newError(http.StatusBadRequest, codeRangeInvalid, "%v", err)
	}
	if req.Piece >= 0 && (kind != KindBlob || req.HeldOnly) {
		return newError(http.StatusBadRequest, codeRangeInvalid, "a piece is of a blob")
	}
	if req.From == "" {
		req.From = "peer" // an older node names no member: the request is still a peer's
	}
	if s.opts.Upload != nil && s.opts.Upload.Rate() > 0 {
		w = &paced{heartbeatWriter: w.(*heartbeatWriter), w: s.opts.Upload.Writer(r.Context(), w, extendDeadline(w))}
	}
	return s.b.ServePeer(w, r, req)
}

// pieceParams parses the piece and size parameters: both or neither, a
// piece of the plan of a blob large enough to have pieces.
func pieceParams(q url.Values) (piece int, size int64, err error) {
	ps, ss := q.Get(QueryPiece), q.Get(QuerySize)
	if ps == "" && ss == "" {
		return -1, 0, nil
	}
	p, err1 := strconv.Atoi(ps)
	n, err2 := strconv.ParseInt(ss, 10, 64)
	if err1 != nil || err2 != nil || p < 0 || n <= 0 || p >= fetch.PlanFor(n).Count || fetch.PlanFor(n).Count < 2 {
		return -1, 0, fmt.Errorf("invalid piece %.20q of a blob of %.20q bytes", ps, ss)
	}
	return p, n, nil
}

// paced is the answer's writer under cluster.upload_rate: its body goes
// out in chunks, each after its share of the node's upload budget.
type paced struct {
	*heartbeatWriter
	w io.Writer
}

func (p *paced) Write(b []byte) (int, error) { return p.w.Write(b) }

func (p *paced) ReadFrom(r io.Reader) (int64, error) { return p.w.(io.ReaderFrom).ReadFrom(r) }

// extendDeadline gives each paced chunk its own write deadline: a response
// that shares a capped uplink with many others may take longer in all than
// the deadline its size earned, while every chunk still moves.
func extendDeadline(w http.ResponseWriter) func(int) {
	rc := http.NewResponseController(w)
	return func(int) { _ = rc.SetWriteDeadline(time.Now().Add(chunkWriteTimeout)) }
}

// chunkWriteTimeout bounds one paced chunk's write to a stalled peer.
const chunkWriteTimeout = 60 * time.Second

// verify checks r's token; its refusals say they are about the token
// (ErrorHeader), so the asking node tells them from a refusal relayed from
// the upstream or the access rules.
func (s *Server) verify(r *http.Request, ref string) error {
	if s.opts.Verify == nil {
		return nil
	}
	err := s.opts.Verify(r, ref)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNoToken):
		e := newError(http.StatusUnauthorized, codeUnauthorized, "peer request without a token")
		e.Header = http.Header{"Www-Authenticate": {AuthScheme}, ErrorHeader: {ErrorToken}}
		return e
	}
	e := newError(http.StatusForbidden, codeDenied, "peer token refused: %v", err)
	e.Header = http.Header{ErrorHeader: {ErrorToken}}
	return e
}

// truncate shortens s, which came from a peer, for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
