package cluster

import (
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Owners orders members by rendezvous (highest random weight) hashing of
// key: every node that sees the same members computes the same order, and
// a member joining or leaving moves only the keys it wins or held (about
// 1/N of them), so ownership is stable through a rolling update. members
// is not modified.
func Owners(key string, members []Member) []Member {
	type scored struct {
		m     Member
		score uint64
	}
	s := make([]scored, len(members))
	for i, m := range members {
		s[i] = scored{m, weight(m.Name, key)}
	}
	slices.SortFunc(s, func(a, b scored) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		// Equal scores (practically never): names break the tie the same
		// way everywhere.
		switch {
		case a.m.Name < b.m.Name:
			return -1
		case a.m.Name > b.m.Name:
			return 1
		}
		return 0
	})
	out := make([]Member, len(s))
	for i := range s {
		out[i] = s[i].m
	}
	return out
}

// weight is the member's score for key.
func weight(name, key string) uint64 {
	d := xxhash.New()
	_, _ = d.WriteString(name)
	_, _ = d.Write([]byte{0})
	_, _ = d.WriteString(key)
	// xxhash's avalanche is good, but names that differ in one trailing
	// byte would still correlate slightly; a final mix removes that.
	return mix(d.Sum64())
}

// mix is the splitmix64 finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
