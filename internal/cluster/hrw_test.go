package cluster

import (
	"fmt"
	"slices"
	"testing"

	"github.com/berth-mirror/berth/internal/peer"
)

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

// peerNames are the names of members as the peer client sees them.
func peerNames(ms []peer.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func members(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{Name: fmt.Sprintf("node-%d", i), State: StateAlive}
	}
	return ms
}

func TestOwnersDeterministic(t *testing.T) {
	ms := members(5)
	rev := slices.Clone(ms)
	slices.Reverse(rev)
	for i := range 100 {
		key := fmt.Sprintf("sha256:%064d", i)
		a, b := Owners(key, ms), Owners(key, rev)
		if !slices.Equal(names(a), names(b)) {
			t.Fatalf("%s: order depends on the input order: %v vs %v", key, names(a), names(b))
		}
		if len(a) != 5 {
			t.Fatalf("got %d owners, want every member", len(a))
		}
	}
	if ms[0].Name != "node-0" {
		t.Fatal("Owners modified its input")
	}
}

func TestOwnersTable(t *testing.T) {
	tests := []struct {
		name    string
		members []Member
		want    int
	}{
		{"none", nil, 0},
		{"one", members(1), 1},
		{"three", members(3), 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Owners("sha256:x", tt.members)
			if len(got) != tt.want {
				t.Fatalf("got %d owners, want %d", len(got), tt.want)
			}
			if tt.want == 1 && got[0].Name != "node-0" {
				t.Fatalf("a cluster of one owns everything, got %v", names(got))
			}
		})
	}
}

// TestOwnersBalanceAndStability checks the two properties ownership needs:
// keys spread evenly, and removing a member moves only the keys it owned.
func TestOwnersBalanceAndStability(t *testing.T) {
	const keys = 20000
	ms := members(5)
	first := map[string]int{}
	before := make([]string, keys)
	for i := range keys {
		o := Owners(fmt.Sprintf("sha256:%d", i), ms)[0].Name
		before[i] = o
		first[o]++
	}
	for _, m := range ms {
		if n := first[m.Name]; n < keys/5*8/10 || n > keys/5*12/10 {
			t.Errorf("%s owns %d of %d keys: not within 20%% of an even share", m.Name, n, keys)
		}
	}
	gone := "node-2"
	rest := slices.DeleteFunc(slices.Clone(ms), func(m Member) bool { return m.Name == gone })
	for i := range keys {
		key := fmt.Sprintf("sha256:%d", i)
		full := Owners(key, ms)
		o := Owners(key, rest)
		if before[i] != gone && o[0].Name != before[i] {
			t.Fatalf("%s moved from %s to %s though %s was not its owner", key, before[i], o[0].Name, gone)
		}
		// The new first owner of the departed member's keys is its old second.
		if before[i] == gone && o[0].Name != full[1].Name {
			t.Fatalf("%s: new owner %s, want the old second owner %s", key, o[0].Name, full[1].Name)
		}
	}
}
