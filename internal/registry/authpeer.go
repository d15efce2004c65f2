package registry

import (
	"context"
	"net/http"
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
