package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error is an OCI distribution error: it carries the HTTP status and the spec's
// error code, and is written as {"errors":[{"code":…,"message":…}]}.
// Handlers return it; only writeError writes it.
type Error struct {
	Status  int
	Code    string
	Message string
	// Header, when set, is copied into the response (e.g. WWW-Authenticate).
	Header http.Header
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// Error codes from the distribution spec (and UNSUPPORTED / TOOMANYREQUESTS).
const (
	CodeBlobUnknown     = "BLOB_UNKNOWN"
	CodeDigestInvalid   = "DIGEST_INVALID"
	CodeManifestUnknown = "MANIFEST_UNKNOWN"
	CodeManifestInvalid = "MANIFEST_INVALID"
	CodeNameInvalid     = "NAME_INVALID"
	CodeNameUnknown     = "NAME_UNKNOWN"
	CodeUnauthorized    = "UNAUTHORIZED"
	CodeDenied          = "DENIED"
	CodeUnsupported     = "UNSUPPORTED"
	CodeRangeInvalid    = "RANGE_INVALID"
	CodeTooManyRequests = "TOOMANYREQUESTS"
	CodeUnavailable     = "UNAVAILABLE"
	CodeTooLarge        = "SIZE_INVALID"
)

func newError(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// asError maps any error to an *Error; unknown errors become 500.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Status: http.StatusInternalServerError, Code: "UNKNOWN", Message: "internal error"}
}

// writeError writes e as the OCI error body. HEAD responses carry no body.
func writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	h := w.Header()
	for _, k := range []string{"Content-Length", "Docker-Content-Digest", "Etag", "Content-Range"} {
		h.Del(k)
	}
	for k, v := range e.Header {
		h[k] = v
	}
	h.Set("Content-Type", "application/json")
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code, Message: e.Message}}})
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
