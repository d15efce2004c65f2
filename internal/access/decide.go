package access

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/store"
)

// Authorize decides whether req may be served (DESIGN.md "Private
// content"). Public repositories are served as before, without a challenge;
// a repository whose upstream refuses the anonymous (or, with
// private_content: node, the node's) request becomes private, and from then
// on every client proves access with its own credentials before a byte of
// its content, cached or not, is sent. The checks run before the content is
// looked at, so joining a fill in flight never bypasses them.
//
// A peer request (req.Peer) gets the owner's rules: see authorizePeer.
// The error, when not nil, is an *Error or an internal failure.
func (a *Gate) Authorize(ctx context.Context, req Request) (Decision, error) {
	q := newAsk(req)
	if req.Peer != nil {
		return decided(a.authorizePeer(ctx, q))
	}
	return decided(a.authorize(ctx, q))
}

// decided turns a step's result into a Decision: a *Challenge returned as
// an error is the challenge.
func decided(g Grant, err error) (Decision, error) {
	if err == nil {
		return Decision{Grant: g}, nil // before c, which errors.As makes escape
	}
	var c *Challenge
	if errors.As(err, &c) {
		return Decision{Challenge: c}, nil
	}
	return Decision{}, err
}

func (a *Gate) authorize(ctx context.Context, q ask) (Grant, error) {
	if q.CredentialsErr != nil {
		a.outcomes.WithLabelValues("challenged").Inc()
		return Grant{}, challenge("%s", q.CredentialsErr.Error())
	}
	class, err := a.classify(ctx, q)
	if err != nil {
		return Grant{}, err
	}
	creds := q.Credentials
	switch {
	case class == classHidden && creds.Empty():
		// What an anonymous client may know: nothing is there.
		return Grant{}, refusal(NotFound, "%s not found in %s", q.Repository, q.Registry)
	case class == classHidden,
		class == classPrivate && (!creds.Empty() || a.stillPrivate(ctx, q)):
		return a.privateGrant(ctx, q)
	}
	pub, err := a.publicGrant(q)
	if err != nil {
		return Grant{}, err
	}
	if err := a.checkShared(ctx, q); err != nil {
		if !isRefused(err) {
			return Grant{}, err
		}
		return a.refusedPublic(ctx, q)
	}
	return pub, nil
}

// Recheck repeats, once the content d granted is open from the store, the
// check of private content asked for through a repository not known to be
// private (or, for a peer, the owner's rules on private content): a private
// fill may have committed and marked the digest between Authorize and the
// store read. It costs an atomic load on a node without private content, and
// a remembered decision otherwise. A *Error with Reason Refused goes to
// Refused like an upstream refusal.
func (a *Gate) Recheck(ctx context.Context, req Request, d Decision) error {
	switch {
	case d.Private:
		return nil
	case req.Peer != nil:
		return a.peerAllowed(ctx, newAsk(req), req.Peer.Verified)
	}
	return a.checkShared(ctx, newAsk(req))
}

// Refused is the retry hook: the upstream refused what d granted for req
// (its 401 or 403 during the fill, or Recheck's Refused), before any byte
// was sent. For a grant to a repository not known private, the repository
// becomes private: a client without credentials is challenged, one with
// credentials gets a private grant to retry with. For a private grant the
// client's access was revoked within auth_ttl: the decision is forgotten
// and the client challenged. Not for peer requests, which are never retried
// (NotFound).
func (a *Gate) Refused(ctx context.Context, req Request, d Decision) (Decision, error) {
	q := newAsk(req)
	switch {
	case req.Peer != nil:
		return Decision{}, refusal(NotFound, "%s is private: only a peer that checked its client is served", q.target())
	case d.Private:
		// Revoked within auth_ttl: forget the decision, ask again.
		a.decisions.remove(repoKey(a, q.Credentials, q.id))
		a.outcomes.WithLabelValues("refused").Inc()
		return Decision{Challenge: challenge("upstream %s refused these credentials for %s", q.Registry, q.Repository)}, nil
	}
	return decided(a.refusedPublic(ctx, q))
}

// Listed reports that the upstream listed req's tags with the credentials d
// carries: they are accepted for the repository.
func (a *Gate) Listed(req Request, d Decision) {
	if req.Kind != Tags || !d.Private || req.Peer != nil {
		return
	}
	q := newAsk(req)
	a.decisions.put(repoKey(a, q.Credentials, q.id), true, a.opts.Now())
	a.persistPrivate(q.id)
}

// refusedPublic: the upstream refused the anonymous (or node) request, so
// the repository is private.
func (a *Gate) refusedPublic(ctx context.Context, q ask) (Grant, error) {
	a.markPrivate(q)
	if q.Credentials.Empty() {
		a.outcomes.WithLabelValues("challenged").Inc()
		return Grant{}, challenge("%s requires credentials", q.target())
	}
	return a.privateGrant(ctx, q)
}

func (q ask) target() string { return q.Registry + "/" + q.Repository }

