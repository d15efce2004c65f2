package peer

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestTokens(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	const uri = "/peer/v1/blobs/sha256:abc?registry=docker.io&repository=library%2Falpine"
	const dg = "sha256:abc"
	signed := func(k Keys, method, uri string, at time.Time) string {
		return AuthScheme + " " + k.Sign(method, uri, dg, at)
	}
	primary := NewKeys("s3cret")
	rotated := NewKeys("new-secret", "s3cret") // the old one still accepted
	tests := []struct {
		name   string
		keys   Keys // the verifier's
		auth   string
		method string
		uri    string
		at     time.Time
		want   error
	}{
		{"valid", primary, signed(primary, "GET", uri, now), "GET", uri, now, nil},
		{"clock skew behind", primary, signed(primary, "GET", uri, now.Add(-50*time.Second)), "GET", uri, now, nil},
		{"clock skew ahead", primary, signed(primary, "GET", uri, now.Add(50*time.Second)), "GET", uri, now, nil},
		{"expired", primary, signed(primary, "GET", uri, now.Add(-2*time.Minute)), "GET", uri, now, ErrExpiredToken},
		{"from the future", primary, signed(primary, "GET", uri, now.Add(2*time.Minute)), "GET", uri, now, ErrExpiredToken},
		{"missing", primary, "", "GET", uri, now, ErrNoToken},
		{"other scheme", primary, "Bearer x", "GET", uri, now, ErrNoToken},
		{"garbage", primary, AuthScheme + " nonsense", "GET", uri, now, ErrBadToken},
		{"earlier version (no nonce)", primary, AuthScheme + " 1800000000." + strings.Repeat("ab", 32), "GET", uri, now, ErrBadToken},
		{"wrong secret", primary, signed(NewKeys("other"), "GET", uri, now), "GET", uri, now, ErrBadToken},
		{"other method", primary, signed(primary, "HEAD", uri, now), "GET", uri, now, ErrBadToken},
		{"other path", primary, signed(primary, "GET", "/peer/v1/blobs/sha256:def", now), "GET", uri, now, ErrBadToken},
		{"other query", primary, signed(primary, "GET", "/peer/v1/blobs/sha256:abc?registry=evil.example&repository=x", now), "GET", uri, now, ErrBadToken},
		{"rotation: old secret accepted", rotated, signed(primary, "GET", uri, now), "GET", uri, now, nil},
		{"rotation: new primary signs", primary, signed(rotated, "GET", uri, now), "GET", uri, now, ErrBadToken},
		{"no secret: open", Keys{}, "", "GET", uri, now, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.uri, nil)
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			if err := tt.keys.Verify(r, dg, tt.at); !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAuthorizeRoundTrip(t *testing.T) {
	k := NewKeys("a", "", " ")
	if len(k.GossipKeys()) != 1 {
		t.Fatalf("blank extra secrets must be skipped, got %d keys", len(k.GossipKeys()))
	}
	if len(k.GossipKeys()[0]) != 32 {
		t.Fatalf("gossip key is %d bytes, want 32 (AES-256)", len(k.GossipKeys()[0]))
	}
	r := httptest.NewRequest("GET", "http://peer:5000/peer/v1/blobs/sha256:abc?registry=r&repository=a%2Fb", nil)
	now := time.Now()
	k.Authorize(r, "sha256:abc", now)
	// What the server parses from the wire.
	srv := httptest.NewRequest("GET", r.URL.RequestURI(), nil)
	srv.Header = r.Header
	if err := k.Verify(srv, "sha256:abc", now); err != nil {
		t.Fatal(err)
	}
	if err := k.Verify(srv, "sha256:def", now); !errors.Is(err, ErrBadToken) {
		t.Fatalf("token for another digest: %v", err)
	}
}

// wire is what the server parses of a request r sent.
func wire(r *http.Request) *http.Request {
	srv := httptest.NewRequest(r.Method, r.URL.RequestURI(), nil)
	srv.Header = r.Header.Clone()
	return srv
}

// TestTokenCoversHeadersAndQuery: changing the upstream token, the range,
// the accepted types or any query parameter of a signed request (or adding
// one of them) fails the HMAC.
func TestTokenCoversHeadersAndQuery(t *testing.T) {
	k := NewKeys("s3cret")
	const dg = "sha256:abc"
	now := time.Now()
	signed := func() *http.Request {
		r := httptest.NewRequest("GET", "http://peer/peer/v1/blobs/sha256:abc?from=n1&registry=r&repository=a%2Fb&verified=1", nil)
		r.Header.Set(UpstreamTokenHeader, "token-of-alice")
		k.Authorize(r, dg, now)
		return wire(r)
	}
	if err := k.Verify(signed(), dg, now); err != nil {
		t.Fatalf("untouched: %v", err)
	}
	for _, tt := range []struct {
		name string
		edit func(*http.Request)
	}{
		{"other upstream token", func(r *http.Request) { r.Header.Set(UpstreamTokenHeader, "token-of-mallory") }},
		{"upstream token removed", func(r *http.Request) { r.Header.Del(UpstreamTokenHeader) }},
		{"range added", func(r *http.Request) { r.Header.Set("Range", "bytes=100-") }},
		{"accept added", func(r *http.Request) { r.Header.Set("Accept", "application/vnd.oci.image.index.v1+json") }},
		{"verified dropped", func(r *http.Request) { r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "&verified=1", "", 1) }},
		{"held added", func(r *http.Request) { r.URL.RawQuery += "&held=1" }},
		{"other repository", func(r *http.Request) { r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "a%2Fb", "c", 1) }},
		{"other from", func(r *http.Request) { r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "from=n1", "from=n2", 1) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := signed()
			tt.edit(r)
			r.RequestURI = r.URL.RequestURI()
			if err := k.Verify(r, dg, now); !errors.Is(err, ErrBadToken) {
				t.Fatalf("Verify = %v, want %v", err, ErrBadToken)
			}
		})
	}
}

