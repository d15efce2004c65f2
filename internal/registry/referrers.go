package registry

import (
	"container/list"
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/upstream"
)

// The referrers API (distribution-spec v1.1): GET /v2/<name>/referrers/<digest>
// lists the manifests whose subject is <digest> (signatures, SBOMs,
// attestations). berth passes it to the upstream, caches the answer like a
// tag (TagTTL, then asked again; the last answer served while the upstream
// cannot be reached), and gates it like the subject manifest: a client must
// be allowed to read the subject to list what refers to it. Where the
// upstream has no referrers API it answers 404, and so does berth: the
// spec's signal for clients to fall back to the tag schema (sha256-<hex>).
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-referrers

// maxArtifactType bounds the artifactType filter (a media type).
const maxArtifactType = 255

// ReferrersCache keeps referrers answers in memory, bounded in entries and
// bytes (least recently used out first): a listing is small, and a lost one
// costs one upstream request. One per handler (one per server). Safe for
// concurrent use.
type ReferrersCache struct {
	maxEntries int
	maxBytes   int64

	mu    sync.Mutex
	lru   *list.List               // of *referrersEntry, most recent first
	items map[string]*list.Element // bounded by maxEntries
	bytes int64                    // bounded by maxBytes
}

// referrersEntry is one cached answer; absent: the upstream answered 404
// (no referrers API), which is cached too.
type referrersEntry struct {
	key     string
	body    []byte
	filters string
	absent  bool
	fetched time.Time
}

// Bounds of the default cache, and the largest answer kept in it.
const (
	defaultReferrersEntries = 1024
	defaultReferrersBytes   = 4 << 20
	maxCachedReferrers      = 256 << 10
)

// NewReferrersCache returns a cache of at most entries answers and bytes
// bytes of them (0: 1024 entries, 4 MiB).
func NewReferrersCache(entries int, bytes int64) *ReferrersCache {
	if entries <= 0 {
		entries = defaultReferrersEntries
	}
	if bytes <= 0 {
		bytes = defaultReferrersBytes
	}
	return &ReferrersCache{maxEntries: entries, maxBytes: bytes, lru: list.New(), items: map[string]*list.Element{}}
}

func (c *ReferrersCache) get(key string) (referrersEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return referrersEntry{}, false
	}
	c.lru.MoveToFront(el)
	return *el.Value.(*referrersEntry), true
}

func (c *ReferrersCache) put(e referrersEntry) {
	if int64(len(e.body)) > maxCachedReferrers {
		c.remove(e.key)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		c.bytes -= int64(len(el.Value.(*referrersEntry).body))
		c.lru.Remove(el)
		delete(c.items, e.key)
	}
	c.items[e.key] = c.lru.PushFront(&e)
	c.bytes += int64(len(e.body))
	for c.lru.Len() > c.maxEntries || c.bytes > c.maxBytes {
		old := c.lru.Back().Value.(*referrersEntry)
		c.lru.Remove(c.lru.Back())
		delete(c.items, old.key)
		c.bytes -= int64(len(old.body))
	}
}

func (c *ReferrersCache) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.bytes -= int64(len(el.Value.(*referrersEntry).body))
		c.lru.Remove(el)
		delete(c.items, key)
	}
}

// serveReferrers answers GET/HEAD /v2/<name>/referrers/<digest> once the gate
// let req through (as the subject manifest).
func (h *Handler) serveReferrers(w http.ResponseWriter, r *http.Request, req *request) error {
	dg := digest.Digest(req.path.Reference)
	artifactType := r.URL.Query().Get("artifactType")
	if len(artifactType) > maxArtifactType {
		return newError(http.StatusBadRequest, CodeUnsupported, "artifactType longer than %d bytes", maxArtifactType)
	}
	t := req.target
	key := t.String() + "\x00" + dg.String() + "\x00" + artifactType
	cache := h.referrers
	e, known := cache.get(key)
	if !known || h.opts.Now().Sub(e.fetched) >= h.live().TagTTL {
		fresh, err := h.fetchReferrers(r.Context(), req, key, dg, artifactType)
		switch {
		case err == nil:
			e = fresh
			h.m.Cache.WithLabelValues("referrers", "miss").Inc()
		case known && upstream.IsUnavailable(err):
			h.m.StaleTags.WithLabelValues(t.Registry).Inc()
			h.m.Cache.WithLabelValues("referrers", "stale").Inc()
			h.log.LogAttrs(r.Context(), slog.LevelWarn, "serving stale referrers: upstream unavailable",
				slog.String("upstream", t.Registry), slog.String("repo", t.Repository), slog.String("subject", dg.String()),
				slog.Time("fetched", e.fetched), slog.String("error", err.Error()))
		default:
			return upstreamError(t, err, CodeManifestUnknown)
		}
	} else {
		h.m.Cache.WithLabelValues("referrers", "hit").Inc()
	}
	if e.absent {
		return newError(http.StatusNotFound, CodeUnsupported, "upstream %s does not serve the referrers API: use the tag schema", t.Registry)
	}
	hd := w.Header()
	hd.Set("Content-Type", upstream.MediaTypeImageIndex)
	hd.Set("Content-Length", strconv.Itoa(len(e.body)))
	if e.filters != "" {
		hd.Set("OCI-Filters-Applied", e.filters)
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(e.body)
	}
	return nil
}

// fetchReferrers asks the upstream once for all concurrent askers of key
// and caches the answer (a 404 too: no referrers API there). Other failures
// are returned unmapped, for stale-if-error.
func (h *Handler) fetchReferrers(ctx context.Context, req *request, key string, dg digest.Digest, artifactType string) (referrersEntry, error) {
	v, err, _ := h.manifests.Do("r\x00"+key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.live().UpstreamTimeout)
		defer cancel()
		ref, err := req.client.GetReferrers(fctx, req.target.Repository, dg, artifactType, h.maxManifestBytes())
		e := referrersEntry{key: key, body: ref.Body, filters: ref.FiltersApplied, fetched: h.opts.Now()}
		switch {
		case err == nil:
		case upstream.Classify(err) == upstream.NotFound:
			e.absent, e.body, e.filters = true, nil, ""
		default:
			h.countFailure(fctx, req.target, err)
			return nil, err
		}
		h.referrers.put(e)
		return e, nil
	})
	if err != nil {
		return referrersEntry{}, err
	}
	return v.(referrersEntry), nil
}
