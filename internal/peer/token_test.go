package peer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/berth-mirror/berth/internal/fetch"
)

// TestUpstreamTokenOnlySigned (issue 16 item 7): a verified client's
// upstream token goes to the owner only on a signed peer request; without a
// cluster secret anyone could pose as a peer and collect it.
func TestUpstreamTokenOnlySigned(t *testing.T) {
	for _, tc := range []struct {
		name     string
		keys     Keys
		verified bool
		want     bool
	}{
		{"signed, verified", NewKeys("a-cluster-secret-0123"), true, true},
		{"signed, not verified", NewKeys("a-cluster-secret-0123"), false, false},
		{"no cluster secret", Keys{}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			got := "unset"
			owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				got = r.Header.Get(UpstreamTokenHeader)
				mu.Unlock()
				http.Error(w, "not here", http.StatusNotFound)
			}))
			defer owner.Close()
			f, _ := newTestFetcher(fixedOwners{"me", []Member{member("o", owner.URL), member("me", "")}}, tc.keys)
			defer f.Close()
			up := fetch.SourceFunc(func(context.Context, fetch.Request, int64) (io.ReadCloser, fetch.Meta, error) {
				return nil, fetch.Meta{}, errors.New("upstream not asked here")
			})
			req := reqFor([]byte("blob"))
			req.Verified, req.UpstreamToken = tc.verified, "upstream-pull-token"
			_, _ = readAll(t, f.Wrap(up), req)
			mu.Lock()
			defer mu.Unlock()
			if got == "unset" {
				t.Fatal("the owner was not asked")
			}
			if (got != "") != tc.want {
				t.Fatalf("token sent: %v, want %v", got != "", tc.want)
			}
		})
	}
}
