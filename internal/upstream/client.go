// Package upstream talks to the real registries berth mirrors: it resolves
// auth challenges (anonymous, basic, bearer token) with go-containerregistry's
// transport, retries transient failures with backoff, follows redirects to
// blob storage, and turns upstream failures into typed errors.
//
// An upstream answer is untrusted: the configured scheme is the only one used
// (no plain-http fallback for an https upstream), redirects and token realms
// are held to an address policy checked on the address actually dialled
// (guard.go), and every error that leaves the package has its URLs stripped of
// queries and userinfo (redact.go).
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Endpoint is one upstream registry.
type Endpoint struct {
	// Name is the registry name clients use (docker.io, registry.test:5000).
	Name string
	// URL is where it is reached (https://registry-1.docker.io).
	URL string
	// Username and Password, if set, are offered when the registry asks.
	Username, Password string
}

// Options tune a Client. The zero value is usable.
type Options struct {
	// Timeout bounds dialing, TLS and waiting for response headers (default 30s).
	Timeout time.Duration
	// Retries is how many times a request failing with a connection error,
	// 5xx or 429 is retried (default 0: none).
	Retries int
	// Backoff is the first retry delay, doubled each time, with jitter
	// (default 200ms).
	Backoff time.Duration
	// MaxRetryWait caps one wait between retries; a Retry-After longer than
	// this (or than the context's deadline) ends the retries at once
	// (default 10s).
	MaxRetryWait time.Duration
	// Transport is the base transport (default: a tuned http.Transport). An
	// *http.Transport is cloned and dials through the address policy; any
	// other RoundTripper gets the scheme and redirect checks only.
	Transport http.RoundTripper
	// Classify tells the class of an address dialled (default ClassifyAddr
	// of its IP); tests replace it, since loopback cannot show public and
	// private apart.
	Classify func(netip.AddrPort) AddrClass
	// Logger receives retry and auth events (default: discard).
	Logger *slog.Logger
	// UserAgent is sent upstream.
	UserAgent string
}

// Client speaks to one upstream registry. It is safe for concurrent use.
type Client struct {
	ep Endpoint
	// url is ep.URL without credentials (URL): computed once, asked for
	// every request by the access gate.
	url  string
	reg  name.Registry
	base string // scheme://host
	auth authn.Authenticator
	opts Options
	// rt is the guarded transport: one connection pool per endpoint, shared
	// by every client derived from the one New returned (WithAuthenticator):
	// only the authenticator differs between them.
	rt http.RoundTripper
	// pool is the *http.Transport under rt (nil when Options.Transport is
	// another RoundTripper), for CloseIdleConnections.
	pool *http.Transport
	// guard holds every request for this upstream to its scheme and
	// address policy, redirects included.
	guard *guard

	mu sync.Mutex
	// repos: at most maxTransports entries per client, each for transportTTL.
	repos map[string]*repoTransport
	// auths coalesces the ping and token exchange of concurrent first
	// requests for one repository.
	auths singleflight.Group
}

type repoTransport struct {
	rt      http.RoundTripper
	created time.Time
}

// transportTTL is how long one repository's authenticated transport is kept;
// ggcr refreshes expired tokens on 401 itself, this just bounds the map.
const (
	transportTTL  = 10 * time.Minute
	maxTransports = 4096
	maxErrorBody  = 64 << 10
	// maxResponseHeader bounds the headers of one upstream response: a
	// registry's are a few hundred bytes, net/http would accept 10 MiB.
	maxResponseHeader = 64 << 10
	defaultBackoff    = 200 * time.Millisecond
)

