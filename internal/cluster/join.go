package cluster

import (
	"context"
	"math/rand/v2"
	"net"
	"time"
)

// maxJoinSeeds bounds the seeds one join round tries: each join is a full
// push/pull of the member list, so joining every seed would make a node's
// start O(N) and a DaemonSet roll O(N²); one answering seed is enough.
const maxJoinSeeds = 3

// joinLoop re-resolves the seeds and joins every interval (every second
// while alone or while this node's name is contested or being taken
// back), so membership
// heals after a partition.
func (c *Cluster) joinLoop(ctx context.Context) {
	defer c.wg.Done()
	c.joinOnce(ctx)
	for {
		d := c.cfg.JoinInterval
		if len(c.Alive()) <= 1 || c.contested.Load() || c.reclaiming.Load() {
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

// joinOnce joins up to maxJoinSeeds random seeds, one at a time, stopping
// at the first that answers. A node that knows other members joins only
// when a seed is not one of them (a hint of a partition, or of a node that
// has not found this cluster yet): otherwise every node would push/pull a
// seed every interval for nothing. A node whose name is contested, or not
// yet taken back from its dead incarnation, joins a member: the push/pull
// shows whether the rival still holds the name, and offers this node's
// claim again.
func (c *Cluster) joinOnce(ctx context.Context) {
	addrs := c.resolveSeeds(ctx)
	alive := c.Alive()
	switch {
	case c.contested.Load() || c.reclaiming.Load():
		for _, m := range alive {
			if m.Addr != c.self {
				addrs = append(addrs, m.Addr)
			}
		}
	case len(alive) > 1:
		addrs = notMembers(addrs, alive)
	}
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	for _, a := range addrs[:min(len(addrs), maxJoinSeeds)] {
		if ctx.Err() != nil {
			return
		}
		if _, err := c.join([]string{a}); err != nil {
			c.log.Debug("joining the cluster", "seed", a, "error", err)
			continue
		}
		return
	}
}

// notMembers returns the addresses no alive member gossips from.
func notMembers(addrs []string, alive []Member) []string {
	known := make(map[string]bool, len(alive))
	for _, m := range alive {
		known[m.Addr] = true
	}
	var out []string
	for _, a := range addrs {
		if !known[a] {
			out = append(out, a)
		}
	}
	return out
}

// resolveSeeds resolves each seed to its addresses, leaving out this
// node's own gossip address (joining oneself is harmless but useless).
func (c *Cluster) resolveSeeds(ctx context.Context) []string {
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
			if a != c.self && !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}
