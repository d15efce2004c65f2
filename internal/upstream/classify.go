package upstream

import (
	"errors"
	"net/http"
)

// Outcome is what an upstream call came to, for callers that branch on it:
// the one classification of upstream errors (access checks, fills, stale
// serving, metrics).
type Outcome int

// Outcomes of an upstream call.
const (
	// Found: no error.
	Found Outcome = iota
	// NotFound: a definite 404.
	NotFound
	// Refused: a definite 401 or 403 (no access with these credentials).
	Refused
	// RateLimited: 429; the upstream asks to come back later.
	RateLimited
	// Unavailable: no definite answer (connection error, timeout, 5xx,
	// anything else): try again later, serve what is known meanwhile.
	Unavailable
	// Corrupt: the content did not match its digest.
	Corrupt
	// TooLarge: a manifest over the cap.
	TooLarge
	// Invalid: another definite 4xx: the upstream rejected the request.
	Invalid
)

var outcomeNames = [...]string{"found", "not_found", "refused", "rate_limited", "unavailable", "corrupt", "too_large", "invalid"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Definite reports whether the upstream answered about the request itself
// (404, 401, 403): no failure of the upstream, not worth a retry or a
// stale answer.
func (o Outcome) Definite() bool { return o == NotFound || o == Refused || o == Invalid }

// Classify says what err, returned by a Client method, came to.
func Classify(err error) Outcome {
	if err == nil {
		return Found
	}
	var se *StatusError
	if errors.As(err, &se) {
		switch {
		case se.Status == http.StatusNotFound:
			return NotFound
		case se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden:
			return Refused
		case se.Status == http.StatusTooManyRequests:
			return RateLimited
		case se.Status < 500:
			return Invalid
		}
		return Unavailable
	}
	switch {
	case errors.Is(err, ErrDigestMismatch):
		return Corrupt
	case errors.Is(err, ErrTooLarge):
		return TooLarge
	}
	return Unavailable
}
