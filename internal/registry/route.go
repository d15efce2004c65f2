package registry

import (
	"net/http"
	"strings"

	"github.com/berth-mirror/berth/internal/upstream"
)

// Target is the upstream registry and repository a request resolves to.
type Target struct {
	// Registry is the registry name as configured (docker.io, registry.test:5000).
	Registry string
	// Repository is the repository within that registry (library/alpine).
	Repository string
}

func (t Target) String() string { return t.Registry + "/" + t.Repository }

// Router decides which upstream serves a request, per DESIGN.md "Which
// upstream serves a request". It never contacts anything: a name that is not
// known is denied here, before any connection could be made.
type Router struct {
	// Lookup returns the client of a configured or built-in registry name.
	// The router asks once per request and hands the answer on, so a reload
	// between a check and a second lookup cannot leave a request without
	// its client.
	Lookup func(name string) (*upstream.Client, bool)
	// Known, used when Lookup is nil, reports whether a registry name is
	// configured or built in: for routing names without serving them.
	Known func(name string) bool
	// Default is the registry for names without a registry prefix.
	Default string
	// Prefix maps an upstream's prefix (upstreams.NAME.prefix: a first path
	// segment without '.' or ':' that stands for a registry) to the
	// registry's name. When nil, a Lookup of the segment answers: a client
	// whose Name differs from the segment was found by its prefix.
	Prefix func(segment string) (registry string, ok bool)
}

// dockerHubAliases are other names clients use for docker.io.
var dockerHubAliases = map[string]bool{
	"index.docker.io":         true,
	"registry-1.docker.io":    true,
	"registry.hub.docker.com": true,
}

// CanonicalRegistry folds the aliases of Docker Hub into docker.io.
func CanonicalRegistry(name string) string {
	name = strings.ToLower(name)
	if dockerHubAliases[name] {
		return "docker.io"
	}
	return name
}

// Resolve maps a validated repository name and the optional ?ns= value to a Target.
func (r *Router) Resolve(name, ns string) (Target, error) {
	t, _, err := r.Route(name, ns)
	return t, err
}

// Route is Resolve that also returns the Target's upstream client, from the
// one lookup that decided the registry is known.
func (r *Router) Route(name, ns string) (Target, *upstream.Client, error) {
	var t Target
	first, rest, hasRest := strings.Cut(name, "/")
	switch {
	case ns != "":
		reg := CanonicalRegistry(ns)
		if !isRegistryComponent(reg) && reg != "docker.io" {
			return Target{}, nil, newError(http.StatusBadRequest, CodeNameInvalid, "invalid ns parameter %q", truncate(ns, 64))
		}
		t = Target{Registry: reg, Repository: name}
	case hasRest && isRegistryComponent(first):
		t = Target{Registry: CanonicalRegistry(first), Repository: rest}
	default:
		t = Target{Registry: r.Default, Repository: name}
		if hasRest {
			if reg := r.prefixed(first); reg != "" {
				t = Target{Registry: reg, Repository: rest}
			}
		}
	}
	var c *upstream.Client
	var ok bool
	if r.Lookup != nil {
		c, ok = r.Lookup(t.Registry)
	} else {
		ok = r.Known(t.Registry)
	}
	if !ok {
		return Target{}, nil, newError(http.StatusForbidden, CodeDenied, "registry %q is not configured on this mirror", truncate(t.Registry, 64))
	}
	if err := validateRepository(t.Repository); err != nil {
		return Target{}, nil, err
	}
	if t.Registry == "docker.io" && !strings.Contains(t.Repository, "/") {
		t.Repository = "library/" + t.Repository
	}
	return t, c, nil
}

// prefixed returns the registry an upstream prefix stands for, or "".
func (r *Router) prefixed(segment string) string {
	if r.Prefix != nil {
		if reg, ok := r.Prefix(segment); ok {
			return reg
		}
		return ""
	}
	if r.Lookup != nil {
		if c, ok := r.Lookup(segment); ok && c != nil && c.Name() != segment {
			return c.Name()
		}
	}
	return ""
}

// validateRepository checks a repository with no registry prefix.
func validateRepository(repo string) error {
	if repo == "" || len(repo) > MaxNameLength {
		return newError(http.StatusBadRequest, CodeNameInvalid, "repository name must be 1 to %d characters", MaxNameLength)
	}
	for _, c := range strings.Split(repo, "/") {
		if !componentRE.MatchString(c) {
			return newError(http.StatusBadRequest, CodeNameInvalid, "invalid repository name component %q", truncate(c, 64))
		}
	}
	return nil
}