// publicGrant is the grant for a repository not known to be private. A tags/list
// is passed through upstream, so with a node credential in mode client it
// goes anonymously: the node's credential must not list a private
// repository's tags for a client that has none.
func (a *Gate) publicGrant(q ask) (Grant, error) {
	if q.Kind != Tags || !a.anonymousProbe(q.Client) {
		return Grant{Client: q.Client}, nil
	}
	anon, err := a.probeClient(q.Client)
	if err != nil {
		return Grant{}, err
	}
	return Grant{Client: anon}, nil
}

// isRefused reports whether err is the anonymous refusal confirm returns.
func isRefused(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason == Refused
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

// classify says whether q's repository is private. Without a node
// credential (or with private_content: node) the request itself finds out;
// with one in mode client an anonymous HEAD of what is asked decides, a
// public answer remembered for auth_ttl, because the node's credential would
// open private content to all.
func (a *Gate) classify(ctx context.Context, q ask) (repoClass, error) {
	if a.isPrivate(q.id) {
		return classPrivate, nil
	}
	if !a.anonymousProbe(q.Client) || q.Kind == Tags {
		return classPublic, nil
	}
	k := a.keys.sum("public", q.id)
	if _, at, ok := a.public.get(k); ok && a.opts.Now().Sub(at) < a.opts.TTL {
		return classPublic, nil
	}
	anon, err := a.probeClient(q.Client)
	if err != nil {
		return classPublic, err
	}
	res, err := a.headObject(ctx, anon, q)
	switch res {
	case checkFound:
		a.public.put(k, struct{}{}, a.opts.Now())
		return classPublic, nil
	case checkAbsent:
		return classHidden, nil
	case checkDenied:
		a.markPrivate(q)
		return classPrivate, nil
	}
	// Unknown: fetching with the node credential could expose a private
	// repository's content, so fail as for any upstream failure.
	return classPublic, upstreamFailed(err)
}

// stillPrivate re-asks, at most once per auth_ttl, whether a private
// repository still refuses anonymous (or node) requests, so that one made
// public, or marked after a passing refusal, does not demand credentials
// forever. A client without credentials pays for the probe.
func (a *Gate) stillPrivate(ctx context.Context, q ask) bool {
	k := a.keys.sum("recheck", q.id)
	if _, at, ok := a.rechecked.get(k); ok && a.opts.Now().Sub(at) < a.opts.TTL {
		return true
	}
	probe, err := a.probeClient(q.Client)
	if err != nil {
		return true
	}
	if res, _ := a.headObject(ctx, probe, q); res == checkFound {
		a.unmarkPrivate(q)
		return false
	}
	// Refused, not found (a registry may hide a private repository behind
	// 404: classHidden), or no answer: ask again after auth_ttl, not per
	// request.
	a.rechecked.put(k, struct{}{}, a.opts.Now())
	return true
}

// privateGrant grants a private repository's request the client's own
// credentials, once the upstream has accepted them (or did within
// auth_ttl).
func (a *Gate) privateGrant(ctx context.Context, q ask) (Grant, error) {
	creds := q.Credentials
	if creds.Empty() {
		a.outcomes.WithLabelValues("challenged").Inc()
		return Grant{}, challenge("%s requires credentials", q.target())
	}
	cc, err := a.clientFor(q.Client, creds)
	if err != nil {
		return Grant{}, err
	}
	g := Grant{Client: cc, Private: true, Origin: q.id}
	if q.Kind == Tags {
		if !a.knownCredentials(q, creds) && !a.limiter.allow(a.opts.Now(), "repo\x00"+q.id, "src\x00"+q.Source) {
			// A tags/list goes upstream with the client's credentials: new
			// ones are limited like the checks of verify.
			return Grant{}, a.credentialsLimited(q)
		}
		return g, nil
	}
	if err := a.verify(ctx, q, cc, creds); err != nil {
		return Grant{}, err
	}
	if a.markIfMissing(q) {
		g.Token = a.peerToken(ctx, q, cc, creds)
	}
	return g, nil
}

// knownCredentials reports whether the upstream accepted creds for q's
// repository within auth_ttl.
func (a *Gate) knownCredentials(q ask, creds Credentials) bool {
	ok, at, known := a.decisions.get(repoKey(a, creds, q.id))
	return known && ok && a.opts.Now().Sub(at) < a.opts.TTL
}

// markIfMissing reports whether content asked for by digest through a
// private repository is missing from the store (a cluster owner then gets
// a pull token). The mark itself is written with the content: the fill's
// commit (Grant.Origin becomes fetch.Request.PrivateOrigin) and the
// manifest's store write keep it in the same transaction as the object, so
// no route can serve it unchecked from the moment it lands, and a fill that
// fails leaves no mark behind. Until then lookups must consult the store:
// marked is set before anything is fetched with a private grant (a tag's
// resolution, or a blob stored where a manifest is asked for, may store a
// manifest too).
func (a *Gate) markIfMissing(q ask) (missing bool) {
	a.marked.Store(true)
	dg := q.digest()
	return dg != "" && a.missing(dg)
}

// missing reports whether dg is not held (without a store, nothing is).
func (a *Gate) missing(dg digest.Digest) bool {
	if a.opts.Store == nil {
		return true
	}
	_, err := a.opts.Store.Stat(dg)
	return err != nil && store.IsNotFound(err)
}
