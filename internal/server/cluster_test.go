package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/admin"
	"github.com/berth-mirror/berth/internal/cluster"
)

// TestNoClusterNode: without cluster.peer_bind nothing changes: no Source
// hook, no peer API, and peers.list falls back to this node alone.
func TestNoClusterNode(t *testing.T) {
	var n *clusterNode
	if n.Source() != nil || n.Members() != nil {
		t.Fatal("a nil cluster node must be inert")
	}
	if n.ServePeer(httptest.NewRecorder(), httptest.NewRequest("GET", "/peer/v1/blobs/sha256:x", nil)) {
		t.Fatal("a nil cluster node served a peer request")
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n.leave(context.Background()) != nil || n.drainPeers(context.Background()) != nil || n.stop(context.Background()) != nil || n.notReady() != "" {
		t.Fatal("a nil cluster node must be inert")
	}
}

type runningServer struct {
	s      *Server
	url    string
	cancel context.CancelFunc
	done   chan error
}

func startClusterServer(t *testing.T, name, upstreamURL string, join string) *runningServer {
	t.Helper()
	return startClusterServerLog(t, name, upstreamURL, join, quiet())
}

func startClusterServerLog(t *testing.T, name, upstreamURL string, join string, log *slog.Logger) *runningServer {
	t.Helper()
	cfg := testConfig(t)
	cfg.Admin.Socket = ""
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = ln.Addr().String()
	gossip, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Cluster.PeerBind = gossip.Addr().String()
	_ = gossip.Close()
	cfg.Cluster.PeerJoin = join
	cfg.Cluster.NodeName = name
	cfg.Cluster.Secret = "server-test-secret-0123"
	if err := cfg.SetUpstream("registry.test=" + upstreamURL); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rs := &runningServer{s: s, url: "http://" + cfg.Listen, cancel: cancel, done: make(chan error, 1)}
	go func() { rs.done <- s.Run(ctx, ln) }()
	t.Cleanup(rs.stop)
	return rs
}

func (rs *runningServer) stop() {
	rs.cancel()
	if err := <-rs.done; err != nil {
		panic(err)
	}
	rs.done <- nil
}

// TestClusterServers: two in-process servers form a cluster; a blob pulled
// through the node that does not own it is fetched upstream once, by its
// owner, and streamed to the other.
func TestClusterServers(t *testing.T) {
	var mu sync.Mutex
	gets := map[string]int{}
	reg := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			mu.Lock()
			gets[r.URL.Path]++
			mu.Unlock()
		}
		reg.ServeHTTP(w, r)
	}))
	defer up.Close()
	blob := make([]byte, 1<<20)
	_, _ = rand.Read(blob)
	dg := digest.FromBytes(blob)
	pushBlobDigest(t, up.URL, "team/app", blob)

	a := startClusterServer(t, "a", up.URL, "")
	waitUntil(t, func() bool { return len(a.s.cluster.Members()) == 1 })
	b := startClusterServer(t, "b", up.URL, a.s.cluster.cfg.PeerBind)
	waitUntil(t, func() bool { return alive(a.s) == 2 && alive(b.s) == 2 })

	owner := cluster.Owners(dg.String(), []cluster.Member{{Name: "a"}, {Name: "b"}})[0].Name
	asker := a
	if owner == "a" {
		asker = b
	}
	resp, err := http.Get(asker.url + "/v2/registry.test/team/app/blobs/" + dg.String())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, blob) {
		t.Fatalf("status %d, %d bytes", resp.StatusCode, len(got))
	}
	mu.Lock()
	n := gets["/v2/team/app/blobs/"+dg.String()]
	mu.Unlock()
	if n != 1 {
		t.Fatalf("%d upstream GETs, want 1", n)
	}
	var served int64
	for _, m := range asker.s.cluster.Members() {
		if m.Name == owner {
			served = m.ServedBytes
		}
	}
	if served != int64(len(blob)) {
		t.Fatalf("peers.list: the owner served %d bytes, want %d", served, len(blob))
	}
	// The owner keeps a copy: it was the one that fetched it.
	ownerSrv := a
	if owner == "b" {
		ownerSrv = b
	}
	if _, err := ownerSrv.s.Store.Stat(dg); err != nil {
		t.Fatalf("the owner did not keep the blob: %v", err)
	}
	// A peer request on the main listener without a token is refused.
	resp, err = http.Get(ownerSrv.url + "/peer/v1/blobs/" + dg.String() + "?registry=registry.test&repository=team/app")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("peer request without a token: %d", resp.StatusCode)
	}
	// /readyz does not depend on the cluster.
	b.stop()
	resp, err = http.Get(a.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz %d with a peer gone", resp.StatusCode)
	}
	waitUntil(t, func() bool { return alive(a.s) == 1 })
}

