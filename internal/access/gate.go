package access

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// Who may read private content fetched with a node (configured) credential.
const (
	// PrivateClient: every client proves access with its own credentials,
	// even where the node's credential would be accepted (the default).
	PrivateClient = "client"
	// PrivateNode: any client on the node reads what the node credential
	// fetched, as before private content existed.
	PrivateNode = "node"
)

// Store is what the gate needs of the content store: the private marks,
// which keep which repositories are private and which content was first
// fetched for one across restarts (names and digests, never credentials),
// and what is held. *store.Store implements it.
type Store interface {
	// MarkPrivateRepo records a repository (its endpoint URL and name) as
	// private.
	MarkPrivateRepo(target string) error
	// UnmarkPrivateRepo forgets that mark.
	UnmarkPrivateRepo(target string) error
	// PrivateRepos lists the repositories marked private.
	PrivateRepos() ([]string, error)
	// PrivateObject returns dg's origin, or an error satisfying
	// store.IsNotFound when dg is not private.
	PrivateObject(dg digest.Digest) (string, error)
	// HasPrivateObjects reports whether any content is marked private.
	HasPrivateObjects() (bool, error)
	// Stat describes dg, or returns an error satisfying store.IsNotFound.
	Stat(dg digest.Digest) (store.Info, error)
	// Tag returns a tag's last resolution.
	Tag(registry, repo, tag string) (store.Tag, error)
}

// Options configure a Gate. The zero value is usable: decisions for 5
// minutes, a 15-minute grace when the upstream is down, mode client, marks
// kept in memory only.
type Options struct {
	// TTL is how long the upstream's acceptance of a client's credentials
	// for a repository is trusted (auth_ttl).
	TTL time.Duration
	// Grace is how much longer an acceptance stays valid while the upstream
	// cannot be reached (auth_grace; 0: the default, negative: none).
	Grace time.Duration
	// Mode is PrivateClient or PrivateNode (private_content).
	Mode string
	// Store persists private marks and says what is held (nil: marks in
	// memory only, nothing held).
	Store Store
	// Registerer, if set, receives the gate's metrics.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// UpstreamTimeout, read per check, bounds an upstream access check
	// (nil: 60s). The registry gives its live upstream timeout.
	UpstreamTimeout func() time.Duration
	// Failed, if set, is told of an access check the upstream could not
	// answer, so that it is counted and logged with the other upstream
	// failures. ctx is the request's.
	Failed func(ctx context.Context, registry, repository string, err error)
	// PeerTokens: a cluster owner may fetch what this node lacks, so
	// private requests get an upstream pull token to hand over.
	PeerTokens bool
}

// Gate decides who may read what, and keeps what it needs for that: which
// repositories are private, the decisions made for clients' credentials and
// the upstream clients that carry those credentials. Safe for concurrent use.
type Gate struct {
	opts Options
	log  *slog.Logger
	keys *keyer
	// decisions maps a keyed hash of (credentials, registry, repository
	// [, digest]) to whether the upstream accepted them; at most
	// maxDecisions.
	decisions *ttlCache[bool]
	// public remembers repositories an anonymous probe found public (mode
	// client with a node credential only); at most maxDecisions.
	public *ttlCache[struct{}]
	// rechecked is when a private repository was last found still private
	// by an anonymous probe: at most one per auth_ttl; at most
	// maxDecisions.
	rechecked *ttlCache[struct{}]
	// clients holds upstream clients authenticating with a client's
	// credentials (or anonymously), keyed by a keyed hash of them; at most
	// maxClients.
	clients *ttlCache[credClient]
	// tokens holds upstream pull tokens obtained with a client's credentials
	// for a repository, to hand to the cluster owner that fetches for it;
	// at most maxClients.
	tokens *ttlCache[pullToken]

	// flight coalesces concurrent checks of one credential for one object.
	flight singleflight.Group

	// marked is false until some content is marked private: until then no
	// request looks a mark up.
	marked atomic.Bool

	// private holds the repositories known to be private (at most
	// maxPrivateRepos).
	private  *privateRepos
	nprivate atomic.Int64 // private.len(), read without a lock
	// limiter bounds the upstream checks of credentials not seen before
	// (at most maxBuckets buckets).
	limiter *credLimiter

	checks   *prometheus.CounterVec // result: found, absent, denied, unavailable
	outcomes *prometheus.CounterVec // outcome: allowed, cached, grace, challenged, refused
}

