package access

import (
	"fmt"

	"github.com/berth-mirror/berth/internal/upstream"
)

// ChallengeHeader is the only challenge berth sends: Basic, to itself. A
// Bearer realm would send the client's password to wherever it names.
const ChallengeHeader = `Basic realm="berth"`

// Decision is the gate's answer: a Challenge, or else a Grant.
type Decision struct {
	// Challenge, when set, is the refusal to send (401 with
	// WWW-Authenticate: ChallengeHeader); the Grant is empty.
	Challenge *Challenge
	Grant
}

// Grant is how a request the gate let through is served.
type Grant struct {
	// Client is the upstream client to fetch with: the routed one, an
	// anonymous one (tags/list of a repository not known private, when the
	// routed one carries a node credential), one with the client's own
	// credentials, or one with a peer's upstream token.
	Client *upstream.Client
	// Private: the repository needs credentials, and Client carries them
	// (the fill is fetched for a verified client).
	Private bool
	// Origin is the private mark to store fetched content with, in the same
	// transaction as the content ("" : not private).
	Origin string
	// Token is an upstream pull token for the cluster owner that may fetch
	// what this node lacks ("" : none).
	Token string
}

// Challenge is berth's 401: the client should send its credentials for the
// upstream registry to berth.
type Challenge struct {
	Message string
}

// Error implements error, so the gate's steps can return a challenge up the
// call chain; Authorize and Refused turn it into a Decision.
func (c *Challenge) Error() string { return "access: challenge: " + c.Message }

func challenge(format string, args ...any) *Challenge {
	return &Challenge{Message: fmt.Sprintf(format, args...)}
}

// Reason is why the gate refused a request; callers map it to their API.
type Reason int

// Reasons of an *Error.
const (
	// NotFound: answer as if the content were not there (404).
	NotFound Reason = iota + 1
	// Limited: too many new credentials lately (429 with Retry-After).
	Limited
	// Refused: the upstream refused the anonymous (or node) request for
	// this content: it is private (401, no challenge). Refused, the retry
	// hook, turns it into a challenge or a private grant.
	Refused
	// Upstream: the upstream could not tell (Err: its error, to be mapped
	// like any upstream failure).
	Upstream
)

// Error is a refusal by the gate.
type Error struct {
	Reason  Reason
	Message string // for the client; never holds credentials
	Err     error  // the upstream's error (Upstream)
}

func (e *Error) Error() string {
	if e.Message == "" && e.Err != nil {
		return "access: upstream: " + e.Err.Error()
	}
	return "access: " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func refusal(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Message: fmt.Sprintf(format, args...)}
}

func upstreamFailed(err error) *Error { return &Error{Reason: Upstream, Err: err} }