// New returns a Client for ep.
func New(ep Endpoint, opts Options) (*Client, error) {
	u, err := url.Parse(ep.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("upstream %s: invalid URL %q", ep.Name, redactURL(ep.URL))
	}
	var nopts []name.Option
	if u.Scheme == "http" {
		nopts = append(nopts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, nopts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", ep.Name, err)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Backoff <= 0 {
		opts.Backoff = defaultBackoff
	}
	if opts.MaxRetryWait <= 0 {
		opts.MaxRetryWait = defaultMaxRetryWait
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Transport == nil {
		opts.Transport = NewTransport(opts.Timeout)
	}
	auth := authn.Anonymous
	if ep.Username != "" || ep.Password != "" {
		auth = authn.FromConfig(authn.AuthConfig{Username: ep.Username, Password: ep.Password})
	}
	g := newGuard(ep.Name, u, opts.Classify)
	rt, pool := g.wrap(opts.Transport, opts.Timeout)
	if opts.UserAgent != "" {
		rt = transport.NewUserAgent(rt, opts.UserAgent)
	}
	return &Client{
		ep:    ep,
		url:   redactURL(ep.URL),
		reg:   reg,
		base:  u.Scheme + "://" + u.Host,
		auth:  auth,
		opts:  opts,
		rt:    rt,
		pool:  pool,
		guard: g,
		repos: make(map[string]*repoTransport),
	}, nil
}

// NewTransport returns the base HTTP transport for upstream connections.
func NewTransport(timeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    timeout,
		ResponseHeaderTimeout:  timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxResponseHeader,
	}
}

// CloseIdleConnections closes the idle connections of the endpoint's pool,
// which every client derived from this one shares: for a client no longer
// used (replaced at a reload). In-flight requests are not disturbed.
func (c *Client) CloseIdleConnections() {
	if c.pool != nil {
		c.pool.CloseIdleConnections()
	}
}

// Name is the registry name this client serves.
func (c *Client) Name() string { return c.ep.Name }

// URL is the endpoint (without credentials).
func (c *Client) URL() string { return c.url }

// transportFor returns an authenticated transport scoped to pull repo.
func (c *Client) transportFor(ctx context.Context, repo string) (http.RoundTripper, error) {
	c.mu.Lock()
	rt, ok := c.repos[repo]
	c.mu.Unlock()
	if ok && time.Since(rt.created) < transportTTL {
		return rt.rt, nil
	}
	v, err, _ := c.auths.Do(repo, func() (any, error) {
		// Detached: the result serves every waiter, not just the first.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*c.opts.Timeout)
		defer cancel()
		scope := "repository:" + repo + ":pull"
		t, err := transport.NewWithContext(actx, c.reg, c.auth, c.rt, []string{scope})
		if err != nil {
			return nil, c.classify(err)
		}
		c.remember(repo, t)
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(http.RoundTripper), nil
}

// remember keeps repo's authenticated transport, bounding the map.
func (c *Client) remember(repo string, t http.RoundTripper) {
	c.mu.Lock()
	if len(c.repos) >= maxTransports {
		for k, v := range c.repos {
			if time.Since(v.created) >= transportTTL || len(c.repos) >= maxTransports {
				delete(c.repos, k)
			}
		}
	}
	c.repos[repo] = &repoTransport{rt: t, created: time.Now()}
	c.mu.Unlock()
}

// forget drops a repository's transport so the next request authenticates anew.
func (c *Client) forget(repo string) {
	c.mu.Lock()
	delete(c.repos, repo)
	c.mu.Unlock()
}

func (c *Client) once(ctx context.Context, method, repo, path string, hdr http.Header) (*http.Response, error) {
	rt, err := c.transportFor(ctx, repo)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: rt, CheckRedirect: c.guard.checkRedirect}).Do(req)
	if err != nil {
		return nil, c.classify(err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	serr := readStatusError(c.ep.Name, resp)
	if resp.StatusCode == http.StatusUnauthorized {
		// A token the registry no longer accepts: authenticate anew next time.
		c.forget(repo)
	}
	return nil, serr
}

// classify wraps transport failures: network errors and refusals become
// ErrUnreachable, auth failures from the token exchange keep their status.
// Every URL in the result is redacted.
func (c *Client) classify(err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		se := &StatusError{Upstream: c.ep.Name, Status: te.StatusCode}
		if len(te.Errors) > 0 {
			se.Code = truncate(string(te.Errors[0].Code), maxCodeLen)
			se.Message = truncate(redactText(te.Errors[0].Message), maxMessageLen)
		}
		if se.Status == 0 || se.Status >= 500 {
			return fmt.Errorf("%w: %s: %w", ErrUnreachable, c.ep.Name, se)
		}
		return se
	}
	return fmt.Errorf("%w: %s: %w", ErrUnreachable, c.ep.Name, redact(err))
}

func drain(rc io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, rc, 4<<10)
	_ = rc.Close()
}

func repoPath(repo, kind, ref string) string {
	return "/v2/" + repo + "/" + kind + "/" + ref
}
