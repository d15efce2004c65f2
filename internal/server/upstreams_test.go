package server

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/config"
)

// TestUpstreamsSetClosesIdle: a reload that replaces the upstream clients
// closes the idle connections of the replaced ones' pool (shared by every
// client derived from them), instead of leaving them to the idle timeout.
func TestUpstreamsSetClosesIdle(t *testing.T) {
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch st {
		case http.StateNew:
			open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(open, c)
		}
	}
	srv.Start()
	defer srv.Close()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(open) }

	cfg := config.Default()
	cfg.Upstreams = map[string]config.Upstream{"r.test": {URL: srv.URL}}
	log := slog.New(slog.DiscardHandler)
	u, err := NewUpstreams(cfg, log, "test")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := u.Lookup("r.test")
	_, _ = c.HeadManifest(t.Context(), "team/app", "v1")
	if count() == 0 {
		t.Fatal("no connection was made")
	}
	if err := u.Set(cfg, log); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for count() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections of the replaced client still open", count())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
