package fetch

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/store"
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

// TestPrivateOriginCommitted: a blob fetched for a request naming its
// private origin is stored marked with it; one whose fill fails leaves no
// mark; one fetched without an origin is unmarked.
func TestPrivateOriginCommitted(t *testing.T) {
	blob := data(20_000)
	dg := digest.FromBytes(blob)
	ok := SourceFunc(func(_ context.Context, _ Request, off int64) (io.ReadCloser, Meta, error) {
		return io.NopCloser(bytes.NewReader(blob[off:])), Meta{Size: int64(len(blob))}, nil
	})
	bad := SourceFunc(func(_ context.Context, _ Request, _ int64) (io.ReadCloser, Meta, error) {
		return nil, Meta{}, &upstream.StatusError{Upstream: "r", Status: http.StatusUnauthorized}
	})
	for _, tt := range []struct {
		name   string
		src    Source
		origin string
		want   string
	}{
		{"private fill", ok, "http://r/b", "http://r/b"},
		{"failed private fill", bad, "http://r/b", ""},
		{"public fill", ok, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, st := newCoalescer(t, Options{})
			req := Request{Digest: dg, Registry: "r", Repository: "b", Verified: tt.origin != "", PrivateOrigin: tt.origin}
			if r, _, err := c.Get(context.Background(), req, tt.src); err == nil {
				_, _ = io.Copy(io.Discard, r)
				_ = r.Close()
			}
			c.Wait()
			origin, err := st.PrivateObject(dg)
			if origin != tt.want || (tt.want == "" && !store.IsNotFound(err)) {
				t.Fatalf("mark %q (%v), want %q", origin, err, tt.want)
			}
		})
	}
}
