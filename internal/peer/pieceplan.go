package peer

import (
	"strconv"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/fetch"
)

// Piece owners. Each piece of a blob has its own rendezvous order (over its
// key, fetch.PieceKey), so that a blob's pieces, and the upload of a hot
// blob, are spread over the cluster. Pure rendezvous spreads them unevenly
// when a blob has few pieces per member (24 pieces on 6 nodes: one node
// owns 10 about one time in thirty, and uploads twice the blob), so the
// owner of each piece is chosen with bounded loads (Mirrokni, Thorup and
// Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2016): pieces in
// order, each to the first member of its own rendezvous order that owns
// fewer than ceil(pieces/members) of the blob's pieces so far. Every node
// that sees the same members computes the same owners; a member joining or
// leaving moves few of them.

// maxPiecePlans bounds the owner tables kept (one per blob being assembled;
// 1024 owners each at most: 16 tables take under 1 MiB).
const maxPiecePlans = 16

type piecePlan struct {
	members uint64   // the membership it was computed for (membersKey)
	owners  []Member // per piece
}

type piecePlans struct {
	mu sync.Mutex
	m  map[string]piecePlan // at most maxPiecePlans
}

// membersKey identifies a set of members whatever their order.
func membersKey(ms []Member) uint64 {
	var k uint64
	for _, m := range ms {
		k += xxhash.Sum64String(m.Name) // a sum: the same for any order
	}
	return k
}

// pieceOwner returns the owner of piece i of blob dg of size bytes and the
// piece's own rendezvous order (for the next members to ask).
func (f *Fetcher) pieceOwner(dg digest.Digest, size int64, i int) (Member, []Member) {
	plan := fetch.PlanFor(size)
	order := f.c.Owners(fetch.PieceKey(dg, plan, i).String())
	if len(order) == 0 {
		return Member{}, nil
	}
	key := string(dg) + "/" + strconv.FormatInt(size, 10)
	mk := membersKey(order)
	f.plans.mu.Lock()
	p, ok := f.plans.m[key]
	f.plans.mu.Unlock()
	if !ok || p.members != mk || len(p.owners) != plan.Count {
		p = piecePlan{members: mk, owners: f.boundedOwners(dg, plan, len(order))}
		f.plans.mu.Lock()
		if len(f.plans.m) >= maxPiecePlans {
			for k := range f.plans.m {
				delete(f.plans.m, k) // an arbitrary one: it is recomputed if needed
				break
			}
		}
		f.plans.m[key] = p
		f.plans.mu.Unlock()
	}
	return p.owners[i], order
}

// boundedOwners assigns each piece of plan to the first member of its
// rendezvous order that owns fewer than ceil(count/n) pieces so far.
func (f *Fetcher) boundedOwners(dg digest.Digest, plan fetch.Plan, n int) []Member {
	limit := (plan.Count + n - 1) / n
	load := make(map[string]int, n)
	owners := make([]Member, plan.Count)
	for j := range plan.Count {
		order := f.c.Owners(fetch.PieceKey(dg, plan, j).String())
		owners[j] = order[0]
		for _, m := range order {
			if load[m.Name] < limit {
				owners[j] = m
				break
			}
		}
		load[owners[j].Name]++
	}
	return owners
}
