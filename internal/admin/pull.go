package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"

	"golang.org/x/sync/errgroup"
)

// defaultMaxManifestBytes bounds a manifest kept in memory when the puller
// is given no cap (config's default); error bodies keep less.
const (
	defaultMaxManifestBytes = 4 << 20
	maxErrorBody            = 64 << 10
	blobWorkers             = 4
)

// puller fetches an image through the registry handler in process, exactly
// as a client would: GET manifests, then GET every blob into a sink that
// counts and discards the bytes. The registry routes, coalesces, verifies and
// stores; the puller holds no blob in memory.
type puller struct {
	h   http.Handler
	log *slog.Logger
	// maxManifest, read for each manifest, is max_manifest_bytes in force,
	// the registry's own cap (nil: 4 MiB).
	maxManifest func() int64
}

// maxManifestBytes is the cap on a manifest, now.
func (p *puller) maxManifestBytes() int64 {
	if p.maxManifest != nil {
		if n := p.maxManifest(); n > 0 {
			return n
		}
	}
	return defaultMaxManifestBytes
}

// sink is the http.ResponseWriter handed to the registry.
type sink struct {
	hdr    http.Header
	status int
	n      int64
	keep   int // body bytes to keep (manifests); error bodies keep some anyway
	body   bytes.Buffer
	onData func(n int64)
}

func (s *sink) Header() http.Header { return s.hdr }

func (s *sink) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

func (s *sink) Write(p []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	s.n += int64(len(p))
	keep := s.keep
	if s.status != http.StatusOK {
		keep = maxErrorBody
	}
	if room := keep - s.body.Len(); room > 0 {
		s.body.Write(p[:min(room, len(p))])
	}
	if s.onData != nil && s.status == http.StatusOK {
		s.onData(int64(len(p)))
	}
	return len(p), nil
}

// get sends GET path to the registry handler.
func (p *puller) get(ctx context.Context, path string, keep int, onData func(int64)) (w *sink, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://berth.admin"+path, nil)
	if err != nil {
		return nil, err
	}
	req.RequestURI = path
	req.RemoteAddr = "admin"
	w = &sink{hdr: http.Header{}, keep: keep, onData: onData}
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		// The registry aborts a blob response that failed verification or
		// whose upstream broke with http.ErrAbortHandler: expected, and
		// logged by the registry already.
		if r == http.ErrAbortHandler { //nolint:errorlint // net/http compares the same way
			err = fmt.Errorf("GET %s: transfer aborted", path)
			return
		}
		// Anything else is a bug in the handler; this goroutine serves a
		// long-lived job, so it reports it once and fails this image only.
		p.log.Error("prefetch: registry handler panicked", "path", path, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		err = fmt.Errorf("GET %s: internal error (%v)", path, r)
	}()
	p.h.ServeHTTP(w, req)
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status != http.StatusOK {
		return w, fmt.Errorf("GET %s: %s", path, ociError(w))
	}
	return w, ctx.Err()
}

// ociError summarises an OCI error response.
func ociError(w *sink) string {
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if json.Unmarshal(w.body.Bytes(), &body) == nil && len(body.Errors) > 0 {
		return fmt.Sprintf("%d %s: %s", w.status, body.Errors[0].Code, body.Errors[0].Message)
	}
	return fmt.Sprintf("%d %s", w.status, http.StatusText(w.status))
}

// manifestDoc is the part of an image manifest or index prefetch needs
// (OCI and Docker v2 alike).
type manifestDoc struct {
	MediaType     string       `json:"mediaType"`
	SchemaVersion int          `json:"schemaVersion"`
	Config        *descriptor  `json:"config"`
	Layers        []descriptor `json:"layers"`
	Manifests     []descriptor `json:"manifests"`
}

