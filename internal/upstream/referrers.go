package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
)

// MediaTypeImageIndex is the type of a referrers answer.
const MediaTypeImageIndex = "application/vnd.oci.image.index.v1+json"

// Referrers is an upstream's answer to the referrers API: an image index of
// the manifests whose subject is the digest asked for.
type Referrers struct {
	// Body is the index, at most the cap asked for.
	Body []byte
	// FiltersApplied is the upstream's OCI-Filters-Applied header ("" when
	// it filtered nothing: the client filters itself).
	FiltersApplied string
}

// GetReferrers asks the upstream's referrers API for the manifests whose
// subject is dg in repo, filtered by artifactType when not "" (the registry
// may ignore the filter, which FiltersApplied then says). A registry without
// the API answers 404 (a *StatusError). The body is read up to max bytes and
// must be an OCI image index.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-referrers
func (c *Client) GetReferrers(ctx context.Context, repo string, dg digest.Digest, artifactType string, max int64) (Referrers, error) {
	p := repoPath(repo, "referrers", dg.String())
	if artifactType != "" {
		p += "?" + url.Values{"artifactType": {artifactType}}.Encode()
	}
	resp, err := c.do(ctx, http.MethodGet, repo, p, http.Header{"Accept": {MediaTypeImageIndex}})
	if err != nil {
		return Referrers{}, err
	}
	defer resp.Body.Close()
	body, err := readCapped(resp, max)
	if err != nil {
		return Referrers{}, fmt.Errorf("%s: %s referrers of %s: %w", c.ep.Name, repo, dg, err)
	}
	var idx struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Manifests     []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil || idx.SchemaVersion != 2 || (idx.MediaType != "" && idx.MediaType != MediaTypeImageIndex) {
		return Referrers{}, fmt.Errorf("%w: %s: the referrers of %s in %s are not an OCI image index", ErrUnreachable, c.ep.Name, dg, repo)
	}
	return Referrers{Body: body, FiltersApplied: resp.Header.Get("OCI-Filters-Applied")}, nil
}
