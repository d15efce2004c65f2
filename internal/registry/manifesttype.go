package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// errInvalidManifest means an upstream served something berth will not keep
// as a manifest: not a JSON object, or labelled as another type than its
// body declares.
var errInvalidManifest = errors.New("invalid manifest")

// newManifest checks what an upstream served as a manifest and says how to
// store it. Content is shared by digest across registries, so the type a
// body declares (its mediaType field) is its type everywhere, and a header
// that contradicts it is refused; a body that declares none keeps the
// upstream's header for this registry and repository only.
func newManifest(t Target, d upstream.Descriptor, body []byte) (store.NewManifest, error) {
	declared, err := declaredType(body)
	if err != nil {
		return store.NewManifest{}, fmt.Errorf("%w from %s: %w", errInvalidManifest, t.Registry, err)
	}
	header := specificType(d.MediaType)
	nm := store.NewManifest{Digest: d.Digest, Repository: t.String(), DeclaredType: declared}
	switch {
	case declared != "" && header != "" && !strings.EqualFold(header, declared):
		return store.NewManifest{}, fmt.Errorf("%w from %s: %s labelled %s, but its body says %s",
			errInvalidManifest, t.Registry, d.Digest, header, declared)
	case declared == "" && header != "":
		nm.UpstreamType = header
	case declared == "":
		nm.UpstreamType = guessType(body)
	}
	return nm, nil
}

// manifestProbe is what berth reads of a manifest body.
type manifestProbe struct {
	MediaType     string          `json:"mediaType"`
	SchemaVersion int             `json:"schemaVersion"`
	Manifests     json.RawMessage `json:"manifests"`
}

// declaredType returns the body's mediaType field ("" when absent), after
// checking the body is a JSON object.
func declaredType(body []byte) (string, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return "", errors.New("not a JSON object")
	}
	var p manifestProbe
	if err := json.Unmarshal(body, &p); err != nil {
		return "", fmt.Errorf("not a manifest: %w", err)
	}
	if p.MediaType != "" && !isMediaType(p.MediaType) {
		return "", fmt.Errorf("mediaType %.80q is not a media type", p.MediaType)
	}
	return p.MediaType, nil
}

// specificType is a Content-Type without parameters, or "" when it says
// nothing about the manifest (absent, or a generic type some registries
// send for every response).
func specificType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ""
	}
	switch mt {
	case "application/octet-stream", "text/plain", "application/json":
		return ""
	}
	return mt
}

func isMediaType(s string) bool {
	mt, params, err := mime.ParseMediaType(s)
	return err == nil && len(params) == 0 && strings.EqualFold(mt, s)
}

// guessType types a body that declares no type, served without a useful
// Content-Type: by its shape.
func guessType(body []byte) string {
	var p manifestProbe
	_ = json.Unmarshal(body, &p)
	switch {
	case p.Manifests != nil:
		return "application/vnd.oci.image.index.v1+json"
	case p.SchemaVersion == 1:
		return "application/vnd.docker.distribution.manifest.v1+prettyjws"
	}
	return "application/vnd.oci.image.manifest.v1+json"
}
