package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-mirror/berth/internal/admin"
	"github.com/berth-mirror/berth/internal/cluster"
	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/metrics"
	"github.com/berth-mirror/berth/internal/peer"
	"github.com/berth-mirror/berth/internal/registry"
	"github.com/berth-mirror/berth/internal/throttle"
)

// clusterNode is this server's part in a cluster: membership, the asking
// side (the registry's Source hook) and the peer API. A nil *clusterNode
// is a node without a cluster; every method works on it.
type clusterNode struct {
	cfg     config.Cluster
	url     string
	name    string // cluster.node_name; "" : derived by cluster.Start
	log     *slog.Logger
	keys    peer.Keys
	m       *cluster.Metrics
	pm      *peer.Metrics
	peer    *peer.Server
	fetcher *peer.Fetcher

	c       atomic.Pointer[cluster.Cluster] // set while running
	stopped sync.Once
	drained sync.Once
	peerSrv *http.Server
	peerErr chan error
}

// newClusterNode prepares the cluster when cluster.peer_bind is set (nil
// otherwise); Start joins it. maxManifest is the manifest cap in force, for
// manifests from peers.
func newClusterNode(cfg config.Config, log *slog.Logger, fc *fetch.Coalescer, m *metrics.Metrics, maxManifest func() int64) (*clusterNode, error) {
	if !cfg.Cluster.Enabled() {
		return nil, nil
	}
	url, err := cfg.PeerURL()
	if err != nil {
		return nil, err
	}
	log = log.With("component", "cluster")
	primary, extra := cfg.Cluster.Secrets()
	n := &clusterNode{cfg: cfg.Cluster, url: url, name: cfg.Cluster.NodeName, log: log, keys: peer.NewKeys(primary, extra...),
		m: cluster.NewMetrics(), pm: peer.NewMetrics()}
	n.fetcher = peer.NewFetcher(n, n.keys, n.pm, log, peer.FetcherOptions{
		Peers:    fc.Peers(),
		Upstream: fc.Upstream(),
		// A peer's body may stall as long as its upstream may: the owner
		// gives up on its upstream (and so ends the body) no later.
		BodyIdle:         cfg.UpstreamTimeout.D(),
		MaxManifestBytes: maxManifest,
		NoPieces:         cfg.PieceFetches == 0,
		LocalPiece:       fc.LocalPiece,
	})
	m.Registry.MustRegister(n.m.Collectors()...)
	m.Registry.MustRegister(n.pm.Collectors()...)
	m.Registry.MustRegister(cluster.MembersCollector(func() []cluster.Member {
		if c := n.c.Load(); c != nil {
			return c.Members()
		}
		return nil
	}))
	return n, nil
}

// peerOptions: without a cluster secret peer requests are not
// authenticated (Verify nil), which the peer API also reads as "no peer's
// word is trusted" for private content. log is the registry's: the peer
// API's refusals are logged with its other answers.
func (n *clusterNode) peerOptions(log *slog.Logger, upload *throttle.Limiter) peer.ServerOptions {
	o := peer.ServerOptions{Served: n.pm.Served, Logger: log, Upload: upload}
	if n.keys.Enabled() {
		o.Verify = func(r *http.Request, dg string) error { return n.keys.Verify(r, dg, time.Now()) }
	}
	return o
}

// Name and Owners make the node the Fetcher's membership: before Start (or
// after Stop) it knows no owners, so blobs come from the upstream.
func (n *clusterNode) Name() string {
	if c := n.c.Load(); c != nil {
		return c.Name() // the derived name when cluster.node_name is unset
	}
	return n.name
}

// Owners implements peer.Membership.
func (n *clusterNode) Owners(key string) []peer.Member {
	if c := n.c.Load(); c != nil {
		return c.Owners(key)
	}
	return nil
}

// Source is the registry's Source hook (nil without a cluster).
func (n *clusterNode) Source() func(fetch.Source) fetch.Source {
	if n == nil {
		return nil
	}
	return n.fetcher.Wrap
}

// PeerManifest is the registry's PeerManifest hook (nil without a cluster).
func (n *clusterNode) PeerManifest() func(context.Context, fetch.Request, string) ([]byte, string, error) {
	if n == nil {
		return nil
	}
	return n.fetcher.Manifest
}

// PeerHead is the registry's PeerHead hook (nil without a cluster).
func (n *clusterNode) PeerHead() func(context.Context, fetch.Request) (fetch.Meta, error) {
	if n == nil {
		return nil
	}
	return n.fetcher.Head
}

