package upstream

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

const presigned = "X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=0123456789abcdef"

func noSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range []string{"AKIAEXAMPLE", "0123456789abcdef", "hunter2"} {
		if strings.Contains(s, secret) {
			t.Errorf("%s shows %q: %s", what, secret, s)
		}
	}
}

// A blob redirected to a presigned URL that never answers: whichever timeout
// ends it, neither the error nor the retry log shows the signature.
func TestPresignedURLRedactedOnTimeout(t *testing.T) {
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer cdn.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		http.Redirect(w, r, "http://user:hunter2@"+cdn.Listener.Addr().String()+"/blob?"+presigned, http.StatusTemporaryRedirect)
	}))
	defer up.Close()
	for _, tc := range []struct {
		name     string
		opts     Options
		deadline time.Duration
	}{
		{name: "context deadline", deadline: 200 * time.Millisecond},
		{name: "response header timeout", opts: Options{Timeout: 200 * time.Millisecond, Retries: 1, Backoff: time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			tc.opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			c, err := New(Endpoint{Name: "r.test", URL: up.URL}, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			_, _, err = c.GetBlob(ctx, "org/app", digest.FromString("x"), 0)
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("got %v, want unreachable", err)
			}
			noSecrets(t, "error", err.Error())
			noSecrets(t, "log", logs.String())
			if !strings.Contains(err.Error(), "/blob") {
				t.Errorf("error lost the URL's path: %v", err)
			}
		})
	}
}

// An upstream's error message is its text, not berth's: URLs in it are
// redacted too, and its code is capped.
func TestStatusErrorMessageRedacted(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"errors":[{"code":"` + strings.Repeat("C", 4096) + `","message":"see https://bucket.test/x?` + presigned + `"}]}`))
	}))
	defer up.Close()
	c, err := New(Endpoint{Name: "r.test", URL: up.URL}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.GetManifest(context.Background(), "org/app", "v1", 4<<20)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusForbidden {
		t.Fatalf("got %v", err)
	}
	noSecrets(t, "error", err.Error())
	if len(se.Code) > maxCodeLen+len("…") {
		t.Errorf("code of %d bytes kept", len(se.Code))
	}
}

func TestRedactText(t *testing.T) {
	for in, want := range map[string]string{
		`Get "https://s3.test/b/k?` + presigned + `": context deadline exceeded`: `Get "https://s3.test/b/k?redacted": context deadline exceeded`,
		"redirect to http://u:hunter2@h.test:81/p#frag then":                     "redirect to http://h.test:81/p then",
		"no url here":                "no url here",
		"https://h.test/%zz?sig=abc": "https://h.test/%zz",
	} {
		if got := redactText(in); got != want {
			t.Errorf("redactText(%q)\n = %q\nwant %q", in, got, want)
		}
	}
}
