package peer

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// TokenValidity is how far a token's timestamp may be from the verifier's
// clock, either way: long enough for clock skew between nodes, short
// enough that a captured token is soon useless.
const TokenValidity = 60 * time.Second

// Token errors; ErrNoToken maps to 401, the others to 403.
var (
	ErrNoToken      = errors.New("peer: peer request without a token")
	ErrBadToken     = errors.New("peer: peer token is not valid")
	ErrExpiredToken = errors.New("peer: peer token has expired")
)

// ErrReplayedToken means a peer token was presented before: a captured
// request cannot be sent again within its validity.
var ErrReplayedToken = errors.New("peer: peer token was already used")

// tokenVersion prefixes every token. Tokens of earlier versions (no
// version, no nonce, upstream token not covered) are refused: in a cluster
// of mixed versions, peer requests between old and new nodes fail with 403
// and the asking node goes to the next source, then the upstream.
const tokenVersion = "v2"

// signedHeaders are the request headers a peer token covers besides the
// method, the request URI (path and every query parameter: registry,
// repository, verified, held, from) and the digest (SignedHeaders):
// those that change what the owner does or serves. An absent header is
// signed as empty, so one cannot be added either. Read only.
var signedHeaders = SignedHeaders()

// Keys are the keys derived from the cluster secrets: the first is the
// primary (gossip encryption, signing), the others are accepted too, so a
// secret can be rotated without a flag day. The zero Keys (no secret) means
// an unauthenticated, unencrypted cluster, for loopback tests only. Copies
// share the set of nonces seen (Verify).
type Keys struct {
	gossip [][]byte // AES-256 keys
	token  [][]byte // HMAC keys
	seen   *nonces
}

// NewKeys derives the keys from the primary secret and the extra ones;
// empty strings are skipped.
func NewKeys(primary string, extra ...string) Keys {
	k := Keys{seen: newNonces(maxNonces)}
	for _, s := range append([]string{primary}, extra...) {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		// Distinct derivations: a gossip key never doubles as a token key.
		g := sha256.Sum256([]byte("berth-gossip\x00" + s))
		t := sha256.Sum256([]byte("berth-peer-token\x00" + s))
		k.gossip = append(k.gossip, g[:])
		k.token = append(k.token, t[:])
	}
	return k
}

// Enabled reports whether there is a secret.
func (k Keys) Enabled() bool { return len(k.token) > 0 }

// GossipKeys returns the AES keys, primary first.
func (k Keys) GossipKeys() [][]byte { return k.gossip }

// Sign returns the token for a request with none of SignedHeaders:
// "v2.<unix seconds>.<hex nonce>.<hex HMAC>" of method, request URI (path
// and query), digest, time and nonce. Without a secret it returns "".
func (k Keys) Sign(method, uri, digest string, now time.Time) string {
	return k.sign(method, uri, digest, http.Header{}, now)
}

func (k Keys) sign(method, uri, digest string, h http.Header, now time.Time) string {
	if !k.Enabled() {
		return ""
	}
	var n [nonceLen]byte
	_, _ = rand.Read(n[:]) // never fails (crypto/rand, Go 1.24+)
	ts, nonce := strconv.FormatInt(now.Unix(), 10), hex.EncodeToString(n[:])
	return tokenVersion + "." + ts + "." + nonce + "." + hex.EncodeToString(mac(k.token[0], method, uri, digest, ts, nonce, h))
}

// Authorize sets the Authorization header of a peer request, covering its
// method, URI, SignedHeaders (set them first) and digest.
func (k Keys) Authorize(r *http.Request, digest string, now time.Time) {
	if tok := k.sign(r.Method, r.URL.RequestURI(), digest, r.Header, now); tok != "" {
		r.Header.Set("Authorization", AuthScheme+" "+tok)
	}
}

// Verify checks the token of a peer request for digest against every key,
// its time against TokenValidity, and that its nonce was not seen before
// (ErrReplayedToken): call it once per request. Without a secret every
// request passes.
func (k Keys) Verify(r *http.Request, digest string, now time.Time) error {
	if !k.Enabled() {
		return nil
	}
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	if auth == "" || !ok || !strings.EqualFold(scheme, AuthScheme) {
		return ErrNoToken
	}
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 4 || parts[0] != tokenVersion {
		return ErrBadToken
	}
	ts, nonce, sig := parts[1], parts[2], parts[3]
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrBadToken
	}
	n, err := hex.DecodeString(nonce)
	if err != nil || len(n) != nonceLen {
		return ErrBadToken
	}
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return ErrBadToken
	}
	valid := false
	for _, key := range k.token {
		if hmac.Equal(got, mac(key, r.Method, r.URL.RequestURI(), digest, ts, nonce, r.Header)) {
			valid = true
		}
	}
	if !valid {
		return ErrBadToken
	}
	// Checked after the MAC, so "expired" is never said of a forged token.
	at := time.Unix(sec, 0)
	if d := now.Sub(at); d > TokenValidity || d < -TokenValidity {
		return ErrExpiredToken
	}
	// Only tokens of the cluster's own members reach the seen-set.
	return k.seen.add([nonceLen]byte(n), at.Add(TokenValidity), now)
}

func mac(key []byte, method, uri, digest, ts, nonce string, h http.Header) []byte {
	m := hmac.New(sha256.New, key)
	parts := []string{tokenVersion, method, uri, digest, ts, nonce}
	for _, name := range signedHeaders {
		parts = append(parts, name, h.Get(name))
	}
	for _, s := range parts {
		// Length-prefixed: no value can spill into the next.
		_, _ = m.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s))))
		_, _ = m.Write([]byte(s))
	}
	return m.Sum(nil)
}
