package registry

import (
	"testing"

	"github.com/berth-mirror/berth/internal/upstream"
)

// TestRoutePrefix: an upstream's prefix (upstreams.NAME.prefix) stands for
// its registry as the first path segment, found through Prefix (the admin
// plane) or through Lookup answering for the prefix (the handler); other
// one-segment names stay on the default upstream.
func TestRoutePrefix(t *testing.T) {
	corp, err := upstream.New(upstream.Endpoint{Name: "registry.corp:5000", URL: "http://127.0.0.1:9"}, upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := upstream.New(upstream.Endpoint{Name: "docker.io", URL: "http://127.0.0.1:9"}, upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]*upstream.Client{"registry.corp:5000": corp, "corp": corp, "docker.io": hub}
	routers := map[string]Router{
		"Lookup": {Default: "docker.io", Lookup: func(n string) (*upstream.Client, bool) { c, ok := clients[n]; return c, ok }},
		"Known+Prefix": {Default: "docker.io",
			Known:  func(n string) bool { return n == "registry.corp:5000" || n == "docker.io" },
			Prefix: func(p string) (string, bool) { return "registry.corp:5000", p == "corp" }},
	}
	tests := []struct {
		name, ns string
		want     Target
	}{
		{"corp/team/app", "", Target{"registry.corp:5000", "team/app"}},
		{"registry.corp:5000/team/app", "", Target{"registry.corp:5000", "team/app"}},
		{"team/app", "registry.corp:5000", Target{"registry.corp:5000", "team/app"}},
		{"corp/app", "docker.io", Target{"docker.io", "corp/app"}}, // ?ns= wins
		{"docker.io/corp/app", "", Target{"docker.io", "corp/app"}},
		{"corp", "", Target{"docker.io", "library/corp"}}, // one segment: a repository
		{"other/app", "", Target{"docker.io", "other/app"}},
	}
	for rname, r := range routers {
		for _, tt := range tests {
			t.Run(rname+" "+tt.name+"?"+tt.ns, func(t *testing.T) {
				got, c, err := r.Route(tt.name, tt.ns)
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Errorf("got %+v, want %+v", got, tt.want)
				}
				if r.Lookup != nil && (c == nil || c.Name() != tt.want.Registry) {
					t.Errorf("client %v, want the client of %s", c, tt.want.Registry)
				}
			})
		}
	}
}
