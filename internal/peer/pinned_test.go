package peer

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestCorruptPeerSkippedTenMinutes: a peer that sent wrong bytes is skipped
// for that digest for corruptMemory (10 min), not the 1 min of other failures.
func TestCorruptPeerSkippedTenMinutes(t *testing.T) {
	blob := randomBlob(t, 64<<10)
	bad := newPeer(t, blob, Keys{}, func(p *fakePeer) { p.corrupt = true })
	f, _ := newTestFetcher(fixedOwners{"me", []Member{member("bad", bad.URL), member("me", "")}}, Keys{})
	defer f.Close()
	now := time.Unix(1_700_000_000, 0)
	f.now = func() time.Time { return now }
	if _, err := readAll(t, f.Wrap((&fakeUpstream{blob: blob}).source()), reqFor(blob)); err == nil {
		t.Fatal("a corrupt peer's bytes read without an error")
	}
	now = now.Add(9 * time.Minute)
	if !f.skipped(reqFor(blob), "bad") {
		t.Error("a corrupt peer is asked again after 9 minutes, want 10")
	}
	now = now.Add(2 * time.Minute)
	if f.skipped(reqFor(blob), "bad") {
		t.Error("a corrupt peer is still skipped after 11 minutes")
	}
}

// TestResumeContentRangeChecked: a resume from offset must be answered from
// that offset; a peer that answers 206 from elsewhere is refused.
func TestResumeContentRangeChecked(t *testing.T) {
	req := reqFor([]byte("x"))
	for _, tt := range []struct {
		cr string
		ok bool
	}{
		{"bytes 100-199/200", true},
		{"bytes 0-199/200", false},
		{"bytes 99-199/200", false},
		{"", false},
	} {
		resp := &http.Response{StatusCode: http.StatusPartialContent, Header: http.Header{}, ContentLength: 100}
		if tt.cr != "" {
			resp.Header.Set("Content-Range", tt.cr)
		}
		_, err := checkResponse(resp, req, 100)
		if (err == nil) != tt.ok {
			t.Errorf("Content-Range %q for offset 100: %v, want ok=%v", tt.cr, err, tt.ok)
		}
	}
}

// TestFailMemoriesBounded: failures for distinct digests and members keep
// the table at maxFailMemories, even while every entry is still live.
func TestFailMemoriesBounded(t *testing.T) {
	f, _ := newTestFetcher(fixedOwners{"me", nil}, Keys{})
	defer f.Close()
	for i := range 2 * maxFailMemories {
		f.remember(reqFor([]byte(fmt.Sprint(i))), "m", failMemory)
	}
	if n := len(f.failed); n > maxFailMemories {
		t.Errorf("%d failure memories, bound %d", n, maxFailMemories)
	}
}
