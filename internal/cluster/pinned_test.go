package cluster

import (
	"fmt"
	"slices"
	"testing"
)

// TestOwnersPinned pins the owner order of a few keys: two versions of
// berth in a rolling update must compute the same owners, so any change to
// the hash, the mix or the sort direction must fail here, not in production.
func TestOwnersPinned(t *testing.T) {
	want := [][]string{
		{"node-2", "node-0", "node-3", "node-1"},
		{"node-2", "node-1", "node-3", "node-0"},
		{"node-2", "node-3", "node-1", "node-0"},
	}
	for i, w := range want {
		key := fmt.Sprintf("sha256:%064d", i)
		if got := names(Owners(key, members(4))); !slices.Equal(got, w) {
			t.Errorf("%s: owners %v, want %v (the owner order changed: nodes of two versions would disagree)", key, got, w)
		}
	}
}