type credClient struct {
	base, c *upstream.Client
}

const (
	// DefaultTTL and DefaultGrace are auth_ttl's and auth_grace's defaults.
	DefaultTTL   = 5 * time.Minute
	DefaultGrace = 15 * time.Minute
	// DenyTTL caps how long a refusal is remembered: a client whose access
	// was just granted should not wait auth_ttl.
	DenyTTL      = 30 * time.Second
	maxDecisions = 8192 // ~1 MiB at most: a node sees few credentials and repositories
	maxClients   = 1 << 10
	// clientTTL bounds how long an upstream client holding a client's
	// credentials is kept after it was created.
	clientTTL = 15 * time.Minute
)

// defaultUpstreamTimeout bounds an access check when Options.UpstreamTimeout
// is nil.
const defaultUpstreamTimeout = 60 * time.Second

// New returns a Gate, loading the private repositories from opts.Store.
func New(opts Options) *Gate {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.Grace < 0 {
		opts.Grace = 0
	} else if opts.Grace == 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Mode != PrivateNode {
		opts.Mode = PrivateClient
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.UpstreamTimeout == nil {
		opts.UpstreamTimeout = func() time.Duration { return defaultUpstreamTimeout }
	}
	if opts.Failed == nil {
		opts.Failed = func(context.Context, string, string, error) {}
	}
	a := &Gate{
		opts:      opts,
		log:       opts.Logger,
		keys:      newKeyer(),
		decisions: newTTLCache[bool](maxDecisions, opts.TTL+opts.Grace),
		public:    newTTLCache[struct{}](maxDecisions, opts.TTL),
		rechecked: newTTLCache[struct{}](maxDecisions, opts.TTL),
		clients:   newTTLCache[credClient](maxClients, clientTTL),
		tokens:    newTTLCache[pullToken](maxClients, clientTTL),
		private:   newPrivateRepos(maxPrivateRepos),
		limiter:   newCredLimiter(CredentialCheckBurst, CredentialCheckRate),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_auth_upstream_checks_total",
			Help: "Upstream requests made to check a client's access to private content, by result.",
		}, []string{"result"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_auth_requests_total",
			Help: "Requests for private repositories or content, by outcome.",
		}, []string{"outcome"}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(a.checks, a.outcomes)
	}
	if opts.Store != nil {
		repos, err := opts.Store.PrivateRepos()
		if err != nil {
			a.log.Warn("reading private repositories", "error", err)
		}
		for _, r := range repos {
			a.private.add(r, true)
		}
		a.nprivate.Store(int64(a.private.len()))
		has, err := opts.Store.HasPrivateObjects()
		a.marked.Store(has || err != nil)
	}
	return a
}

// Private reports whether the repository (its endpoint URL and name, as
// RepositoryID joins them) is known to refuse anonymous access.
func (a *Gate) Private(endpointURL, repository string) bool {
	return a.isPrivate(RepositoryID(endpointURL, repository))
}

func (a *Gate) isPrivate(id string) bool {
	if a.nprivate.Load() == 0 {
		return false // the common case costs no lookup
	}
	return a.private.has(id)
}

// markPrivate records q's repository as private,
// in memory; it is persisted once a client is accepted for it
// (persistPrivate).
func (a *Gate) markPrivate(q ask) {
	id := q.id
	known, dropped := a.private.add(id, false)
	a.nprivate.Store(int64(a.private.len()))
	a.rechecked.put(a.keys.sum("recheck", id), struct{}{}, a.opts.Now())
	if dropped != nil && dropped.persisted && a.opts.Store != nil {
		if err := a.opts.Store.UnmarkPrivateRepo(dropped.id); err != nil {
			a.log.Warn("forgetting a private repository", "error", err)
		}
	}
	if known {
		return
	}
	a.log.Debug("repository is private: clients must present their credentials",
		slog.String("upstream", q.Registry), slog.String("repo", q.Repository))
}

