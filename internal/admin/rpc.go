package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
)

// Method handles one JSON-RPC method. params is the raw "params" member (nil
// when absent). The result is marshalled as the response's "result".
type Method func(ctx context.Context, params json.RawMessage) (any, error)

// Mux maps method names to Methods. Register before serving; it is then
// read-only and safe for concurrent use.
type Mux struct {
	methods map[string]Method
	log     *slog.Logger
	// maxBatch and maxResponse are MaxBatch and MaxResponseBytes; tests
	// lower them.
	maxBatch    int
	maxResponse int
}

// NewMux returns an empty Mux that logs rejected and failed requests to log
// (nil: discard).
func NewMux(log *slog.Logger) *Mux {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Mux{methods: map[string]Method{}, log: log, maxBatch: MaxBatch, maxResponse: MaxResponseBytes}
}

// Handle registers fn for method, replacing any earlier one.
func (m *Mux) Handle(method string, fn Method) { m.methods[method] = fn }

// Methods lists the registered method names, sorted.
func (m *Mux) Methods() []string {
	names := make([]string, 0, len(m.methods))
	for n := range m.methods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Handle registers a method whose params decode into P: unknown fields,
// wrong types and non-object params are -32602 errors before fn runs.
func Handle[P, R any](m *Mux, method string, fn func(ctx context.Context, p P) (R, error)) {
	m.Handle(method, func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p P
		if err := decodeParams(raw, &p); err != nil {
			return nil, err
		}
		return fn(ctx, p)
	})
}

// decodeParams decodes an object into v strictly; absent or null params
// leave v at its zero value.
func decodeParams(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if raw[0] != '{' {
		return Errorf(CodeInvalidParams, "invalid params: expected an object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeInvalidParams, "invalid params: %s", paramError(err))
	}
	return nil
}

func paramError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("%s: expected %s, got %s", te.Field, te.Type, te.Value)
	}
	msg := err.Error()
	if m, ok := bytes.CutPrefix([]byte(msg), []byte("json: ")); ok {
		return string(m)
	}
	return msg
}

// wireRequest is a request as sent; raw members tell absent from null.
type wireRequest struct {
	JSONRPC json.RawMessage `json:"jsonrpc"`
	Method  json.RawMessage `json:"method"`
	Params  json.RawMessage `json:"params"`
	ID      json.RawMessage `json:"id"`
}

// response is one response object. Result is set on success (at least
// "null"), Error on failure; ID is null when the request's was unknown.
type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *Error          `json:"error,omitempty"`
}

func errorResponse(id json.RawMessage, e *Error) *response {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	return &response{JSONRPC: "2.0", ID: id, Error: e}
}

// encodeLine marshals v as one line ending in \n.
func encodeLine(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(errorResponse(nil, Errorf(CodeInternal, "internal error: encoding the response: %v", err)))
	}
	return append(b, '\n')
}

// serveMessage handles one complete message (a request or a batch) and
// returns the line to send (nil for none) and whether the message was not
// JSON at all, after which the connection must close.
func (m *Mux) serveMessage(ctx context.Context, msg []byte) (line []byte, malformed bool) {
	if len(msg) > 0 && msg[0] == '[' {
		return m.serveBatch(ctx, msg)
	}
	if len(msg) > 0 && msg[0] != '{' {
		if !json.Valid(msg) {
			return m.parseError(errors.New("invalid JSON value")), true
		}
		m.log.Info("rejected admin request", "code", CodeInvalidRequest, "error", "not an object")
		return encodeLine(errorResponse(nil, Errorf(CodeInvalidRequest, "invalid request: expected an object or a batch array"))), false
	}
	var wr wireRequest
	if err := json.Unmarshal(msg, &wr); err != nil {
		return m.parseError(err), true
	}
	r := m.serveRequest(ctx, &wr)
	if r == nil {
		return nil, false
	}
	return append(m.encodeCapped(r, m.maxResponse), '\n'), false
}

func (m *Mux) parseError(err error) []byte {
	m.log.Warn("rejected admin request: malformed JSON; closing the connection", "code", CodeParseError, "error", err.Error())
	return encodeLine(errorResponse(nil, Errorf(CodeParseError, "parse error: %s", paramError(err))))
}

// serveOne handles one element of a batch (already known to be valid JSON).
func (m *Mux) serveOne(ctx context.Context, raw json.RawMessage) *response {
	var wr wireRequest
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &wr) != nil {
		m.log.Info("rejected admin request", "code", CodeInvalidRequest, "error", "batch element is not an object")
		return errorResponse(nil, Errorf(CodeInvalidRequest, "invalid request: expected an object"))
	}
	return m.serveRequest(ctx, &wr)
}

// serveRequest validates and runs one request; nil means no response (a
// notification).
func (m *Mux) serveRequest(ctx context.Context, wr *wireRequest) *response {
	id, verr := validate(wr)
	if verr != nil {
		m.log.Info("rejected admin request", "code", verr.Code, "error", verr.Message)
		return errorResponse(id, verr)
	}
	var method string
	_ = json.Unmarshal(wr.Method, &method)
	notify := wr.ID == nil
	fn, ok := m.methods[method]
	if !ok {
		m.log.Info("rejected admin request: unknown method", "method", method, "code", CodeMethodNotFound)
		if notify {
			return nil
		}
		return errorResponse(id, Errorf(CodeMethodNotFound, "method not found: %q", method))
	}
	result, err := m.call(ctx, method, fn, wr.Params)
	var b []byte
	if err == nil {
		if b, err = json.Marshal(result); err != nil {
			err = Errorf(CodeInternal, "internal error: encoding the result: %v", err)
		}
	}
	if err != nil {
		e := toError(err)
		m.log.Info("admin method failed", "method", method, "code", e.Code, "error", e.Message)
		if notify {
			return nil
		}
		return errorResponse(id, e)
	}
	if notify {
		return nil
	}
	return &response{JSONRPC: "2.0", ID: id, Result: b}
}

// validate checks the envelope. It returns the id to answer with (null if the
// request's own is unusable) and an -32600 error when the request is invalid.
func validate(wr *wireRequest) (json.RawMessage, *Error) {
	id := wr.ID
	if id != nil {
		switch c := firstByte(id); {
		case c == '"', c == '-', c >= '0' && c <= '9', c == 'n':
		default:
			return nil, Errorf(CodeInvalidRequest, "invalid request: id must be a string, a number or null")
		}
	}
	var v string
	if json.Unmarshal(wr.JSONRPC, &v) != nil || v != "2.0" {
		return id, Errorf(CodeInvalidRequest, `invalid request: "jsonrpc" must be "2.0"`)
	}
	if firstByte(wr.Method) != '"' {
		return id, Errorf(CodeInvalidRequest, `invalid request: "method" must be a string`)
	}
	if p := firstByte(wr.Params); p != 0 && p != '{' && p != '[' && p != 'n' {
		return id, Errorf(CodeInvalidRequest, `invalid request: "params" must be an object or an array`)
	}
	return id, nil
}

func firstByte(b []byte) byte {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// call runs fn, turning a panic into an internal error.
func (m *Mux) call(ctx context.Context, method string, fn Method, params json.RawMessage) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			m.log.Error("admin method panicked", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			result, err = nil, Errorf(CodeInternal, "internal error in %s", method)
		}
	}()
	return fn(ctx, params)
}
