package upstream

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// What an upstream puts in its headers is bounded and checked before it is
// kept: a blob's Content-Type is stored and served to every client of the
// digest; a response's headers are read into memory.
func TestUpstreamHeaders(t *testing.T) {
	cases := []struct {
		name, contentType string
		headerBytes       int // of one filler header
		wantType          string
		wantErr           bool
	}{
		{name: "plain type", contentType: "application/vnd.oci.image.layer.v1.tar+gzip", wantType: "application/vnd.oci.image.layer.v1.tar+gzip"},
		{name: "parameters dropped", contentType: "application/octet-stream; x=1", wantType: "application/octet-stream"},
		{name: "not a media type", contentType: "<script>", wantType: ""},
		{name: "oversized type", contentType: "application/" + strings.Repeat("x", 300), wantType: ""},
		{name: "oversized headers", contentType: "application/octet-stream", headerBytes: 100 << 10, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.headerBytes > 0 {
					w.Header().Set("X-Filler", strings.Repeat("f", tc.headerBytes))
				}
				w.Header().Set("Content-Type", tc.contentType)
				w.Header().Set("Content-Length", "3")
			}))
			defer up.Close()
			c, err := New(Endpoint{Name: "r.test", URL: up.URL}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			d, err := c.HeadBlob(context.Background(), "org/app", digest.FromString("x"))
			if tc.wantErr {
				if err == nil {
					t.Fatal("oversized response headers accepted")
				}
				return
			}
			if err != nil || d.MediaType != tc.wantType {
				t.Fatalf("media type %q, %v; want %q", d.MediaType, err, tc.wantType)
			}
		})
	}
}
