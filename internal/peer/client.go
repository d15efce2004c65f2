package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-mirror/berth/internal/fetch"
)

// Timeouts and memories of the asking side. A dead peer must cost little:
// the next source is tried as soon as one passes. A busy one must not be
// taken for dead: an owner that admitted a request sends "102 Processing"
// every few seconds while its own fill waits for a turn or for the
// upstream, so only silence means it is stuck.
const (
	connectTimeout = 2 * time.Second
	// defaultHeaderPatience is how long an owner may stay silent before
	// its response headers (no 102 heartbeat, no final answer).
	defaultHeaderPatience = 10 * time.Second
	// defaultBodyIdle bounds a stall inside a peer's body; the server sets
	// it to upstream_timeout, the owner's own patience with its upstream.
	defaultBodyIdle = 30 * time.Second
	// maxPeerTries caps the owners asked for one Open before the upstream.
	maxPeerTries = 2
	// maxProbes caps the members after this node in the owner order that
	// are asked whether they hold a blob (handover) before the upstream.
	maxProbes = 2
	// failMemory is how long a peer that failed for a digest is skipped for it.
	failMemory = time.Minute
	// corruptMemory is how long a peer that sent wrong bytes is skipped.
	corruptMemory = 10 * time.Minute
	// unreachableMemory is how long a peer that could not be reached is
	// skipped for every digest: a machine that is gone costs one connect
	// timeout per node, not one per blob, until gossip declares it dead.
	unreachableMemory = 10 * time.Second
	// maxFailMemories bounds the failure table (entries expire anyway).
	maxFailMemories = 4096
)

// errPeer is a peer request that did not give a usable response.
type errPeer struct {
	reason string
	err    error
}

func (e *errPeer) Error() string { return e.reason + ": " + e.err.Error() }
func (e *errPeer) Unwrap() error { return e.err }

// FetcherOptions tune the asking side. The zero value is usable.
type FetcherOptions struct {
	// NoPieces asks the owners of a blob for it whole, never piece by piece
	// (piece_fetches: 0).
	NoPieces bool
	// LocalPiece, if set, opens a piece this node keeps or is fetching for
	// a peer (fetch.Coalescer.LocalPiece): asked before anyone else, so a
	// piece a peer asked this node for first is not fetched twice.
	LocalPiece func(ctx context.Context, piece fetch.Request, start, end int64) (io.ReadCloser, fetch.Meta, bool)
	// Peers, if set, bounds the transfers from owners running at once (a
	// turn is held from the request until the body is closed).
	Peers *fetch.Pool
	// Upstream, if set, gives the turns for asking members whether they
	// hold a blob (handover): that is this node's stand-in for the upstream
	// transfer that follows, and its answer never waits on another fill, so
	// a turn from this pool always makes progress. With peer turns, owners
	// whose every peer turn is held by fills waiting on each other would
	// wait forever, each needing a peer turn to probe before its upstream.
	Upstream *fetch.Pool
	// HeaderPatience is how long a peer may stay silent before its
	// response headers (default 10s; each 102 heartbeat restarts it).
	HeaderPatience time.Duration
	// BodyIdle is how long a peer's body may stall (default 30s).
	BodyIdle time.Duration
	// MaxManifestBytes, read for each manifest, caps a manifest read from
	// a peer: the server gives max_manifest_bytes in force, the cap of its
	// own /v2/ and peer APIs (nil: 4 MiB).
	MaxManifestBytes func() int64
}

// Fetcher is the asking side: it wraps the upstream source so that a local
// miss asks the digest's owners first. It is safe for concurrent use.
type Fetcher struct {
	c       Membership
	bytesIn prometheus.Counter
	keys    Keys
	m       *Metrics
	opts    FetcherOptions
	client  *http.Client
	tr      *http.Transport
	log     *slog.Logger
	now     func() time.Time
	maxTrys int

	mu sync.Mutex
	// failed maps digest + "\x00" + member to when it is asked again; at
	// most maxFailMemories entries (expired ones are dropped first, then
	// an arbitrary live one).
	failed map[string]time.Time

	// plans are the owners of the pieces of blobs being assembled
	// (pieceplan.go); at most maxPiecePlans.
	plans piecePlans

	// served: bytes each member sent this node; at most maxServedMembers
	// (served.go).
	served *servedTable
}

