package fetch

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/upstream"
)

// TestVerifiedFillsNotShared: a fill for a client verified with its own
// credentials (private content) is never shared with a reader asking through
// another repository or anonymously, in either order, so the bytes those
// credentials let in reach only readers of the same repository that passed
// the same checks; the others get fills of their own, and their refusals.
func TestVerifiedFillsNotShared(t *testing.T) {
	blob := data(20_000)
	dg := digest.FromBytes(blob)
	refused := &upstream.StatusError{Upstream: "r", Status: http.StatusUnauthorized}
	priv := Request{Digest: dg, Registry: "r", Repository: "b", Verified: true}
	for _, tt := range []struct {
		name        string
		first, then Request
		thenJoins   bool
		thenGetsIt  bool
	}{
		{"anonymous reader after a verified fill", priv, Request{Digest: dg, Registry: "r", Repository: "a"}, false, false},
		{"anonymous reader, same repository", priv, Request{Digest: dg, Registry: "r", Repository: "b"}, false, false},
		{"verified reader after an anonymous fill", Request{Digest: dg, Registry: "r", Repository: "a"}, priv, false, true},
		{"verified reader of another repository", priv, Request{Digest: dg, Registry: "r", Repository: "c", Verified: true}, false, false},
		{"verified reader, same repository", priv, priv, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(t)
			// Only the verified client of b is let in.
			src := SourceFunc(func(ctx context.Context, req Request, off int64) (io.ReadCloser, Meta, error) {
				select {
				case <-g.ch:
				case <-ctx.Done():
					return nil, Meta{}, ctx.Err()
				}
				if !req.Verified || req.Repository != "b" {
					return nil, Meta{}, refused
				}
				return io.NopCloser(bytes.NewReader(blob[off:])), Meta{Size: int64(len(blob))}, nil
			})
			c, _ := newCoalescer(t, Options{})
			r1, _, err := c.Get(context.Background(), tt.first, src)
			if err != nil {
				t.Fatal(err)
			}
			defer r1.Close()
			r2, joined, err := c.Get(context.Background(), tt.then, src)
			if err != nil {
				t.Fatal(err)
			}
			defer r2.Close()
			if joined != tt.thenJoins {
				t.Fatalf("joined %v, want %v", joined, tt.thenJoins)
			}
			g.open()
			got, err := io.ReadAll(r2)
			if gotIt := err == nil && bytes.Equal(got, blob); gotIt != tt.thenGetsIt {
				t.Fatalf("second reader got the blob: %v (%d bytes, %v), want %v", gotIt, len(got), err, tt.thenGetsIt)
			}
			_, _ = io.Copy(io.Discard, r1)
			c.Wait()
		})
	}
}