// TestReplayRefused: a verified request sent again within the token's
// validity is refused; after the validity it is refused as expired, and
// the seen-set has forgotten it (it holds no more than the window).
func TestReplayRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := NewKeys("s3cret")
		const dg = "sha256:abc"
		r := httptest.NewRequest("GET", "http://peer/peer/v1/blobs/sha256:abc?registry=r&repository=a", nil)
		k.Authorize(r, dg, time.Now())
		if err := k.Verify(wire(r), dg, time.Now()); err != nil {
			t.Fatalf("first: %v", err)
		}
		time.Sleep(30 * time.Second)
		if err := k.Verify(wire(r), dg, time.Now()); !errors.Is(err, ErrReplayedToken) {
			t.Fatalf("replay within the window: %v, want %v", err, ErrReplayedToken)
		}
		// A copy of the keys (another listener) shares the seen-set.
		k2 := k
		if err := k2.Verify(wire(r), dg, time.Now()); !errors.Is(err, ErrReplayedToken) {
			t.Fatalf("replay to a copy of the keys: %v, want %v", err, ErrReplayedToken)
		}
		time.Sleep(TokenValidity)
		if err := k.Verify(wire(r), dg, time.Now()); !errors.Is(err, ErrExpiredToken) {
			t.Fatalf("replay after the window: %v, want %v", err, ErrExpiredToken)
		}
		// A fresh request prunes what has expired.
		r2 := httptest.NewRequest("GET", r.URL.String(), nil)
		k.Authorize(r2, dg, time.Now())
		if err := k.Verify(wire(r2), dg, time.Now()); err != nil {
			t.Fatalf("fresh request: %v", err)
		}
		if n := k.seen.len(); n != 1 {
			t.Fatalf("seen-set holds %d nonces, want 1 (the expired one pruned)", n)
		}
	})
}

// TestNoncesBounded: a seen-set of max live nonces refuses the next token
// rather than forget a live nonce; once they expire there is room again.
func TestNoncesBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const max = 8
		s := newNonces(max)
		now := time.Now()
		for i := range max {
			if err := s.add([nonceLen]byte{byte(i)}, now.Add(TokenValidity), now); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.add([nonceLen]byte{max}, now.Add(TokenValidity), now); !errors.Is(err, errTooManyTokens) {
			t.Fatalf("nonce %d of %d: %v, want %v", max+1, max, err, errTooManyTokens)
		}
		if s.len() != max {
			t.Fatalf("%d nonces held, bound %d", s.len(), max)
		}
		later := now.Add(TokenValidity + time.Second)
		if err := s.add([nonceLen]byte{max}, later.Add(TokenValidity), later); err != nil {
			t.Fatalf("after the window: %v", err)
		}
		if s.len() != 1 {
			t.Fatalf("%d nonces held after the window, want 1", s.len())
		}
	})
}
