package server

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestReadyClearedAtDrainStart (issue 16 item 7): from the start of a drain
// /readyz answers 503, so load balancers and kubelets stop sending clients
// while requests in flight finish; here it is asked while the drain leaves
// the cluster and refuses new fills, before the listener closes.
func TestReadyClearedAtDrainStart(t *testing.T) {
	up := httptest.NewServer(http.NotFoundHandler())
	defer up.Close()
	var a *runningServer
	codes := make(chan int, 1)
	log := slog.New(onMessage{Handler: slog.DiscardHandler, msg: "refusing new fills; draining the running ones", fn: func() {
		w := httptest.NewRecorder()
		a.s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		codes <- w.Code
	}})
	a = startClusterServerLog(t, "a", up.URL, "", log)
	waitUntil(t, func() bool {
		resp, err := http.Get(a.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	a.stop()
	select {
	case code := <-codes:
		if code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz during the drain: %d, want 503", code)
		}
	default:
		t.Fatal("the drain never logged that it refuses fills")
	}
}
