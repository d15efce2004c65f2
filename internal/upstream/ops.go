package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"
)

// MaxManifestBytes caps a manifest read from upstream (the spec recommends
// registries accept at least 4 MiB; nothing legitimate is larger).
const MaxManifestBytes = 8 << 20

// Descriptor is what an upstream said about a manifest or blob.
type Descriptor struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
}

// HeadManifest resolves ref (a tag or digest) to a descriptor without the body.
// accept is the Accept header to send (Accept if empty).
func (c *Client) HeadManifest(ctx context.Context, repo, ref, accept string) (Descriptor, error) {
	resp, err := c.do(ctx, http.MethodHead, repo, repoPath(repo, "manifests", ref), acceptHeader(accept))
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

// GetManifest fetches a manifest by tag or digest and returns its bytes. When
// ref is a digest the bytes are verified against it; when it is a tag and the
// upstream sent Docker-Content-Digest, against that.
func (c *Client) GetManifest(ctx context.Context, repo, ref, accept string) ([]byte, Descriptor, error) {
	resp, err := c.do(ctx, http.MethodGet, repo, repoPath(repo, "manifests", ref), acceptHeader(accept))
	if err != nil {
		return nil, Descriptor{}, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > MaxManifestBytes {
		return nil, Descriptor{}, fmt.Errorf("%w: %d bytes", ErrTooLarge, resp.ContentLength)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestBytes+1))
	if err != nil {
		return nil, Descriptor{}, fmt.Errorf("%w: %s: reading manifest: %w", ErrUnreachable, c.ep.Name, err)
	}
	if len(body) > MaxManifestBytes {
		return nil, Descriptor{}, fmt.Errorf("%w: over %d bytes", ErrTooLarge, MaxManifestBytes)
	}
	want, err := digest.Parse(ref)
	if err != nil {
		want, _ = digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	}
	alg := digest.Canonical
	if want != "" {
		alg = want.Algorithm()
	}
	got := alg.FromBytes(body)
	if want != "" && got != want {
		return nil, Descriptor{}, fmt.Errorf("%w: manifest %s from %s hashes to %s", ErrDigestMismatch, want, c.ep.Name, got)
	}
	return body, Descriptor{Digest: got, MediaType: resp.Header.Get("Content-Type"), Size: int64(len(body))}, nil
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

func acceptHeader(accept string) http.Header {
	if accept == "" {
		accept = Accept
	}
	return http.Header{"Accept": {accept}}
}
