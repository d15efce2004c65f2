package registry

import (
	"context"
	"errors"
	"net/http"

	"github.com/berth-mirror/berth/internal/access"
	"github.com/berth-mirror/berth/internal/store"
)

// serve runs the handler for req's kind once the gate let it through.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, req *request) error {
	switch req.path.Kind {
	case KindManifest:
		if req.referrers {
			return h.serveReferrers(w, r, req)
		}
		return h.serveManifest(w, r, req)
	case KindBlob:
		return h.serveBlob(w, r, req)
	default:
		return h.serveTags(w, r, req)
	}
}

// challenge is the 401 that makes a client (containerd, crane, skopeo) send
// its credentials for this registry to berth.
func challenge(format string, args ...any) *Error {
	e := newError(http.StatusUnauthorized, CodeUnauthorized, format, args...)
	e.Header = http.Header{"Www-Authenticate": {access.ChallengeHeader}}
	return e
}

// authorized serves req as the access gate decides (internal/access): a
// challenge, or a grant served with the client it names. An upstream
// refusal of what was granted, before any byte went out, goes back to the
// gate (its retry hook), whose next decision is served instead.
func (h *Handler) authorized(w *recorder, r *http.Request, req *request) error {
	dec, err := h.gate.Authorize(r.Context(), req.ask)
	for {
		if err != nil {
			return h.accessError(req, err)
		}
		if dec.Challenge != nil {
			return challenge("%s", dec.Challenge.Message)
		}
		err = h.serve(w, r, req.granted(dec.Grant))
		if err == nil && w.status == http.StatusOK {
			h.gate.Listed(req.ask, dec)
		}
		if !refusedUpstream(err) || w.wrote {
			return err
		}
		dec, err = h.gate.Refused(r.Context(), req.ask, dec)
	}
}

// refusedUpstream reports whether err is the upstream's 401 or 403 as
// upstreamError maps it, or the gate's Refused (nothing else in the
// handlers answers these).
func refusedUpstream(err error) bool {
	if err == nil {
		return false // served: the common case, without errors.As's allocation
	}
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return (e.Status == http.StatusUnauthorized && e.Code == CodeUnauthorized) ||
		(e.Status == http.StatusForbidden && e.Code == CodeDenied)
}

// accessError maps the gate's refusals to the OCI errors of req's kind;
// other errors pass.
func (h *Handler) accessError(req *request, err error) error {
	if err == nil {
		return nil // before e, which errors.As makes escape: no allocation per granted request
	}
	var e *access.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Reason {
	case access.NotFound:
		return newError(http.StatusNotFound, notFoundCode(req), "%s", e.Message)
	case access.Limited:
		le := newError(http.StatusTooManyRequests, CodeTooManyRequests, "%s", e.Message)
		le.Header = http.Header{"Retry-After": {"1"}}
		return le
	case access.Refused:
		return newError(http.StatusUnauthorized, CodeUnauthorized, "%s", e.Message)
	}
	return upstreamError(req.target, e.Err, notFoundCode(req))
}

// recheckShared asks the gate again once req's content is open from the
// store (access.Gate.Recheck): a private fill may have committed and marked
// the digest since the gate decided.
func (h *Handler) recheckShared(ctx context.Context, req *request) error {
	if req.private {
		return nil // nothing to recheck: the cheap common case of private pulls
	}
	return h.accessError(req, h.gate.Recheck(ctx, req.ask, access.Decision{Grant: req.grant()}))
}

// privateOrigin is the mark req's content is stored with: its repository
// when it is fetched for a private one, else "".
func privateOrigin(req *request) string { return req.origin }

func notFoundCode(req *request) string {
	if req.path.Kind == KindBlob {
		return CodeBlobUnknown
	}
	return CodeManifestUnknown
}

// putManifest stores a manifest fetched for req; for a private repository
// with its private mark in the same transaction, so the manifest is never in
// the store unmarked (the gate set its lookups on when it granted req).
func (h *Handler) putManifest(req *request, body []byte, nm store.NewManifest) (store.Info, error) {
	nm.PrivateOrigin = req.origin
	info, err := h.opts.Store.PutManifest(body, nm)
	if err == nil {
		h.sizes.learn(body)
	}
	return info, err
}
