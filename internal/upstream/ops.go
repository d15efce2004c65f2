package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

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
			_ = resp.Body.Close()
			return nil, Descriptor{}, fmt.Errorf("%w: %s ignored the range request", ErrUnreachable, c.ep.Name)
		}
		start, _, total, ok := ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			_ = resp.Body.Close()
			return nil, Descriptor{}, fmt.Errorf("%w: %s answered a resume from %d with Content-Range %.80q", ErrUnreachable, c.ep.Name, offset, resp.Header.Get("Content-Range"))
		}
		d.Size = total
		if d.Size < 0 && resp.ContentLength >= 0 {
			d.Size = offset + resp.ContentLength
		}
	}
	return resp.Body, d, nil
}

// ErrNoRange means the upstream answered a ranged GET with the whole blob
// (200): it does not serve ranges, and a blob comes from it only whole.
var ErrNoRange = errors.New("upstream: range requests not supported")

// GetBlobRange opens bytes [start, end) of a blob. The answer must be a 206
// for exactly that range with the blob's total size; Size in the returned
// descriptor is that total. A 200 fails with ErrNoRange (the body is not
// read). The caller closes the body; the bytes cannot be verified alone.
func (c *Client) GetBlobRange(ctx context.Context, repo string, dg digest.Digest, start, end int64) (io.ReadCloser, Descriptor, error) {
	if start < 0 || end <= start {
		return nil, Descriptor{}, fmt.Errorf("upstream: invalid range [%d, %d)", start, end)
	}
	hdr := http.Header{"Range": {"bytes=" + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(end-1, 10)}}
	resp, err := c.do(ctx, http.MethodGet, repo, repoPath(repo, "blobs", dg.String()), hdr)
	if err != nil {
		return nil, Descriptor{}, err
	}
	if resp.StatusCode != http.StatusPartialContent {
		_ = resp.Body.Close()
		return nil, Descriptor{}, fmt.Errorf("%w: %s answered %d to a ranged GET", ErrNoRange, c.ep.Name, resp.StatusCode)
	}
	first, last, total, ok := ParseContentRange(resp.Header.Get("Content-Range"))
	if !ok || first != start || last != end-1 || total < end {
		_ = resp.Body.Close()
		return nil, Descriptor{}, fmt.Errorf("%w: %s answered the range %d-%d with Content-Range %.80q", ErrUnreachable, c.ep.Name, start, end-1, resp.Header.Get("Content-Range"))
	}
	return resp.Body, Descriptor{Digest: dg, MediaType: headerMediaType(resp.Header), Size: total}, nil
}

// ParseContentRange parses "bytes FIRST-LAST/TOTAL" (TOTAL "*": -1).
func ParseContentRange(s string) (first, last, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var ok1, ok2, ok3 bool
	first, ok1 = position(a)
	last, ok2 = position(b)
	if tot == "*" {
		total, ok3 = -1, true
	} else {
		total, ok3 = position(tot)
	}
	if !ok1 || !ok2 || !ok3 || last < first || (total >= 0 && last >= total) {
		return 0, 0, 0, false
	}
	return first, last, total, true
}

// position parses a byte position: decimal digits only (no sign).
func position(s string) (int64, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
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
