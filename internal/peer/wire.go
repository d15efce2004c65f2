package peer

// What both ends of the peer API must agree on: its path, headers, query
// parameters and timing. The server and the client both read them from here,
// so a rolling update cannot leave one side speaking a word the other does
// not know.

import "time"

// Path is the prefix of the peer API: Path + "blobs/<digest>" and
// Path + "manifests/<digest>".
const Path = "/peer/v1/"

// Query parameters of a peer request.
const (
	// QueryRegistry and QueryRepository name the upstream repository.
	QueryRegistry   = "registry"
	QueryRepository = "repository"
	// QueryFrom names the asking member; the owner never probes it.
	QueryFrom = "from"
	// QueryVerified = "1": the asking node checked its client's credentials
	// for the repository (private content).
	QueryVerified = "verified"
	// QueryHeld = "1": answer only from the store; fetch nothing, ask no one.
	QueryHeld = "held"
	// QueryPiece and QuerySize ask for piece N of the blob of SIZE bytes
	// (fetch.PlanFor(SIZE)), the Range header naming bytes inside it: the
	// owner of the piece answers a 206 with the blob's Content-Range.
	QueryPiece = "piece"
	QuerySize  = "size"
)

// Headers of the peer API.
const (
	// AuthScheme is the Authorization scheme of peer tokens (and the
	// WWW-Authenticate challenge of a request without one).
	AuthScheme = "Berth-Peer"
	// UpstreamTokenHeader carries a verified client's short-lived upstream
	// pull token to the owner that fetches for it. Covered by the token.
	UpstreamTokenHeader = "Berth-Upstream-Token"
	// ErrorHeader marks an answer about the peer request itself:
	// ErrorToken when its token was refused (the cluster secrets differ), as
	// opposed to an answer relayed from the upstream or the access rules.
	ErrorHeader = "Berth-Peer-Error"
	ErrorToken  = "token"
)

// SignedHeaders are the request headers a peer token covers besides the
// method, the URI and the digest: those that change what an answer means.
func SignedHeaders() []string { return []string{UpstreamTokenHeader, "Range", "Accept"} }

// Heartbeat is how often an owner sends "102 Processing" while its answer is
// not ready; the asking node waits as long as they come.
const Heartbeat = 2 * time.Second
