package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// rangeServer answers blob GETs with a fixed status and Content-Range.
func rangeServer(t *testing.T, status int, contentRange, body string) *Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if contentRange != "" {
			w.Header().Set("Content-Range", contentRange)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	c, err := New(Endpoint{Name: "r.test", URL: srv.URL}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGetBlobRange(t *testing.T) {
	dg := digest.FromString("x")
	for _, tc := range []struct {
		name         string
		status       int
		contentRange string
		body         string
		want         error // nil: success
	}{
		{"exact", http.StatusPartialContent, "bytes 10-19/100", "0123456789", nil},
		{"whole blob", http.StatusOK, "", strings.Repeat("x", 100), ErrNoRange},
		{"other start", http.StatusPartialContent, "bytes 0-9/100", "0123456789", ErrUnreachable},
		{"shorter", http.StatusPartialContent, "bytes 10-15/100", "012345", ErrUnreachable},
		{"no total", http.StatusPartialContent, "bytes 10-19/*", "0123456789", ErrUnreachable},
		{"no header", http.StatusPartialContent, "", "0123456789", ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rangeServer(t, tc.status, tc.contentRange, tc.body)
			body, d, err := c.GetBlobRange(context.Background(), "org/app", dg, 10, 20)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			got, _ := io.ReadAll(body)
			if string(got) != tc.body || d.Size != 100 {
				t.Errorf("got %q, size %d", got, d.Size)
			}
		})
	}
}

// TestGetBlobResumeChecksStart: a resume answered from another offset is
// refused: appending those bytes would corrupt the fill (it would fail
// verification, after a whole download).
func TestGetBlobResumeChecksStart(t *testing.T) {
	dg := digest.FromString("x")
	c := rangeServer(t, http.StatusPartialContent, "bytes 0-99/100", strings.Repeat("x", 100))
	if _, _, err := c.GetBlob(context.Background(), "org/app", dg, 50); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("resume from 50 answered from 0: err %v", err)
	}
	c = rangeServer(t, http.StatusPartialContent, "bytes 50-99/100", strings.Repeat("x", 50))
	body, d, err := c.GetBlob(context.Background(), "org/app", dg, 50)
	if err != nil || d.Size != 100 {
		t.Fatalf("resume: %v, size %d", err, d.Size)
	}
	_ = body.Close()
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 5-5/*", "bytes 9-0/10", "bytes -1-2/3", "bytes 0-10/10", "bytes 0-9223372036854775807/9223372036854775807", "", "bytes /", "items 0-1/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, total, ok := ParseContentRange(s)
		if !ok {
			return
		}
		if first < 0 || last < first || (total >= 0 && last >= total) || total < -1 {
			t.Fatalf("%q: accepted first %d last %d total %d", s, first, last, total)
		}
	})
}
