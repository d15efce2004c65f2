package peer

import (
	"context"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/upstream"
)

// checkResponse accepts 200 for offset 0 and 206 from offset for a resume.
// A 401 or 403 is about the cluster secrets only when the peer says its
// token was refused (ErrorHeader, or the peer token challenge);
// otherwise the peer relays its upstream's or its access rules' answer.
func checkResponse(resp *http.Response, req fetch.Request, offset int64) (fetch.Meta, error) {
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fetch.Meta{}, &errPeer{"not_found", fmt.Errorf("peer answered %s", resp.Status)}
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		if resp.Header.Get(ErrorHeader) == ErrorToken || strings.HasPrefix(resp.Header.Get("Www-Authenticate"), AuthScheme) {
			return fetch.Meta{}, &errPeer{"denied", fmt.Errorf("peer refused this node's token: %s (cluster secrets differ?)", resp.Status)}
		}
		return fetch.Meta{}, &errPeer{"refused", fmt.Errorf("peer relayed %s", resp.Status)}
	case resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests:
		return fetch.Meta{}, &errPeer{"busy", fmt.Errorf("peer answered %s", resp.Status)}
	case offset == 0 && resp.StatusCode != http.StatusOK, offset > 0 && resp.StatusCode != http.StatusPartialContent:
		return fetch.Meta{}, &errPeer{"status", fmt.Errorf("peer answered %s", resp.Status)}
	}
	if d := resp.Header.Get("Docker-Content-Digest"); d != "" && d != req.Digest.String() {
		return fetch.Meta{}, &errPeer{"corrupt", fmt.Errorf("peer sent digest %q, want %s", d, req.Digest)}
	}
	meta := fetch.Meta{Size: resp.ContentLength, MediaType: resp.Header.Get("Content-Type")}
	if offset > 0 {
		start, _, total, ok := upstream.ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			return fetch.Meta{}, &errPeer{"status", fmt.Errorf("peer sent Content-Range %q for offset %d", resp.Header.Get("Content-Range"), offset)}
		}
		meta.Size = total
	}
	return meta, nil
}

// checkPieceResponse accepts a 206 for exactly bytes [start, end) of a blob
// of req.Size bytes; refusals are read as checkResponse reads them.
func checkPieceResponse(resp *http.Response, req fetch.Request, start, end int64) (fetch.Meta, error) {
	if resp.StatusCode != http.StatusPartialContent {
		_, err := checkResponse(resp, req, 1) // a refusal, or "status"
		return fetch.Meta{}, err
	}
	if d := resp.Header.Get("Docker-Content-Digest"); d != "" && d != req.Digest.String() {
		return fetch.Meta{}, &errPeer{"corrupt", fmt.Errorf("peer sent digest %q, want %s", d, req.Digest)}
	}
	first, last, total, ok := upstream.ParseContentRange(resp.Header.Get("Content-Range"))
	if !ok || first != start || last != end-1 || total != req.Size || (resp.ContentLength >= 0 && resp.ContentLength != end-start) {
		return fetch.Meta{}, &errPeer{"status", fmt.Errorf("peer sent Content-Range %.80q (%d bytes) for bytes %d-%d of %d",
			resp.Header.Get("Content-Range"), resp.ContentLength, start, end-1, req.Size)}
	}
	return fetch.Meta{Size: total, MediaType: resp.Header.Get("Content-Type")}, nil
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
		b.idle.Reset(b.f.opts.BodyIdle)
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
