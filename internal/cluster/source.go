package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-mirror/berth/internal/fetch"
)

// PeerPath is the prefix of the peer API.
const PeerPath = "/peer/v1/"

// Timeouts of a request to a peer. A dead peer must cost little: the next
// source is tried as soon as one passes.
const (
	connectTimeout   = 2 * time.Second
	firstByteTimeout = 10 * time.Second
	idleTimeout      = 10 * time.Second
	// maxPeerTries caps the peers asked for one Open before the upstream.
	maxPeerTries = 2
	// failMemory is how long a peer that failed for a digest is skipped for it.
	failMemory = time.Minute
	// corruptMemory is how long a peer that sent wrong bytes is skipped.
	corruptMemory = 10 * time.Minute
	// unreachableMemory is how long a peer that could not be reached is
	// skipped for every digest: a machine that is gone costs one connect
	// timeout per node, not one per blob, until gossip declares it dead.
	unreachableMemory = 10 * time.Second
)

// errPeer is a peer request that did not give a usable response.
type errPeer struct {
	reason string
	err    error
}

func (e *errPeer) Error() string { return e.reason + ": " + e.err.Error() }
func (e *errPeer) Unwrap() error { return e.err }

// Fetcher is the asking side: it wraps the upstream source so that a local
// miss asks the digest's owners first. It is safe for concurrent use.
type Fetcher struct {
	c       Membership
	bytesIn prometheus.Counter
	keys    Keys
	m       *Metrics
	client  *http.Client
	tr      *http.Transport
	log     *slog.Logger
	now     func() time.Time
	maxTrys int

	mu     sync.Mutex
	failed map[string]time.Time // digest + "\x00" + member → skip until

	served sync.Map // member name → *atomic.Int64: bytes it sent this node
}

// Membership is what the asking side needs of the cluster.
type Membership interface {
	// Name is this node's name.
	Name() string
	// Owners orders the alive members by ownership of key.
	Owners(key string) []Member
}

// NewFetcher returns the asking side over c.
func NewFetcher(c Membership, keys Keys, m *Metrics, log *slog.Logger) *Fetcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := &http.Transport{
		Proxy:                 nil, // peers are on the node network, never behind the upstream's proxy
		DialContext:           (&net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: firstByteTimeout,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
	}
	return &Fetcher{
		c: c, keys: keys, m: m, bytesIn: m.Bytes.WithLabelValues("in"), tr: tr, client: &http.Client{Transport: tr},
		log: log, now: time.Now, maxTrys: maxPeerTries, failed: map[string]time.Time{},
	}
}

// Close drops idle connections to peers.
func (f *Fetcher) Close() { f.tr.CloseIdleConnections() }

