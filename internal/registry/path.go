package registry

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Kind is what a /v2/ path addresses.
type Kind int

// Kinds of /v2/ request.
const (
	KindBase      Kind = iota // /v2/
	KindManifest              // /v2/<name>/manifests/<reference>
	KindBlob                  // /v2/<name>/blobs/<digest>
	KindTags                  // /v2/<name>/tags/list
	KindUpload                // /v2/<name>/blobs/uploads/...
	KindReferrers             // /v2/<name>/referrers/<digest>
)

func (k Kind) String() string {
	return [...]string{"base", "manifest", "blob", "tags", "upload", "referrers"}[k]
}

// Path is a parsed /v2/ request path.
type Path struct {
	Kind Kind
	// Name is the repository name as the client wrote it, possibly with a
	// registry prefix (docker.io/library/alpine).
	Name string
	// Reference is a tag or digest (manifests) or a digest (blobs, referrers).
	Reference string
}

// MaxNameLength bounds a repository name, registry prefix included.
const MaxNameLength = 255

var (
	// componentRE is one path component of a repository name (distribution-spec).
	componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$`)
	tagRE       = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// ParsePath parses the path of a /v2/ request. Errors are *Error values with
// the spec's code (NAME_INVALID, DIGEST_INVALID, MANIFEST_INVALID) or 404
// NAME_UNKNOWN for paths that are no part of the API.
func ParsePath(p string) (Path, error) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		if p == "/v2" {
			return Path{Kind: KindBase}, nil
		}
		return Path{}, newError(http.StatusNotFound, CodeNameUnknown, "not an OCI distribution API path")
	}
	if rest == "" {
		return Path{Kind: KindBase}, nil
	}
	if len(rest) > MaxNameLength+200 {
		return Path{}, newError(http.StatusBadRequest, CodeNameInvalid, "path too long")
	}
	segs := strings.Split(rest, "/")
	n := len(segs)
	if n >= 3 && segs[n-2] == "tags" && segs[n-1] == "list" {
		return withName(Path{Kind: KindTags}, segs[:n-2])
	}
	if n >= 3 && segs[n-3] == "blobs" && segs[n-2] == "uploads" {
		return withName(Path{Kind: KindUpload}, segs[:n-3])
	}
	if n >= 3 && segs[n-2] == "blobs" && segs[n-1] == "uploads" {
		return withName(Path{Kind: KindUpload}, segs[:n-2])
	}
	if n < 3 {
		return Path{}, newError(http.StatusNotFound, CodeNameUnknown, "not an OCI distribution API path")
	}
	ref := segs[n-1]
	switch segs[n-2] {
	case "manifests":
		if err := validateReference(ref); err != nil {
			return Path{}, err
		}
		return withName(Path{Kind: KindManifest, Reference: ref}, segs[:n-2])
	case "blobs":
		if err := validateDigest(ref); err != nil {
			return Path{}, err
		}
		return withName(Path{Kind: KindBlob, Reference: ref}, segs[:n-2])
	case "referrers":
		if err := validateDigest(ref); err != nil {
			return Path{}, err
		}
		return withName(Path{Kind: KindReferrers, Reference: ref}, segs[:n-2])
	}
	return Path{}, newError(http.StatusNotFound, CodeNameUnknown, "not an OCI distribution API path")
}

func withName(p Path, segs []string) (Path, error) {
	name := strings.Join(segs, "/")
	if err := validateName(name); err != nil {
		return Path{}, err
	}
	p.Name = name
	return p, nil
}

// validateName checks a repository name; the first component may be a
// registry host[:port], which the router resolves later.
func validateName(name string) error {
	if name == "" || len(name) > MaxNameLength {
		return newError(http.StatusBadRequest, CodeNameInvalid, "repository name must be 1 to %d characters", MaxNameLength)
	}
	for i, c := range strings.Split(name, "/") {
		if i == 0 && isRegistryComponent(c) {
			continue
		}
		if !componentRE.MatchString(c) {
			return newError(http.StatusBadRequest, CodeNameInvalid, "invalid repository name component %q: lower-case letters, digits and separators . _ __ - only", truncate(c, 64))
		}
	}
	return nil
}

// isRegistryComponent reports whether the first component of a name looks
// like a registry (contains . or :, or is localhost), as docker's reference
// grammar decides.
func isRegistryComponent(c string) bool {
	if c == "localhost" {
		return true
	}
	if !strings.ContainsAny(c, ".:") {
		return false
	}
	host, port, hasPort := strings.Cut(c, ":")
	if hasPort {
		if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return false
		}
	}
	if host == "" {
		return false
	}
	for _, l := range strings.Split(host, ".") {
		if l == "" || strings.Trim(strings.ToLower(l), "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || l != strings.ToLower(l) {
			return false
		}
	}
	return true
}

func validateReference(ref string) error {
	if strings.Contains(ref, ":") {
		return validateDigest(ref)
	}
	if !tagRE.MatchString(ref) {
		return newError(http.StatusBadRequest, CodeManifestInvalid, "invalid tag %q", truncate(ref, 140))
	}
	return nil
}

func validateDigest(s string) error {
	d, err := digest.Parse(s)
	if err != nil {
		return newError(http.StatusBadRequest, CodeDigestInvalid, "invalid digest %q: %v", truncate(s, 140), err)
	}
	if !d.Algorithm().Available() {
		return newError(http.StatusBadRequest, CodeDigestInvalid, "unsupported digest algorithm %q", d.Algorithm())
	}
	return nil
}

// IsDigest reports whether a manifest reference is a digest rather than a tag.
func IsDigest(ref string) bool { return strings.Contains(ref, ":") }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
