package cluster

import (
	"github.com/berth-mirror/berth/internal/peer"

	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// fastGossip makes failure detection and state exchange quick for tests.
func fastGossip(mc *memberlist.Config) {
	mc.ProbeInterval = 100 * time.Millisecond
	mc.ProbeTimeout = 50 * time.Millisecond
	mc.GossipInterval = 20 * time.Millisecond
	mc.SuspicionMult = 2
	mc.PushPullInterval = 300 * time.Millisecond
	mc.TCPTimeout = time.Second
}

type nodeOpt func(*Config)

func startNode(t *testing.T, name string, join []string, opts ...nodeOpt) *Cluster {
	t.Helper()
	cfg := Config{
		NodeName:     name,
		ClusterName:  "test",
		Bind:         "127.0.0.1:0",
		Join:         join,
		URL:          "http://" + name + ".test:5000",
		JoinInterval: 200 * time.Millisecond,
		gossip:       fastGossip,
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(stopCtx(t)) })
	return c
}

// stopCtx is a Stop deadline ample for a join in flight (TCPTimeout 1s).
func stopCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (c *Cluster) addr() string { return c.ml.LocalNode().Address() }

// waitAlive waits until c sees exactly the named members alive.
func waitAlive(t *testing.T, c *Cluster, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := names(c.Alive())
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sees alive %v, want %v (members: %+v)", c.Name(), got, want, c.Members())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMembership(t *testing.T) {
	a := startNode(t, "a", nil)
	b := startNode(t, "b", []string{a.addr()})
	// c knows only b; and a seed that does not answer is harmless.
	c := startNode(t, "c", []string{"127.0.0.1:1", b.addr()})
	for _, n := range []*Cluster{a, b, c} {
		waitAlive(t, n, "a", "b", "c")
	}
	for _, m := range a.Members() {
		if m.URL != "http://"+m.Name+".test:5000" {
			t.Errorf("member %s advertises %q", m.Name, m.URL)
		}
	}
	// Every node computes the same owners.
	for i := range 50 {
		key := fmt.Sprintf("sha256:%d", i)
		if x, y, z := peerNames(a.Owners(key)), peerNames(b.Owners(key)), peerNames(c.Owners(key)); !slices.Equal(x, y) || !slices.Equal(y, z) {
			t.Fatalf("%s: owners differ between nodes: %v %v %v", key, x, y, z)
		}
	}

	// A graceful stop is seen as "left" at once.
	if err := c.Stop(stopCtx(t)); err != nil {
		t.Fatal(err)
	}
	waitAlive(t, a, "a", "b")
	if st := memberState(a, "c"); st != StateLeft {
		t.Errorf("c is %q after a graceful stop, want %q", st, StateLeft)
	}
}

