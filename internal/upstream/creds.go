package upstream

import (
	"github.com/google/go-containerregistry/pkg/authn"
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
