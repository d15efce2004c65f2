package upstream

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// TestWithAuthenticator: a client derived for other credentials uses them,
// and only them, against the same endpoint.
func TestWithAuthenticator(t *testing.T) {
	users := map[string]string{"node": "node-pw", "alice": "alice-pw"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || users[u] != p {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	base, err := New(Endpoint{Name: "r.test", URL: srv.URL, Username: "node", Password: "node-pw"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !base.HasCredentials() {
		t.Fatal("a client with a node credential reports none")
	}
	anon, err := base.WithAuthenticator(authn.Anonymous)
	if err != nil {
		t.Fatal(err)
	}
	alice, err := base.WithAuthenticator(authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "alice-pw"}))
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := base.WithAuthenticator(authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	if anon.HasCredentials() || anon.Name() != "r.test" || anon.URL() != srv.URL {
		t.Fatal("anonymous client: wrong identity or credentials")
	}
	ctx := context.Background()
	for name, c := range map[string]*Client{"node": base, "alice": alice} {
		if _, err := c.HeadManifest(ctx, "team/app", "v1"); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, c := range map[string]*Client{"anonymous": anon, "wrong": wrong} {
		if _, err := c.HeadManifest(ctx, "team/app", "v1"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The base client's own credential is untouched.
	if _, err := base.HeadManifest(ctx, "team/app", "v1"); err != nil {
		t.Errorf("node after deriving clients: %v", err)
	}
}

// connCounter counts the connections a test server has open.
type connCounter struct {
	mu   sync.Mutex
	open map[net.Conn]bool
	made int
}

func countConns(srv *httptest.Server) *connCounter {
	c := &connCounter{open: map[net.Conn]bool{}}
	srv.Config.ConnState = func(conn net.Conn, st http.ConnState) {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch st {
		case http.StateNew:
			c.open[conn] = true
			c.made++
		case http.StateClosed, http.StateHijacked:
			delete(c.open, conn)
		}
	}
	return c
}

func (c *connCounter) counts() (open, made int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.open), c.made
}

// TestDerivedClientsSharePool: clients derived for 200 distinct (wrong)
// credentials and for successive peer tokens use the base client's one
// connection pool — requests one after another reuse one connection —
// and CloseIdleConnections on the base closes it for all of them. Before
// the pool was shared, each derived client cloned the transport: 200
// credentials left 200 connections open.
func TestDerivedClientsSharePool(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer t2" {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	base, err := New(Endpoint{Name: "r.test", URL: srv.URL}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const creds = 200
	for i := range creds {
		c, _ := base.WithAuthenticator(authn.FromConfig(authn.AuthConfig{Username: "alice", Password: fmt.Sprint("wrong-", i)}))
		if _, err := c.HeadManifest(ctx, "team/app", "v1"); err == nil {
			t.Fatal("a wrong password was accepted")
		}
	}
	// A refreshed token is a new client: still the same pool.
	for _, tok := range []string{"t1", "t2"} {
		c, _ := base.WithRegistryToken(tok)
		_, _ = c.HeadManifest(ctx, "team/app", "v1")
	}
	// (ggcr's ping of a plain-http registry also tries https, which makes
	// and drops a connection per client: counted as made, never left open;
	// the server may see the last one's close a moment later.)
	for wait := time.Now().Add(2 * time.Second); time.Now().Before(wait); time.Sleep(10 * time.Millisecond) {
		if open, _ := conns.counts(); open <= 1 {
			break
		}
	}
	if open, made := conns.counts(); open != 1 {
		t.Fatalf("%d derived clients: %d connections open (%d made); want 1: one shared pool", creds+2, open, made)
	}
	base.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for open, _ := conns.counts(); open != 0; open, _ = conns.counts() {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open after CloseIdleConnections", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
