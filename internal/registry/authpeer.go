package registry

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/peerwire"
	"github.com/berth-mirror/berth/internal/upstream"
)

// peerAllowed applies the private-content rules on the owner's side of a
// peer request (issue 11 item 5). The asking node ran its own gate before
// it asked; verified says it checked its client's credentials for the
// repository named (a private one). Content that is not private here is
// served as before. Private content is served to a verified peer for the
// repository it was fetched for; otherwise only once that repository's
// upstream confirms to this node, anonymously, that it holds the content —
// else 404, and the asking node fetches from the upstream itself, with its
// client's credentials. So neither an unchecked client behind a peer nor
// content addressing across repositories reaches private content through
// the cluster.
func (h *Handler) peerAllowed(ctx context.Context, req *request, verified bool) error {
	dg := requestDigest(req)
	a := h.opts.Auth
	origin, err := a.privateOrigin(dg)
	if err != nil || origin == "" {
		return err
	}
	if verified && origin == repoID(req) {
		return nil
	}
	probe, err := a.probeClient(req.client)
	if err != nil {
		return err
	}
	if err := h.confirm(ctx, req, Credentials{}, dg, probe); err != nil {
		return newError(http.StatusNotFound, notFoundCode(req), "%s is private content this node cannot confirm for %s", dg, req.target)
	}
	return nil
}

// PeerUpstreamTokenHeader carries a verified client's short-lived upstream
// pull token from the asking node to the owner (the cluster package sends
// it under the same name).
const PeerUpstreamTokenHeader = peerwire.UpstreamTokenHeader

// pullToken is a cached upstream pull token ("" : the registry has none).
type pullToken struct {
	token string
	ttl   time.Duration
}

// peerToken is a bearer token for pulling req's repository, from the
// registry's token service with the client's credentials, for the cluster
// owner that will fetch what this node lacks, so that a private blob, too,
// crosses the internet once per cluster. The client's password never leaves
// this node. "" without a cluster, for a registry without tokens, or on
// failure (the owner then cannot fetch, and this node fetches itself).
func (h *Handler) peerToken(ctx context.Context, req *request, creds Credentials) string {
	if h.opts.Source == nil && h.opts.PeerManifest == nil {
		return ""
	}
	a := h.opts.Auth
	k := a.keys.sum("pull-token", creds.Username, creds.Password, repoID(req))
	now := a.opts.Now()
	if pt, at, ok := a.tokens.get(k); ok && now.Sub(at) < pt.ttl/2 {
		return pt.token
	}
	ctx, cancel := context.WithTimeout(ctx, h.live().UpstreamTimeout)
	defer cancel()
	tok, ttl, err := req.client.PullToken(ctx, req.target.Repository)
	switch {
	case errors.Is(err, upstream.ErrNoTokenAuth):
		a.tokens.put(k, pullToken{ttl: 2 * a.opts.TTL}, now) // ask again after auth_ttl
		return ""
	case err != nil:
		h.log.LogAttrs(ctx, slog.LevelDebug, "no upstream token for peers", slog.String("upstream", req.target.Registry),
			slog.String("repo", req.target.Repository), slog.String("error", err.Error()))
		return ""
	}
	a.tokens.put(k, pullToken{token: tok, ttl: ttl}, now)
	return tok
}

// peerGate is the owner's side of a peer request: the questions /v2/ asks
// before it hands out a byte, with the asking node in place of a client
// (issue 16 item 1). Content marked private follows peerAllowed. A
// repository that is private here (known, or found so by the anonymous
// probe /v2/ uses when a node credential could open it) is served only to a
// verified peer: its fill pulls with the upstream token the peer handed over,
// or else with this node's client (the node credential), and what it stores
// is marked private, so no route of this node serves it unchecked. Any
// other peer gets 404 and its node fetches with its client's credentials.
func (h *Handler) peerGate(ctx context.Context, req *request, token string) error {
	if req.heldOnly {
		// Only the store answers: nothing is fetched or probed for what
		// is not held (the store read rechecks what is).
		if _, err := h.opts.Store.Stat(digest.Digest(req.path.Reference)); err != nil {
			return newError(http.StatusNotFound, notFoundCode(req), "%s is not held by this node", req.path.Reference)
		}
	}
	if err := h.peerAllowed(ctx, req, req.verifiedPeer); err != nil {
		return err
	}
	class, err := h.classify(ctx, req)
	if err != nil {
		return err
	}
	private := class != classPublic
	if class == classHidden && !req.verifiedPeer {
		return newError(http.StatusNotFound, notFoundCode(req), "%s not found in %s", req.target.Repository, req.target.Registry)
	}
	if class == classPrivate && !req.verifiedPeer && h.stillPrivate(ctx, req) {
		return newError(http.StatusNotFound, notFoundCode(req), "%s is private: only a peer that checked its client is served", req.target)
	}
	if !req.verifiedPeer || (!private && token == "") {
		return nil
	}
	return h.peerFetchAs(req, token)
}

// peerFetchAs makes the owner fetch what a verified peer asks for as that
// peer's client could: with the upstream token it handed over, else with
// this node's own client. What it stores is marked private, so this node's
// own clients prove access before they read it.
func (h *Handler) peerFetchAs(req *request, token string) error {
	if token != "" {
		c, err := h.opts.Auth.tokenClient(req.client, token)
		if err != nil {
			return err
		}
		req.client = c
	}
	req.private = true
	_, err := h.markIfMissing(req)
	return err
}
