package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
)

// Limits on what one message may make the server hold: a batch is answered
// in one line, so both its length and its response are bounded. The message
// itself is bounded by admin.max_message_bytes.
const (
	// MaxBatch is the most requests one batch may hold; a longer batch is
	// refused whole with -32600.
	MaxBatch = 1000
	// MaxResponseBytes bounds one response line. A result that would take it
	// past the cap is replaced by an error for that request, so a batch of
	// large results costs at most this much.
	MaxResponseBytes = 16 << 20
)

// skipValue consumes a JSON value without keeping it.
type skipValue struct{}

func (*skipValue) UnmarshalJSON([]byte) error { return nil }

// splitBatch returns a batch's elements, or (nil, n) with their count when
// there are more than limit: the elements past the limit are only counted,
// never kept.
func splitBatch(msg []byte, limit int) (elems []json.RawMessage, n int, err error) {
	dec := json.NewDecoder(bytes.NewReader(msg))
	if _, err := dec.Token(); err != nil { // '['
		return nil, 0, err
	}
	var skip skipValue
	for dec.More() {
		if n >= limit {
			elems = nil
			if err := dec.Decode(&skip); err != nil {
				return nil, 0, err
			}
			n++
			continue
		}
		var e json.RawMessage
		if err := dec.Decode(&e); err != nil {
			return nil, 0, err
		}
		elems = append(elems, e)
		n++
	}
	if _, err := dec.Token(); err != nil { // ']'
		return nil, 0, err
	}
	if dec.More() {
		return nil, 0, errors.New("invalid character after the batch")
	}
	return elems, n, nil
}

// serveBatch answers a batch with one line: every response, in order, within
// maxResponse bytes.
func (m *Mux) serveBatch(ctx context.Context, msg []byte) (line []byte, malformed bool) {
	elems, n, err := splitBatch(msg, m.maxBatch)
	if err != nil {
		return m.parseError(err), true
	}
	if n == 0 {
		m.log.Info("rejected admin request", "code", CodeInvalidRequest, "error", "empty batch")
		return encodeLine(errorResponse(nil, Errorf(CodeInvalidRequest, "invalid request: empty batch"))), false
	}
	if n > m.maxBatch {
		m.log.Warn("rejected admin request: batch too long", "code", CodeInvalidRequest, "requests", n, "limit", m.maxBatch)
		return encodeLine(errorResponse(nil, Errorf(CodeInvalidRequest,
			"invalid request: a batch of %d requests exceeds the limit of %d", n, m.maxBatch))), false
	}
	out := []byte{'['}
	for _, e := range elems {
		r := m.serveOne(ctx, e)
		if r == nil {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		// What is left for this response: the closing "]\n" and, for the
		// responses still to come, nothing is reserved (a refused one is a
		// short error, which is always sent).
		out = append(out, m.encodeCapped(r, m.maxResponse-len(out)-2)...)
	}
	if len(out) == 1 {
		return nil, false
	}
	return append(out, ']', '\n'), false
}

// encodeCapped marshals r, or, when that takes more than room bytes, an error
// for r's request saying so.
func (m *Mux) encodeCapped(r *response, room int) []byte {
	b, err := json.Marshal(r)
	if err == nil && len(b) <= room {
		return b
	}
	var e *Error
	if err != nil {
		e = Errorf(CodeInternal, "internal error: encoding the response: %v", err)
	} else {
		m.log.Warn("admin response too large; sent an error instead", "code", CodeServer, "size", len(b), "limit", m.maxResponse)
		e = Errorf(CodeServer, "the response of %d bytes would exceed the limit of %d bytes per message; ask for less (e.g. a smaller batch or limit)",
			len(b), m.maxResponse)
	}
	b, _ = json.Marshal(errorResponse(r.ID, e)) // an id (valid JSON) and strings: cannot fail
	return b
}
