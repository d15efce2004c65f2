package registry

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/access"
)

// TestCredentialFloodLimited: distinct wrong credentials for one repository
// reach the upstream at most a burst's worth, then get 429 with Retry-After
// (counted); known good credentials are not limited; after a while new
// credentials are checked again.
func TestCredentialFloodLimited(t *testing.T) {
	s, img := setupPrivate(t, authStackOptions{})
	manifest := privRoutes[0].prefix + "/manifests/" + img.manifest.String()
	if code, _ := s.get(manifest, basicAuth(privUser, privPass)); code != http.StatusOK {
		t.Fatalf("right credentials: %d", code)
	}
	before := s.priv.n("HEAD manifests")
	codes := map[int]int{}
	for i := range 200 {
		code, err := s.get(manifest, basicAuth(privUser, fmt.Sprintf("guess-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		codes[code]++
	}
	checks := s.priv.n("HEAD manifests") - before
	if checks > access.CredentialCheckBurst+2 || codes[http.StatusTooManyRequests] < 200-access.CredentialCheckBurst-2 {
		t.Errorf("200 distinct wrong passwords: %d upstream checks, answers %v; want at most a burst (%d) upstream, 429 for the rest", checks, codes, access.CredentialCheckBurst)
	}
	if v := s.authCount(t, "berth_auth_requests_total", "outcome", "limited"); v < 100 {
		t.Errorf("limited outcomes counted %v", v)
	}
	resp, err := http.Get(s.srv.URL + manifest) // anonymous: challenged, not limited
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous during the flood: %d, want 401", resp.StatusCode)
	}
	if code, _ := s.get(manifest, basicAuth(privUser, privPass)); code != http.StatusOK {
		t.Errorf("known credentials during the flood: %d, want 200", code)
	}
	s.advance(time.Minute)
	if code, _ := s.get(manifest, basicAuth("bob", "bobs-password")); code == http.StatusTooManyRequests {
		t.Errorf("new credentials a minute later: still 429")
	}
}

// TestPrivateReposBoundedAndPersistedOnAccept: a made-up repository refused
// anonymously is private in memory only; one for which a client's
// credentials were accepted is persisted; the in-memory set is bounded.
func TestPrivateReposBoundedAndPersistedOnAccept(t *testing.T) {
	s, img := setupPrivate(t, authStackOptions{})
	for i := range 5 {
		if code, _ := s.get(fmt.Sprintf("/v2/registry.test:5000/made/up%d/manifests/latest", i), ""); code != http.StatusUnauthorized {
			t.Fatalf("made-up repository: %d, want 401", code)
		}
	}
	if repos, _ := s.store.PrivateRepos(); len(repos) != 0 {
		t.Errorf("made-up repositories persisted: %v", repos)
	}
	if code, _ := s.get(privRoutes[0].prefix+"/manifests/"+img.manifest.String(), basicAuth(privUser, privPass)); code != http.StatusOK {
		t.Fatalf("right credentials: %d", code)
	}
	repos, _ := s.store.PrivateRepos()
	if len(repos) != 1 {
		t.Errorf("persisted %v, want only %s", repos, privRepo)
	}
	s.restart(t)
	if code, _ := s.get(privRoutes[0].prefix+"/manifests/"+img.manifest.String(), ""); code != http.StatusUnauthorized {
		t.Errorf("after a restart, no credentials: %d, want 401", code)
	}

}
