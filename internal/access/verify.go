package access

import (
	"context"
	"log/slog"

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

// headObject asks the upstream, with c's credentials, for exactly what q
// names (manifest by tag or digest, or blob): a HEAD, no body. Counted, so
// tests and operators see how many upstream requests the checks cost.
func (a *Gate) headObject(ctx context.Context, c *upstream.Client, q ask) (checkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, a.opts.UpstreamTimeout())
	defer cancel()
	var err error
	if q.object() == Blob {
		_, err = c.HeadBlob(ctx, q.Repository, digest.Digest(q.Reference))
	} else {
		_, err = c.HeadManifest(ctx, q.Repository, q.Reference)
	}
	res := classifyCheck(err)
	a.checks.WithLabelValues(checkNames[res]).Inc()
	a.log.LogAttrs(ctx, slog.LevelDebug, "access check upstream", slog.String("upstream", q.Registry),
		slog.String("repo", q.Repository), slog.String("ref", q.Reference), slog.String("result", checkNames[res]))
	if res == checkUnavailable {
		a.opts.Failed(ctx, q.Registry, q.Repository, err)
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
// accepted creds (carried by cc) for it within auth_ttl; otherwise it asks
// (a HEAD of what is requested, with creds). While the upstream cannot
// answer, an acceptance younger than auth_ttl + auth_grace still counts.
func (a *Gate) verify(ctx context.Context, q ask, cc *upstream.Client, creds Credentials) error {
	rk := repoKey(a, creds, q.id)
	allowed, at, known := a.decisions.get(rk)
	age := a.opts.Now().Sub(at)
	switch {
	case known && allowed && age < a.opts.TTL:
		a.outcomes.WithLabelValues("cached").Inc()
		return a.confirmObject(ctx, q, cc, creds)
	case known && !allowed && age < min(DenyTTL, a.opts.TTL):
		a.outcomes.WithLabelValues("challenged").Inc()
		return challenge("upstream %s refused these credentials for %s", q.Registry, q.Repository)
	}
	res, err := a.sharedCheck(ctx, q, cc, creds, rk)
	switch res {
	case checkCached:
		a.outcomes.WithLabelValues("cached").Inc()
		return a.confirmObject(ctx, q, cc, creds)
	case checkFound:
		a.outcomes.WithLabelValues("allowed").Inc()
		return a.confirmObject(ctx, q, cc, creds)
	case checkAbsent:
		// Not a grant: a registry that hides private repositories
		// answers 404 to credentials without access, and a grant for the
		// repository would open its cached content to them.
		return upstreamFailed(err)
	case checkDenied:
		a.outcomes.WithLabelValues("challenged").Inc()
		return challenge("upstream %s refused these credentials for %s", q.Registry, q.Repository)
	case checkLimited:
		return a.credentialsLimited(q)
	}
	if known && allowed && age < a.opts.TTL+a.opts.Grace {
		a.outcomes.WithLabelValues("grace").Inc()
		a.log.LogAttrs(ctx, slog.LevelWarn, "upstream unavailable: using an earlier access decision",
			slog.String("upstream", q.Registry), slog.String("repo", q.Repository), slog.Duration("age", age))
		return a.confirmObject(ctx, q, cc, creds)
	}
	return upstreamFailed(err)
}

// repoKey and objectKey key the decisions: a keyed hash of the credentials
// and what the upstream accepted them for.
func repoKey(a *Gate, creds Credentials, id string) cacheKey {
	return a.keys.sum("repo", creds.Username, creds.Password, id)
}

func objectKey(a *Gate, creds Credentials, id string, dg digest.Digest) cacheKey {
	return a.keys.sum("object", creds.Username, creds.Password, id, dg.String())
}

// sharedCheck asks the upstream once for all the requests with the same
// credentials for the same object that arrive while it asks, and records
// the decision before any of them goes on, so a burst of pulls with one
// pull secret costs one HEAD. checkCached: a decision was recorded
// meanwhile.
func (a *Gate) sharedCheck(ctx context.Context, q ask, cc *upstream.Client, creds Credentials, rk cacheKey) (checkResult, error) {
	key := string(rk[:]) + "\x00" + q.object().String() + "\x00" + q.Reference
	v, _, _ := a.flight.Do(key, func() (any, error) {
		if ok, at, known := a.decisions.get(rk); known && ok && a.opts.Now().Sub(at) < a.opts.TTL {
			return checkOutcome{res: checkCached}, nil
		}
		// Credentials with no decision: this check reaches the upstream.
		if !a.limiter.allow(a.opts.Now(), "repo\x00"+q.id, "src\x00"+q.Source) {
			return checkOutcome{res: checkLimited}, nil
		}
		// Detached: the answer serves every waiter, not just this client.
		res, err := a.headObject(context.WithoutCancel(ctx), cc, q)
		now := a.opts.Now()
		switch res {
		case checkFound:
			a.decisions.put(rk, true, now)
			a.persistPrivate(q.id)
			if dg := q.digest(); dg != "" {
				a.decisions.put(objectKey(a, creds, q.id, dg), true, now)
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

// confirmObject guards content addressing: private content (first fetched
// for a private repository) asked for through another repository is served
// only once that repository's upstream confirmed it holds it for this client.
func (a *Gate) confirmObject(ctx context.Context, q ask, cc *upstream.Client, creds Credentials) error {
	dg := q.digest()
	if dg == "" {
		return nil
	}
	origin, err := a.privateOrigin(dg)
	if err != nil {
		return err
	}
	if origin == "" || origin == q.id {
		return nil
	}
	return a.confirm(ctx, q, creds, dg, cc)
}

// checkShared is confirmObject for a repository not known to be private:
// private content (even fetched for this very repository, while it was
// private) is served through it only if its upstream confirms, to the probe
// client, that it holds the content. A refusal is an *Error with Reason
// Refused, which makes the repository private.
func (a *Gate) checkShared(ctx context.Context, q ask) error {
	dg := q.digest()
	if dg == "" {
		dg = a.knownTagDigest(q)
	}
	if dg == "" {
		return nil
	}
	origin, err := a.privateOrigin(dg)
	if err != nil || origin == "" {
		return err
	}
	probe, err := a.probeClient(q.Client)
	if err != nil {
		return err
	}
	return a.confirm(ctx, q, Credentials{}, dg, probe)
}

// confirm asks (or remembers) whether q's repository holds dg for creds.
func (a *Gate) confirm(ctx context.Context, q ask, creds Credentials, dg digest.Digest, c *upstream.Client) error {
	k := objectKey(a, creds, q.id, dg)
	ok, at, known := a.decisions.get(k)
	age := a.opts.Now().Sub(at)
	if known && ok && age < a.opts.TTL {
		return nil
	}
	res, err := a.headObject(ctx, c, q)
	switch res {
	case checkFound:
		a.decisions.put(k, true, a.opts.Now())
		return nil
	case checkAbsent:
		return upstreamFailed(err)
	case checkDenied:
		if creds.Empty() {
			return refusal(Refused, "%s is private", q.target())
		}
		a.outcomes.WithLabelValues("challenged").Inc()
		return challenge("upstream %s refused these credentials for %s", q.Registry, q.Repository)
	}
	if known && ok && age < a.opts.TTL+a.opts.Grace {
		a.outcomes.WithLabelValues("grace").Inc()
		return nil
	}
	return upstreamFailed(err)
}

// knownTagDigest is the digest a manifest request by tag would be served
// from the store (the tag's last resolution), so that a cached tag cannot
// serve private content either; "" if none.
func (a *Gate) knownTagDigest(q ask) digest.Digest {
	if q.Kind != Manifest || a.opts.Store == nil {
		return ""
	}
	tag, err := a.opts.Store.Tag(q.Registry, q.Repository, q.Reference)
	if err != nil {
		return ""
	}
	return tag.Digest
}

// credentialsLimited is the 429 for a check the limiter refused: counted,
// logged at debug (a flood must not flood the log).
func (a *Gate) credentialsLimited(q ask) error {
	a.outcomes.WithLabelValues("limited").Inc()
	return refusal(Limited, "too many new credentials for %s lately; retry later", q.Repository)
}