func memberState(c *Cluster, name string) string {
	for _, m := range c.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

// TestRestartOnNewAddress: a node that crashes and comes back under the
// same name on another address (a rescheduled pod) takes its place.
func TestRestartOnNewAddress(t *testing.T) {
	a := startNode(t, "a", nil)
	b := startNode(t, "b", []string{a.addr()})
	waitAlive(t, a, "a", "b")
	old := b.addr()
	// A crash: no leave message.
	b.left.Store(true)
	b.stop()
	b.wg.Wait()
	if err := b.ml.Shutdown(); err != nil {
		t.Fatal(err)
	}
	b2 := startNode(t, "b", []string{a.addr()})
	if b2.addr() == old {
		t.Fatalf("restarted on the same address %s", old)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ms := a.Alive()
		if len(ms) == 2 && ms[1].Name == "b" && ms[1].Addr == b2.addr() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a does not see b at its new address %s: %+v", b2.addr(), a.Members())
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitAlive(t, b2, "a", "b")
	// It may have lost the name to its old incarnation for a moment; not
	// for good.
	waitFor(t, "b2 holds its name", func() bool { _, lost := b2.Lost(); return !lost })
}

// TestClustersNeverMerge: a node of another cluster (name or secret) that
// is told to join gets nowhere, and neither side learns of the other.
func TestClustersNeverMerge(t *testing.T) {
	tests := []struct {
		name  string
		mine  nodeOpt
		other nodeOpt
	}{
		{"different names", func(c *Config) {}, func(c *Config) { c.ClusterName = "other" }},
		{"different secrets", func(c *Config) { c.Keys = peer.NewKeys("one") }, func(c *Config) { c.Keys = peer.NewKeys("two") }},
		{"secret and none", func(c *Config) { c.Keys = peer.NewKeys("one") }, func(c *Config) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := startNode(t, "a", nil, tt.mine)
			b := startNode(t, "b", []string{a.addr()}, tt.mine)
			x := startNode(t, "x", []string{a.addr(), b.addr()}, tt.other)
			waitAlive(t, a, "a", "b")
			time.Sleep(time.Second) // several join rounds and gossip intervals
			for _, n := range []*Cluster{a, b} {
				if got := names(n.Alive()); !slices.Equal(got, []string{"a", "b"}) {
					t.Errorf("%s sees %v", n.Name(), got)
				}
			}
			if got := names(x.Alive()); !slices.Equal(got, []string{"x"}) {
				t.Errorf("x sees %v", got)
			}
		})
	}
}

// TestEncryptedWithRotation: nodes with the same secret form a cluster; a
// node midway through a rotation joins them.
func TestEncryptedWithRotation(t *testing.T) {
	// Rotation: every node first accepts the new secret (extra), then
	// every node makes it primary; nodes at either step understand each other.
	a := startNode(t, "a", nil, func(c *Config) { c.Keys = peer.NewKeys("old", "new") })
	b := startNode(t, "b", []string{a.addr()}, func(c *Config) { c.Keys = peer.NewKeys("new", "old") })
	waitAlive(t, a, "a", "b")
	waitAlive(t, b, "a", "b")
}

func TestLogWriter(t *testing.T) {
	var sb strings.Builder
	w := logWriter{slog.New(slog.NewTextHandler(&sb, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	_, _ = w.Write([]byte("[WARN] memberlist: something\n"))
	if !strings.Contains(sb.String(), "level=WARN") || !strings.Contains(sb.String(), `msg="memberlist: something"`) {
		t.Fatalf("got %q", sb.String())
	}
}

// TestStartDoesNotWaitForSeeds: a seed that accepts connections but never
// answers delays neither Start nor, beyond memberlist's stream timeout, Stop.
func TestStartDoesNotWaitForSeeds(t *testing.T) {
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	start := time.Now()
	c := startNode(t, "a", []string{hole.Addr().String()})
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Start took %s with a silent seed", d)
	}
	time.Sleep(100 * time.Millisecond) // the join loop is now stuck on the seed
	start = time.Now()
	if err := c.Stop(stopCtx(t)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 7*time.Second {
		t.Fatalf("Stop took %s", d)
	}
}

// silentSeed is a TCP listener that accepts and never answers, like a seed
// whose process hangs: a join to it takes memberlist's TCPTimeout.
func silentSeed(t *testing.T) (addr string, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	acc := make(chan struct{}, 16)
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			select {
			case acc <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String(), acc
}

// TestLeaveDoesNotWaitForAJoin: a node stopping while its join to a silent
// seed is in flight tells the others it is leaving at once, not after the
// join times out.
func TestLeaveDoesNotWaitForAJoin(t *testing.T) {
	seed, accepted := silentSeed(t)
	slowJoin := func(c *Config) {
		c.gossip = func(mc *memberlist.Config) { fastGossip(mc); mc.TCPTimeout = 5 * time.Second }
	}
	b := startNode(t, "b", []string{seed}, slowJoin)
	select {
	case <-accepted: // b's join is in flight, for 5s
	case <-time.After(5 * time.Second):
		t.Fatal("b never joined the seed")
	}
	a := startNode(t, "a", []string{b.addr()})
	waitAlive(t, a, "a", "b")
	waitAlive(t, b, "a", "b")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- b.Stop(ctx) }()
	for memberState(a, "b") != StateLeft {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("a sees b %q 2s after b began to stop", memberState(a, "b"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("a saw b leave %s after Stop", time.Since(start).Round(time.Millisecond))
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}
