package access

import (
	"fmt"
	"testing"
	"time"
)

// TestPrivateReposBounded: the in-memory set of private repositories keeps
// the newest maxPrivateRepos-like bound given to it.
func TestPrivateReposBounded(t *testing.T) {
	p := newPrivateRepos(3)
	for i := range 10 {
		p.add(fmt.Sprint(i), false)
	}
	if p.len() != 3 || !p.has("9") || p.has("0") {
		t.Errorf("bounded set: %d entries, has 9 %v, has 0 %v", p.len(), p.has("9"), p.has("0"))
	}
}

// TestCredLimiterBucketsBounded: distinct repositories and addresses do not
// grow the limiter past maxBuckets.
func TestCredLimiterBucketsBounded(t *testing.T) {
	l := newCredLimiter(CredentialCheckBurst, CredentialCheckRate)
	now := time.Unix(1_700_000_000, 0)
	for i := range 3 * maxBuckets {
		l.allow(now, fmt.Sprintf("repo\x00%d", i), fmt.Sprintf("src\x0010.0.%d.%d", i/256, i%256))
	}
	if n := l.lru.Len(); n > maxBuckets || len(l.buckets) != n {
		t.Errorf("%d buckets (map %d), bound %d", n, len(l.buckets), maxBuckets)
	}
}

func TestAuthTTLCacheBounded(t *testing.T) {
	c := newTTLCache[bool](64, time.Minute)
	k := newKeyer()
	now := time.Unix(0, 0)
	for i := range 1000 {
		c.put(k.sum("x", string(rune(i))), true, now.Add(time.Duration(i)*time.Millisecond))
	}
	if n := c.len(); n > 64 {
		t.Fatalf("cache holds %d entries, bound 64", n)
	}
	if _, _, ok := c.get(k.sum("x", string(rune(999)))); !ok {
		t.Fatal("newest entry evicted")
	}
	if k.sum("ab", "c") == k.sum("a", "bc") {
		t.Fatal("keys are ambiguous")
	}
	if newKeyer().sum("a") == k.sum("a") {
		t.Fatal("two keyers give the same key: the key is not random")
	}
}
