package access

import (
	"container/list"
	"sync"
	"time"
)

// privateRepos is the set of repositories known to refuse anonymous access,
// bounded: any anonymous request naming a new repository of a registry that
// answers 401 for unknown names (Docker Hub does) adds one, so an attacker
// could grow it at will. Forgetting the oldest is safe: cached private
// content keeps its own marks (store.Info.PrivateOrigin), and a forgotten
// repository is found private again by its next refusal. A repository is
// persisted (PrivateMarks) only once a client's credentials were accepted
// for it: names nobody can pull never reach meta.db.
type privateRepos struct {
	max int

	mu    sync.RWMutex
	items map[string]*list.Element // bounded by max
	lru   *list.List               // of *privateRepo, most recently marked first
}

type privateRepo struct {
	id        string
	persisted bool
}

// maxPrivateRepos bounds the set (about 200 bytes an entry).
const maxPrivateRepos = 4096

func newPrivateRepos(max int) *privateRepos {
	return &privateRepos{max: max, items: map[string]*list.Element{}, lru: list.New()}
}

func (p *privateRepos) len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.lru.Len()
}

func (p *privateRepos) has(id string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	_, ok := p.items[id]
	return ok
}

// add records id; known: it was there already. The oldest entry past the
// bound is dropped (returned, with whether it was persisted).
func (p *privateRepos) add(id string, persisted bool) (known bool, dropped *privateRepo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if el, ok := p.items[id]; ok {
		p.lru.MoveToFront(el)
		if persisted {
			el.Value.(*privateRepo).persisted = true
		}
		return true, nil
	}
	p.items[id] = p.lru.PushFront(&privateRepo{id: id, persisted: persisted})
	if p.lru.Len() > p.max {
		old := p.lru.Remove(p.lru.Back()).(*privateRepo)
		delete(p.items, old.id)
		return false, old
	}
	return false, nil
}

// persist marks id as written to the marks; it reports whether id is in the
// set and was not yet persisted (the caller writes it).
func (p *privateRepos) persist(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	el, ok := p.items[id]
	if !ok || el.Value.(*privateRepo).persisted {
		return false
	}
	el.Value.(*privateRepo).persisted = true
	return true
}

// remove forgets id and reports whether it had been persisted.
func (p *privateRepos) remove(id string) (persisted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	el, ok := p.items[id]
	if !ok {
		return false
	}
	p.lru.Remove(el)
	delete(p.items, id)
	return el.Value.(*privateRepo).persisted
}

// credLimiter bounds the checks of credentials not seen before, per
// repository and per client address: berth must not be an online
// password-guessing proxy for a shared robot account. A flood of distinct
// credentials gets 429 past the limit and never reaches the upstream. Known
// credentials (a decision cached within auth_ttl) are not limited. The
// buckets are bounded (least recently used dropped: a dropped bucket starts
// full again, which costs at most one burst).
type credLimiter struct {
	burst float64
	rate  float64 // tokens per second

	mu      sync.Mutex
	buckets map[string]*list.Element // bounded by maxBuckets
	lru     *list.List               // of *bucket
}

type bucket struct {
	key    string
	tokens float64
	last   time.Time
}

// Limits of first-time credential checks, per repository and per client
// address: a burst (pods with distinct pull secrets starting together), then
// a steady rate.
const (
	CredentialCheckBurst = 32
	CredentialCheckRate  = 4 // per second
	maxBuckets           = 4096
)

func newCredLimiter(burst, rate float64) *credLimiter {
	return &credLimiter{burst: burst, rate: rate, buckets: map[string]*list.Element{}, lru: list.New()}
}

// allow takes a token from every key's bucket, or none when one is empty.
func (l *credLimiter) allow(now time.Time, keys ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	bs := make([]*bucket, 0, len(keys))
	for _, k := range keys {
		b := l.bucket(k, now)
		b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
		b.last = now
		if b.tokens < 1 {
			return false
		}
		bs = append(bs, b)
	}
	for _, b := range bs {
		b.tokens--
	}
	return true
}

func (l *credLimiter) bucket(key string, now time.Time) *bucket {
	if el, ok := l.buckets[key]; ok {
		l.lru.MoveToFront(el)
		return el.Value.(*bucket)
	}
	b := &bucket{key: key, tokens: l.burst, last: now}
	l.buckets[key] = l.lru.PushFront(b)
	if l.lru.Len() > maxBuckets {
		old := l.lru.Remove(l.lru.Back()).(*bucket)
		delete(l.buckets, old.key)
	}
	return b
}
