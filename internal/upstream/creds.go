package upstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// WithAuthenticator returns a client for the same registry, endpoint and
// options that authenticates with a instead of the configured credential:
// anonymous (authn.Anonymous), a client's own credentials for a private
// repository, or a peer's bearer token. It shares c's connection pool and
// address guard (one per endpoint, made by New: the number of credentials
// seen does not multiply connections, descriptors or goroutines) but keeps
// its own per-repository auth transports (ping, token exchange), so tokens
// obtained with one credential are never used for another. It owns no
// connection: a derived client that is dropped leaves nothing open, and the
// pool keeps at most its MaxIdleConnsPerHost idle connections per host. The
// caller bounds how long it keeps the result; nothing of a is logged or
// written anywhere. The error is always nil (kept for callers).
func (c *Client) WithAuthenticator(a authn.Authenticator) (*Client, error) {
	if a == nil {
		a = authn.Anonymous
	}
	ep := c.ep
	ep.Username, ep.Password = "", ""
	return &Client{
		ep:    ep,
		url:   c.url,
		reg:   c.reg,
		base:  c.base,
		auth:  a,
		opts:  c.opts,
		rt:    c.rt,
		pool:  c.pool,
		guard: c.guard,
		repos: make(map[string]*repoTransport),
	}, nil
}

// HasCredentials reports whether the client authenticates with a configured
// (node) credential rather than anonymously.
func (c *Client) HasCredentials() bool { return c.auth != authn.Anonymous }

// ErrNoTokenAuth means the registry does not use bearer tokens (anonymous or
// Basic only): there is no token to hand to another node.
var ErrNoTokenAuth = errors.New("upstream: the registry does not use bearer tokens")

// PullToken exchanges the client's credentials for a bearer token scoped to
// pulling repo, as the registry's token service issues it, and how long it
// is valid. A cluster node that verified its client hands such a token (never
// the password) to the peer that will fetch for it. ErrNoTokenAuth when the
// registry does not challenge with Bearer.
func (c *Client) PullToken(ctx context.Context, repo string) (string, time.Duration, error) {
	pr, err := transport.Ping(ctx, c.reg, c.rt)
	if err != nil {
		return "", 0, c.classify(err)
	}
	if !strings.EqualFold(pr.Scheme, "bearer") {
		return "", 0, ErrNoTokenAuth
	}
	tok, err := transport.Exchange(ctx, c.reg, c.auth, c.rt, []string{"repository:" + repo + ":pull"}, pr)
	if err != nil {
		return "", 0, c.classify(err)
	}
	t := tok.Token
	if t == "" {
		t = tok.AccessToken
	}
	if t == "" {
		return "", 0, fmt.Errorf("%w: %s: empty token", ErrUnreachable, c.ep.Name)
	}
	ttl := time.Duration(tok.ExpiresIn) * time.Second
	if ttl <= 0 {
		ttl = time.Minute // the distribution token spec's default
	}
	return t, ttl, nil
}

// WithRegistryToken returns a client that authenticates with a bearer token
// another node obtained (PullToken) instead of credentials. A client made
// for a refreshed token shares the same pool (WithAuthenticator).
func (c *Client) WithRegistryToken(token string) (*Client, error) {
	return c.WithAuthenticator(authn.FromConfig(authn.AuthConfig{RegistryToken: token}))
}
