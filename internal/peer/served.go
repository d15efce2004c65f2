package peer

import (
	"sync"
	"sync/atomic"
	"time"
)

// maxServedMembers bounds the served table: members are named afresh when
// a node is replaced, so a long-lived node sees ever more names.
const maxServedMembers = 1024

// servedRetention is how long a member that sent nothing keeps its count:
// as long as peers.list shows a dead member (the cluster package's
// deadRetention), so its bytes stay visible while it is listed.
const servedRetention = 10 * time.Minute

// servedTable counts the blob bytes each member has sent this node, for
// peers.list. It holds at most max members; a new one makes room by dropping
// those that sent nothing for servedRetention (gone from peers.list too), then
// the least recently used. Safe for concurrent use.
type servedTable struct {
	mu  sync.Mutex
	m   map[string]*servedCount
	max int
}

type servedCount struct {
	bytes atomic.Int64
	last  time.Time // of the latest transfer started; under servedTable.mu
}

func newServedTable(max int) *servedTable {
	return &servedTable{m: make(map[string]*servedCount), max: max}
}

// counter returns member's counter for a transfer starting at now.
func (s *servedTable) counter(member string, now time.Time) *atomic.Int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.m[member]
	if !ok {
		if len(s.m) >= s.max {
			s.makeRoom(now)
		}
		c = &servedCount{}
		s.m[member] = c
	}
	c.last = now
	return &c.bytes
}

// makeRoom drops members idle for servedRetention, else the least recently
// used one. s.mu is held.
func (s *servedTable) makeRoom(now time.Time) {
	var lru string
	var oldest time.Time
	for name, c := range s.m {
		if now.Sub(c.last) > servedRetention {
			delete(s.m, name)
			continue
		}
		if lru == "" || c.last.Before(oldest) {
			lru, oldest = name, c.last
		}
	}
	if len(s.m) >= s.max {
		delete(s.m, lru)
	}
}

// bytes returns what member has sent this node (0 if not in the table).
func (s *servedTable) bytes(member string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.m[member]; ok {
		return c.bytes.Load()
	}
	return 0
}

func (s *servedTable) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
