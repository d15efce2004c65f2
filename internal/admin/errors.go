package admin

import (
	"context"
	"errors"
	"fmt"

	"github.com/berth-mirror/berth/internal/config"
)

// JSON-RPC 2.0 error codes. The -32000 range is for failures of a method.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternal       = -32603
	// CodeServer is a method that failed: the message says why.
	CodeServer = -32000
	// CodeNotFound is a method whose target (a job, say) does not exist.
	CodeNotFound = -32001
)

// Error is a JSON-RPC error object. Methods return it (or any error, which
// [toError] maps); the client returns it for an error response.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s (code %d)", e.Message, e.Code) }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// toError maps any error a method returns to the JSON-RPC error sent: the
// one place where that mapping is decided.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		return &Error{Code: CodeServer, Message: err.Error(), Data: map[string]string{"key": ce.Key}}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: CodeServer, Message: "request canceled: " + err.Error()}
	}
	return &Error{Code: CodeServer, Message: err.Error()}
}
