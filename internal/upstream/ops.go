package upstream

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"
)

// manifestAccept is the Accept header of every manifest request: the full
// modern set, whatever the client asked for. A narrower set makes registries
// answer a list's tag with one platform's manifest, or convert a Docker v2
// manifest to schema 1 (with a digest no GET by digest finds); the answer is
// cached for every client, so it must be the tag's real content. Schema 1
// is never asked for.
const manifestAccept = "application/vnd.oci.image.index.v1+json, " +
	"application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, " +
	"application/vnd.docker.distribution.manifest.v2+json"

// Descriptor is what an upstream said about a manifest or blob.
type Descriptor struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
}

// HeadManifest resolves ref (a tag or digest) to a descriptor without the body.
func (c *Client) HeadManifest(ctx context.Context, repo, ref string) (Descriptor, error) {
	resp, err := c.do(ctx, http.MethodHead, repo, repoPath(repo, "manifests", ref), acceptManifests())
	if err != nil {
		return Descriptor{}, err
	}
	drain(resp.Body)
	d := Descriptor{MediaType: resp.Header.Get("Content-Type"), Size: resp.ContentLength}
	if dg, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
		d.Digest = dg
	}
	return d, nil
}

// GetManifest fetches a manifest by tag or digest and returns its bytes,
// reading no more than max of them (a larger one fails with ErrTooLarge).
// The bytes are verified: against ref when it is a digest, else against the
// upstream's Docker-Content-Digest, which an answer by tag must carry.
func (c *Client) GetManifest(ctx context.Context, repo, ref string, max int64) ([]byte, Descriptor, error) {
	resp, err := c.do(ctx, http.MethodGet, repo, repoPath(repo, "manifests", ref), acceptManifests())
	if err != nil {
		return nil, Descriptor{}, err
	}
	defer resp.Body.Close()
	want, err := manifestDigest(ref, resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		return nil, Descriptor{}, fmt.Errorf("%w: %s: %s: %w", ErrDigestMismatch, c.ep.Name, repo, err)
	}
	body, err := readCapped(resp, max)
	if err != nil {
		return nil, Descriptor{}, fmt.Errorf("%s: %s manifest %s: %w", c.ep.Name, repo, ref, err)
	}
	if got := want.Algorithm().FromBytes(body); got != want {
		return nil, Descriptor{}, fmt.Errorf("%w: manifest %s from %s hashes to %s", ErrDigestMismatch, want, c.ep.Name, got)
	}
	return body, Descriptor{Digest: want, MediaType: resp.Header.Get("Content-Type"), Size: int64(len(body))}, nil
}

// manifestDigest is the digest a manifest's bytes must have: ref when it is
// a digest (the header, if sent, must agree), else the header.
func manifestDigest(ref, header string) (digest.Digest, error) {
	if want, err := digest.Parse(ref); err == nil {
		if header != "" && header != ref {
			return "", fmt.Errorf("asked for %s, Docker-Content-Digest says %.80q", ref, header)
		}
		return want, nil
	}
	if header == "" {
		return "", fmt.Errorf("the manifest of tag %s came without Docker-Content-Digest", ref)
	}
	want, err := digest.Parse(header)
	if err != nil || !want.Algorithm().Available() {
		return "", fmt.Errorf("tag %s: invalid Docker-Content-Digest %.80q", ref, header)
	}
	return want, nil
}

// readCapped reads a response body of at most max bytes, refusing a larger
// one before reading it when its length is declared, and reading no further
// than max+1 bytes when not.
func readCapped(resp *http.Response, max int64) ([]byte, error) {
	if resp.ContentLength > max {
		return nil, fmt.Errorf("%w: %d bytes, the cap is %d", ErrTooLarge, resp.ContentLength, max)
	}
	n := max + 1
	if resp.ContentLength >= 0 {
		n = resp.ContentLength + 1
	}
	var buf bytes.Buffer
	buf.Grow(int(min(n, 64<<10)))
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, max+1)); err != nil {
		return nil, fmt.Errorf("%w: reading: %w", ErrUnreachable, err)
	}
	if int64(buf.Len()) > max {
		return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, max)
	}
	return buf.Bytes(), nil
}

// HeadBlob returns a blob's size as the upstream states it.
func (c *Client) HeadBlob(ctx context.Context, repo string, dg digest.Digest) (Descriptor, error) {
	resp, err := c.do(ctx, http.MethodHead, repo, repoPath(repo, "blobs", dg.String()), nil)
	if err != nil {
		return Descriptor{}, err
	}
	drain(resp.Body)
	return Descriptor{Digest: dg, MediaType: headerMediaType(resp.Header), Size: resp.ContentLength}, nil
}

// GetBlob opens a blob from offset on. The caller verifies the digest and
// closes the body. Size is the total blob size when known, else -1.
func (c *Client) GetBlob(ctx context.Context, repo string, dg digest.Digest, offset int64) (io.ReadCloser, Descriptor, error) {
	var hdr http.Header
	if offset > 0 {
		hdr = http.Header{"Range": {"bytes=" + strconv.FormatInt(offset, 10) + "-"}}
	}
	resp, err := c.do(ctx, http.MethodGet, repo, repoPath(repo, "blobs", dg.String()), hdr)
	if err != nil {
		return nil, Descriptor{}, err
	}
	d := Descriptor{Digest: dg, MediaType: headerMediaType(resp.Header), Size: resp.ContentLength}
	if offset > 0 {
		if resp.StatusCode != http.StatusPartialContent {
			drain(resp.Body)
			return nil, Descriptor{}, fmt.Errorf("%w: %s ignored the range request", ErrUnreachable, c.ep.Name)
		}
		if d.Size >= 0 {
			d.Size += offset
		}
	}
	return resp.Body, d, nil
}

// Tags passes a tags/list request through; query carries n and last.
// The caller closes the body.
func (c *Client) Tags(ctx context.Context, repo, query string) (*http.Response, error) {
	p := "/v2/" + repo + "/tags/list"
	if query != "" {
		p += "?" + query
	}
	return c.do(ctx, http.MethodGet, repo, p, nil)
}

func acceptManifests() http.Header {
	return http.Header{"Accept": {manifestAccept}}
}
