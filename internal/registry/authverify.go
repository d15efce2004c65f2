package registry

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/upstream"
)

// checkResult is what an upstream HEAD said about a client's access.
type checkResult int

const (
	checkUnavailable checkResult = iota // no answer: unreachable, 5xx, 429
	checkFound                          // 2xx: access, and the object is there
	checkAbsent                         // 404: no such object, or hidden from these credentials
	checkDenied                         // 401/403: no access
	checkCached                         // no request: a decision was made meanwhile
	checkLimited                        // no request: too many new credentials lately
)

var checkNames = [...]string{"unavailable", "found", "absent", "denied", "cached", "limited"}

// headObject asks the upstream, with c's credentials, for exactly what req
// names (manifest by tag or digest, or blob): a HEAD, no body. Counted, so
// tests and operators see how many upstream requests the checks cost.
func (h *Handler) headObject(ctx context.Context, c *upstream.Client, req *request) (checkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, h.live().UpstreamTimeout)
	defer cancel()
	var err error
	if req.path.Kind == KindBlob {
		_, err = c.HeadBlob(ctx, req.target.Repository, digest.Digest(req.path.Reference))
	} else {
		_, err = c.HeadManifest(ctx, req.target.Repository, req.path.Reference)
	}
	res := classifyCheck(err)
	h.opts.Auth.checks.WithLabelValues(checkNames[res]).Inc()
	h.log.LogAttrs(ctx, slog.LevelDebug, "access check upstream", slog.String("upstream", req.target.Registry),
		slog.String("repo", req.target.Repository), slog.String("ref", req.path.Reference), slog.String("result", checkNames[res]))
	if res == checkUnavailable {
		h.countFailure(ctx, req.target, err)
	}
	return res, err
}

func classifyCheck(err error) checkResult {
	switch upstream.Classify(err) {
	case upstream.Found:
		return checkFound
	case upstream.NotFound:
		return checkAbsent
	case upstream.Refused:
		return checkDenied
	}
	return checkUnavailable
}

// verify lets a request for a private repository through once the upstream
// accepted creds for it within auth_ttl; otherwise it asks (a HEAD of what is
// requested, with creds). While the upstream cannot answer, an acceptance
// younger than auth_ttl + auth_grace still counts.
func (h *Handler) verify(ctx context.Context, req *request, creds Credentials) error {
	a := h.opts.Auth
	t := req.target
	rk := repoKey(a, creds, repoID(req))
	allowed, at, known := a.decisions.get(rk)
	age := a.opts.Now().Sub(at)
	switch {
	case known && allowed && age < a.opts.TTL:
		a.outcomes.WithLabelValues("cached").Inc()
		return h.confirmObject(ctx, req, creds)
	case known && !allowed && age < min(denyTTL, a.opts.TTL):
		a.outcomes.WithLabelValues("challenged").Inc()
		return challenge("upstream %s refused these credentials for %s", t.Registry, t.Repository)
	}
	res, err := h.sharedCheck(ctx, req, creds, rk)
	switch res {
	case checkCached:
		a.outcomes.WithLabelValues("cached").Inc()
		return h.confirmObject(ctx, req, creds)
	case checkFound:
		a.outcomes.WithLabelValues("allowed").Inc()
		return h.confirmObject(ctx, req, creds)
	case checkAbsent:
		// Not a grant: a registry that hides private repositories
		// answers 404 to credentials without access, and a grant for the
		// repository would open its cached content to them.
		return upstreamError(t, err, notFoundCode(req))
	case checkDenied:
		a.outcomes.WithLabelValues("challenged").Inc()
		return challenge("upstream %s refused these credentials for %s", t.Registry, t.Repository)
	case checkLimited:
		return credentialsLimited(a, t)
	}
	if known && allowed && age < a.opts.TTL+a.opts.Grace {
		a.outcomes.WithLabelValues("grace").Inc()
		h.log.LogAttrs(ctx, slog.LevelWarn, "upstream unavailable: using an earlier access decision",
			slog.String("upstream", t.Registry), slog.String("repo", t.Repository), slog.Duration("age", age))
		return h.confirmObject(ctx, req, creds)
	}
	return upstreamError(t, err, notFoundCode(req))
}

// repoKey and objectKey key the decisions: a keyed hash of the credentials
// and what the upstream accepted them for.
func repoKey(a *Auth, creds Credentials, id string) cacheKey {
	return a.keys.sum("repo", creds.Username, creds.Password, id)
}