type descriptor struct {
	MediaType string   `json:"mediaType"`
	Digest    string   `json:"digest"`
	Size      int64    `json:"size"`
	URLs      []string `json:"urls"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	} `json:"platform"`
}

// progress receives an image's byte counts.
type progress interface {
	addTotal(n int64)
	addDone(n int64)
	setDigest(d string)
}

// pull fetches ref's manifests and blobs: for an index, those of every
// platform in want. want[0] is the node's own; when others are listed it may
// be missing from the index as long as one of them is present.
func (p *puller) pull(ctx context.Context, ref imageRef, want []platform, pr progress) error {
	top, err := p.manifest(ctx, ref, ref.ref, pr, true)
	if err != nil {
		return err
	}
	images := []manifestDoc{top}
	if top.Manifests != nil {
		children, err := selectPlatforms(top.Manifests, want, len(want) > 1)
		if err != nil {
			return err
		}
		images = images[:0]
		for _, d := range children {
			pr.addTotal(d.Size)
			m, err := p.manifest(ctx, ref, d.Digest, pr, false)
			if err != nil {
				return err
			}
			images = append(images, m)
		}
	}
	blobs, err := blobsOf(images)
	if err != nil {
		return err
	}
	for _, b := range blobs {
		pr.addTotal(b.Size)
	}
	// The first blob that fails cancels the others: the image has failed,
	// and its siblings need not keep a fill slot and the upstream busy.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(blobWorkers)
	for _, b := range blobs {
		g.Go(func() error {
			if gctx.Err() != nil {
				return gctx.Err()
			}
			w, err := p.get(gctx, ref.blobPath(b.Digest), 0, pr.addDone)
			if err != nil {
				return err
			}
			if b.Size > 0 && w.n != b.Size {
				return fmt.Errorf("blob %s: got %d bytes, expected %d", b.Digest, w.n, b.Size)
			}
			return nil
		})
	}
	return g.Wait()
}

// manifest GETs and parses one manifest and counts its bytes as done. The
// top manifest (top set) also joins the total, its size being known only now,
// and its digest is recorded.
func (p *puller) manifest(ctx context.Context, ref imageRef, r string, pr progress, top bool) (manifestDoc, error) {
	var doc manifestDoc
	limit := p.maxManifestBytes()
	w, err := p.get(ctx, ref.manifestPath(r), int(limit), nil)
	if err != nil {
		return doc, err
	}
	if top {
		pr.addTotal(w.n)
		pr.setDigest(w.hdr.Get("Docker-Content-Digest"))
	}
	pr.addDone(w.n)
	if w.n > limit {
		return doc, fmt.Errorf("manifest %s: larger than %d bytes", r, limit)
	}
	if err := json.Unmarshal(w.body.Bytes(), &doc); err != nil {
		return doc, fmt.Errorf("manifest %s: %w", r, err)
	}
	return doc, nil
}

// selectPlatforms picks the index entry for each platform in want. With
// firstOptional, want[0] may be missing if another is found.
func selectPlatforms(entries []descriptor, want []platform, firstOptional bool) ([]descriptor, error) {
	var out []descriptor
	var missing []string
	seen := map[string]bool{}
	for i, w := range want {
		found := false
		for _, e := range entries {
			if e.Platform != nil && w.matches(e.Platform.OS, e.Platform.Architecture, e.Platform.Variant) {
				found = true
				if !seen[e.Digest] {
					seen[e.Digest] = true
					out = append(out, e)
				}
				break
			}
		}
		if !found && (!firstOptional || i != 0) {
			missing = append(missing, w.String())
		}
	}
	if len(out) == 0 && len(missing) == 0 {
		missing = append(missing, want[0].String())
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the index has no image for %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// blobsOf lists the config and layers of images, each digest once; layers
// that live elsewhere (foreign layers with urls) are skipped.
func blobsOf(images []manifestDoc) ([]descriptor, error) {
	var out []descriptor
	seen := map[string]bool{}
	for _, m := range images {
		if m.Config == nil {
			if m.SchemaVersion == 1 {
				return nil, errors.New("schema 1 manifests are not supported")
			}
			return nil, fmt.Errorf("manifest of type %q has no config", m.MediaType)
		}
		for _, d := range append([]descriptor{*m.Config}, m.Layers...) {
			if seen[d.Digest] || len(d.URLs) > 0 {
				continue
			}
			seen[d.Digest] = true
			out = append(out, d)
		}
	}
	return out, nil
}
