package peer

import (
	"fmt"
	"testing"
	"time"
)

// TestServedBounded: maxServedMembers+1 members leave at most
// maxServedMembers counters; members idle for servedRetention go first, then
// the least recently used; a live member's count survives.
func TestServedBounded(t *testing.T) {
	s := newServedTable(4)
	t0 := time.Unix(1_800_000_000, 0)
	s.counter("old", t0).Add(1)
	s.counter("busy", t0.Add(servedRetention)).Add(7)
	s.counter("b", t0.Add(servedRetention+time.Second)).Add(1)
	s.counter("c", t0.Add(servedRetention+2*time.Second)).Add(1)
	now := t0.Add(servedRetention + 3*time.Second)
	s.counter("d", now).Add(1) // "old" idle past servedRetention: dropped
	if s.len() != 4 || s.bytes("old") != 0 || s.bytes("busy") != 7 {
		t.Fatalf("after one over: %d members, old %d, busy %d; want 4, 0, 7", s.len(), s.bytes("old"), s.bytes("busy"))
	}
	s.counter("busy", now).Add(1)
	s.counter("e", now.Add(time.Second)) // none idle: the least recently used ("b") goes
	if s.len() != 4 || s.bytes("b") != 0 || s.bytes("busy") != 8 {
		t.Fatalf("LRU: %d members, b %d, busy %d; want 4, 0, 8", s.len(), s.bytes("b"), s.bytes("busy"))
	}
	for i := range 100 {
		s.counter(fmt.Sprint("m", i), now.Add(time.Duration(i)*time.Second))
	}
	if s.len() != 4 {
		t.Fatalf("%d members, bound 4", s.len())
	}
}
