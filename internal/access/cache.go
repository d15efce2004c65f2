package access

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"sync"
	"time"
)

// cacheKey is a keyed hash (HMAC-SHA256 with a random per-process key) of
// credentials and what they were checked for. The caches below hold these,
// never the credentials: a memory dump of a decision shows no password, and
// the key dies with the process.
type cacheKey [sha256.Size]byte

// keyer derives cache keys. Safe for concurrent use.
type keyer struct {
	pool sync.Pool // of hash.Hash keyed with the process key
}

func newKeyer() *keyer {
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		// crypto/rand does not fail on supported platforms (Go 1.24+ it
		// never returns an error); a fixed key would make keys guessable.
		panic("access: no randomness for the credential cache key: " + err.Error())
	}
	k := &keyer{}
	k.pool.New = func() any { return hmac.New(sha256.New, secret[:]) }
	return k
}

// sum hashes the parts, each length-prefixed so that ("ab","c") and
// ("a","bc") differ.
func (k *keyer) sum(parts ...string) cacheKey {
	m := k.pool.Get().(hash.Hash)
	m.Reset()
	var n [4]byte
	for _, p := range parts {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		_, _ = m.Write(n[:])
		_, _ = m.Write([]byte(p))
	}
	var out cacheKey
	m.Sum(out[:0])
	k.pool.Put(m)
	return out
}

// ttlCache is a bounded map of values with the time each was stored. Entries
// older than maxAge are dropped when the map is full; if that frees nothing,
// the oldest entries go. Safe for concurrent use.
type ttlCache[V any] struct {
	mu     sync.Mutex
	m      map[cacheKey]ttlEntry[V]
	max    int
	maxAge time.Duration
}

type ttlEntry[V any] struct {
	v  V
	at time.Time
}

func newTTLCache[V any](maxEntries int, maxAge time.Duration) *ttlCache[V] {
	return &ttlCache[V]{m: make(map[cacheKey]ttlEntry[V]), max: maxEntries, maxAge: maxAge}
}

// get returns the value stored under k and when it was stored.
func (c *ttlCache[V]) get(k cacheKey) (V, time.Time, bool) {
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	return e.v, e.at, ok
}

func (c *ttlCache[V]) put(k cacheKey, v V, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		c.prune(now)
	}
	c.m[k] = ttlEntry[V]{v: v, at: now}
}

func (c *ttlCache[V]) remove(k cacheKey) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

func (c *ttlCache[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// prune makes room: expired entries first, then the oldest quarter.
func (c *ttlCache[V]) prune(now time.Time) {
	for k, e := range c.m {
		if now.Sub(e.at) >= c.maxAge {
			delete(c.m, k)
		}
	}
	if len(c.m) < c.max {
		return
	}
	// Still full of live entries: drop those older than the median-ish
	// cut found by one pass (the oldest quarter of the age range).
	var oldest, newest time.Time
	for _, e := range c.m {
		if oldest.IsZero() || e.at.Before(oldest) {
			oldest = e.at
		}
		if e.at.After(newest) {
			newest = e.at
		}
	}
	cut := oldest.Add(newest.Sub(oldest) / 4)
	for k, e := range c.m {
		if !e.at.After(cut) {
			delete(c.m, k)
		}
	}
}
