package cluster

import (
	"errors"
	"net/http/httptest"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	const uri = "/peer/v1/blobs/sha256:abc?registry=docker.io&repository=library%2Falpine"
	const dg = "sha256:abc"
	signed := func(k Keys, method, uri string, at time.Time) string {
		return TokenScheme + " " + k.Sign(method, uri, dg, at)
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
		{"garbage", primary, TokenScheme + " nonsense", "GET", uri, now, ErrBadToken},
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
