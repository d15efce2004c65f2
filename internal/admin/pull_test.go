package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeRegistry serves one image manifest listing layers; blob answers
// whatever the test says per digest.
type fakeRegistry struct {
	layers []string
	blob   func(w http.ResponseWriter, r *http.Request, dg string)
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.URL.Path, "/manifests/") {
		var ls []string
		for _, l := range f.layers {
			ls = append(ls, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":1}`, l))
		}
		fmt.Fprintf(w, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
			`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":1},"layers":[%s]}`,
			strings.Join(ls, ","))
		return
	}
	i := strings.LastIndex(r.URL.Path, "/")
	f.blob(w, r, r.URL.Path[i+1:])
}

type nopProgress struct{}

func (nopProgress) addTotal(int64)   {}
func (nopProgress) addDone(int64)    {}
func (nopProgress) setDigest(string) {}

// One blob that fails cancels the blobs being fetched beside it.
func TestPullFailedBlobCancelsSiblings(t *testing.T) {
	var cancelled atomic.Int32
	f := &fakeRegistry{layers: []string{"sha256:a", "sha256:b", "sha256:bad"}}
	f.blob = func(w http.ResponseWriter, r *http.Request, dg string) {
		switch dg {
		case "sha256:bad":
			time.Sleep(10 * time.Millisecond) // let the others start
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"gone"}]}`, http.StatusNotFound)
		case "sha256:c":
			_, _ = w.Write([]byte("c"))
		default:
			select { // a fill that would take its time
			case <-r.Context().Done():
				cancelled.Add(1)
			case <-time.After(30 * time.Second):
				_, _ = w.Write([]byte("x"))
			}
		}
	}
	p := &puller{h: f, log: slog.New(slog.DiscardHandler)}
	start := time.Now()
	err := p.pull(t.Context(), imageRef{name: "app", ref: "v1"}, []platform{nodePlatform()}, nopProgress{})
	if err == nil || !strings.Contains(err.Error(), "BLOB_UNKNOWN") {
		t.Fatalf("pull: %v, want the failed blob's error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("pull took %v: the siblings of the failed blob ran on", d)
	}
	if n := cancelled.Load(); n != 2 {
		t.Errorf("%d sibling fetches cancelled, want 2", n)
	}
}

// The registry's abort (http.ErrAbortHandler) is an expected failure; any
// other panic is a bug, logged once, and fails only that image.
func TestPullRecoversHandlerPanics(t *testing.T) {
	tests := []struct {
		name    string
		panicV  any
		wantErr string
		logged  bool
	}{
		{"abort", http.ErrAbortHandler, "transfer aborted", false},
		{"bug", errors.New("nil map"), "internal error", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeRegistry{layers: []string{"sha256:a"}}
			f.blob = func(w http.ResponseWriter, _ *http.Request, dg string) {
				if dg == "sha256:a" {
					panic(tt.panicV)
				}
				_, _ = w.Write([]byte("c"))
			}
			var logs bytes.Buffer
			p := &puller{h: f, log: slog.New(slog.NewTextHandler(&logs, nil))}
			err := p.pull(context.Background(), imageRef{name: "app", ref: "v1"}, []platform{nodePlatform()}, nopProgress{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("pull: %v, want %q", err, tt.wantErr)
			}
			if n := strings.Count(logs.String(), "panicked"); n != map[bool]int{true: 1}[tt.logged] {
				t.Errorf("logged %d times, want logged=%v: %s", n, tt.logged, logs.String())
			}
		})
	}
}

// The puller reads the cap for each manifest (max_manifest_bytes in force):
// without one it keeps 4 MiB.
func TestPullManifestCap(t *testing.T) {
	pad := strings.Repeat("x", 5<<20)
	f := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			fmt.Fprintf(w, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
				`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":1},"layers":[],`+
				`"annotations":{"pad":%q}}`, pad)
			return
		}
		_, _ = w.Write([]byte("c"))
	})
	var limit atomic.Int64
	tests := []struct {
		name    string
		limit   func() int64
		set     int64
		wantErr bool
	}{
		{"default 4 MiB", nil, 0, true},
		{"cap 4 MiB", limit.Load, 4 << 20, true},
		{"cap raised to 6 MiB", limit.Load, 6 << 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit.Store(tt.set)
			p := &puller{h: f, log: slog.New(slog.DiscardHandler), maxManifest: tt.limit}
			err := p.pull(t.Context(), imageRef{name: "app", ref: "v1"}, []platform{nodePlatform()}, nopProgress{})
			if gotErr := err != nil; gotErr != tt.wantErr || (gotErr && !strings.Contains(err.Error(), "larger than")) {
				t.Errorf("pull: %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
