package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

// recordingTransport notes every request it is asked to send.
type recordingTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	urls []*url.URL
	auth []string // Authorization of each request, by index
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.urls = append(r.urls, req.URL)
	r.auth = append(r.auth, req.Header.Get("Authorization"))
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

// An https upstream on a loopback or private address whose TLS fails must
// fail: go-containerregistry would ping plain http beside https and, when
// that answers, send everything (Basic credentials included) in clear.
func TestHTTPSUpstreamNeverFallsBackToPlainHTTP(t *testing.T) {
	var plain atomic.Int32
	var sawAuth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plain.Add(1)
		if a := r.Header.Get("Authorization"); a != "" {
			sawAuth.Store(a)
		}
		if r.Header.Get("Authorization") == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	rec := &recordingTransport{next: NewTransport(0)}
	c, err := New(Endpoint{Name: "r.test", URL: "https://" + srv.Listener.Addr().String(), Username: "alice", Password: "s3cret"},
		Options{Transport: rec})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.HeadBlob(context.Background(), "org/app", digest.FromString("x"))
	if err == nil {
		t.Fatal("an https upstream that speaks only plain http answered")
	}
	if n := plain.Load(); n != 0 {
		t.Errorf("%d plain-http requests reached the server (credentials seen: %v)", n, sawAuth.Load())
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, u := range rec.urls {
		if u.Scheme != "https" {
			t.Errorf("request sent as %s", u)
		}
	}
}

// Over a working https upstream, credentials go over https only, and the
// guard's clone of the caller's transport keeps its TLS settings.
func TestHTTPSUpstreamCredentialsOverTLS(t *testing.T) {
	var insecure, authed atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			insecure.Add(1)
		}
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		authed.Add(1)
		w.Header().Set("Content-Length", "1")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c, err := New(Endpoint{Name: "r.test", URL: srv.URL, Username: "alice", Password: "s3cret"},
		Options{Transport: srv.Client().Transport})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.HeadBlob(context.Background(), "org/app", digest.FromString("x")); err != nil {
		t.Fatal(err)
	}
	if insecure.Load() != 0 || authed.Load() != 1 {
		t.Errorf("plain requests %d, authenticated %d", insecure.Load(), authed.Load())
	}
}

// redirector is an upstream that answers /v2/ and redirects every other GET
// to target (+ the path and a presigned-looking query).
func redirector(t *testing.T, tls bool, target func() string) *httptest.Server {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, r, target()+r.URL.Path+"?X-Amz-Signature=s3cr3tsig", http.StatusTemporaryRedirect)
	})
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(h)
	} else {
		srv = httptest.NewServer(h)
	}
	t.Cleanup(srv.Close)
	return srv
}

// internalServer counts the requests that reach it and serves a manifest.
func internalServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		body := `{"internal":true}`
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", digest.FromString(body).String())
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func port(t *testing.T, srv *httptest.Server) uint16 {
	t.Helper()
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(n)
}

// classes is a Classify seam: the class of each port, default by address.
func classes(m map[uint16]AddrClass) func(netip.AddrPort) AddrClass {
	return func(ap netip.AddrPort) AddrClass {
		if c, ok := m[ap.Port()]; ok {
			return c
		}
		return ClassifyAddr(ap.Addr())
	}
}

type op func(ctx context.Context, c *Client) error

var ops = map[string]op{
	"manifest": func(ctx context.Context, c *Client) error {
		_, _, err := c.GetManifest(ctx, "org/app", "v1", 4<<20)
		return err
	},
	"blob": func(ctx context.Context, c *Client) error {
		rc, _, err := c.GetBlob(ctx, "org/app", digest.FromString("x"), 0)
		if err == nil {
			rc.Close()
		}
		return err
	},
	"tags": func(ctx context.Context, c *Client) error {
		resp, err := c.Tags(ctx, "org/app", "")
		if err == nil {
			resp.Body.Close()
		}
		return err
	},
}

