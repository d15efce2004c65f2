package server

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/store"
)

// gatedBlobUpstream serves one blob: half of it at once, the rest when gate
// closes. reached is closed once the first half has been sent.
func gatedBlobUpstream(t *testing.T, blob []byte, gate <-chan struct{}) (*httptest.Server, <-chan struct{}) {
	t.Helper()
	dg := digest.FromBytes(blob)
	reached := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.HasSuffix(r.URL.Path, "/blobs/"+dg.String()) && r.Method == http.MethodGet:
			w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
			w.Header().Set("Docker-Content-Digest", dg.String())
			half := len(blob) / 2
			_, _ = w.Write(blob[:half])
			w.(http.Flusher).Flush()
			close(reached)
			<-gate
			_, _ = w.Write(blob[half:])
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, reached
}

// TestShutdownCommitsFillInFlight: a fill still downloading when the server
// is told to stop, whose only client has gone away, gets the shutdown
// timeout to finish; its verified blob is in the store after Run returns,
// not lost because the store closed under it.
func TestShutdownCommitsFillInFlight(t *testing.T) {
	blob := make([]byte, 4<<20)
	_, _ = rand.Read(blob)
	dg := digest.FromBytes(blob)
	gate := make(chan struct{})
	gateOpen := false
	openGate := func() {
		if !gateOpen {
			gateOpen = true
			close(gate)
		}
	}
	up, reached := gatedBlobUpstream(t, blob, gate)
	t.Cleanup(openGate) // before the upstream's Close, which waits for its handler

	cfg := testConfig(t)
	cfg.ShutdownTimeout = config.Duration(30 * time.Second)
	cfg.Upstreams = map[string]config.Upstream{"registry.test": {URL: up.URL}}
	cfg.DefaultUpstream = "registry.test"
	s, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()

	// A client starts the fill, reads a little, and goes away: nothing in
	// the HTTP drain waits for this fill any more.
	cctx, ccancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(cctx, http.MethodGet,
		"http://"+ln.Addr().String()+"/v2/registry.test/app/blobs/"+dg.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the upstream was never asked for the blob")
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
		t.Fatalf("reading the first bytes: %v", err)
	}
	ccancel()
	resp.Body.Close()

	cancel() // SIGTERM
	// With the drain, Run waits for the fill, which waits for the gate.
	// Without it, Run closes the store at once and returns.
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while a fill was still downloading: the store closed under it", err)
	case <-time.After(500 * time.Millisecond):
	}
	openGate()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after the fill finished")
	}

	st, err := store.Open(cfg.DataDir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	info, err := st.Stat(dg)
	if err != nil || info.Size != int64(len(blob)) {
		t.Fatalf("the blob fetched during shutdown was lost: %+v %v", info, err)
	}
}
