package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Member states, as peers.list shows them.
const (
	StateAlive = "alive"
	StateDead  = "dead"
	StateLeft  = "left"
)

// Member is one node as this node sees it.
type Member struct {
	// Name is the node's unique, stable name.
	Name string
	// Addr is the gossip HOST:PORT.
	Addr string
	// URL is where its peer API is reached.
	URL string
	// State is alive, dead or left.
	State string
}

// Config configures a node's membership.
type Config struct {
	// NodeName must be unique in the cluster and stable across restarts,
	// so a node restarted on a new address takes its place at once.
	NodeName string
	// ClusterName is the memberlist label: clusters with different names
	// never exchange a packet.
	ClusterName string
	// Bind is the gossip HOST:PORT (TCP and UDP).
	Bind string
	// Advertise is the gossip address others use (default: Bind, or a
	// private address when Bind's host is unspecified).
	Advertise string
	// Join lists HOST:PORT seeds; a host may resolve to several addresses.
	Join []string
	// URL is this node's peer API URL, carried in its gossip metadata.
	URL string
	// Keys encrypt gossip (no secret: plain text, for loopback tests).
	Keys Keys
	// JoinInterval is how often the seeds are re-resolved and one is
	// joined again, so a node cut off by a partition or left alone by a
	// rolling restart finds the cluster by itself (default 10s; 1s while
	// this node knows no other member).
	JoinInterval time.Duration
	// Logger receives membership events (default: discard).
	Logger *slog.Logger
	// gossip overrides memberlist's timing in tests.
	gossip func(*memberlist.Config)
}

// deadRetention is how long peers.list keeps showing a dead or departed
// member.
const deadRetention = 10 * time.Minute

// Cluster is this node's membership. Its methods are safe for concurrent use.
type Cluster struct {
	cfg  Config
	log  *slog.Logger
	ml   *memberlist.Memberlist
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu      sync.Mutex
	members map[string]*Member
	since   map[string]time.Time // when a member was last seen to change state
	// alive is the sorted snapshot of alive members, replaced on each change,
	// so Owners reads it without a lock.
	alive atomic.Pointer[[]Member]
	left  atomic.Bool
	meta  *delegate
}

