package peer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Error is an answer of the peer API other than the content: the server's
// own refusals (token, path, method, parameters) and a Backend's. It is
// written as an OCI distribution error body, {"errors":[{"code","message"}]},
// as /v2/ answers, so that one parser reads both.
type Error struct {
	Status  int
	Code    string // the distribution spec's error code
	Message string
	// Header, when set, is copied into the response (WWW-Authenticate,
	// ErrorHeader, Retry-After).
	Header http.Header
	// Err is the cause, for logs (nil: Status, Code and Message say it all).
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Err.Error()
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Error codes of the server's own refusals (distribution spec).
const (
	codeUnsupported   = "UNSUPPORTED"
	codeUnauthorized  = "UNAUTHORIZED"
	codeDenied        = "DENIED"
	codeDigestInvalid = "DIGEST_INVALID"
	codeNameInvalid   = "NAME_INVALID"
	codeRangeInvalid  = "RANGE_INVALID"
)

func newError(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// asError maps any error to an *Error; others are a 500 that tells the
// asking node nothing more.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Status: http.StatusInternalServerError, Code: "UNKNOWN", Message: "internal error", Err: err}
}

// writeError writes e; headers the backend set for content it did not send
// go first. A HEAD answer carries no body.
func writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	h := w.Header()
	for _, k := range []string{"Content-Length", "Docker-Content-Digest", "Etag", "Content-Range"} {
		h.Del(k)
	}
	for k, v := range e.Header {
		h[k] = v
	}
	body, _ := json.Marshal(map[string][]map[string]string{"errors": {{"code": e.Code, "message": e.Message}}})
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