// sharedCheck asks the upstream once for all the requests with the same
// credentials for the same object that arrive while it asks, and records
// the decision before any of them goes on, so a burst of pulls with one
// pull secret costs one HEAD. checkCached: a decision was recorded
// meanwhile.
func (h *Handler) sharedCheck(ctx context.Context, req *request, creds Credentials, rk cacheKey) (checkResult, error) {
	a := h.opts.Auth
	key := string(rk[:]) + "\x00" + req.path.Kind.String() + "\x00" + req.path.Reference
	v, _, _ := a.flight.Do(key, func() (any, error) {
		if ok, at, known := a.decisions.get(rk); known && ok && a.opts.Now().Sub(at) < a.opts.TTL {
			return checkOutcome{res: checkCached}, nil
		}
		// Credentials with no decision: this check reaches the upstream.
		if !a.limiter.allow(a.opts.Now(), "repo\x00"+repoID(req), "src\x00"+req.source) {
			return checkOutcome{res: checkLimited}, nil
		}
		// Detached: the answer serves every waiter, not just this client.
		res, err := h.headObject(context.WithoutCancel(ctx), req.client, req)
		now := a.opts.Now()
		switch res {
		case checkFound:
			a.decisions.put(rk, true, now)
			a.persistPrivate(repoID(req))
			if dg := requestDigest(req); dg != "" {
				a.decisions.put(objectKey(a, creds, repoID(req), dg), true, now)
			}
		case checkDenied:
			a.decisions.put(rk, false, now)
		}
		return checkOutcome{res, err}, nil
	})
	o := v.(checkOutcome)
	return o.res, o.err
}

type checkOutcome struct {
	res checkResult
	err error
}

func objectKey(a *Auth, creds Credentials, id string, dg digest.Digest) cacheKey {
	return a.keys.sum("object", creds.Username, creds.Password, id, dg.String())
}

// confirmObject guards content addressing: private content (first fetched
// for a private repository) asked for through another repository is served
// only once that repository's upstream confirmed it holds it for this client.
func (h *Handler) confirmObject(ctx context.Context, req *request, creds Credentials) error {
	dg := requestDigest(req)
	if dg == "" {
		return nil
	}
	origin, err := h.opts.Auth.privateOrigin(dg)
	if err != nil {
		return err
	}
	if origin == "" || origin == repoID(req) {
		return nil
	}
	return h.confirm(ctx, req, creds, dg, req.client)
}

// checkShared is confirmObject for a repository not known to be private:
// private content (even fetched for this very repository, while it was
// private) is served through it only if its upstream confirms, to the probe
// client, that it holds the content. A refusal returns an error
// refusedUpstream recognises, which makes the repository private.
func (h *Handler) checkShared(ctx context.Context, req *request) error {
	dg := requestDigest(req)
	if dg == "" {
		dg = h.knownTagDigest(req)
	}
	if dg == "" {
		return nil
	}
	a := h.opts.Auth
	origin, err := a.privateOrigin(dg)
	if err != nil || origin == "" {
		return err
	}
	probe, err := a.probeClient(req.client)
	if err != nil {
		return err
	}
	return h.confirm(ctx, req, Credentials{}, dg, probe)
}

// recheckShared repeats checkShared (peerAllowed for the peer API) for a
// request the gate let through as public, once its content is open from the
// store: a private fill may have
// committed and marked the digest between the gate's check and the store
// read. It costs an atomic load on a node without private content, and a
// remembered decision otherwise.
func (h *Handler) recheckShared(ctx context.Context, req *request) error {
	switch {
	case req.private || h.opts.Auth == nil:
		return nil
	case req.peer:
		return h.peerAllowed(ctx, req, req.verifiedPeer)
	}
	return h.checkShared(ctx, req)
}

// confirm asks (or remembers) whether req.target holds dg for creds.
func (h *Handler) confirm(ctx context.Context, req *request, creds Credentials, dg digest.Digest, c *upstream.Client) error {
	a := h.opts.Auth
	k := objectKey(a, creds, repoID(req), dg)
	ok, at, known := a.decisions.get(k)
	age := a.opts.Now().Sub(at)
	if known && ok && age < a.opts.TTL {
		return nil
	}
	res, err := h.headObject(ctx, c, req)
	switch res {
	case checkFound:
		a.decisions.put(k, true, a.opts.Now())
		return nil
	case checkAbsent:
		return upstreamError(req.target, err, notFoundCode(req))
	case checkDenied:
		if creds.Empty() {
			return newError(http.StatusUnauthorized, CodeUnauthorized, "%s is private", req.target)
		}
		a.outcomes.WithLabelValues("challenged").Inc()
		return challenge("upstream %s refused these credentials for %s", req.target.Registry, req.target.Repository)
	}
	if known && ok && age < a.opts.TTL+a.opts.Grace {
		a.outcomes.WithLabelValues("grace").Inc()
		return nil
	}
	return upstreamError(req.target, err, notFoundCode(req))
}

// knownTagDigest is the digest a manifest request by tag would be served
// from the store (the tag's last resolution), so that a cached tag cannot
// serve private content either; "" if none.
func (h *Handler) knownTagDigest(req *request) digest.Digest {
	if req.path.Kind != KindManifest {
		return ""
	}
	tag, err := h.opts.Store.Tag(req.target.Registry, req.target.Repository, req.path.Reference)
	if err != nil {
		return ""
	}
	return tag.Digest
}

// credentialsLimited is the 429 for a check the limiter refused: counted,
// logged at debug (a flood must not flood the log), with Retry-After.
func credentialsLimited(a *Auth, t Target) error {
	a.outcomes.WithLabelValues("limited").Inc()
	e := newError(http.StatusTooManyRequests, CodeTooManyRequests,
		"too many new credentials for %s lately; retry later", t.Repository)
	e.Header = http.Header{"Retry-After": {"1"}}
	return e
}