// Start binds the gossip port and returns; joining the seeds happens in the
// background (a seed that does not answer must not delay start-up), and a
// node that reaches none is a cluster of one that keeps trying.
func Start(cfg Config) (*Cluster, error) {
	if cfg.JoinInterval <= 0 {
		cfg.JoinInterval = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NodeName == "" {
		return nil, errors.New("cluster: a node name is required")
	}
	c := &Cluster{cfg: cfg, log: cfg.Logger, members: map[string]*Member{}, since: map[string]time.Time{}}
	c.alive.Store(&[]Member{})
	mc, err := c.memberlistConfig()
	if err != nil {
		return nil, err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: starting gossip on %s: %w", cfg.Bind, err)
	}
	c.ml = ml
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	c.wg.Add(1)
	go c.joinLoop(ctx)
	c.log.Info("cluster started", "node", cfg.NodeName, "cluster", cfg.ClusterName, "gossip", ml.LocalNode().Address(),
		"url", cfg.URL, "encrypted", cfg.Keys.Enabled(), "seeds", cfg.Join)
	return c, nil
}

func (c *Cluster) memberlistConfig() (*memberlist.Config, error) {
	cfg := c.cfg
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.Label = cfg.ClusterName
	host, port, err := splitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip bind %q: %w", cfg.Bind, err)
	}
	mc.BindAddr, mc.BindPort = host, port
	if host == "" {
		mc.BindAddr = "0.0.0.0"
	}
	mc.AdvertisePort = port
	if cfg.Advertise != "" {
		if mc.AdvertiseAddr, mc.AdvertisePort, err = splitHostPort(cfg.Advertise); err != nil {
			return nil, fmt.Errorf("cluster: gossip advertise %q: %w", cfg.Advertise, err)
		}
	} else if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		mc.AdvertiseAddr = host
	}
	// A node restarted with a new address (a rescheduled pod) takes its
	// name back as soon as the old incarnation is known dead, not after
	// the default of never.
	mc.DeadNodeReclaimTime = time.Nanosecond
	// Small enough that a node whose first join was refused (its old
	// incarnation not yet dead) is learned of soon; memberlist scales it
	// up with the cluster size.
	mc.PushPullInterval = 10 * time.Second
	// Bounds a join attempt to a seed that does not answer, and so how long
	// Stop may wait for the join loop (memberlist's default is 10s).
	mc.TCPTimeout = 5 * time.Second
	if cfg.Keys.Enabled() {
		kr, err := memberlist.NewKeyring(cfg.Keys.GossipKeys(), cfg.Keys.GossipKeys()[0])
		if err != nil {
			return nil, fmt.Errorf("cluster: keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	c.meta = &delegate{}
	c.meta.meta.Store(&Meta{URL: cfg.URL})
	mc.Delegate = c.meta
	mc.Events = events{c}
	mc.Logger = log.New(logWriter{c.log}, "", 0)
	if cfg.gossip != nil {
		cfg.gossip(mc)
	}
	if len(cfg.URL) > memberlist.MetaMaxSize-40 {
		return nil, fmt.Errorf("cluster: advertise URL longer than %d bytes", memberlist.MetaMaxSize-40)
	}
	return mc, nil
}

func splitHostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return h, port, nil
}

// Name is this node's name.
func (c *Cluster) Name() string { return c.cfg.NodeName }

// Alive returns the alive members, this node included, sorted by name.
// The slice is shared: do not modify it.
func (c *Cluster) Alive() []Member { return *c.alive.Load() }

// Owners returns the alive members ordered by ownership of key.
func (c *Cluster) Owners(key string) []Member { return Owners(key, c.Alive()) }

// Members returns every member known, dead and departed ones included
// (for a while), sorted by name.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Stop leaves the cluster gracefully (others stop choosing this node as an
// owner at once, instead of after failure detection) and shuts gossip down.
func (c *Cluster) Stop(timeout time.Duration) error {
	c.stop()
	c.wg.Wait()
	var err error
	if c.left.CompareAndSwap(false, true) {
		// Say "leaving" first: memberlist's leave message does not tell a
		// departure from a death, and peers.list should.
		c.meta.meta.Store(&Meta{URL: c.cfg.URL, Leaving: true})
		_ = c.ml.UpdateNode(timeout / 2)
		if lerr := c.ml.Leave(timeout / 2); lerr != nil {
			err = fmt.Errorf("cluster: leaving: %w", lerr)
		}
		err = errors.Join(err, c.ml.Shutdown())
	}
	return err
}

// set records a member's state; called by memberlist's event delegate.
func (c *Cluster) set(n *memberlist.Node, state string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	meta := decodeMeta(n.Meta)
	if meta.Leaving {
		state = StateLeft
	}
	m := &Member{Name: n.Name, Addr: n.Address(), URL: meta.URL, State: state}
	if old, ok := c.members[n.Name]; !ok || old.State != state {
		c.since[n.Name] = time.Now()
	}
	c.members[n.Name] = m
	// Forget members long gone.
	for name, mm := range c.members {
		if mm.State != StateAlive && time.Since(c.since[name]) > deadRetention {
			delete(c.members, name)
			delete(c.since, name)
		}
	}
	alive := make([]Member, 0, len(c.members))
	for _, mm := range c.members {
		if mm.State == StateAlive {
			alive = append(alive, *mm)
		}
	}
	slices.SortFunc(alive, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	c.alive.Store(&alive)
	return state
}

// joinLoop re-resolves the seeds and joins one of them every interval (or
// every second while alone), so membership heals after a partition.
func (c *Cluster) joinLoop(ctx context.Context) {
	defer c.wg.Done()
	c.joinOnce(ctx)
	for {
		d := c.cfg.JoinInterval
		if len(c.Alive()) <= 1 {
			d = min(d, time.Second)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		c.joinOnce(ctx)
	}
}

// joinOnce joins the seeds: all of them while this node knows no other
// member, otherwise one at random, since a push/pull with one member is a
// full state exchange.
func (c *Cluster) joinOnce(ctx context.Context) {
	addrs := c.resolveSeeds(ctx)
	if len(addrs) == 0 {
		return
	}
	if len(c.Alive()) > 1 {
		addrs = []string{addrs[rand.IntN(len(addrs))]}
	}
	n, err := c.ml.Join(addrs)
	if err != nil && n == 0 {
		c.log.Debug("joining the cluster", "seeds", addrs, "error", err)
	}
}

// resolveSeeds resolves each seed to its addresses, leaving out this
// node's own gossip address (joining oneself is harmless but useless).
func (c *Cluster) resolveSeeds(ctx context.Context) []string {
	self := c.ml.LocalNode().Address()
	seen := map[string]bool{}
	var out []string
	for _, seed := range c.cfg.Join {
		host, port, err := net.SplitHostPort(seed)
		if err != nil {
			continue // Validate rejects these
		}
		ips := []string{host}
		if net.ParseIP(host) == nil {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ips, err = net.DefaultResolver.LookupHost(rctx, host)
			cancel()
			if err != nil {
				c.log.Debug("resolving a seed", "seed", seed, "error", err)
				continue
			}
		}
		for _, ip := range ips {
			a := net.JoinHostPort(ip, port)
			if a != self && !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}

// Meta is what a node tells the others about itself.
type Meta struct {
	// URL is its peer API.
	URL string `json:"url"`
	// Leaving is set while it stops: others choose it no more.
	Leaving bool `json:"leaving,omitempty"`
}

func decodeMeta(b []byte) Meta {
	var m Meta
	if json.Unmarshal(b, &m) != nil {
		return Meta{}
	}
	return m
}

// delegate publishes this node's Meta.
type delegate struct{ meta atomic.Pointer[Meta] }

func (d *delegate) NodeMeta(limit int) []byte {
	b, _ := json.Marshal(d.meta.Load())
	if len(b) > limit {
		return nil
	}
	return b
}
func (*delegate) NotifyMsg([]byte)                           {}
func (*delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (*delegate) LocalState(join bool) []byte                { return nil }
func (*delegate) MergeRemoteState(buf []byte, join bool)     {}

// events feeds memberlist's membership changes into the member table. It
// runs under memberlist's lock: it must not call back into memberlist.
type events struct{ c *Cluster }

func (e events) NotifyJoin(n *memberlist.Node) {
	e.c.set(n, StateAlive)
	e.c.log.Info("cluster member joined", "member", n.Name, "addr", n.Address(), "url", decodeMeta(n.Meta).URL)
}

func (e events) NotifyUpdate(n *memberlist.Node) { e.c.set(n, StateAlive) }

func (e events) NotifyLeave(n *memberlist.Node) {
	state := e.c.set(n, StateDead)
	e.c.log.Info("cluster member "+state, "member", n.Name, "addr", n.Address())
}

// logWriter turns memberlist's "[LEVEL] memberlist: …" lines into slog records.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError, "[INFO]": slog.LevelInfo} {
		if strings.HasPrefix(msg, prefix) {
			level, msg = l, strings.TrimSpace(strings.TrimPrefix(msg, prefix))
			break
		}
	}
	w.log.Log(context.Background(), level, msg, "component", "memberlist")
	return len(p), nil
}
