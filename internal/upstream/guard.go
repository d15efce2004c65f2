package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrRefused means berth would not follow where an upstream pointed it: a
// redirect from https to plain http, or a connection to an address the
// upstream has no business sending berth to (see allowDial).
var ErrRefused = errors.New("upstream: refused")

// maxRedirects is net/http's default limit, kept.
const maxRedirects = 10

// guard keeps one upstream's requests where its configuration allows: the
// configured scheme only, and connections other than to the upstream itself
// only to addresses its own class permits. It checks the address actually
// dialled (after DNS), so a name that resolves somewhere unexpected is caught
// too, and it sees every request go-containerregistry makes for the upstream
// (ping, token exchange, redirects), not only berth's own.
type guard struct {
	name     string // upstream name, for errors
	https    bool   // the upstream is configured https: nothing goes in clear
	hostport string // the upstream's host:port as the transport dials it
	classify func(netip.AddrPort) AddrClass
	// upClass is the class of the upstream's own address when last dialled,
	// -1 before that (treated as public: the strictest).
	upClass atomic.Int32
	// proxies are the proxy addresses the transport's Proxy func returned:
	// configured by the operator, dialled without a check. Behind a proxy
	// only literal addresses in redirects can be checked (checkRedirect).
	proxies sync.Map
}

func newGuard(name string, u *url.URL, classify func(netip.AddrPort) AddrClass) *guard {
	if classify == nil {
		classify = func(ap netip.AddrPort) AddrClass { return ClassifyAddr(ap.Addr()) }
	}
	g := &guard{name: name, https: u.Scheme == "https", hostport: canonicalAddr(u), classify: classify}
	g.upClass.Store(-1)
	return g
}

// canonicalAddr is host:port with the scheme's default port, as net/http
// passes it to DialContext.
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "socks5", "socks5h":
			port = "1080"
		default:
			port = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

func (g *guard) upstreamClass() AddrClass {
	if v := g.upClass.Load(); v >= 0 {
		return AddrClass(v)
	}
	return Public
}

// wrap returns base with the guard in front of it, and the transport whose
// pool it uses. An *http.Transport is cloned (so its connection pool is this
// upstream's alone: a connection another upstream was allowed to make is
// never reused here) and dials through the guard; any other RoundTripper
// (tests) dials as it likes and gets the scheme and redirect checks only
// (the pool returned is then nil). It is called once per endpoint (New):
// clients derived for other credentials share the result.
func (g *guard) wrap(base http.RoundTripper, timeout time.Duration) (http.RoundTripper, *http.Transport) {
	var pool *http.Transport
	if t, ok := base.(*http.Transport); ok {
		t = t.Clone()
		// A custom TLS dialer would bypass DialContext's check.
		t.DialTLSContext, t.DialTLS, t.Dial = nil, nil, nil //nolint:staticcheck // the deprecated fields would bypass the check too
		t.DialContext = g.dialContext(&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second})
		if t.MaxResponseHeaderBytes <= 0 {
			t.MaxResponseHeaderBytes = maxResponseHeader
		}
		if p := t.Proxy; p != nil {
			t.Proxy = func(r *http.Request) (*url.URL, error) {
				u, err := p(r)
				if u != nil {
					g.proxies.Store(canonicalAddr(u), struct{}{})
				}
				return u, err
			}
		}
		base, pool = t, t
	}
	return &schemeGuard{g: g, next: base}, pool
}

// dialContext dials addr, checking the address connected to: the upstream's
// own address is learnt (it decides the upstream's class), a proxy is
// trusted, anything else must pass allowDial.
func (g *guard) dialContext(d *net.Dialer) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		dd := *d
		switch {
		case strings.EqualFold(addr, g.hostport):
			dd.ControlContext = g.learn
		case g.isProxy(addr):
		default:
			dd.ControlContext = g.check
		}
		return dd.DialContext(ctx, network, addr)
	}
}

func (g *guard) isProxy(addr string) bool {
	_, ok := g.proxies.Load(addr)
	return ok
}

func (g *guard) learn(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address %q", ErrRefused, address)
	}
	g.upClass.Store(int32(g.classify(ap)))
	return nil
}

func (g *guard) check(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address %q", ErrRefused, address)
	}
	if err := allowDial(g.upstreamClass(), g.classify(ap)); err != nil {
		return fmt.Errorf("upstream %s: connecting to %s: %w", g.name, ap, err)
	}
	return nil
}

// checkRedirect is the http.Client redirect policy: https stays https, and a
// literal address is checked before anything is dialled (behind a proxy this
// is the only check; without one, the dial check is the authoritative one).
func (g *guard) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("upstream %s: stopped after %d redirects", g.name, maxRedirects)
	}
	u := req.URL
	if g.https && u.Scheme != "https" {
		return fmt.Errorf("%w: upstream %s redirected from https to %s://%s", ErrRefused, g.name, u.Scheme, u.Host)
	}
	if strings.EqualFold(canonicalAddr(u), g.hostport) {
		return nil
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		_, p, _ := net.SplitHostPort(canonicalAddr(u))
		port, _ := strconv.ParseUint(p, 10, 16)
		if err := allowDial(g.upstreamClass(), g.classify(netip.AddrPortFrom(a, uint16(port)))); err != nil {
			return fmt.Errorf("upstream %s: redirect to %s: %w", g.name, u.Host, err)
		}
	}
	return nil
}

// schemeGuard refuses any plain-http request for an https upstream. It sits
// under go-containerregistry, which for a localhost or private-address
// registry pings plain http alongside https and, if that answers, sends
// everything (credentials included) in clear.
type schemeGuard struct {
	g    *guard
	next http.RoundTripper
}

func (s *schemeGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if s.g.https && r.URL.Scheme != "https" {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		// Not ErrRefused: this is where ggcr's plain-http ping ends, and the
		// failure that matters then is the https one beside it.
		return nil, fmt.Errorf("upstream %s is configured https: plain http to %s not sent", s.g.name, r.URL.Host)
	}
	return s.next.RoundTrip(r)
}