func alive(s *Server) int {
	n := 0
	for _, m := range s.cluster.Members() {
		if m.State == cluster.StateAlive {
			n++
		}
	}
	return n
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i > 500 {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// onMessage calls fn, synchronously, when a record with msg is logged.
type onMessage struct {
	slog.Handler
	msg string
	fn  func()
}

func (onMessage) Enabled(context.Context, slog.Level) bool { return true }

func (h onMessage) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.fn()
	}
	return h.Handler.Handle(ctx, r)
}

func (h onMessage) WithAttrs(as []slog.Attr) slog.Handler {
	return onMessage{h.Handler.WithAttrs(as), h.msg, h.fn}
}

func (h onMessage) WithGroup(name string) slog.Handler {
	return onMessage{h.Handler.WithGroup(name), h.msg, h.fn}
}

// TestDrainLeavesBeforeRefusingFills: when a node drains, its peers hear
// that it is leaving before its coalescer refuses fills (until they do,
// they still choose it as an owner, and a refused fill is a 503 for them).
func TestDrainLeavesBeforeRefusingFills(t *testing.T) {
	up := httptest.NewServer(http.NotFoundHandler())
	defer up.Close()
	var b *runningServer
	seen := make(chan string, 1)
	log := slog.New(onMessage{Handler: slog.DiscardHandler, msg: "refusing new fills; draining the running ones", fn: func() {
		state := ""
		for _, m := range b.s.cluster.Members() {
			if m.Name == "a" {
				state = m.State
			}
		}
		seen <- state
	}})
	a := startClusterServerLog(t, "a", up.URL, "", log)
	b = startClusterServer(t, "b", up.URL, a.s.cluster.cfg.PeerBind)
	waitUntil(t, func() bool { return alive(a.s) == 2 && alive(b.s) == 2 })

	a.stop()
	select {
	case state := <-seen:
		if state != cluster.StateLeft {
			t.Fatalf("when a began refusing fills, b saw it %q, want %q", state, cluster.StateLeft)
		}
	default:
		t.Fatal("a never logged that it refuses fills")
	}
}

// TestReadyzNameConflict: of two servers given one node name, the one that
// started later is not ready, saying why; the other stays ready.
func TestReadyzNameConflict(t *testing.T) {
	up := httptest.NewServer(http.NotFoundHandler())
	defer up.Close()
	first := startClusterServer(t, "dup", up.URL, "")
	waitUntil(t, func() bool { return len(first.s.cluster.Members()) == 1 })
	second := startClusterServer(t, "dup", up.URL, first.s.cluster.cfg.PeerBind)
	readyz := func(rs *runningServer) (int, string) {
		resp, err := http.Get(rs.url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitUntil(t, func() bool { code, _ := readyz(second); return code == http.StatusServiceUnavailable })
	if _, body := readyz(second); !strings.Contains(body, "name conflict") || !strings.Contains(body, first.s.cluster.cfg.PeerBind) {
		t.Errorf("readyz of the later node: %q", body)
	}
	if code, body := readyz(first); code != http.StatusOK {
		t.Errorf("readyz of the earlier node: %d %q", code, body)
	}
	var self admin.Member
	for _, m := range second.s.cluster.Members() {
		if m.Self {
			self = m
		}
	}
	if self.State != cluster.StateConflict || self.Conflict == "" {
		t.Errorf("peers.list self row of the later node: %+v", self)
	}
}
