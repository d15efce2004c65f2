package registry

import (
	"context"
	"errors"
	"net/http"

	"github.com/opencontainers/go-digest"

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

// berthChallenge is the only challenge berth sends: Basic, to itself. A
// Bearer realm would send the client's password to wherever it names.
const berthChallenge = `Basic realm="berth"`

// challenge is the 401 that makes a client (containerd, crane, skopeo) send
// its credentials for this registry to berth.
func challenge(format string, args ...any) *Error {
	e := newError(http.StatusUnauthorized, CodeUnauthorized, format, args...)
	e.Header = http.Header{"Www-Authenticate": {berthChallenge}}
	return e
}

// authorized runs serve once the client may see what req asks for
// (DESIGN.md "Private content"). Public repositories are served as before,
// without a challenge; a repository whose upstream refuses the anonymous (or,
// with private_content: node, the node's) request becomes private, and from
// then on every client proves access with its own credentials before a byte
// of its content, cached or not, is sent. The checks run before serve, so
// joining a fill in flight never bypasses them.
func (h *Handler) authorized(w *recorder, r *http.Request, req *request) error {
	a := h.opts.Auth
	creds, err := ParseAuthorization(r.Header)
	if err != nil {
		a.outcomes.WithLabelValues("challenged").Inc()
		return challenge("%s", err.Error())
	}
	class, err := h.classify(r.Context(), req)
	if err != nil {
		return err
	}
	switch {
	case class == classHidden && creds.Empty():
		// What an anonymous client may know: nothing is there.
		return newError(http.StatusNotFound, notFoundCode(req), "%s not found in %s", req.target.Repository, req.target.Registry)
	case class == classHidden,
		class == classPrivate && (!creds.Empty() || h.stillPrivate(r.Context(), req)):
		return h.servePrivate(w, r, req, creds)
	}
	pub, err := h.publicRequest(req)
	if err != nil {
		return err
	}
	if err := h.checkShared(r.Context(), req); err != nil {
		if !refusedUpstream(err) {
			return err
		}
	} else if err = h.serve(w, r, pub); !refusedUpstream(err) || w.wrote {
		return err
	}
	// The upstream refused the anonymous (or node) request: private.
	a.markPrivate(repoID(req), req.target)
	if creds.Empty() {
		a.outcomes.WithLabelValues("challenged").Inc()
		return challenge("%s requires credentials", req.target)
	}
	return h.servePrivate(w, r, req, creds)
}

// publicRequest is req as served for a repository not known to be private.
// A tags/list is passed through upstream, so with a node credential in mode
// client it goes anonymously: the node's credential must not list a private
// repository's tags for a client that has none.
func (h *Handler) publicRequest(req *request) (*request, error) {
	if req.path.Kind != KindTags || !h.opts.Auth.anonymousProbe(req.client) {
		return req, nil
	}
	anon, err := h.opts.Auth.probeClient(req.client)
	if err != nil {
		return nil, err
	}
	pub := *req
	pub.client = anon
	return &pub, nil
}

// refusedUpstream reports whether err is the upstream's 401 or 403 as
// upstreamError maps it (nothing else in the handlers answers these).
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

// repoClass is what the gate knows of a request's repository.
type repoClass int

const (
	classPublic  repoClass = iota // served as before private content existed
	classPrivate                  // refused anonymously (or to the node): clients prove access
	// classHidden: with a node credential in mode client, the anonymous
	// probe got 404. Registries that hide private repositories answer 404,
	// not 401 (several do), so that is no proof of a public repository: the
	// node's credential must not fetch what an anonymous client could not
	// see. A client without credentials gets the 404; one with credentials
	// is served with them, as for a private repository.
	classHidden
)

// classify says whether req.target is private. Without a node credential
// (or with private_content: node) the request itself finds out; with one in
// mode client an anonymous HEAD of what is asked decides, a public answer
// remembered for auth_ttl, because the node's credential would open private
// content to all.
func (h *Handler) classify(ctx context.Context, req *request) (repoClass, error) {
	a := h.opts.Auth
	if a.isPrivate(req) {
		return classPrivate, nil
	}
	if !a.anonymousProbe(req.client) || req.path.Kind == KindTags {
		return classPublic, nil
	}
	k := a.keys.sum("public", repoID(req))
	if _, at, ok := a.public.get(k); ok && a.opts.Now().Sub(at) < a.opts.TTL {
		return classPublic, nil
	}
	anon, err := a.probeClient(req.client)
	if err != nil {
		return classPublic, err
	}
	res, err := h.headObject(ctx, anon, req)
	switch res {
	case checkFound:
		a.public.put(k, struct{}{}, a.opts.Now())
		return classPublic, nil
	case checkAbsent:
		return classHidden, nil
	case checkDenied:
		a.markPrivate(repoID(req), req.target)
		return classPrivate, nil
	}
	// Unknown: fetching with the node credential could expose a private
	// repository's content, so fail as for any upstream failure.
	return classPublic, upstreamError(req.target, err, notFoundCode(req))
}

// stillPrivate re-asks, at most once per auth_ttl, whether a private
// repository still refuses anonymous (or node) requests, so that one made
// public, or marked after a passing refusal, does not demand credentials
// forever. A client without credentials pays for the probe.
func (h *Handler) stillPrivate(ctx context.Context, req *request) bool {
	a := h.opts.Auth
	k := a.keys.sum("recheck", repoID(req))
	if _, at, ok := a.rechecked.get(k); ok && a.opts.Now().Sub(at) < a.opts.TTL {
		return true
	}
	probe, err := a.probeClient(req.client)
	if err != nil {
		return true
	}
	if res, _ := h.headObject(ctx, probe, req); res == checkFound {
		a.unmarkPrivate(repoID(req), req.target)
		return false
	}
	// Refused, not found (a registry may hide a private repository behind
	// 404: classHidden), or no answer: ask again after auth_ttl, not per
	// request.
	a.rechecked.put(k, struct{}{}, a.opts.Now())
	return true
}

// servePrivate serves a private repository's request with the client's own
// credentials, once the upstream has accepted them (or did within auth_ttl).
func (h *Handler) servePrivate(w *recorder, r *http.Request, req *request, creds Credentials) error {
	a := h.opts.Auth
	if creds.Empty() {
		a.outcomes.WithLabelValues("challenged").Inc()
		return challenge("%s requires credentials", req.target)
	}
	cc, err := a.clientFor(req.client, creds)
	if err != nil {
		return err
	}
	req.client, req.private = cc, true
	if req.path.Kind != KindTags {
		if err := h.verify(r.Context(), req, creds); err != nil {
			return err
		}
		missing, err := h.markIfMissing(req)
		if err != nil {
			return err
		}
		if missing {
			req.token = h.peerToken(r.Context(), req, creds)
		}
	} else if !h.knownCredentials(req, creds) && !a.limiter.allow(a.opts.Now(), "repo\x00"+repoID(req), "src\x00"+req.source) {
		// A tags/list goes upstream with the client's credentials: new
		// ones are limited like the checks of verify.
		return credentialsLimited(a, req.target)
	}
	err = h.serve(w, r, req)
	if err == nil && req.path.Kind == KindTags && w.status == http.StatusOK {
		// The upstream listed the tags with these credentials: they are
		// accepted for the repository.
		a.decisions.put(repoKey(a, creds, repoID(req)), true, a.opts.Now())
		a.persistPrivate(repoID(req))
	}
	if refusedUpstream(err) && !w.wrote {
		// Revoked within auth_ttl: forget the decision, ask again.
		a.decisions.remove(repoKey(a, creds, repoID(req)))
		a.outcomes.WithLabelValues("refused").Inc()
		return challenge("upstream %s refused these credentials for %s", req.target.Registry, req.target.Repository)
	}
	return err
}

// knownCredentials reports whether the upstream accepted creds for req's
// repository within auth_ttl.
func (h *Handler) knownCredentials(req *request, creds Credentials) bool {
	a := h.opts.Auth
	ok, at, known := a.decisions.get(repoKey(a, creds, repoID(req)))
	return known && ok && a.opts.Now().Sub(at) < a.opts.TTL
}

// markIfMissing reports whether content asked for by digest through a
// private repository is missing from the store (a cluster owner then gets
// a pull token). The mark itself is written with the content: the fill's
// commit (fetch.Request.PrivateOrigin) and putManifest store it in the same
// transaction as the object, so no route can serve it unchecked from the
// moment it lands, and a fill that fails leaves no mark behind. Until then
// lookups must consult the store: marked is set before the fetch.
func (h *Handler) markIfMissing(req *request) (missing bool, err error) {
	dg := requestDigest(req)
	if dg == "" {
		return false, nil
	}
	if _, err := h.opts.Store.Stat(dg); err == nil || !store.IsNotFound(err) {
		return false, nil
	}
	h.opts.Auth.marked.Store(true)
	return true, nil
}

// privateOrigin is the mark req's content is stored with: its repository
// when it is fetched for a private one, else "".
func privateOrigin(req *request) string {
	if req.private {
		return repoID(req)
	}
	return ""
}

// requestDigest is the digest a request names (blob, or manifest by
// digest), or "".
func requestDigest(req *request) digest.Digest {
	byDigest := req.path.Kind == KindBlob || (req.path.Kind == KindManifest && IsDigest(req.path.Reference))
	if !byDigest {
		return ""
	}
	return digest.Digest(req.path.Reference)
}

func notFoundCode(req *request) string {
	if req.path.Kind == KindBlob {
		return CodeBlobUnknown
	}
	return CodeManifestUnknown
}

// putManifest stores a manifest fetched for req; for a private repository
// with its private mark in the same transaction, so the manifest is never in
// the store unmarked.
func (h *Handler) putManifest(req *request, body []byte, nm store.NewManifest) (store.Info, error) {
	if req.private {
		h.opts.Auth.marked.Store(true) // before the write: a racing lookup reads the store
		nm.PrivateOrigin = repoID(req)
	}
	return h.opts.Store.PutManifest(body, nm)
}
