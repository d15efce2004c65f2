package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrUnreachable means the upstream could not be reached or failed to answer
// (connection refused, timeout, TLS failure, 5xx after retries). Callers
// serve stale content when they have it.
var ErrUnreachable = errors.New("upstream: unreachable")

// ErrDigestMismatch means content did not match the digest it was asked by.
var ErrDigestMismatch = errors.New("upstream: digest mismatch")

// ErrTooLarge means a manifest exceeded the size berth accepts.
var ErrTooLarge = errors.New("upstream: manifest too large")

// StatusError is an upstream's non-success answer, with the first OCI error
// code of its body when it sent one. The body read is capped.
type StatusError struct {
	Upstream string
	Status   int
	Code     string
	Message  string
	// Challenge is the upstream's WWW-Authenticate header on 401.
	Challenge string
	// RetryAfter is how long the upstream asked to be left alone (its
	// Retry-After on a 429 or 503), zero if it did not say.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("upstream %s: %d %s", e.Upstream, e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		msg += ": " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// IsNotFound reports whether err is an upstream 404.
func IsNotFound(err error) bool { return Classify(err) == NotFound }

// IsUnavailable reports whether err means the upstream cannot serve now
// (as opposed to a definite answer such as 404 or 401).
func IsUnavailable(err error) bool {
	o := Classify(err)
	return o == Unavailable || o == RateLimited
}

func readStatusError(upstream string, resp *http.Response) *StatusError {
	defer resp.Body.Close()
	se := &StatusError{Upstream: upstream, Status: resp.StatusCode}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		se.Challenge = truncate(resp.Header.Get("WWW-Authenticate"), maxMessageLen)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		se.RetryAfter, _ = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var eb struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &eb) == nil && len(eb.Errors) > 0 {
		se.Code = truncate(eb.Errors[0].Code, maxCodeLen)
		se.Message = truncate(redactText(eb.Errors[0].Message), maxMessageLen)
	}
	return se
}

// What an upstream's error body may put into berth's errors and logs.
const (
	maxCodeLen    = 64
	maxMessageLen = 512
)

func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