// persistPrivate writes repository id's private mark to the marks, once: a
// client's credentials were accepted for it, so it is a real private
// repository, not a name somebody made up.
func (a *Gate) persistPrivate(id string) {
	if a.opts.Store == nil || !a.private.persist(id) {
		return
	}
	a.log.Info("repository is private: clients must present their credentials", slog.String("repo", id))
	if err := a.opts.Store.MarkPrivateRepo(id); err != nil {
		a.log.Warn("recording private repository", "repo", id, "error", err)
	}
}

// unmarkPrivate forgets that q's repository is private: its upstream answers
// anonymous requests again.
func (a *Gate) unmarkPrivate(q ask) {
	persisted := a.private.remove(q.id)
	a.nprivate.Store(int64(a.private.len()))
	a.log.Info("repository is public again", slog.String("upstream", q.Registry), slog.String("repo", q.Repository))
	if persisted && a.opts.Store != nil {
		if err := a.opts.Store.UnmarkPrivateRepo(q.id); err != nil {
			a.log.Warn("forgetting a private repository", "upstream", q.Registry, "repo", q.Repository, "error", err)
		}
	}
}

// privateOrigin returns the repository dg was first fetched for when it is
// private content, else "".
func (a *Gate) privateOrigin(dg digest.Digest) (string, error) {
	if dg == "" || a.opts.Store == nil || !a.marked.Load() {
		return "", nil
	}
	origin, err := a.opts.Store.PrivateObject(dg)
	if store.IsNotFound(err) {
		return "", nil
	}
	return origin, err
}

// anonymousProbe reports whether privacy must be found by an anonymous
// request: the base client carries a node credential the upstream may
// accept where an anonymous client would be refused, and that credential
// must not open private content to every client.
func (a *Gate) anonymousProbe(base *upstream.Client) bool {
	return a.opts.Mode == PrivateClient && base.HasCredentials()
}

// probeClient is the client that decides whether content is public: the
// configured client, or an anonymous one when anonymousProbe.
func (a *Gate) probeClient(base *upstream.Client) (*upstream.Client, error) {
	if !a.anonymousProbe(base) {
		return base, nil
	}
	return a.clientFor(base, Credentials{})
}

// clientFor returns an upstream client for base's registry that
// authenticates with creds (anonymously when empty), reusing one made
// earlier so that its token and connections are reused too.
func (a *Gate) clientFor(base *upstream.Client, creds Credentials) (*upstream.Client, error) {
	k := a.keys.sum("client", base.Name(), base.URL(), creds.Username, creds.Password)
	now := a.opts.Now()
	if cc, at, ok := a.clients.get(k); ok && cc.base == base && now.Sub(at) < clientTTL {
		return cc.c, nil
	}
	auth := authn.Anonymous
	if !creds.Empty() {
		auth = authn.FromConfig(authn.AuthConfig{Username: creds.Username, Password: creds.Password})
	}
	c, err := base.WithAuthenticator(auth)
	if err != nil {
		return nil, errors.New("building an upstream client for the client's credentials failed")
	}
	a.clients.put(k, credClient{base: base, c: c}, now)
	return c, nil
}

// tokenClient returns an upstream client for base's registry that pulls
// with a bearer token a peer obtained for its verified client.
func (a *Gate) tokenClient(base *upstream.Client, token string) (*upstream.Client, error) {
	k := a.keys.sum("token-client", base.Name(), base.URL(), token)
	now := a.opts.Now()
	if cc, at, ok := a.clients.get(k); ok && cc.base == base && now.Sub(at) < clientTTL {
		return cc.c, nil
	}
	c, err := base.WithRegistryToken(token)
	if err != nil {
		return nil, errors.New("building an upstream client for a peer's token failed")
	}
	a.clients.put(k, credClient{base: base, c: c}, now)
	return c, nil
}
