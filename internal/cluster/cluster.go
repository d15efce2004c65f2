package cluster

import (
	"github.com/berth-mirror/berth/internal/peer"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// Member states, as peers.list shows them.
const (
	StateAlive = "alive"
	StateDead  = "dead"
	StateLeft  = "left"
	// StateConflict is this node's own state once it lost its name to a
	// node that started first (see Conflict).
	StateConflict = "conflict"
)

// Member is one node as this node sees it.
type Member struct {
	// Name is the node's unique, stable name.
	Name string
	// Addr is the gossip HOST:PORT.
	Addr string
	// URL is where its peer API is reached.
	URL string
	// State is alive, dead or left (or conflict: this node lost its name).
	State string
	// Conflict describes a recent claim of this member's name from another
	// address ("" if none).
	Conflict string
}

// Config configures a node's membership.
type Config struct {
	// NodeName must be unique in the cluster and stable across restarts,
	// so a node restarted on a new address takes its place (default:
	// DefaultNodeName of the hostname and the advertised gossip address,
	// which needs a fixed gossip port).
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
	Keys peer.Keys
	// JoinInterval is how often the seeds are re-resolved and one is
	// joined again, so a node cut off by a partition or left alone by a
	// rolling restart finds the cluster by itself (default 10s; 1s while
	// this node knows no other member).
	JoinInterval time.Duration
	// Logger receives membership events (default: discard).
	Logger *slog.Logger
	// Metrics counts name conflicts (nil: not counted).
	Metrics *Metrics
	// gossip overrides memberlist's timing in tests.
	gossip func(*memberlist.Config)
}

// deadRetention is how long peers.list keeps showing a dead or departed
// member.
const deadRetention = 10 * time.Minute

// Cluster is this node's membership. Its methods are safe for concurrent use.
// It is the peer client's membership (peer.Membership).
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	ml      *memberlist.Memberlist
	self    string // this node's advertised gossip address
	started int64  // unix nanos, in Meta: who started first keeps a contested name
	join    func([]string) (int, error)
	stop    context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	members map[string]*Member
	since   map[string]time.Time // when a member was last seen to change state
	// alive is the sorted snapshot of alive members, replaced on each change,
	// so Owners reads it without a lock.
	alive atomic.Pointer[[]Member]
	left  atomic.Bool // Leave has run
	down  atomic.Bool // gossip is shut down
	meta  *delegate

	// Name conflicts (conflict.go), under mu. contested mirrors lost != nil
	// for Owners, which takes no lock.
	lost           *Conflict
	conflicts      map[string]Conflict // by name, the latest seen
	conflictLogged map[string]time.Time
	contested      atomic.Bool
	// reclaiming: a join showed this node's name at another, dead or
	// departed, address; until one shows it here, joins go on every
	// second, each offering this node's claim again (memberlist takes it
	// once DeadNodeReclaimTime has passed).
	reclaiming atomic.Bool
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
	c := &Cluster{cfg: cfg, log: cfg.Logger, members: map[string]*Member{}, since: map[string]time.Time{},
		started: time.Now().UnixNano(), conflicts: map[string]Conflict{}, conflictLogged: map[string]time.Time{}}
	c.alive.Store(&[]Member{})
	mc, err := c.memberlistConfig()
	if err != nil {
		return nil, err
	}
	if c.cfg.NodeName == "" {
		if c.cfg.NodeName, err = defaultName(mc); err != nil {
			return nil, err
		}
		mc.Name = c.cfg.NodeName
	}
	c.log = c.log.With("node", c.cfg.NodeName)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: starting gossip on %s: %w", cfg.Bind, err)
	}
	c.ml = ml
	c.self = ml.LocalNode().Address()
	c.join = ml.Join
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	c.wg.Add(1)
	go c.joinLoop(ctx)
	c.log.Info("cluster started", "cluster", cfg.ClusterName, "gossip", ml.LocalNode().Address(),
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
	// A node restarted with a new address (a rescheduled pod) may take its
	// name back once the old incarnation left, or a few probe intervals
	// after it was found dead (memberlist's default is never). Not at
	// once: a live node wrongly declared dead refutes it within a few
	// gossip rounds, and must not have lost its name to another live node
	// claiming it meanwhile (see Conflict). Set below, after the test
	// timing overrides.
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
	c.meta.meta.Store(&Meta{URL: cfg.URL, Started: c.started})
	mc.Delegate = c.meta
	mc.Events = events{c}
	mc.Conflict = conflicts{c}
	mc.Merge = conflicts{c}
	mc.Logger = log.New(logWriter{c.log}, "", 0)
	if cfg.gossip != nil {
		cfg.gossip(mc)
	}
	mc.DeadNodeReclaimTime = 5 * mc.ProbeInterval
	// The largest Meta this node will send (while leaving) must fit.
	if b, _ := json.Marshal(Meta{URL: cfg.URL, Leaving: true, Started: c.started}); len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("cluster: advertise URL too long: the gossip metadata holding it is %d bytes, at most %d", len(b), memberlist.MetaMaxSize)
	}
	return mc, nil
}