// ServedBy returns the blob bytes member has sent this node.
func (f *Fetcher) ServedBy(member string) int64 {
	if v, ok := f.served.Load(member); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// Wrap returns a source that tries the owners of a digest before up.
func (f *Fetcher) Wrap(up fetch.Source) fetch.Source { return source{f, up} }

type source struct {
	f  *Fetcher
	up fetch.Source
}

// Open asks the owners in order, stopping at this node (an owner goes to
// the upstream itself), then the upstream. The fill calls Open again with
// the offset reached after a broken transfer; the peer that broke is
// remembered and skipped, so the resume goes to the next source.
func (s source) Open(ctx context.Context, req fetch.Request, offset int64) (io.ReadCloser, fetch.Meta, error) {
	f := s.f
	for _, o := range f.candidates(req) {
		body, meta, err := f.open(ctx, o, req, offset)
		if err == nil {
			return body, meta, nil
		}
		if ctx.Err() != nil {
			return nil, fetch.Meta{}, err
		}
		f.failed1(ctx, req, o, err)
	}
	return s.up.Open(ctx, req, offset)
}

// candidates are the peers to ask for req, in order: the owners before
// this node (an owner goes to the upstream itself), without those that
// failed for this digest lately, at most maxTrys.
func (f *Fetcher) candidates(req fetch.Request) []Member {
	var out []Member
	for _, o := range f.c.Owners(req.Digest.String()) {
		if o.Name == f.c.Name() || len(out) == f.maxTrys {
			break
		}
		if !f.skipped(req, o.Name) {
			out = append(out, o)
		}
	}
	return out
}

// failed1 counts, logs and remembers a peer request that failed before its body.
func (f *Fetcher) failed1(ctx context.Context, req fetch.Request, o Member, err error) {
	reason := "error"
	var pe *errPeer
	if errors.As(err, &pe) {
		reason = pe.reason
	}
	f.m.Fallbacks.WithLabelValues(reason).Inc()
	f.m.Requests.WithLabelValues("client", reason).Inc()
	switch reason {
	case "corrupt":
		f.remember(req, o.Name, corruptMemory)
	case "connect", "timeout":
		f.remember(fetch.Request{}, o.Name, unreachableMemory)
	default:
		f.remember(req, o.Name, failMemory)
	}
	f.log.LogAttrs(ctx, slog.LevelWarn, "peer failed; trying the next source", slog.String("digest", req.Digest.String()),
		slog.String("peer", o.Name), slog.String("error", err.Error()))
}

// ErrNoPeer means no peer had the content: this node comes first among
// its owners, or every owner asked failed. The caller asks the upstream.
var ErrNoPeer = errors.New("cluster: no peer to ask")

// maxManifestBytes caps a manifest read from a peer (as from an upstream).
const maxManifestBytes = 8 << 20

// Manifest gets a manifest by digest from its owners, so that a manifest,
// too, is fetched from the upstream once per cluster (Docker Hub counts
// manifest GETs as pulls). It returns the body and media type, unverified:
// the caller checks the digest. ErrNoPeer: ask the upstream.
func (f *Fetcher) Manifest(ctx context.Context, req fetch.Request, accept string) ([]byte, string, error) {
	for _, o := range f.candidates(req) {
		body, mt, err := f.manifest(ctx, o, req, accept)
		if err == nil {
			f.m.Requests.WithLabelValues("client", "ok").Inc()
			return body, mt, nil
		}
		if ctx.Err() != nil {
			return nil, "", err
		}
		f.failed1(ctx, req, o, err)
	}
	return nil, "", ErrNoPeer
}

func (f *Fetcher) manifest(ctx context.Context, o Member, req fetch.Request, accept string) ([]byte, string, error) {
	if o.URL == "" {
		return nil, "", &errPeer{"no_url", errors.New("peer advertises no URL")}
	}
	ctx, cancel := context.WithTimeout(ctx, firstByteTimeout+idleTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, f.peerURL(o, "manifests", req), nil)
	if err != nil {
		return nil, "", &errPeer{"bad_url", err}
	}
	if accept != "" {
		hr.Header.Set("Accept", accept)
	}
	f.keys.Authorize(hr, req.Digest.String(), f.now())
	setUpstreamToken(hr, req)
	resp, err := f.client.Do(hr)
	if err != nil {
		return nil, "", &errPeer{"connect", err}
	}
	defer resp.Body.Close()
	if _, err := checkResponse(resp, req, 0); err != nil {
		return nil, "", err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return nil, "", &errPeer{"midstream", err}
	}
	if len(body) > maxManifestBytes {
		return nil, "", &errPeer{"too_large", fmt.Errorf("manifest over %d bytes", maxManifestBytes)}
	}
	if req.Digest.Algorithm().FromBytes(body) != req.Digest {
		return nil, "", &errPeer{"corrupt", fmt.Errorf("%w: peer %s sent a manifest that does not hash to %s", fetch.ErrVerify, o.Name, req.Digest)}
	}
	return body, resp.Header.Get("Content-Type"), nil
}

func (f *Fetcher) peerURL(o Member, kind string, req fetch.Request) string {
	q := url.Values{"registry": {req.Registry}, "repository": {req.Repository}}
	if req.Verified {
		q.Set("verified", "1") // the asking node checked its client (private content)
	}
	return strings.TrimSuffix(o.URL, "/") + PeerPath + kind + "/" + req.Digest.String() + "?" + q.Encode()
}

// UpstreamTokenHeader carries a verified client's short-lived upstream token
// to the owner that fetches for it (docs/private-images.md).
const UpstreamTokenHeader = "Berth-Upstream-Token"

// setUpstreamToken hands the owner the asking node's upstream token, only
// with a cluster secret (otherwise the owner would not trust the request).
func setUpstreamToken(hr *http.Request, req fetch.Request) {
	if req.UpstreamToken != "" && req.Verified && hr.Header.Get("Authorization") != "" {
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
	if len(f.failed) > 4096 {
		for k, until := range f.failed {
			if now.After(until) {
				delete(f.failed, k)
			}
		}
	}
	f.failed[failKey(req, member)] = now.Add(d)
}

// open GETs the blob from one peer from offset on and checks the response.
func (f *Fetcher) open(ctx context.Context, o Member, req fetch.Request, offset int64) (io.ReadCloser, fetch.Meta, error) {
	if o.URL == "" {
		return nil, fetch.Meta{}, &errPeer{"no_url", errors.New("peer advertises no URL")}
	}
	u := f.peerURL(o, "blobs", req)
	rctx, cancel := context.WithCancel(ctx)
	hr, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, fetch.Meta{}, &errPeer{"bad_url", err}
	}
	if offset > 0 {
		hr.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	f.keys.Authorize(hr, req.Digest.String(), f.now())
	setUpstreamToken(hr, req)
	start := time.Now()
	resp, err := f.client.Do(hr)
	if err != nil {
		cancel()
		reason := "connect"
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			reason = "timeout"
		}
		return nil, fetch.Meta{}, &errPeer{reason, err}
	}
	meta, err := checkResponse(resp, req, offset)
	if err != nil {
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		_ = resp.Body.Close()
		cancel()
		return nil, fetch.Meta{}, err
	}
	b := &peerBody{f: f, req: req, member: o.Name, body: resp.Body, cancel: cancel, start: start, size: meta.Size}
	if v, ok := f.served.Load(o.Name); ok {
		b.counter = v.(*atomic.Int64)
	} else {
		v, _ := f.served.LoadOrStore(o.Name, new(atomic.Int64))
		b.counter = v.(*atomic.Int64)
	}
	if offset == 0 {
		// The fill verifies the digest too, but only it can tell a peer that
		// sent wrong bytes from an upstream that did: hash here to know whom
		// to blame and skip next time.
		b.hash = req.Digest.Algorithm().Hash()
	}
	b.idle = time.AfterFunc(idleTimeout, cancel)
	return b, meta, nil
}

// checkResponse accepts 200 for offset 0 and 206 from offset for a resume.
func checkResponse(resp *http.Response, req fetch.Request, offset int64) (fetch.Meta, error) {
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fetch.Meta{}, &errPeer{"not_found", fmt.Errorf("peer answered %s", resp.Status)}
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fetch.Meta{}, &errPeer{"denied", fmt.Errorf("peer answered %s (cluster secrets differ?)", resp.Status)}
	case offset == 0 && resp.StatusCode != http.StatusOK, offset > 0 && resp.StatusCode != http.StatusPartialContent:
		return fetch.Meta{}, &errPeer{"status", fmt.Errorf("peer answered %s", resp.Status)}
	}
	if d := resp.Header.Get("Docker-Content-Digest"); d != "" && d != req.Digest.String() {
		return fetch.Meta{}, &errPeer{"corrupt", fmt.Errorf("peer sent digest %q, want %s", d, req.Digest)}
	}
	meta := fetch.Meta{Size: resp.ContentLength, MediaType: resp.Header.Get("Content-Type")}
	if offset > 0 {
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			return fetch.Meta{}, &errPeer{"status", fmt.Errorf("peer sent Content-Range %q for offset %d", resp.Header.Get("Content-Range"), offset)}
		}
		meta.Size = total
	}
	return meta, nil
}

