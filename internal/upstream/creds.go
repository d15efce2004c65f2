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

// WithAuthenticator returns a client for the same registry, endpoint, base
// transport and options that authenticates with a instead of the configured
// credential: anonymous (authn.Anonymous), or a client's own credentials for
// a private repository. It shares c's connections but keeps its own
// per-repository auth transports (ping, token exchange), so tokens obtained
// with one credential are never used for another. The caller bounds how
// long it keeps the result; nothing of a is logged or written anywhere.
func (c *Client) WithAuthenticator(a authn.Authenticator) (*Client, error) {
	ep := c.ep
	ep.Username, ep.Password = "", ""
	n, err := New(ep, c.opts)
	if err != nil {
		return nil, err
	}
	if a == nil {
		a = authn.Anonymous
	}
	n.auth = a
	return n, nil
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
// another node obtained (PullToken) instead of credentials.
func (c *Client) WithRegistryToken(token string) (*Client, error) {
	return c.WithAuthenticator(authn.FromConfig(authn.AuthConfig{RegistryToken: token}))
}
