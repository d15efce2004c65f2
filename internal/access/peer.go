package access

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/upstream"
)

// authorizePeer is the owner's side of a peer request: the questions /v2/
// asks before it hands out a byte, with the asking node in place of a client
// (issue 16 item 1). Content marked private follows peerAllowed. A
// repository that is private here (known, or found so by the anonymous
// probe /v2/ uses when a node credential could open it) is served only to a
// verified peer: its fill pulls with the upstream token the peer handed
// over, or else with this node's client (the node credential), and what it
// stores is marked private, so no route of this node serves it unchecked.
// Any other peer gets NotFound and its node fetches with its client's
// credentials.
func (a *Gate) authorizePeer(ctx context.Context, q ask) (Grant, error) {
	p := q.Peer
	if p.HeldOnly && !a.held(q) {
		// Only the store answers: nothing is fetched or probed for what
		// is not held (the store read rechecks what is).
		return Grant{}, refusal(NotFound, "%s is not held by this node", q.Reference)
	}
	if err := a.peerAllowed(ctx, q, p.Verified); err != nil {
		return Grant{}, err
	}
	class, err := a.classify(ctx, q)
	if err != nil {
		return Grant{}, err
	}
	private := class != classPublic
	if class == classHidden && !p.Verified {
		return Grant{}, refusal(NotFound, "%s not found in %s", q.Repository, q.Registry)
	}
	if class == classPrivate && !p.Verified && a.stillPrivate(ctx, q) {
		return Grant{}, refusal(NotFound, "%s is private: only a peer that checked its client is served", q.target())
	}
	if !p.Verified || (!private && p.Token == "") {
		return Grant{Client: q.Client}, nil
	}
	return a.peerFetchAs(q)
}

// held reports whether the store holds what q names.
func (a *Gate) held(q ask) bool {
	if q.Reference == "" || a.opts.Store == nil {
		return false
	}
	_, err := a.opts.Store.Stat(digest.Digest(q.Reference))
	return err == nil
}

// peerAllowed applies the private-content rules on the owner's side of a
// peer request (issue 11 item 5). The asking node ran its own gate before
// it asked; verified says it checked its client's credentials for the
// repository named (a private one). Content that is not private here is
// served as before. Private content is served to a verified peer for the
// repository it was fetched for; otherwise only once that repository's
// upstream confirms to this node, anonymously, that it holds the content —
// else NotFound, and the asking node fetches from the upstream itself, with
// its client's credentials. So neither an unchecked client behind a peer
// nor content addressing across repositories reaches private content
// through the cluster.
func (a *Gate) peerAllowed(ctx context.Context, q ask, verified bool) error {
	dg := q.digest()
	origin, err := a.privateOrigin(dg)
	if err != nil || origin == "" {
		return err
	}
	if verified && origin == q.id {
		return nil
	}
	probe, err := a.probeClient(q.Client)
	if err != nil {
		return err
	}
	if err := a.confirm(ctx, q, Credentials{}, dg, probe); err != nil {
		return refusal(NotFound, "%s is private content this node cannot confirm for %s", dg, q.target())
	}
	return nil
}

// peerFetchAs makes the owner fetch what a verified peer asks for as that
// peer's client could: with the upstream token it handed over, else with
// this node's own client. What it stores is marked private, so this node's
// own clients prove access before they read it.
func (a *Gate) peerFetchAs(q ask) (Grant, error) {
	g := Grant{Client: q.Client, Private: true, Origin: q.id}
	if q.Peer.Token != "" {
		c, err := a.tokenClient(q.Client, q.Peer.Token)
		if err != nil {
			return Grant{}, err
		}
		g.Client = c
	}
	a.markIfMissing(q)
	return g, nil
}

// pullToken is a cached upstream pull token ("" : the registry has none).
type pullToken struct {
	token string
	ttl   time.Duration
}

// peerToken is a bearer token for pulling q's repository, from the
// registry's token service with the client's credentials (cc carries them),
// for the cluster owner that will fetch what this node lacks, so that a
// private blob, too, crosses the internet once per cluster. The client's
// password never leaves this node. "" without a cluster, for a registry
// without tokens, or on failure (the owner then cannot fetch, and this node
// fetches itself).
func (a *Gate) peerToken(ctx context.Context, q ask, cc *upstream.Client, creds Credentials) string {
	if !a.opts.PeerTokens {
		return ""
	}
	k := a.keys.sum("pull-token", creds.Username, creds.Password, q.id)
	now := a.opts.Now()
	if pt, at, ok := a.tokens.get(k); ok && now.Sub(at) < pt.ttl/2 {
		return pt.token
	}
	ctx, cancel := context.WithTimeout(ctx, a.opts.UpstreamTimeout())
	defer cancel()
	tok, ttl, err := cc.PullToken(ctx, q.Repository)
	switch {
	case errors.Is(err, upstream.ErrNoTokenAuth):
		a.tokens.put(k, pullToken{ttl: 2 * a.opts.TTL}, now) // ask again after auth_ttl
		return ""
	case err != nil:
		a.log.LogAttrs(ctx, slog.LevelDebug, "no upstream token for peers", slog.String("upstream", q.Registry),
			slog.String("repo", q.Repository), slog.String("error", err.Error()))
		return ""
	}
	a.tokens.put(k, pullToken{token: tok, ttl: ttl}, now)
	return tok
}
