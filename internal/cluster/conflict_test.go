package cluster

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLoses(t *testing.T) {
	node := func(ip string, port uint16, started int64) claimant {
		n := &memberlist.Node{Addr: net.ParseIP(ip), Port: port}
		if started != 0 {
			n.Meta = []byte(`{"url":"http://x","started":` + strconv.FormatInt(started, 10) + `}`)
		}
		return claimantOf(n)
	}
	tests := []struct {
		name string
		a, b claimant
		want bool // a loses to b
	}{
		{"later start loses", node("10.0.0.1", 7946, 200), node("10.0.0.2", 7946, 100), true},
		{"earlier start keeps", node("10.0.0.2", 7946, 100), node("10.0.0.1", 7946, 200), false},
		{"no start time is the earliest", node("10.0.0.1", 7946, 100), node("10.0.0.2", 7946, 0), true},
		{"tie: larger address loses", node("10.0.0.2", 7946, 100), node("10.0.0.10", 7946, 100), false},
		{"tie: larger address loses (other side)", node("10.0.0.10", 7946, 100), node("10.0.0.2", 7946, 100), true},
		{"tie: same IP, larger port loses", node("10.0.0.1", 7947, 100), node("10.0.0.1", 7946, 100), true},
		{"IPv4 against IPv4-mapped IPv6", node("::ffff:10.0.0.1", 7946, 100), node("10.0.0.2", 7946, 100), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.loses(tt.b); got != tt.want {
				t.Errorf("a loses: %v, want %v", got, tt.want)
			}
			if tt.a.addr != tt.b.addr && tt.b.loses(tt.a) == tt.want {
				t.Errorf("both sides decide alike: b loses too, or neither does")
			}
		})
	}
}

// TestNameConflict: a node given the name of a live node that started
// first loses it: it reports the conflict, owns nothing and is counted;
// the holder keeps its name and reports the claim; a third node sees both.
// Once the holder leaves, the loser takes the name.
func TestNameConflict(t *testing.T) {
	m1, m2, mw := NewMetrics(), NewMetrics(), NewMetrics()
	x1 := startNode(t, "x", nil, withMetrics(m1))
	w := startNode(t, "w", []string{x1.addr()}, withMetrics(mw))
	waitAlive(t, w, "w", "x")
	x2 := startNode(t, "x", []string{x1.addr()}, withMetrics(m2))

	waitFor(t, "x2 loses its name", func() bool { _, lost := x2.Lost(); return lost })
	cf, _ := x2.Lost()
	if cf.Holder != x1.addr() || cf.Claimant != x2.addr() || cf.Role != RoleLost {
		t.Errorf("x2's conflict: %+v (x1 %s, x2 %s)", cf, x1.addr(), x2.addr())
	}
	if _, lost := x1.Lost(); lost {
		t.Error("x1, which started first, lost its name too")
	}
	if o := x2.Owners("sha256:k"); len(o) != 0 {
		t.Errorf("the loser still has owners: %v", o)
	}
	if o := x1.Owners("sha256:k"); len(o) != 2 {
		t.Errorf("the holder's owners: %v", o)
	}
	self := memberOf(x2, "x")
	if self.State != StateConflict || !strings.Contains(self.Conflict, x1.addr()) {
		t.Errorf("the loser's own row: %+v", self)
	}
	waitFor(t, "x1 reports the claim", func() bool { return strings.Contains(memberOf(x1, "x").Conflict, x2.addr()) })
	if self := memberOf(x1, "x"); self.State != StateAlive {
		t.Errorf("the holder's own row: %+v", self)
	}
	waitFor(t, "w sees the conflict", func() bool { return strings.Contains(memberOf(w, "x").Conflict, x2.addr()) })
	for _, c := range []struct {
		m    *Metrics
		role string
	}{{m2, RoleLost}, {m1, RoleKept}, {mw, RoleObserved}} {
		if n := testutil.ToFloat64(c.m.NameConflicts.WithLabelValues(c.role)); n < 1 {
			t.Errorf("berth_cluster_name_conflicts_total{role=%q} = %v", c.role, n)
		}
	}
	if n := testutil.ToFloat64(m1.NameConflicts.WithLabelValues(RoleLost)); n != 0 {
		t.Errorf("the holder counted %v conflicts lost", n)
	}

	// The holder goes: the loser takes its name back.
	if err := x1.Stop(stopCtx(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "x2 gets its name", func() bool { _, lost := x2.Lost(); return !lost })
	waitFor(t, "w sees x at x2's address", func() bool { m := memberOf(w, "x"); return m.Addr == x2.addr() && m.State == StateAlive })
	waitAlive(t, x2, "w", "x")
}

// TestLoserStopsSilently: the node that lost its name sends no leave when
// it stops: the others would take the holder of the name for gone.
func TestLoserStopsSilently(t *testing.T) {
	x1 := startNode(t, "x", nil)
	w := startNode(t, "w", []string{x1.addr()})
	waitAlive(t, w, "w", "x")
	x2 := startNode(t, "x", []string{x1.addr(), w.addr()})
	waitFor(t, "x2 loses its name", func() bool { _, lost := x2.Lost(); return lost })
	if err := x2.Stop(stopCtx(t)); err != nil {
		t.Fatal(err)
	}
	for range 50 { // several gossip rounds
		if m := memberOf(w, "x"); m.State != StateAlive || m.Addr != x1.addr() {
			t.Fatalf("w sees x %s at %s after the loser stopped (holder %s)", m.State, m.Addr, x1.addr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func withMetrics(m *Metrics) nodeOpt { return func(c *Config) { c.Metrics = m } }

func memberOf(c *Cluster, name string) Member {
	for _, m := range c.Members() {
		if m.Name == name {
			return m
		}
	}
	return Member{}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