// defaultName is DefaultNodeName for the address memberlist will
// advertise, which it sets explicitly so that both agree.
func defaultName(mc *memberlist.Config) (string, error) {
	if mc.AdvertisePort == 0 {
		return "", errors.New("cluster: a node name is required with gossip port 0")
	}
	ip := net.ParseIP(mc.AdvertiseAddr)
	if ip == nil && mc.BindAddr == "0.0.0.0" {
		// What memberlist advertises when bound to every interface.
		priv, err := sockaddr.GetPrivateIP()
		if err != nil || priv == "" {
			return "", fmt.Errorf("cluster: no private IP address to advertise and name this node after (set cluster.node_name): %v", err)
		}
		ip = net.ParseIP(priv)
		mc.AdvertiseAddr = priv
	}
	if ip == nil {
		return "", fmt.Errorf("cluster: cannot name this node after its gossip address %q: set cluster.node_name", mc.BindAddr)
	}
	host, _ := os.Hostname() // "" falls back to "berth"
	return DefaultNodeName(host, ip, mc.AdvertisePort), nil
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

var _ peer.Membership = (*Cluster)(nil)

// Owners returns the alive members ordered by ownership of key, as the
// peer client asks them (Cluster is its peer.Membership); none while this
// node has lost its name to another (it then fetches alone, and no member
// asks it: none knows it under its name).
func (c *Cluster) Owners(key string) []peer.Member {
	if c.contested.Load() {
		return nil
	}
	ms := Owners(key, c.Alive())
	out := make([]peer.Member, len(ms))
	for i, m := range ms {
		out[i] = peer.Member{Name: m.Name, URL: m.URL}
	}
	return out
}

// Members returns every member known, dead and departed ones included
// (for a while), sorted by name.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		mm := *m
		if cf, ok := c.conflicts[m.Name]; ok && time.Since(cf.At) < deadRetention {
			mm.Conflict = cf.String()
		}
		if m.Name == c.cfg.NodeName && c.lost != nil {
			mm.State, mm.Conflict = StateConflict, c.lost.String()
		}
		out = append(out, mm)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// leaveBudget bounds Leave: the Leaving meta update and the leave message
// each get half, each returning as soon as it has gone out.
const leaveBudget = 2 * time.Second

// Leave tells the cluster this node is going (others stop choosing it as
// an owner at once, instead of after failure detection) and returns once
// that has gone out, within ctx and leaveBudget. It does not wait for a
// join in flight: shutdown must not. Gossip keeps running until Stop, so
// this node still answers probes while it drains. A node that lost its
// name sends nothing. Safe to call more than once.
func (c *Cluster) Leave(ctx context.Context) error {
	if !c.left.CompareAndSwap(false, true) {
		return nil
	}
	if c.contested.Load() {
		// Its leave would name the holder of this node's name: the others
		// would take the holder for gone.
		return nil
	}
	budget := leaveBudget
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(dl))
	}
	// Say "leaving" first: memberlist's leave message does not tell a
	// departure from a death, and peers.list should.
	c.meta.meta.Store(&Meta{URL: c.cfg.URL, Leaving: true, Started: c.started})
	start := time.Now()
	_ = c.ml.UpdateNode(budget / 2)
	if err := c.ml.Leave(max(budget-time.Since(start), time.Millisecond)); err != nil {
		return fmt.Errorf("cluster: leaving: %w", err)
	}
	return nil
}

// Stop leaves the cluster if Leave was not called, stops the join loop,
// waiting within ctx for a join in flight (memberlist's Join takes no
// context; TCPTimeout bounds it), and shuts gossip down.
func (c *Cluster) Stop(ctx context.Context) error {
	err := c.Leave(ctx)
	c.stop()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = errors.Join(err, fmt.Errorf("cluster: a join still in flight at shutdown: %w", ctx.Err()))
	}
	if c.down.CompareAndSwap(false, true) {
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

// Meta is what a node tells the others about itself.
type Meta struct {
	// URL is its peer API.
	URL string `json:"url"`
	// Leaving is set while it stops: others choose it no more.
	Leaving bool `json:"leaving,omitempty"`
	// Started is when it started (unix nanoseconds): of two nodes given
	// one name, the one that started first keeps it.
	Started int64 `json:"started,omitempty"`
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
	if strings.HasPrefix(msg, "memberlist: Conflicting address") {
		level = slog.LevelDebug // at every push/pull; the conflict delegate reports it once
	}
	w.log.Log(context.Background(), level, msg, "component", "memberlist")
	return len(p), nil
}
