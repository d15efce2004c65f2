package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
)

// TestJoinOnce: one join round tries at most maxJoinSeeds seeds, one at a
// time, and stops at the first that answers; a node that knows other
// members joins only seeds that are not among them.
func TestJoinOnce(t *testing.T) {
	var seeds []string
	for i := range 10 {
		seeds = append(seeds, fmt.Sprintf("10.0.0.%d:7946", i+1))
	}
	members := func(addrs ...string) []Member {
		ms := []Member{{Name: "self", Addr: "10.0.0.100:7946", State: StateAlive}}
		for i, a := range addrs {
			ms = append(ms, Member{Name: fmt.Sprint("m", i), Addr: a, State: StateAlive})
		}
		return ms
	}
	tests := []struct {
		name      string
		alive     []Member
		answering int // how many of the first attempts fail before one answers (-1: none answers)
		cancelled bool
		contested bool
		want      int      // join attempts
		only      []string // when set, every attempt is one of these
	}{
		{name: "alone, the first seed answers", alive: members(), answering: 0, want: 1},
		{name: "alone, the second answers", alive: members(), answering: 1, want: 2},
		{name: "alone, none answers", alive: members(), answering: -1, want: maxJoinSeeds},
		{name: "every seed a member", alive: members(seeds...), answering: -1, want: 0},
		{name: "two seeds not members", alive: members(seeds[2:]...), answering: -1, want: 2, only: seeds[:2]},
		{name: "name contested: joins a member to learn when the rival is gone", alive: members(seeds...), contested: true, answering: 0, want: 1},
		{name: "shutting down", alive: members(), answering: -1, cancelled: true, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Cluster{cfg: Config{Join: seeds}, log: slog.New(slog.DiscardHandler), self: "10.0.0.100:7946"}
			c.alive.Store(&tt.alive)
			c.contested.Store(tt.contested)
			var tried []string
			c.join = func(addrs []string) (int, error) {
				if len(addrs) != 1 {
					t.Fatalf("one join call for %d addresses", len(addrs))
				}
				tried = append(tried, addrs[0])
				if tt.answering >= 0 && len(tried) > tt.answering {
					return 1, nil
				}
				return 0, errors.New("no answer")
			}
			ctx, cancel := context.WithCancel(context.Background())
			if tt.cancelled {
				cancel()
			}
			defer cancel()
			c.joinOnce(ctx)
			if len(tried) != tt.want {
				t.Fatalf("%d join attempts (%v), want %d", len(tried), tried, tt.want)
			}
			for _, a := range tried {
				if tt.only != nil && !slices.Contains(tt.only, a) {
					t.Errorf("joined %s, a member already", a)
				}
			}
			if len(slices.Compact(slices.Sorted(slices.Values(tried)))) != len(tried) {
				t.Errorf("a seed tried twice: %v", tried)
			}
		})
	}
}
