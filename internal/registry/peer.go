package registry

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/access"
	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/peer"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

var _ peer.Backend = (*Handler)(nil)

// ServePeer implements peer.Backend: it serves a peer's request (checked
// and parsed by peer.Server) with the same routing rules, access gate,
// limits and manifest cap as /v2/, from the store or from this node's own
// coalesced fill, which it streams while it runs. The fill's source sees
// the request came from a peer (fetch.Request.From): it asks other members
// only whether they hold the content, never to fetch it, so a request is
// forwarded once at most. With HeldOnly only the store answers: nothing is
// fetched. A peer's HEAD is answered here or by the upstream (Options.PeerHead
// is not asked).
func (h *Handler) ServePeer(w http.ResponseWriter, r *http.Request, preq peer.Request) error {
	// The recorder counts what the store serves (serveFile).
	err := h.servePeer(&recorder{ResponseWriter: w}, r, preq)
	if err == nil {
		return nil
	}
	e := asError(err)
	return &peer.Error{Status: e.Status, Code: e.Code, Message: e.Message, Header: e.Header, Err: err}
}

func (h *Handler) servePeer(w *recorder, r *http.Request, preq peer.Request) error {
	// The same routing rules as /v2/: only configured registries, checked
	// before any connection is made.
	t, c, err := h.route(preq.Repository, preq.Registry)
	if err != nil {
		return err
	}
	pk := KindManifest
	if preq.Kind == peer.KindBlob {
		pk = KindBlob
	}
	req := newRequest(Path{Name: t.String(), Reference: preq.Digest.String(), Kind: pk}, t, c)
	req.ask.Peer = &access.Peer{Verified: preq.Verified, Token: preq.UpstreamToken, HeldOnly: preq.HeldOnly}
	req.peer, req.heldOnly, req.from = true, preq.HeldOnly, preq.From
	dec, err := h.gate.Authorize(r.Context(), req.ask)
	if err != nil {
		return h.accessError(req, err)
	}
	if dec.Challenge != nil { // the owner's rules answer 404, never a challenge
		return newError(http.StatusNotFound, notFoundCode(req), "%s", dec.Challenge.Message)
	}
	req = req.granted(dec.Grant)
	if preq.Piece >= 0 {
		return h.servePiece(w, r, req, preq.Piece, preq.Size)
	}
	if pk == KindBlob {
		return h.serveBlob(w, r, req)
	}
	return h.serveManifest(w, r, req)
}

// manifestFromPeer gets a manifest by digest from its owner in the
// cluster, verifies and stores it; false: ask the upstream. The caller
// coalesces (fetchManifest).
func (h *Handler) manifestFromPeer(ctx context.Context, req *request, ref string) (manifest, bool) {
	if h.opts.PeerManifest == nil || !IsDigest(ref) {
		return manifest{}, false
	}
	dg, err := digest.Parse(ref)
	if err != nil {
		return manifest{}, false
	}
	body, mt, err := h.opts.PeerManifest(ctx, fetch.Request{Digest: dg, Registry: req.target.Registry, Repository: req.target.Repository,
		Verified: req.private, UpstreamToken: req.token, From: req.from}, "")
	if err != nil {
		return manifest{}, false
	}
	// The same checks as for an upstream's answer: the cap, the digest (in
	// PutManifest: wrong bytes from a peer are never stored) and the type.
	nm, err := newManifest(req.target, upstream.Descriptor{Digest: dg, MediaType: mt, Size: int64(len(body))}, body)
	if err == nil && int64(len(body)) > h.maxManifestBytes() {
		err = fmt.Errorf("%w: %d bytes", upstream.ErrTooLarge, len(body))
	}
	var info store.Info
	if err == nil {
		info, err = h.putManifest(req, body, nm)
	}
	if err != nil {
		h.log.LogAttrs(ctx, slog.LevelWarn, "manifest from a peer refused", slog.String("digest", ref), slog.String("error", err.Error()))
		return manifest{}, false
	}
	return manifest{body, info}, true
}
