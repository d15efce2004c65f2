package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Manifest media types a pulling client accepts.
const acceptAll = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// image is what was pushed upstream.
type image struct {
	Repo      string // test/app
	Tag       string
	Digest    string // manifest digest as the upstream reports it (crane digest)
	MediaType string
	Config    string
	Layers    []string
}

// Blobs is the config followed by the layers.
func (im image) Blobs() []string { return append([]string{im.Config}, im.Layers...) }

// pushImage pushes a small image of n layers (each a tar with one random
// file) to the upstream with `crane append`, with OCI media types if oci.
func pushImage(t *testing.T, crane, regAddr, repo, tag string, n int, oci bool) image {
	t.Helper()
	dir := t.TempDir()
	ref := regAddr + "/" + repo + ":" + tag
	args := []string{"append", "--insecure", "-t", ref}
	if oci {
		args = append(args, "--oci-empty-base")
	}
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("layer%d.tar", i))
		writeLayerTar(t, p, fmt.Sprintf("%s-%s-%d.bin", strings.ReplaceAll(repo, "/", "_"), tag, i), 48<<10+i*1000)
		args = append(args, "-f", p)
	}
	env := testEnv("HOME=" + dir)
	if out, err := runTool(t, 2*time.Minute, dir, env, crane, args...); err != nil {
		t.Fatalf("crane append: %v\n%s", err, out)
	}
	out, err := runTool(t, time.Minute, dir, env, crane, "manifest", "--insecure", ref)
	if err != nil {
		t.Fatalf("crane manifest: %v\n%s", err, out)
	}
	var m manifestJSON
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("crane manifest output: %v\n%s", err, out)
	}
	dg, err := runTool(t, time.Minute, dir, env, crane, "digest", "--insecure", ref)
	if err != nil {
		t.Fatalf("crane digest: %v\n%s", err, dg)
	}
	im := image{Repo: repo, Tag: tag, Digest: strings.TrimSpace(dg), MediaType: m.MediaType, Config: m.Config.Digest}
	for _, l := range m.Layers {
		im.Layers = append(im.Layers, l.Digest)
	}
	if len(im.Layers) != n || !strings.HasPrefix(im.Digest, "sha256:") {
		t.Fatalf("pushed image %s: digest %q, %d layers (want %d)", ref, im.Digest, len(im.Layers), n)
	}
	return im
}

type manifestJSON struct {
	MediaType string `json:"mediaType"`
	Config    struct {
		Digest string `json:"digest"`
	} `json:"config"`
	Layers []struct {
		Digest string `json:"digest"`
	} `json:"layers"`
}

func writeLayerTar(t *testing.T, path, file string, size int) {
	t.Helper()
	data := make([]byte, size)
	fillRandom(data, uint64(len(path)+size))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: file, Mode: 0o644, Size: int64(size), ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fillRandom fills b with pseudo-random bytes; seed makes them differ per
// call site, time per run.
func fillRandom(b []byte, seed uint64) {
	var key [32]byte
	copy(key[:], strconv.FormatUint(seed, 16)+strconv.FormatInt(time.Now().UnixNano(), 16))
	r := rand.NewChaCha8(key)
	_, _ = r.Read(b)
}

// pushBigBlob pushes an OCI image whose single layer is size bytes of
// uncompressed random data, straight through the registry API from Go (no
// gzip), and returns the layer's digest.
func pushBigBlob(t *testing.T, regAddr, repo string, size int) string {
	t.Helper()
	data := make([]byte, size)
	fillRandom(data, uint64(size))
	layer := static.NewLayer(data, types.OCIUncompressedLayer)
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	ref, err := name.ParseReference(regAddr+"/"+repo+":big", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("pushing a %d-byte blob to %s: %v", size, ref, err)
	}
	dg, err := layer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dg.String()
}

// ---------------------------------------------------------------------------
// HTTP.

var httpClient = &http.Client{Timeout: 2 * time.Minute}

// do sends one request and returns the response with its body read.
func do(t *testing.T, method, url string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, body
}

// get GETs url and fails the test unless it answers 200.
func get(t *testing.T, url string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	resp, body := do(t, http.MethodGet, url, hdr)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, truncate(body, 300))
	}
	return resp, body
}

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// getManifest GETs a manifest through berth and checks that the body
// hashes to Docker-Content-Digest; it returns the digest and body.
func getManifest(t *testing.T, b *berth, repo, ref string) (string, []byte) {
	t.Helper()
	url := fmt.Sprintf("%s/v2/registry.test/%s/manifests/%s", b.URL, repo, ref)
	resp, body := get(t, url, http.Header{"Accept": {acceptAll}})
	dg := resp.Header.Get("Docker-Content-Digest")
	if got := sha256Digest(body); got != dg {
		t.Fatalf("GET %s: body hashes to %s, Docker-Content-Digest says %q", url, got, dg)
	}
	return dg, body
}

// checkBlob GETs a blob through berth and checks its bytes and headers.
func checkBlob(t *testing.T, b *berth, repo, dg string) []byte {
	t.Helper()
	url := fmt.Sprintf("%s/v2/registry.test/%s/blobs/%s", b.URL, repo, dg)
	resp, body := get(t, url, nil)
	if got := sha256Digest(body); got != dg {
		t.Fatalf("GET %s: body (%d bytes) hashes to %s", url, len(body), got)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != dg {
		t.Errorf("GET %s: Docker-Content-Digest %q", url, h)
	}
	if resp.ContentLength != int64(len(body)) {
		t.Errorf("GET %s: Content-Length %d for a body of %d bytes", url, resp.ContentLength, len(body))
	}
	return body
}

// ociError decodes an OCI error body and returns its first code.
func ociError(body []byte) (string, error) {
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return "", fmt.Errorf("not an OCI error body: %w: %q", err, truncate(body, 200))
	}
	if len(e.Errors) == 0 || e.Errors[0].Code == "" {
		return "", fmt.Errorf("OCI error body without a code: %q", truncate(body, 200))
	}
	return e.Errors[0].Code, nil
}

// ---------------------------------------------------------------------------
// Metrics.

// scrape returns berth's /metrics text.
func scrape(t *testing.T, b *berth) string {
	t.Helper()
	_, body := get(t, b.URL+"/metrics", nil)
	return string(body)
}

// metric sums the samples of name whose labels include every pair in labels
// (Prometheus text format, as berth writes it).
func metric(text, name string, labels map[string]string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		var lbls string
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.Index(rest, "}")
			if end < 0 {
				continue
			}
			lbls, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // another metric with this prefix
		}
		ok := true
		for k, v := range labels {
			if !strings.Contains(","+lbls+",", ","+k+"="+strconv.Quote(v)+",") {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err == nil {
			sum += f
		}
	}
	return sum
}
