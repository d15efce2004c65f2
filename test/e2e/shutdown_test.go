package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// TestGracefulShutdown sends SIGTERM to berth while a client is slowly
// downloading a 64 MiB cached blob: berth stops taking new connections at
// once, lets the download finish with the right bytes, and exits 0.
func TestGracefulShutdown(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	dg := pushBigBlob(t, reg.Addr, "test/big", bigBlobSize)
	b := startBerth(t, reg.Addr, berthOptions{})
	url := fmt.Sprintf("%s/v2/registry.test/test/big/blobs/%s", b.URL, dg)

	// Fill the cache first: the slow download is served from disk.
	if err := fetchAndHash(&http.Client{Timeout: 2 * time.Minute}, url, dg, bigBlobSize); err != nil {
		t.Fatalf("warming the cache: %v", err)
	}

	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	h := sha256.New()
	const head = 1 << 20
	if _, err := io.CopyN(h, resp.Body, head); err != nil {
		t.Fatalf("reading the first MiB: %v", err)
	}

	t0 := time.Now()
	b.signal(syscall.SIGTERM)
	if how, err := waitNotServing(b, 5*time.Second); err != nil {
		t.Error(err)
	} else {
		t.Logf("%s after SIGTERM: %s", time.Since(t0).Round(time.Microsecond), how)
	}
	if b.exited() {
		t.Fatalf("berth exited (code %d) with a download in flight", b.exitCode())
	}

	// The rest, at about 32 MiB/s: the download is still going when
	// berth has stopped listening.
	n, err := io.Copy(h, &slowReader{r: resp.Body, rate: 32 << 20})
	if err != nil {
		t.Fatalf("the in-flight download failed after %d more bytes: %v", n, err)
	}
	if n+head != bigBlobSize {
		t.Errorf("the in-flight download got %d bytes, want %d", n+head, bigBlobSize)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dg {
		t.Errorf("the in-flight download hashes to %s, want %s", got, dg)
	}
	t.Logf("in-flight download finished %s after SIGTERM", time.Since(t0).Round(time.Millisecond))
	_ = resp.Body.Close()
	client.CloseIdleConnections()

	if !b.wait(15 * time.Second) {
		t.Fatalf("berth still running 15s after its last download ended")
	}
	if code := b.exitCode(); code != 0 {
		t.Errorf("berth exited with code %d, want 0", code)
	}
	if len(b.logLines(t, "shutting down: draining requests in flight")) == 0 || len(b.logLines(t, "stopped")) == 0 {
		t.Errorf("berth did not log its drain and stop")
	}
}

// waitNotServing waits until a new connection to berth is refused or its
// /readyz stops answering 200, and says which.
func waitNotServing(b *berth, d time.Duration) (string, error) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", b.Addr, time.Second)
		if err != nil {
			return "new connection failed: " + err.Error(), nil
		}
		_ = conn.Close()
		resp, err := client.Get(b.URL + "/readyz")
		if err != nil {
			return "/readyz failed: " + err.Error(), nil
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "/readyz answered " + resp.Status, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", fmt.Errorf("berth still answered /readyz with 200 %s after SIGTERM", d)
}

// slowReader reads at about rate bytes per second.
type slowReader struct {
	r     io.Reader
	rate  float64
	start time.Time
	n     int64
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.start.IsZero() {
		s.start = time.Now()
	}
	if ahead := time.Duration(float64(s.n)/s.rate*float64(time.Second)) - time.Since(s.start); ahead > 0 {
		time.Sleep(ahead)
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	return n, err
}
