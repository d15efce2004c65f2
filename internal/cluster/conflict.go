package cluster

import (
	"bytes"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// Name conflicts: two live nodes given one name. memberlist keeps the
// address it knew first and refuses the other's alive messages, so the
// cluster would silently hold one of them and leave the other alone. Every
// node decides who keeps the name by the same rule (the earlier start time
// in the claimants' Meta, then the smaller address), so the node that lost
// knows it, reports it and stops acting as a member until it is renamed.

// Conflict roles, the label of berth_cluster_name_conflicts_total.
const (
	// RoleLost: this node's name is held by a node that started first.
	RoleLost = "lost"
	// RoleKept: this node keeps its name; another node claims it too.
	RoleKept = "kept"
	// RoleObserved: two other nodes claim one name.
	RoleObserved = "observed"
)

// conflictLogEvery limits the ERROR log of one conflict (a lost node
// meets its rival at every push/pull).
const conflictLogEvery = time.Minute

// Conflict is a name claimed from two addresses.
type Conflict struct {
	Name string
	// Holder keeps the name (it started first); Claimant is refused.
	Holder, Claimant string
	// Role is this node's part: lost, kept or observed.
	Role string
	// At is when it was last seen.
	At time.Time
}

func (c Conflict) String() string {
	switch c.Role {
	case RoleLost:
		return fmt.Sprintf("name %q is held by %s, which started first: this node is not a cluster member until it is given another cluster.node_name", c.Name, c.Holder)
	case RoleKept:
		return fmt.Sprintf("name %q is also claimed by %s, which started later and is refused", c.Name, c.Claimant)
	default:
		return fmt.Sprintf("name %q is claimed by %s and by %s (refused: started later)", c.Name, c.Holder, c.Claimant)
	}
}

// claimant is one side of a conflict.
type claimant struct {
	addr    string
	ip      []byte // 16-byte form, so IPv4 and IPv4-in-IPv6 compare alike
	port    uint16
	started int64
}

func claimantOf(n *memberlist.Node) claimant {
	return claimant{addr: n.Address(), ip: n.Addr.To16(), port: n.Port, started: decodeMeta(n.Meta).Started}
}

// loses reports whether a loses the name to b: the later start loses (a
// node without a start time, an older berth, counts as the earliest),
// then the larger address. Both claimants compute the same answer.
func (a claimant) loses(b claimant) bool {
	if a.started != b.started {
		return a.started > b.started
	}
	if c := bytes.Compare(a.ip, b.ip); c != 0 {
		return c > 0
	}
	return a.port > b.port
}

// conflicts is the conflict delegate: memberlist calls NotifyConflict on
// every node that gets an alive message for a known name from another
// address (a node seeing its own name claimed included), under its node
// lock: it must not call back into memberlist.
type conflicts struct{ c *Cluster }

func (d conflicts) NotifyConflict(existing, other *memberlist.Node) {
	c := d.c
	if existing.Name == c.cfg.NodeName {
		me := claimant{addr: c.self, ip: existing.Addr.To16(), port: existing.Port, started: c.started}
		rival := claimantOf(other)
		if me.loses(rival) {
			c.conflict(Conflict{Name: existing.Name, Holder: rival.addr, Claimant: me.addr, Role: RoleLost})
		} else {
			c.conflict(Conflict{Name: existing.Name, Holder: me.addr, Claimant: rival.addr, Role: RoleKept})
		}
		return
	}
	if st := c.memberStateOf(existing.Name); st != StateAlive {
		// A node restarted on a new address before its old incarnation's
		// name may be reclaimed: not two live nodes.
		c.log.Debug("cluster name claimed from a new address", "member", existing.Name,
			"old_addr", existing.Address(), "old_state", st, "new_addr", other.Address())
		return
	}
	a, b := claimantOf(existing), claimantOf(other)
	if a.loses(b) {
		a, b = b, a
	}
	c.conflict(Conflict{Name: existing.Name, Holder: a.addr, Claimant: b.addr, Role: RoleObserved})
}

// NotifyMerge sees a peer's whole member list at each join push/pull:
// once it shows this node's name at this node's address, or the holder
// dead or gone, the name is no longer contested (a node restarted on a new
// address lost to its old, not yet dead, incarnation: it gets its place
// back).
func (d conflicts) NotifyMerge(peers []*memberlist.Node) error {
	c := d.c
	for _, p := range peers {
		if p.Name != c.cfg.NodeName {
			continue
		}
		switch {
		case p.Address() == c.self:
			c.reclaiming.Store(false)
			c.clearLost()
		case p.State == memberlist.StateDead || p.State == memberlist.StateLeft:
			c.reclaiming.Store(true)
			c.clearLost()
		}
	}
	return nil
}

// conflict records and reports a conflict.
func (c *Cluster) conflict(cf Conflict) {
	cf.At = time.Now()
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.NameConflicts.WithLabelValues(cf.Role).Inc()
	}
	c.mu.Lock()
	key := cf.Role + " " + cf.Name + " " + cf.Holder + " " + cf.Claimant
	quiet := cf.At.Sub(c.conflictLogged[key]) < conflictLogEvery
	if !quiet {
		c.conflictLogged[key] = cf.At
	}
	for k, t := range c.conflictLogged {
		if cf.At.Sub(t) > deadRetention {
			delete(c.conflictLogged, k)
		}
	}
	if cf.Role == RoleLost {
		c.lost = &cf
		c.contested.Store(true)
	} else {
		c.conflicts[cf.Name] = cf
	}
	c.mu.Unlock()
	msg := "cluster node name conflict: " + cf.String()
	attrs := []any{"name", cf.Name, "holder", cf.Holder, "claimant", cf.Claimant, "role", cf.Role}
	switch {
	case quiet:
		c.log.Debug(msg, attrs...)
	case cf.Role == RoleObserved:
		c.log.Warn(msg, attrs...)
	default:
		c.log.Error(msg, attrs...)
	}
}

func (c *Cluster) clearLost() {
	c.mu.Lock()
	lost := c.lost
	c.lost = nil
	c.contested.Store(false)
	c.mu.Unlock()
	if lost != nil {
		c.log.Info("cluster name conflict over: the other claimant is gone", "name", lost.Name, "holder", lost.Holder)
	}
}

// Lost returns the conflict this node lost its name in, if it has.
func (c *Cluster) Lost() (Conflict, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lost == nil {
		return Conflict{}, false
	}
	return *c.lost, true
}

func (c *Cluster) memberStateOf(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.members[name]; ok {
		return m.State
	}
	return ""
}
