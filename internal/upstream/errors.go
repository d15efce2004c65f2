package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
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
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status == http.StatusNotFound
}

// IsUnavailable reports whether err means the upstream cannot serve now
// (as opposed to a definite answer such as 404 or 401).
func IsUnavailable(err error) bool {
	if errors.Is(err, ErrUnreachable) {
		return true
	}
	var se *StatusError
	return errors.As(err, &se) && (se.Status >= 500 || se.Status == http.StatusTooManyRequests)
}

func readStatusError(upstream string, resp *http.Response) *StatusError {
	defer resp.Body.Close()
	se := &StatusError{Upstream: upstream, Status: resp.StatusCode}
	if resp.StatusCode == http.StatusUnauthorized {
		se.Challenge = resp.Header.Get("WWW-Authenticate")
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var eb struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &eb) == nil && len(eb.Errors) > 0 {
		se.Code = eb.Errors[0].Code
		se.Message = truncate(eb.Errors[0].Message, 512)
	}
	return se
}

func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "")
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
