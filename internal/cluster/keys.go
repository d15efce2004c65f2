package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// TokenScheme is the Authorization scheme of peer requests.
const TokenScheme = "Berth-Peer"

// TokenValidity is how far a token's timestamp may be from the verifier's
// clock, either way: long enough for clock skew between nodes, short
// enough that a captured token is soon useless.
const TokenValidity = 60 * time.Second

// Token errors; ErrNoToken maps to 401, the others to 403.
var (
	ErrNoToken      = errors.New("cluster: peer request without a token")
	ErrBadToken     = errors.New("cluster: peer token is not valid")
	ErrExpiredToken = errors.New("cluster: peer token has expired")
)

// Keys are the keys derived from the cluster secrets: the first is the
// primary (gossip encryption, signing), the others are accepted too, so a
// secret can be rotated without a flag day. The zero Keys (no secret) means
// an unauthenticated, unencrypted cluster, for loopback tests only.
type Keys struct {
	gossip [][]byte // AES-256 keys
	token  [][]byte // HMAC keys
}

// NewKeys derives the keys from the primary secret and the extra ones;
// empty strings are skipped.
func NewKeys(primary string, extra ...string) Keys {
	var k Keys
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

// Sign returns the token for a request: "<unix seconds>.<hex HMAC>" of
// method, request URI (path and query) and digest at time now. Without a
// secret it returns "".
func (k Keys) Sign(method, uri, digest string, now time.Time) string {
	if !k.Enabled() {
		return ""
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	return ts + "." + hex.EncodeToString(mac(k.token[0], method, uri, digest, ts))
}

// Authorize sets the Authorization header of a peer request.
func (k Keys) Authorize(r *http.Request, digest string, now time.Time) {
	if tok := k.Sign(r.Method, r.URL.RequestURI(), digest, now); tok != "" {
		r.Header.Set("Authorization", TokenScheme+" "+tok)
	}
}

// Verify checks the token of a peer request for digest against every key.
// Without a secret every request passes.
func (k Keys) Verify(r *http.Request, digest string, now time.Time) error {
	if !k.Enabled() {
		return nil
	}
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	if auth == "" || !ok || !strings.EqualFold(scheme, TokenScheme) {
		return ErrNoToken
	}
	ts, sig, ok := strings.Cut(strings.TrimSpace(tok), ".")
	if !ok {
		return ErrBadToken
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrBadToken
	}
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return ErrBadToken
	}
	valid := false
	for _, key := range k.token {
		if hmac.Equal(got, mac(key, r.Method, r.URL.RequestURI(), digest, ts)) {
			valid = true
		}
	}
	if !valid {
		return ErrBadToken
	}
	// Checked after the MAC, so "expired" is never said of a forged token.
	if d := now.Sub(time.Unix(sec, 0)); d > TokenValidity || d < -TokenValidity {
		return ErrExpiredToken
	}
	return nil
}

func mac(key []byte, method, uri, digest, ts string) []byte {
	m := hmac.New(sha256.New, key)
	for _, s := range []string{method, uri, digest, ts} {
		_, _ = m.Write([]byte(s))
		_, _ = m.Write([]byte{0})
	}
	return m.Sum(nil)
}