// NewFetcher returns the asking side over c.
func NewFetcher(c Membership, keys Keys, m *Metrics, log *slog.Logger, opts FetcherOptions) *Fetcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.HeaderPatience <= 0 {
		opts.HeaderPatience = defaultHeaderPatience
	}
	if opts.BodyIdle <= 0 {
		opts.BodyIdle = defaultBodyIdle
	}
	tr := &http.Transport{
		Proxy:       nil, // peers are on the node network, never behind the upstream's proxy
		DialContext: (&net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		// No ResponseHeaderTimeout: heartbeats (102) do not reset it; each
		// request has its own patience timer instead (do).
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &Fetcher{
		c: c, keys: keys, m: m, opts: opts, bytesIn: m.Bytes.WithLabelValues("in"), tr: tr, client: &http.Client{Transport: tr},
		log: log, now: time.Now, maxTrys: maxPeerTries, failed: map[string]time.Time{},
		served: newServedTable(maxServedMembers), plans: piecePlans{m: map[string]piecePlan{}},
	}
}

// Close drops idle connections to peers.
func (f *Fetcher) Close() { f.tr.CloseIdleConnections() }

// ServedBy returns the blob bytes member has sent this node.
func (f *Fetcher) ServedBy(member string) int64 {
	return f.served.bytes(member)
}

// Wrap returns a source that tries the owners of a digest, then the members
// that may hold it, before up. up must take its own turns (fetch.Pool's
// Limit): the returned source takes peer turns for peers and none itself.
func (f *Fetcher) Wrap(up fetch.Source) fetch.Source { return source{f, up} }

type source struct {
	f  *Fetcher
	up fetch.Source
}

// TakesTurns: peer transfers take peer turns, up takes upstream ones.
func (source) TakesTurns() {}

// Open asks the peers in plan order, then the upstream. The fill calls Open
// again with the offset reached after a broken transfer; the peer that
// broke is remembered and skipped, so the resume goes to the next source.
//
// A blob with pieces (its size known from a manifest) is opened as its first piece only (fetch.Meta.End), from
// that piece's owner: the fill then asks each other piece of its own owner
// (OpenRange), so the pieces of a hot blob, and their upload, are spread
// over the cluster.
func (s source) Open(ctx context.Context, req fetch.Request, offset int64) (io.ReadCloser, fetch.Meta, error) {
	f := s.f
	if offset == 0 && f.piecesFor(req) {
		if body, meta, ok := s.openFirstPiece(ctx, req); ok {
			return body, meta, nil
		}
	}
	for _, t := range f.plan(req) {
		body, meta, err := f.openLimited(ctx, t, req, offset)
		if err == nil {
			return body, meta, nil
		}
		if ctx.Err() != nil {
			return nil, fetch.Meta{}, err
		}
		f.failed1(ctx, req, t, err)
	}
	return s.up.Open(ctx, req, offset)
}

// Blame skips, for this blob, the peers whose pieces of it differed from the
// upstream's (fetch.Blamer), for corruptMemory: the next fill takes their
// pieces from others or the upstream.
func (s source) Blame(req fetch.Request, peers []string) {
	for _, p := range peers {
		s.f.remember(fetch.Request{Digest: req.Digest}, p, corruptMemory)
		s.f.m.Fallbacks.WithLabelValues("corrupt").Inc()
	}
}

// piecesFor reports whether req's blob may come in pieces from their
// owners: public content asked by this node's own clients (private content
// comes whole, through the owner the client's token is handed to; a peer's
// whole-blob request is answered whole).
func (f *Fetcher) piecesFor(req fetch.Request) bool {
	return !f.opts.NoPieces && !req.Verified && req.UpstreamToken == "" && req.From == ""
}

// openFirstPiece opens piece 0 of req's blob if it has pieces; ok false:
// open the blob as a whole.
func (s source) openFirstPiece(ctx context.Context, req fetch.Request) (io.ReadCloser, fetch.Meta, bool) {
	// Without a size from a manifest, the blob comes whole from its owner:
	// a HEAD first would cost every small blob a round trip (the owner's
	// own to the upstream when it lacks the blob).
	plan := fetch.PlanFor(req.Size)
	if plan.Count < 2 {
		return nil, fetch.Meta{}, false
	}
	_, end := plan.Bounds(0)
	body, meta, err := s.OpenRange(ctx, req, 0, 0, end)
	if err != nil {
		return nil, fetch.Meta{}, false
	}
	if meta.Size != req.Size {
		// The manifest's size was wrong (the upstream's answer says
		// another): the plan is too; take the blob whole.
		_ = body.Close()
		return nil, fetch.Meta{}, false
	}
	meta.End = end
	return body, meta, true
}

// OpenRange opens bytes [start, end) of piece i of req's blob (req.Size
// bytes): from the piece's owners before this node (the rendezvous owners
// of its key, fetch.PieceKey), at most maxTrys, else from the upstream by
// range (this node owns the piece, or its owners failed). Private content
// and a peer's request go to the upstream directly.
func (s source) OpenRange(ctx context.Context, req fetch.Request, i int, start, end int64) (io.ReadCloser, fetch.Meta, error) {
	rs, ok := s.up.(fetch.RangeSource)
	if !ok {
		return nil, fetch.Meta{}, fetch.ErrNoRange
	}
	f := s.f
	if f.piecesFor(req) && req.Size > 0 {
		if f.opts.LocalPiece != nil {
			if body, meta, ok := f.opts.LocalPiece(ctx, fetch.PieceRequest(req, req.Size, i), start, end); ok {
				return body, meta, nil
			}
		}
		key := fetch.PieceKey(req.Digest, fetch.PlanFor(req.Size), i)
		for _, t := range f.piecePlan(req, i, key) {
			body, meta, err := f.openPieceLimited(ctx, t, req, i, start, end)
			if err == nil {
				return body, meta, nil
			}
			if ctx.Err() != nil {
				return nil, fetch.Meta{}, err
			}
			f.failed1(ctx, fetch.Request{Digest: key}, t, err)
		}
	}
	return rs.OpenRange(ctx, req, i, start, end)
}

// piecePlan lists the peers to ask for piece i: its owner (pieceplan.go),
// then the next members of the piece's rendezvous order, at most maxTrys,
// none once this node's turn comes (it fetches the piece itself), leaving
// out those that failed for the piece lately or are unreachable.
func (f *Fetcher) piecePlan(req fetch.Request, i int, key digest.Digest) []try {
	owner, order := f.pieceOwner(req.Digest, req.Size, i)
	self := f.c.Name()
	if owner.Name == self {
		return nil
	}
	var out []try
	for _, o := range append([]Member{owner}, order...) {
		if o.Name == self || len(out) == f.maxTrys {
			break
		}
		if (len(out) == 0 || o.Name != owner.Name) && !f.skipped(fetch.Request{Digest: key}, o.Name) && !f.skipped(req, o.Name) {
			out = append(out, try{Member: o, piece: true})
		}
	}
	return out
}

// openPieceLimited opens a piece from t under a peer turn.
func (f *Fetcher) openPieceLimited(ctx context.Context, t try, req fetch.Request, i int, start, end int64) (io.ReadCloser, fetch.Meta, error) {
	open := fetch.SourceFunc(func(ctx context.Context, req fetch.Request, _ int64) (io.ReadCloser, fetch.Meta, error) {
		return f.openPiece(ctx, t, req, i, start, end)
	})
	if f.opts.Peers == nil {
		return open(ctx, req, 0)
	}
	return f.opts.Peers.Limit(open).Open(ctx, req, 0)
}

// openPiece GETs bytes [start, end) of piece i from t and checks that the
// answer is exactly that range of a blob of req.Size bytes.
func (f *Fetcher) openPiece(ctx context.Context, t try, req fetch.Request, i int, start, end int64) (io.ReadCloser, fetch.Meta, error) {
	t.pieceIndex, t.size = i, req.Size
	resp, cancel, err := f.do(ctx, http.MethodGet, "blobs", t, req, func(hr *http.Request) {
		hr.Header.Set("Range", "bytes="+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(end-1, 10))
	})
	if err != nil {
		return nil, fetch.Meta{}, err
	}
	begun := time.Now()
	meta, err := checkPieceResponse(resp, req, start, end)
	if err != nil {
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		_ = resp.Body.Close()
		cancel()
		return nil, fetch.Meta{}, err
	}
	meta.Peer = t.Name
	b := &peerBody{f: f, req: fetch.Request{Digest: fetch.PieceKey(req.Digest, fetch.PlanFor(req.Size), i)}, member: t.Name,
		body: resp.Body, cancel: cancel, start: begun, size: end - start}
	b.counter = f.served.counter(t.Name, f.now())
	b.idle = time.AfterFunc(f.opts.BodyIdle, cancel)
	return b, meta, nil
}

// openLimited opens t under a turn: a peer turn for an owner, an upstream
// turn for a held-only probe (FetcherOptions.Upstream). Turns are taken one
// after the other, never nested: a probe's is given back before the next
// source takes its own.
func (f *Fetcher) openLimited(ctx context.Context, t try, req fetch.Request, offset int64) (io.ReadCloser, fetch.Meta, error) {
	pool := f.opts.Peers
	if t.held {
		pool = f.opts.Upstream
	}
	if pool == nil {
		return f.open(ctx, t, req, offset)
	}
	return pool.Limit(fetch.SourceFunc(func(ctx context.Context, req fetch.Request, offset int64) (io.ReadCloser, fetch.Meta, error) {
		return f.open(ctx, t, req, offset)
	})).Open(ctx, req, offset)
}

// try is one peer to ask: an owner asked to serve the blob (fetching it if
// it must), or, with held, a member asked only whether it holds it.
type try struct {
	Member
	held bool
	// piece: an owner of a piece, asked for pieceIndex of the blob of size.
	piece      bool
	pieceIndex int
	size       int64
}

// plan lists the peers to ask for req, in order:
//   - the owners before this node (an owner goes to the upstream itself),
//     at most maxTrys, never for a request that came from a peer (it is
//     never forwarded twice);
//   - then the next members after this node, at most maxProbes, asked only
//     whether they hold the blob: after a join the former owner is second
//     in the order, after an owner's restart the nodes that fetched while
//     it was gone are, and they still hold what they fetched.
//
// Members that failed for this digest lately, or are unreachable, and the
// member that asked, are left out.
func (f *Fetcher) plan(req fetch.Request) []try {
	owners := f.c.Owners(req.Digest.String())
	self := f.c.Name()
	var out []try
	i := 0
	for n := 0; i < len(owners) && owners[i].Name != self; i++ {
		if req.From == "" && n < f.maxTrys && !f.skipped(req, owners[i].Name) {
			out = append(out, try{Member: owners[i]})
			n++
		}
	}
	for i, n := i+1, 0; i < len(owners) && n < maxProbes; i++ {
		if o := owners[i]; o.Name != req.From && !f.skipped(req, o.Name) {
			out = append(out, try{Member: o, held: true})
			n++
		}
	}
	return out
}

// failed1 counts, logs and remembers a peer request that failed before its
// body. What is remembered depends on what failed: the peer (for every
// digest when it cannot be reached or refuses the cluster token), the
// peer for this digest (silence, errors, wrong bytes), or nothing when the
// answer is about the request (a refusal relayed from the upstream, a
// member that does not hold the blob).
func (f *Fetcher) failed1(ctx context.Context, req fetch.Request, t try, err error) {
	reason := "error"
	var pe *errPeer
	if errors.As(err, &pe) {
		reason = pe.reason
	}
	if t.held && reason == "not_found" {
		reason = "not_held"
	}
	f.m.Fallbacks.WithLabelValues(reason).Inc()
	f.m.Requests.WithLabelValues("client", reason).Inc()
	level := slog.LevelWarn
	switch reason {
	case "corrupt":
		f.remember(req, t.Name, corruptMemory)
	case "connect":
		f.remember(fetch.Request{}, t.Name, unreachableMemory)
	case "denied":
		f.remember(fetch.Request{}, t.Name, failMemory)
		level = slog.LevelError
	case "refused", "not_found", "not_held":
		level = slog.LevelDebug
	case "too_large":
		// This node's cap (max_manifest_bytes), not the peer's fault, and
		// a reload may raise it: not remembered.
	default:
		f.remember(req, t.Name, failMemory)
	}
	f.log.LogAttrs(ctx, level, "peer failed; trying the next source", slog.String("digest", req.Digest.String()),
		slog.String("peer", t.Name), slog.Bool("held_only", t.held), slog.String("reason", reason), slog.String("error", err.Error()))
}

// ErrNoPeer means no peer had the content: this node comes first among
// its owners, or every owner asked failed. The caller asks the upstream.
var ErrNoPeer = errors.New("peer: no peer to ask")

// defaultMaxManifestBytes caps a manifest read from a peer when
// FetcherOptions.MaxManifestBytes is nil (distribution's cap, config's default).
const defaultMaxManifestBytes = 4 << 20

// maxManifestBytes is the cap on a manifest read from a peer, now.
func (f *Fetcher) maxManifestBytes() int64 {
	if f.opts.MaxManifestBytes != nil {
		if n := f.opts.MaxManifestBytes(); n > 0 {
			return n
		}
	}
	return defaultMaxManifestBytes
}

// Manifest gets a manifest by digest from its owners (or a member holding
// it), so that a manifest, too, is fetched from the upstream once per
// cluster (Docker Hub counts manifest GETs as pulls). It returns the body
// and media type, unverified: the caller checks the digest. ErrNoPeer: ask
// the upstream.
func (f *Fetcher) Manifest(ctx context.Context, req fetch.Request, accept string) ([]byte, string, error) {
	for _, t := range f.plan(req) {
		body, mt, err := f.manifest(ctx, t, req, accept)
		if err == nil {
			f.m.Requests.WithLabelValues("client", "ok").Inc()
			return body, mt, nil
		}
		if ctx.Err() != nil {
			return nil, "", err
		}
		f.failed1(ctx, req, t, err)
	}
	return nil, "", ErrNoPeer
}

func (f *Fetcher) manifest(ctx context.Context, t try, req fetch.Request, accept string) ([]byte, string, error) {
	resp, stop, err := f.do(ctx, http.MethodGet, "manifests", t, req, func(hr *http.Request) {
		if accept != "" {
			hr.Header.Set("Accept", accept)
		}
	})
	if err != nil {
		return nil, "", err
	}
	defer stop()
	defer resp.Body.Close()
	if _, err := checkResponse(resp, req, 0); err != nil {
		return nil, "", err
	}
	idle := time.AfterFunc(f.opts.BodyIdle, stop)
	defer idle.Stop()
	limit := f.maxManifestBytes()
	if resp.ContentLength > limit {
		return nil, "", &errPeer{"too_large", fmt.Errorf("manifest of %d bytes, over %d", resp.ContentLength, limit)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", &errPeer{"midstream", err}
	}
	if int64(len(body)) > limit {
		return nil, "", &errPeer{"too_large", fmt.Errorf("manifest over %d bytes", limit)}
	}
	if req.Digest.Algorithm().FromBytes(body) != req.Digest {
		return nil, "", &errPeer{"corrupt", fmt.Errorf("%w: peer %s sent a manifest that does not hash to %s", fetch.ErrVerify, t.Name, req.Digest)}
	}
	return body, resp.Header.Get("Content-Type"), nil
}

// Head asks the owners of a blob this node lacks for its size and type, so
// that a HEAD (crane and skopeo send one before each GET) reaches the
// upstream once per cluster at most, not once per node. ErrNoPeer: ask the
// upstream.
func (f *Fetcher) Head(ctx context.Context, req fetch.Request) (fetch.Meta, error) {
	for _, t := range f.plan(req) {
		if t.held {
			break // a HEAD is cheap upstream; members are not probed for it
		}
		resp, stop, err := f.do(ctx, http.MethodHead, "blobs", t, req, nil)
		if err == nil {
			var meta fetch.Meta
			meta, err = checkResponse(resp, req, 0)
			_ = resp.Body.Close()
			stop()
			if err == nil {
				f.m.Requests.WithLabelValues("client", "ok").Inc()
				return meta, nil
			}
		}
		if ctx.Err() != nil {
			return fetch.Meta{}, err
		}
		f.failed1(ctx, req, t, err)
	}
	return fetch.Meta{}, ErrNoPeer
}

func (f *Fetcher) peerURL(t try, kind string, req fetch.Request) string {
	q := url.Values{QueryRegistry: {req.Registry}, QueryRepository: {req.Repository}, QueryFrom: {f.c.Name()}}
	if req.Verified {
		q.Set(QueryVerified, "1") // the asking node checked its client (private content)
	}
	if t.held {
		q.Set(QueryHeld, "1") // serve it only if stored: fetch nothing, ask no one
	}
	if t.piece {
		q.Set(QueryPiece, strconv.Itoa(t.pieceIndex))
		q.Set(QuerySize, strconv.FormatInt(t.size, 10))
	}
	return strings.TrimSuffix(t.URL, "/") + Path + kind + "/" + req.Digest.String() + "?" + q.Encode()
}

// setUpstreamToken hands the owner the asking node's upstream token, only
// with a cluster secret (otherwise the owner would not trust the request).
// It is set before Authorize, whose token covers it.
func setUpstreamToken(hr *http.Request, req fetch.Request, keys Keys) {
	if req.UpstreamToken != "" && req.Verified && keys.Enabled() {
		hr.Header.Set(UpstreamTokenHeader, req.UpstreamToken)
	}
}

func failKey(req fetch.Request, member string) string { return string(req.Digest) + "\x00" + member }

// skipped reports whether member failed lately for this digest, or for
// any (unreachable).
func (f *Fetcher) skipped(req fetch.Request, member string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	for _, k := range []string{failKey(req, member), failKey(fetch.Request{}, member)} {
		if until, ok := f.failed[k]; ok && now.Before(until) {
			return true
		}
	}
	return false
}

func (f *Fetcher) remember(req fetch.Request, member string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if len(f.failed) >= maxFailMemories {
		for k, until := range f.failed {
			if now.After(until) {
				delete(f.failed, k)
			}
		}
	}
	if len(f.failed) >= maxFailMemories {
		// Still full of live entries: forget an arbitrary one (map order).
		for k := range f.failed {
			delete(f.failed, k)
			break
		}
	}
	f.failed[failKey(req, member)] = now.Add(d)
}

// do sends one peer request and waits for its response headers for as long
// as the peer keeps saying it is working on it (102 heartbeats), at most
// HeaderPatience of silence. On success the caller closes the body, then
// calls stop (which also cancels the request: the body's idle timer uses it).
func (f *Fetcher) do(ctx context.Context, method, kind string, t try, req fetch.Request, edit func(*http.Request)) (*http.Response, context.CancelFunc, error) {
	if t.URL == "" {
		return nil, nil, &errPeer{"no_url", errors.New("peer advertises no URL")}
	}
	rctx, cancel := context.WithCancel(ctx)
	var silent atomic.Bool
	patience := time.AfterFunc(f.opts.HeaderPatience, func() { silent.Store(true); cancel() })
	rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{
		Got1xxResponse: func(int, textproto.MIMEHeader) error {
			patience.Reset(f.opts.HeaderPatience)
			return nil
		},
	})
	hr, err := http.NewRequestWithContext(rctx, method, f.peerURL(t, kind, req), nil)
	if err != nil {
		patience.Stop()
		cancel()
		return nil, nil, &errPeer{"bad_url", err}
	}
	if edit != nil {
		edit(hr)
	}
	setUpstreamToken(hr, req, f.keys)
	f.keys.Authorize(hr, req.Digest.String(), f.now()) // covers the upstream token and Range
	resp, err := f.client.Do(hr)
	stopped := patience.Stop()
	if err == nil && !stopped && silent.Load() {
		// The patience ran out as the answer arrived: the request is
		// cancelled already.
		_ = resp.Body.Close()
		err = context.Canceled
	}
	if err != nil {
		cancel()
		var op *net.OpError
		switch {
		case silent.Load():
			return nil, nil, &errPeer{"timeout", fmt.Errorf("no answer and no heartbeat for %s: %w", f.opts.HeaderPatience, err)}
		case errors.As(err, &op) && op.Op == "dial":
			return nil, nil, &errPeer{"connect", err}
		}
		return nil, nil, &errPeer{"error", err}
	}
	return resp, cancel, nil
}

// open GETs the blob from one peer from offset on and checks the response.
func (f *Fetcher) open(ctx context.Context, t try, req fetch.Request, offset int64) (io.ReadCloser, fetch.Meta, error) {
	resp, cancel, err := f.do(ctx, http.MethodGet, "blobs", t, req, func(hr *http.Request) {
		if offset > 0 {
			hr.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		}
	})
	if err != nil {
		return nil, fetch.Meta{}, err
	}
	start := time.Now()
	meta, err := checkResponse(resp, req, offset)
	if err != nil {
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		_ = resp.Body.Close()
		cancel()
		return nil, fetch.Meta{}, err
	}
	meta.Peer = t.Name
	b := &peerBody{f: f, req: req, member: t.Name, body: resp.Body, cancel: cancel, start: start, size: meta.Size}
	b.counter = f.served.counter(t.Name, f.now())
	if offset == 0 {
		// The fill verifies the digest too, but only it can tell a peer that
		// sent wrong bytes from an upstream that did: hash here to know whom
		// to blame and skip next time.
		b.hash = req.Digest.Algorithm().Hash()
	}
	b.idle = time.AfterFunc(f.opts.BodyIdle, cancel)
	return b, meta, nil
}
