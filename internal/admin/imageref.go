package admin

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/registry"
)

// imageRef is an image reference split the way the registry routes it: name
// is what goes between /v2/ and /manifests/ (registry prefix included, if
// any), ref a tag or digest.
type imageRef struct {
	name, ref string
}

// parseImageRef splits registry.example.com/team/app:v1, alpine (tag latest)
// or app@sha256:… and checks the parts with the registry's own path parser.
func parseImageRef(s string) (imageRef, error) {
	s = strings.TrimSpace(s)
	var r imageRef
	if name, dg, ok := strings.Cut(s, "@"); ok {
		if _, err := digest.Parse(dg); err != nil {
			return r, fmt.Errorf("image %q: invalid digest: %w", s, err)
		}
		r.name, r.ref = name, dg
		if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
			r.name = name[:i] // name:tag@digest: the digest wins
		}
	} else {
		r.name, r.ref = s, "latest"
		if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, '/') {
			r.name, r.ref = s[:i], s[i+1:]
		}
	}
	if _, err := registry.ParsePath(r.manifestPath(r.ref)); err != nil {
		return r, fmt.Errorf("image %q: %w", s, err)
	}
	return r, nil
}

func (r imageRef) manifestPath(ref string) string { return "/v2/" + r.name + "/manifests/" + ref }

func (r imageRef) blobPath(dg string) string { return "/v2/" + r.name + "/blobs/" + dg }

// platform is os/arch[/variant].
type platform struct {
	OS, Arch, Variant string
}

func (p platform) String() string {
	s := p.OS + "/" + p.Arch
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func nodePlatform() platform { return platform{OS: runtime.GOOS, Arch: runtime.GOARCH} }

func parsePlatform(s string) (platform, error) {
	parts := strings.Split(strings.TrimSpace(s), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return platform{}, fmt.Errorf("platform %q: expected OS/ARCH[/VARIANT], e.g. linux/arm64", s)
	}
	p := platform{OS: parts[0], Arch: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// matches reports whether an index entry's platform satisfies p; a variant
// matters only when p names one.
func (p platform) matches(os, arch, variant string) bool {
	return p.OS == os && p.Arch == arch && (p.Variant == "" || p.Variant == variant)
}