// servePeersWith makes h, the /v2/ handler, the peer API's backend: the
// owner's side asks the same gate and keeps the same limits and manifest
// cap, reloads included. A peer's request is never forwarded twice: the
// handler's cluster source asks other members only whether they hold what
// it lacks (fetch.Request.From). log is h's logger.
func (n *clusterNode) servePeersWith(h *registry.Handler, log *slog.Logger, upload *throttle.Limiter) {
	if n != nil {
		n.peer = peer.NewServer(h, n.peerOptions(log, upload))
	}
}

// ServePeer serves r if it is a peer API request and reports whether it did.
func (n *clusterNode) ServePeer(w http.ResponseWriter, r *http.Request) bool {
	if n == nil || !strings.HasPrefix(r.URL.Path, peer.Path) {
		return false
	}
	n.peer.ServeHTTP(w, r)
	return true
}

// Start joins the cluster and opens the peer-only listener when
// cluster.peer_listen is set. A drain then calls leave, drainPeers
// alongside the HTTP drain, and stop.
func (n *clusterNode) Start(ctx context.Context) (err error) {
	if n == nil {
		return nil
	}
	var ln net.Listener
	if n.cfg.PeerListen != "" {
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", n.cfg.PeerListen); err != nil {
			return fmt.Errorf("cluster: cannot listen on cluster.peer_listen %s: %w", n.cfg.PeerListen, err)
		}
	}
	c, err := cluster.Start(cluster.Config{
		NodeName:    n.name,
		ClusterName: n.cfg.Name,
		Bind:        n.cfg.PeerBind,
		Join:        n.cfg.JoinList(),
		URL:         n.url,
		Keys:        n.keys,
		Logger:      n.log,
		Metrics:     n.m,
	})
	if err != nil {
		if ln != nil {
			_ = ln.Close()
		}
		return err
	}
	n.c.Store(c)
	if ln != nil {
		n.peerSrv = &http.Server{
			Handler:           http.HandlerFunc(n.servePeerOnly),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
		}
		n.peerErr = make(chan error, 1)
		go func() { n.peerErr <- n.peerSrv.Serve(ln) }()
		n.log.Info("peer API listening", "addr", ln.Addr().String())
	}
	return nil
}

// servePeerOnly is the peer listener's handler: nothing but the peer API.
func (n *clusterNode) servePeerOnly(w http.ResponseWriter, r *http.Request) {
	if !n.ServePeer(w, r) {
		http.NotFound(w, r)
	}
}

// leave tells the cluster this node is going, so that peers stop choosing
// it as an owner before it refuses fills: the first step of a drain.
func (n *clusterNode) leave(ctx context.Context) error {
	if n == nil {
		return nil
	}
	if c := n.c.Load(); c != nil {
		return c.Leave(ctx)
	}
	return nil
}

// drainPeers shuts the peer listener down, letting the peer requests in
// flight finish within ctx; it runs alongside the HTTP drain.
func (n *clusterNode) drainPeers(ctx context.Context) error {
	if n == nil || n.peerSrv == nil {
		return nil
	}
	var err error
	n.drained.Do(func() {
		if serr := n.peerSrv.Shutdown(ctx); serr != nil {
			_ = n.peerSrv.Close()
		}
		if serr := <-n.peerErr; !errors.Is(serr, http.ErrServerClosed) {
			err = serr
		}
	})
	return err
}

// stop leaves if leave was not called, drains the peer listener and shuts
// gossip down, within ctx; it may be called more than once.
func (n *clusterNode) stop(ctx context.Context) error {
	if n == nil {
		return nil
	}
	err := n.drainPeers(ctx)
	n.stopped.Do(func() {
		if c := n.c.Load(); c != nil {
			err = errors.Join(err, c.Stop(ctx))
			n.c.Store(nil)
		}
		n.fetcher.Close()
	})
	return err
}

// notReady is why this node must not be ready ("" if nothing): it lost
// its name to a node that started first, and serves nothing as a member.
func (n *clusterNode) notReady() string {
	if n == nil {
		return ""
	}
	if c := n.c.Load(); c != nil {
		if cf, lost := c.Lost(); lost {
			return "cluster node name conflict: " + cf.String()
		}
	}
	return ""
}

// Members lists every member for peers.list, with the bytes each has
// served this node (nil without a cluster).
func (n *clusterNode) Members() []admin.Member {
	if n == nil {
		return nil
	}
	c := n.c.Load()
	if c == nil {
		return []admin.Member{{Name: n.name, URL: n.url, State: "stopped", Self: true}}
	}
	ms := c.Members()
	out := make([]admin.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, admin.Member{Name: m.Name, Address: m.Addr, URL: m.URL, State: m.State,
			Self: m.Name == c.Name(), ServedBytes: n.fetcher.ServedBy(m.Name), Conflict: m.Conflict})
	}
	return out
}
