// Command pusher uploads one random, uncompressed blob of a given size to an
// OCI registry with a monolithic upload (POST, then PUT ?digest=), plus a
// config blob and an OCI image manifest naming it, and prints the blob's
// digest. The bytes come from a seeded ChaCha8 stream, generated twice (once
// to hash, once to send), so a 512 MiB blob never sits in memory and the same
// seed always gives the same digest.
//
//	pusher -registry http://127.0.0.1:5001 -repo test/big -size 536870912 -seed 2 -tag 512m
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

func main() {
	registry := flag.String("registry", "http://127.0.0.1:5001", "registry base URL")
	repo := flag.String("repo", "test/big", "repository")
	size := flag.Int64("size", 64<<20, "blob size in bytes")
	seed := flag.Uint64("seed", 1, "seed of the random content")
	tag := flag.String("tag", "", "if set, also push an OCI image manifest with this tag")
	flag.Parse()
	if err := run(*registry, *repo, *size, *seed, *tag); err != nil {
		fmt.Fprintln(os.Stderr, "pusher:", err)
		os.Exit(1)
	}
}

// randomReader is an endless deterministic byte stream.
type randomReader struct{ r *rand.ChaCha8 }

func newRandom(seed uint64) *randomReader {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return &randomReader{rand.NewChaCha8(s)}
}

func (r *randomReader) Read(p []byte) (int, error) { return r.r.Read(p) }

func run(registry, repo string, size int64, seed uint64, tag string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	h := sha256.New()
	if _, err := io.CopyN(h, newRandom(seed), size); err != nil {
		return err
	}
	layer := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err := upload(ctx, registry, repo, layer, size, io.LimitReader(newRandom(seed), size)); err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	if tag != "" {
		config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + layer + `"]}}`)
		cd := sha256.Sum256(config)
		configDigest := "sha256:" + hex.EncodeToString(cd[:])
		if err := upload(ctx, registry, repo, configDigest, int64(len(config)), bytes.NewReader(config)); err != nil {
			return fmt.Errorf("config: %w", err)
		}
		type desc struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
			Size      int64  `json:"size"`
		}
		m, err := json.Marshal(struct {
			SchemaVersion int    `json:"schemaVersion"`
			MediaType     string `json:"mediaType"`
			Config        desc   `json:"config"`
			Layers        []desc `json:"layers"`
		}{2, "application/vnd.oci.image.manifest.v1+json",
			desc{"application/vnd.oci.image.config.v1+json", configDigest, int64(len(config))},
			[]desc{{"application/vnd.oci.image.layer.v1.tar", layer, size}}})
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, registry+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(m))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		if err := expect(http.DefaultClient.Do(req)); err != nil {
			return fmt.Errorf("manifest: %w", err)
		}
	}
	fmt.Println(layer)
	return nil
}

// upload does POST /blobs/uploads/ then PUT <location>?digest= with the body.
func upload(ctx context.Context, registry, repo, dg string, size int64, body io.Reader) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, registry+"/v2/"+repo+"/blobs/uploads/", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST upload: %s", resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return err
	}
	loc = resp.Request.URL.ResolveReference(loc)
	q := loc.Query()
	q.Set("digest", dg)
	loc.RawQuery = q.Encode()
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Length", strconv.FormatInt(size, 10))
	return expect(http.DefaultClient.Do(req))
}

func expect(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
