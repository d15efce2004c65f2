package upstream

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

// TestRedactedURLErrorUnwrapped: unwrapping a redacted error to its
// *url.Error (as callers branching on it do) does not bring the presigned
// URL back: the outer url.Error is replaced by a redacted copy.
func TestRedactedURLErrorUnwrapped(t *testing.T) {
	secret := "X-Amz-Signature=deadbeefcafe"
	err := redact(&url.Error{Op: "Get", URL: "https://blobs.example/layer?" + secret, Err: errors.New("timeout")})
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("message keeps the signature: %v", err)
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Fatal("the url.Error is no longer reachable")
	}
	if strings.Contains(ue.URL, secret) || strings.Contains(ue.Error(), secret) {
		t.Errorf("unwrapped url.Error shows the signature: %s", ue.URL)
	}
}
