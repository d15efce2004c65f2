package store

import (
	"container/heap"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

const (
	// evictScan is how many least recently used objects one scan of the
	// metadata collects: a bounded heap, whatever the store's size.
	evictScan = 1024
	// evictBatch is the most objects one transaction removes, so a large
	// eviction never holds bbolt's writer for long.
	evictBatch = 64
)

// evictor runs eviction on its own goroutine: a commit that takes the store
// past its bound wakes it and returns; it never waits for a store scan or
// for the transactions that remove what is evicted.
type evictor struct {
	wake     chan struct{}
	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func (e *evictor) start(s *Store) {
	e.wake = make(chan struct{}, 1)
	e.quit = make(chan struct{})
	e.done = make(chan struct{})
	go s.evictLoop()
}

// stop ends the evictor after its current batch and waits for it.
func (e *evictor) stop() {
	if e.done == nil {
		return // never started
	}
	e.stopOnce.Do(func() { close(e.quit) })
	<-e.done
}

// wakeEvictor asks for an eviction round; it never blocks.
func (s *Store) wakeEvictor() {
	select {
	case s.ev.wake <- struct{}{}:
	default:
	}
}

func (s *Store) evictLoop() {
	defer close(s.ev.done)
	for {
		select {
		case <-s.ev.quit:
			return
		case <-s.ev.wake:
		}
		s.evictRound()
	}
}

func (s *Store) stopping() bool {
	select {
	case <-s.ev.quit:
		return true
	default:
		return false
	}
}

// evictRound removes least recently used objects until the store is at 90%
// of its bound, in batches, rescanning when a scan's candidates run out.
func (s *Store) evictRound() {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("eviction failed: panic", "panic", p)
		}
	}()
	for !s.stopping() {
		target, over := s.evictTarget()
		if !over {
			return
		}
		if err := s.Flush(); err != nil {
			// Pending times stay queued; objects used since are skipped below.
			s.log.Warn("eviction: writing access times", "error", err)
		}
		cands, err := s.oldest(evictScan)
		if err != nil {
			s.log.Error("eviction: scanning store", "error", err)
			return
		}
		if len(cands) == 0 || !s.evictCandidates(cands, target) {
			return
		}
	}
}

// evictTarget is the size to evict down to, and whether the store is over it.
func (s *Store) evictTarget() (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	max := s.opts.MaxBytes
	target := max / 10 * 9
	return target, max > 0 && s.size > target
}

// evictCandidates removes cands (oldest first) in batches until the store is
// at target. It reports whether it removed anything.
func (s *Store) evictCandidates(cands []candidate, target int64) bool {
	removedAny := false
	for len(cands) > 0 && !s.stopping() {
		n := min(evictBatch, len(cands))
		batch := cands[:n]
		cands = cands[n:]
		removed, err := s.evictBatch(batch, target)
		for _, info := range removed {
			removedAny = true
			s.log.Info("evicted", "digest", info.Digest, "size", info.Size, "last_access", info.LastAccess)
			if s.opts.OnEvict != nil {
				s.opts.OnEvict(info)
			}
		}
		if err != nil {
			s.log.Error("eviction failed", "error", err)
			return removedAny
		}
		if _, over := s.evictTarget(); !over {
			return removedAny
		}
	}
	return removedAny
}

// evictBatch removes the batch's objects, in order, while the store is over
// target, skipping any used since the scan that chose it.
func (s *Store) evictBatch(batch []candidate, target int64) ([]Info, error) {
	at := make(map[digest.Digest]time.Time, len(batch))
	dgs := make([]digest.Digest, len(batch))
	for i, c := range batch {
		at[c.dg], dgs[i] = c.at, c.dg
	}
	s.mu.Lock()
	size := s.size
	s.mu.Unlock()
	return s.deleteBatch(dgs, func(info Info) bool {
		if size <= target || info.LastAccess.After(at[info.Digest]) || s.touchedSince(info.Digest, at[info.Digest]) {
			return true
		}
		size -= info.Size
		return false
	})
}

func (s *Store) touchedSince(dg digest.Digest, t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.touched[dg]
	return ok && u.After(t)
}

// candidate is an object eviction may remove.
type candidate struct {
	dg digest.Digest
	at time.Time
}

// oldest returns up to n objects, least recently used first, holding no
// more than n in memory however large the store is.
func (s *Store) oldest(n int) ([]candidate, error) {
	h := &lruHeap{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlobs).ForEach(func(k, v []byte) error {
			info, err := decodeInfo(v)
			if err != nil {
				return nil // dropped by reconcile; never counted
			}
			at := info.LastAccess
			switch {
			case h.Len() < n:
				heap.Push(h, candidate{dg: digest.Digest(k), at: at})
			case at.Before((*h)[0].at):
				(*h)[0] = candidate{dg: digest.Digest(k), at: at}
				heap.Fix(h, 0)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	out := []candidate(*h)
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out, nil
}

// lruHeap is a max-heap on access time: its top is the most recently used
// of the candidates kept, the first to give way to an older one.
type lruHeap []candidate

func (h lruHeap) Len() int           { return len(h) }
func (h lruHeap) Less(i, j int) bool { return h[i].at.After(h[j].at) }
func (h lruHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *lruHeap) Push(x any)        { *h = append(*h, x.(candidate)) }
func (h *lruHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}
