package peer

import (
	"errors"
	"sync"
	"time"
)

// nonceLen is the size of a peer token's random nonce.
const nonceLen = 16

// maxNonces bounds the seen-set: 65,536 verified peer requests within
// 2 x TokenValidity (about 4 MiB). Past it a new token is refused
// (errTooManyTokens) rather than a live nonce forgotten: the asking node
// goes to its next source, and no request can be replayed.
const maxNonces = 1 << 16

var errTooManyTokens = errors.New("peer: too many peer requests within the token validity")

// nonces is the seen-set of verified peer tokens: each nonce is kept until
// its token expires (its time plus TokenValidity), so a replay within the
// validity is refused and nothing older needs remembering. At most max
// entries. Safe for concurrent use.
type nonces struct {
	mu     sync.Mutex
	m      map[[nonceLen]byte]time.Time // nonce → when its token expires
	max    int
	pruned time.Time
}

func newNonces(max int) *nonces {
	return &nonces{m: make(map[[nonceLen]byte]time.Time), max: max}
}

// add records n, valid until until; ErrReplayedToken if it is recorded
// already.
func (s *nonces) add(n [nonceLen]byte, until, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[n]; ok {
		return ErrReplayedToken
	}
	if len(s.m) >= s.max || now.Sub(s.pruned) >= time.Second {
		s.prune(now)
	}
	if len(s.m) >= s.max {
		return errTooManyTokens
	}
	s.m[n] = until
	return nil
}

// prune drops the nonces of expired tokens (a replay of one is refused as
// expired).
func (s *nonces) prune(now time.Time) {
	s.pruned = now
	for n, until := range s.m {
		if now.After(until) {
			delete(s.m, n)
		}
	}
}

func (s *nonces) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
