package admin

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/registry"
	"github.com/berth-mirror/berth/internal/store"
)

// List limits for cache.list.
const (
	defaultListLimit = 100
	maxListLimit     = 10000
	// bulkPurge is the number of digests past which purge lists the store
	// once instead of looking each digest up.
	bulkPurge = 1000
)

// ListParams are the params of cache.list.
type ListParams struct {
	// Repository keeps content first fetched for this repository
	// (registry.example.com/team/app; a name without a registry is routed as
	// the registry would: alpine is docker.io/library/alpine).
	Repository string `json:"repository,omitempty"`
	// DigestPrefix keeps digests starting with it ("sha256:" may be left out).
	DigestPrefix string `json:"digest_prefix,omitempty"`
	// Limit is the page size (default 100, at most 10000).
	Limit int `json:"limit,omitempty"`
	// Cursor is the next_cursor of the previous page.
	Cursor string `json:"cursor,omitempty"`
}

// ListResult is the result of cache.list.
type ListResult struct {
	Items []CacheItem `json:"items"`
	// NextCursor fetches the next page; empty on the last.
	NextCursor string `json:"next_cursor"`
}

// CacheItem is one stored object.
type CacheItem struct {
	Digest     string    `json:"digest"`
	Size       int64     `json:"size"`
	MediaType  string    `json:"mediaType"`
	Manifest   bool      `json:"manifest"`
	Repository string    `json:"repository"`
	LastAccess time.Time `json:"lastAccess"`
}

func (s *Service) cacheList(_ context.Context, p ListParams) (ListResult, error) {
	limit := p.Limit
	if limit == 0 {
		limit = defaultListLimit
	}
	if limit < 0 || limit > maxListLimit {
		return ListResult{}, Errorf(CodeInvalidParams, "invalid params: limit: expected 1 to %d, got %d", maxListLimit, limit)
	}
	prefix := p.DigestPrefix
	if prefix != "" && !strings.Contains(prefix, ":") {
		prefix = string(digest.Canonical) + ":" + prefix
	}
	infos, err := s.d.Store.List(store.Filter{Repository: s.repository(p.Repository), DigestPrefix: prefix})
	if err != nil {
		return ListResult{}, err
	}
	start := 0
	if p.Cursor != "" {
		start = sort.Search(len(infos), func(i int) bool { return string(infos[i].Digest) > p.Cursor })
	}
	res := ListResult{Items: []CacheItem{}}
	for _, in := range infos[start:] {
		if len(res.Items) == limit {
			res.NextCursor = res.Items[limit-1].Digest
			break
		}
		res.Items = append(res.Items, CacheItem{Digest: in.Digest.String(), Size: in.Size, MediaType: in.MediaType,
			Manifest: in.Kind == store.KindManifest, Repository: in.Repository, LastAccess: in.LastAccess.UTC()})
	}
	return res, nil
}

// repository normalises a repository filter the way the registry routes
// names; one the router refuses is used as given.
func (s *Service) repository(name string) string {
	if name == "" {
		return ""
	}
	cfg := s.d.Config()
	r := registry.Router{
		Known:   func(n string) bool { _, ok := cfg.Upstreams[n]; return ok },
		Default: cfg.DefaultUpstream,
		Prefix:  cfg.PrefixOwner,
	}
	if t, err := r.Resolve(name, ""); err == nil {
		return t.String()
	}
	return name
}

// PurgeParams are the params of cache.purge: exactly one of the three.
type PurgeParams struct {
	Digests    []string `json:"digests,omitempty"`
	Repository string   `json:"repository,omitempty"`
	All        bool     `json:"all,omitempty"`
}

// PurgeResult is the result of cache.purge.
type PurgeResult struct {
	// Purged objects and their bytes.
	Purged int   `json:"purged"`
	Bytes  int64 `json:"bytes"`
	// Missing counts listed digests that were not in the store.
	Missing int `json:"missing"`
}

// cachePurge deletes stored content. Content being fetched is not in the
// store yet and is not touched: its fill goes on and commits when done, so a
// purge never breaks a pull in progress (purge again afterwards to drop it).
// Clients already reading a purged file keep reading it to the end.
func (s *Service) cachePurge(ctx context.Context, p PurgeParams) (PurgeResult, error) {
	n := 0
	if len(p.Digests) > 0 {
		n++
	}
	if p.Repository != "" {
		n++
	}
	if p.All {
		n++
	}
	if n != 1 {
		return PurgeResult{}, Errorf(CodeInvalidParams, "invalid params: give exactly one of digests, repository or all")
	}
	if len(p.Digests) > 0 {
		return s.purgeDigests(ctx, p.Digests)
	}
	infos, err := s.d.Store.List(store.Filter{Repository: s.repository(p.Repository)})
	if err != nil {
		return PurgeResult{}, err
	}
	var res PurgeResult
	for _, in := range infos {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := s.d.Store.Delete(in.Digest); err != nil {
			return res, err
		}
		res.Purged++
		res.Bytes += in.Size
	}
	s.log.Info("purged cache", "repo", p.Repository, "all", p.All, "purged", res.Purged, "bytes", res.Bytes)
	return res, nil
}

func (s *Service) purgeDigests(ctx context.Context, list []string) (PurgeResult, error) {
	seen := make(map[digest.Digest]bool, len(list))
	dgs := make([]digest.Digest, 0, len(list))
	for i, d := range list {
		dg, err := parseDigest(d)
		if err != nil {
			return PurgeResult{}, Errorf(CodeInvalidParams, "invalid params: digests[%d]: %q is not a digest", i, truncate(d, 80))
		}
		if !seen[dg] {
			seen[dg] = true
			dgs = append(dgs, dg)
		}
	}
	stat := s.d.Store.Stat
	if len(dgs) > bulkPurge {
		// One pass over the metadata beats a lookup per digest.
		infos, err := s.d.Store.List(store.Filter{})
		if err != nil {
			return PurgeResult{}, err
		}
		byDigest := make(map[digest.Digest]store.Info, len(infos))
		for _, in := range infos {
			byDigest[in.Digest] = in
		}
		stat = func(dg digest.Digest) (store.Info, error) {
			if in, ok := byDigest[dg]; ok {
				return in, nil
			}
			return store.Info{}, store.ErrNotFound
		}
	}
	var res PurgeResult
	for _, dg := range dgs {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		info, err := stat(dg)
		if store.IsNotFound(err) {
			res.Missing++
			continue
		}
		if err != nil {
			return res, err
		}
		if err := s.d.Store.Delete(dg); err != nil {
			return res, err
		}
		res.Purged++
		res.Bytes += info.Size
	}
	s.log.Info("purged cache", "digests", len(dgs), "purged", res.Purged, "bytes", res.Bytes, "missing", res.Missing)
	return res, nil
}

// parseDigest is digest.Parse with a fast path for sha256, which is nearly
// every digest: a purge may list hundreds of thousands.
func parseDigest(s string) (digest.Digest, error) {
	if hexPart, ok := strings.CutPrefix(s, "sha256:"); ok && len(hexPart) == 64 {
		for i := 0; i < len(hexPart); i++ {
			if c := hexPart[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return digest.Parse(s)
			}
		}
		return digest.Digest(s), nil
	}
	return digest.Parse(s)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