func TestRedirectPolicy(t *testing.T) {
	cases := []struct {
		name string
		// upstream and internal are the classes the seam gives the two
		// servers' ports (absent: loopback, as they are).
		upstream, internal *AddrClass
		tls                bool
		// host is how the redirect names the internal server.
		host    string
		allowed bool
	}{
		{name: "public to loopback literal", upstream: ptr(Public), host: "127.0.0.1"},
		{name: "public to loopback by name (checked where dialled)", upstream: ptr(Public), host: "localhost"},
		{name: "public to private by name", upstream: ptr(Public), internal: ptr(Private), host: "localhost"},
		{name: "public to public", upstream: ptr(Public), internal: ptr(Public), host: "localhost", allowed: true},
		{name: "private to loopback", upstream: ptr(Private), host: "localhost"},
		{name: "private to private", upstream: ptr(Private), internal: ptr(Private), host: "localhost", allowed: true},
		{name: "loopback to loopback", host: "127.0.0.1", allowed: true},
		{name: "loopback to link-local by name", internal: ptr(LinkLocal), host: "localhost"},
		{name: "https to http", tls: true, host: "127.0.0.1"},
	}
	for _, tc := range cases {
		for opName, run := range ops {
			t.Run(tc.name+"/"+opName, func(t *testing.T) {
				internal, hits := internalServer(t)
				target := "http://" + net.JoinHostPort(tc.host, strconv.Itoa(int(port(t, internal))))
				up := redirector(t, tc.tls, func() string { return target })
				m := map[uint16]AddrClass{}
				if tc.upstream != nil {
					m[port(t, up)] = *tc.upstream
				}
				if tc.internal != nil {
					m[port(t, internal)] = *tc.internal
				}
				opts := Options{Classify: classes(m)}
				if tc.tls {
					opts.Transport = up.Client().Transport
				}
				c, err := New(Endpoint{Name: "r.test", URL: up.URL}, opts)
				if err != nil {
					t.Fatal(err)
				}
				err = run(context.Background(), c)
				if tc.allowed {
					if err != nil || hits.Load() == 0 {
						t.Fatalf("allowed redirect: %v, %d hits", err, hits.Load())
					}
					return
				}
				if !errors.Is(err, ErrRefused) || !IsUnavailable(err) {
					t.Fatalf("got %v, want a refusal", err)
				}
				if n := hits.Load(); n != 0 {
					t.Errorf("the refused target got %d requests", n)
				}
				if strings.Contains(err.Error(), "s3cr3tsig") {
					t.Errorf("error shows the signature: %v", err)
				}
			})
		}
	}
}

// loopbackOnly keeps a test on loopback even when what it tests is broken.
type loopbackOnly struct{ next http.RoundTripper }

func (l loopbackOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if h := r.URL.Hostname(); h != "127.0.0.1" && h != "localhost" {
		return nil, errors.New("test: would have connected to " + r.URL.Host)
	}
	return l.next.RoundTrip(r)
}

// A link-local redirect is refused before anything is dialled (the literal
// check), whatever the upstream's class.
func TestRedirectToLinkLocalRefused(t *testing.T) {
	for _, target := range []string{"http://169.254.169.254", "http://[fe80::1]", "http://[::ffff:169.254.169.254]"} {
		t.Run(target, func(t *testing.T) {
			up := redirector(t, false, func() string { return target })
			c, err := New(Endpoint{Name: "r.test", URL: up.URL}, Options{Transport: loopbackOnly{NewTransport(0)}})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.GetManifest(context.Background(), "org/app", "v1", 4<<20)
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("got %v, want a refusal", err)
			}
		})
	}
}

// The token exchange goes through the same guard: a public upstream whose
// realm is a name that resolves to loopback gets no token request sent.
func TestTokenRealmDialledThroughGuard(t *testing.T) {
	realm, hits := internalServer(t)
	realmURL := "http://localhost:" + strconv.Itoa(int(port(t, realm))) + "/token"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+realmURL+`",service="x"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer up.Close()
	c, err := New(Endpoint{Name: "r.test", URL: up.URL}, Options{Classify: classes(map[uint16]AddrClass{port(t, up): Public})})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.HeadBlob(context.Background(), "org/app", digest.FromString("x"))
	if !errors.Is(err, ErrRefused) {
		t.Errorf("got %v, want a refusal", err)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the realm on loopback got %d requests from a public upstream", n)
	}
}

func TestClassifyAddr(t *testing.T) {
	for addr, want := range map[string]AddrClass{
		"8.8.8.8": Public, "2001:4860::8888": Public,
		"10.1.2.3": Private, "172.16.0.1": Private, "192.168.1.1": Private, "fd00::1": Private, "100.64.0.1": Private,
		"127.0.0.1": Loopback, "::1": Loopback, "0.0.0.0": Loopback, "::": Loopback, "::ffff:127.0.0.1": Loopback,
		"169.254.169.254": LinkLocal, "fe80::1": LinkLocal, "::ffff:169.254.169.254": LinkLocal,
		"64:ff9b::a9fe:a9fe": LinkLocal, "64:ff9b::808:808": Public, "64:ff9b::7f00:1": Loopback,
	} {
		if got := ClassifyAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: %s, want %s", addr, got, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }
