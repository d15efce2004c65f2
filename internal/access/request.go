package access

import (
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/upstream"
)

// Kind is what a request asks for.
type Kind int

// Kinds of requests the gate decides on.
const (
	Manifest  Kind = iota // a manifest by tag or digest
	Blob                  // a blob by digest
	Tags                  // a repository's tag list
	Referrers             // the referrers of a manifest by digest: gated as that manifest
)

var kindNames = [...]string{"manifest", "blob", "tags", "referrers"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Request is what the gate is asked. It is a value: the gate never changes
// it, and returns what it decided in a Decision.
type Request struct {
	// Registry and Repository are the upstream repository as the client
	// named it after routing (docker.io, library/alpine).
	Registry, Repository string
	Kind                 Kind
	// Reference is the tag or digest (Manifest, Referrers: the subject) or
	// the digest (Blob); empty for Tags.
	Reference string
	// Client is the routed upstream client: the registry's configured one
	// (anonymous, or with the node credential).
	Client *upstream.Client
	// Credentials are the client's own, from its Authorization header;
	// CredentialsErr says that header could not be read (Authorize then
	// challenges).
	Credentials    Credentials
	CredentialsErr error
	// Source is the client's address: a unit of the limit on new
	// credentials.
	Source string
	// Peer is set for a request of the peer API: the asking node ran its
	// own gate before it asked.
	Peer *Peer
}

// Peer is what the owner's side of a peer request knows of the asking node.
type Peer struct {
	// Verified: the asking node checked its client's credentials for the
	// repository, and peer tokens are on (without a cluster secret no
	// peer's word is trusted).
	Verified bool
	// Token is an upstream pull token the asking node handed over for its
	// verified client ("" : none).
	Token string
	// HeldOnly: the asking node asks only whether this node holds the
	// content; nothing is fetched or probed for what is not held.
	HeldOnly bool
}

// ask is a Request with what the gate derives from it once.
type ask struct {
	Request
	// id names the repository by the upstream endpoint it reaches, not by
	// the registry name the client used: two names mapped to one endpoint
	// (registry.test and registry.test:5000, or a ?ns= alias) are one
	// repository for privacy, decisions and private marks.
	id string
}

func newAsk(req Request) ask {
	return ask{Request: req, id: RepositoryID(req.Client.URL(), req.Repository)}
}

// RepositoryID is how the gate names a repository: its upstream endpoint's
// URL and its name (the private marks in the store hold these).
func RepositoryID(endpointURL, repository string) string {
	return strings.TrimSuffix(endpointURL, "/") + "/" + repository
}

// object is the kind the upstream is asked about: referrers are gated as
// their subject manifest.
func (q ask) object() Kind {
	if q.Kind == Referrers {
		return Manifest
	}
	return q.Kind
}

// digest is the digest a request names (blob, or manifest by digest), or "".
func (q ask) digest() digest.Digest {
	switch q.object() {
	case Blob:
		return digest.Digest(q.Reference)
	case Manifest:
		if strings.Contains(q.Reference, ":") { // a tag has no colon; the path parser checked the digest
			return digest.Digest(q.Reference)
		}
	}
	return ""
}