// parseContentRange parses "bytes START-END/TOTAL".
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	var err1, err2 error
	start, err1 = strconv.ParseInt(first, 10, 64)
	total, err2 = strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil {
		if err1 == nil && tot == "*" {
			return start, -1, true
		}
		return 0, 0, false
	}
	return start, total, true
}

// peerBody is a peer's response body: it counts bytes, enforces the idle
// timeout, hashes a whole-blob transfer, and blames the peer for a break or
// wrong bytes.
type peerBody struct {
	f       *Fetcher
	req     fetch.Request
	member  string
	body    io.ReadCloser
	cancel  context.CancelFunc
	idle    *time.Timer
	start   time.Time
	size    int64
	n       int64
	counter *atomic.Int64
	hash    hash.Hash
	first   bool
	failed  bool
}

func (b *peerBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if n > 0 {
		b.idle.Reset(idleTimeout)
		if !b.first {
			b.first = true
			b.f.m.FirstByte.Observe(time.Since(b.start).Seconds())
		}
		b.n += int64(n)
		b.counter.Add(int64(n))
		b.f.bytesIn.Add(float64(n))
		if b.hash != nil {
			_, _ = b.hash.Write(p[:n])
		}
	}
	switch {
	case err == io.EOF && b.hash != nil && b.n == b.size && !b.verified():
		b.blame("corrupt", corruptMemory)
		return n, fmt.Errorf("%w: peer %s sent bytes that do not hash to %s", fetch.ErrVerify, b.member, b.req.Digest)
	case err == io.EOF:
		b.f.m.Requests.WithLabelValues("client", "ok").Inc()
	case err != nil:
		b.blame("midstream", failMemory)
		return n, fmt.Errorf("peer %s: %w", b.member, err)
	}
	return n, err
}

func (b *peerBody) verified() bool {
	sum := b.hash.Sum(nil)
	want := b.req.Digest.Encoded()
	const hexdigits = "0123456789abcdef"
	if len(want) != 2*len(sum) {
		return false
	}
	for i, c := range sum {
		if want[2*i] != hexdigits[c>>4] || want[2*i+1] != hexdigits[c&15] {
			return false
		}
	}
	return true
}

// blame counts a failure of the peer once and skips it for this digest.
func (b *peerBody) blame(reason string, d time.Duration) {
	if b.failed {
		return
	}
	b.failed = true
	b.f.m.Fallbacks.WithLabelValues(reason).Inc()
	b.f.m.Requests.WithLabelValues("client", reason).Inc()
	b.f.remember(b.req, b.member, d)
	b.f.log.Warn("peer transfer failed", "digest", b.req.Digest.String(), "peer", b.member,
		"reason", reason, "bytes", b.n)
}

func (b *peerBody) Close() error {
	b.idle.Stop()
	b.cancel()
	return b.body.Close()
}
