package admin

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func req(id int, method, params string) string {
	if params == "" {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q}`, id, method)
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q,"params":%s}`, id, method, params)
}

func TestFraming(t *testing.T) {
	tests := []struct {
		name  string
		input string
		cap   int64
		want  []string
	}{
		{
			name:  "one request",
			input: req(1, "add", `{"a":1,"b":2}`),
			want:  []string{`{"jsonrpc":"2.0","id":1,"result":3}`},
		},
		{
			name:  "many requests back to back with whitespace",
			input: " \n\t" + req(1, "add", `{"a":1,"b":1}`) + req(2, "add", `{"a":2,"b":2}`) + "\r\n  " + req(3, "echo", `{"s":"x"}`) + "\n\n",
			want: []string{
				`{"jsonrpc":"2.0","id":1,"result":2}`,
				`{"jsonrpc":"2.0","id":2,"result":4}`,
				`{"jsonrpc":"2.0","id":3,"result":{"s":"x"}}`,
			},
		},
		{
			name:  "brackets and escaped quotes inside strings",
			input: req(7, "echo", `{"s":"}]\"\\\"{[","t":["\\",{"u":"]"}]}`),
			want:  []string{`{"jsonrpc":"2.0","id":7,"result":{"s":"}]\"\\\"{[","t":["\\",{"u":"]"}]}}`},
		},
		{
			name:  "string and null ids",
			input: `{"jsonrpc":"2.0","id":"a-1","method":"add","params":{"a":1}}{"jsonrpc":"2.0","id":null,"method":"add"}`,
			want:  []string{`{"jsonrpc":"2.0","id":"a-1","result":1}`, `{"jsonrpc":"2.0","id":null,"result":0}`},
		},
		{
			name:  "batch with a notification, an invalid element and an unknown method",
			input: `[` + req(1, "add", `{"a":5}`) + `,{"jsonrpc":"2.0","method":"add"},42,` + req(2, "nope", "") + `]`,
			want: []string{`[{"jsonrpc":"2.0","id":1,"result":5},` +
				`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: expected an object"}},` +
				`{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"method not found: \"nope\""}}]`},
		},
		{
			name:  "batch of notifications only: no response",
			input: `[{"jsonrpc":"2.0","method":"add"},{"jsonrpc":"2.0","method":"echo"}]` + req(9, "add", ""),
			want:  []string{`{"jsonrpc":"2.0","id":9,"result":0}`},
		},
		{
			name:  "empty batch",
			input: `[]` + req(1, "add", ""),
			want: []string{`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: empty batch"}}`,
				`{"jsonrpc":"2.0","id":1,"result":0}`},
		},
		{
			name:  "notification: no response, even for an unknown method",
			input: `{"jsonrpc":"2.0","method":"add"}{"jsonrpc":"2.0","method":"nope"}` + req(2, "add", ""),
			want:  []string{`{"jsonrpc":"2.0","id":2,"result":0}`},
		},
		{
			name:  "garbage: parse error, then the connection closes",
			input: `xyz` + req(1, "add", ""),
			want:  []string{`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: invalid character at the start of a value"}}`},
		},
		{
			name:  "malformed object: parse error, then close",
			input: `{"jsonrpc":"2.0",,"id":1}` + req(1, "add", ""),
			want:  []string{`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: invalid character ',' looking for beginning of object key string"}}`},
		},
		{
			name:  "mismatched brackets: parse error",
			input: `{"a":[1}]`,
			want:  []string{`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: invalid character '}' after array element"}}`},
		},
		{
			name:  "end of input inside a message",
			input: req(1, "add", "") + `{"jsonrpc":"2.0","id":2,`,
			want: []string{`{"jsonrpc":"2.0","id":1,"result":0}`,
				`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: unexpected end of input"}}`},
		},
		{
			name:  "top-level scalars are invalid requests, the stream goes on",
			input: `1 "two" true null ` + req(3, "add", ""),
			want: []string{
				`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: expected an object or a batch array"}}`,
				`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: expected an object or a batch array"}}`,
				`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: expected an object or a batch array"}}`,
				`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: expected an object or a batch array"}}`,
				`{"jsonrpc":"2.0","id":3,"result":0}`,
			},
		},
		{
			name:  "bad number at top level is a parse error",
			input: `1x2`,
			want:  []string{`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: invalid JSON value"}}`},
		},
		{
			name: "invalid envelopes",
			input: `{"id":1,"method":"add"}{"jsonrpc":"1.0","id":2,"method":"add"}{"jsonrpc":"2.0","id":3,"method":5}` +
				`{"jsonrpc":"2.0","id":{"x":1},"method":"add"}{"jsonrpc":"2.0","id":4,"method":"add","params":7}`,
			want: []string{
				`{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"invalid request: \"jsonrpc\" must be \"2.0\""}}`,
				`{"jsonrpc":"2.0","id":2,"error":{"code":-32600,"message":"invalid request: \"jsonrpc\" must be \"2.0\""}}`,
				`{"jsonrpc":"2.0","id":3,"error":{"code":-32600,"message":"invalid request: \"method\" must be a string"}}`,
				`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: id must be a string, a number or null"}}`,
				`{"jsonrpc":"2.0","id":4,"error":{"code":-32600,"message":"invalid request: \"params\" must be an object or an array"}}`,
			},
		},
		{
			name:  "bad params",
			input: req(1, "add", `[1,2]`) + req(2, "add", `{"a":"x"}`) + req(3, "add", `{"c":1}`),
			want: []string{
				`{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"invalid params: expected an object"}}`,
				`{"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"invalid params: A: expected int, got string"}}`,
				`{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"invalid params: unknown field \"c\""}}`,
			},
		},
		{
			name:  "a panic is an internal error and the connection goes on",
			input: req(1, "panic", "") + req(2, "fail", "") + req(3, "add", ""),
			want: []string{
				`{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"internal error in panic"}}`,
				`{"jsonrpc":"2.0","id":2,"error":{"code":-32000,"message":"it failed"}}`,
				`{"jsonrpc":"2.0","id":3,"result":0}`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, chunks := range [][]int{nil, {1}, {3, 1, 7}, {64}, {1000}} {
				got := converse(t, tt.input, chunks, Options{MaxMessageBytes: tt.cap})
				if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
					t.Fatalf("reads of %v bytes:\n got %s\nwant %s", chunks, strings.Join(got, "\n     "), strings.Join(tt.want, "\n     "))
				}
			}
		})
	}
}

// padded returns a request of exactly size bytes.
func padded(t testing.TB, id, size int) string {
	t.Helper()
	base := req(id, "echo", `{"p":""}`)
	if size < len(base) {
		t.Fatalf("size %d < %d", size, len(base))
	}
	s := req(id, "echo", `{"p":"`+strings.Repeat("x", size-len(base))+`"}`)
	if len(s) != size {
		t.Fatalf("built %d bytes, want %d", len(s), size)
	}
	return s
}

func TestCap(t *testing.T) {
	const limit = 1024
	over := `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"request of at least %d bytes exceeds the limit of 1024 bytes (admin.max_message_bytes)"}}`
	for _, chunks := range [][]int{nil, {1}, {100}, {1023}, {4096}} {
		t.Run(fmt.Sprint(chunks), func(t *testing.T) {
			// Exactly at the cap, followed at once by more: both answered;
			// leading whitespace does not count.
			got := converse(t, "\n  "+padded(t, 1, limit)+" "+padded(t, 2, limit), chunks, Options{MaxMessageBytes: limit})
			if len(got) != 2 || !strings.HasPrefix(got[0], `{"jsonrpc":"2.0","id":1,"result"`) || !strings.HasPrefix(got[1], `{"jsonrpc":"2.0","id":2,"result"`) {
				t.Fatalf("at the cap: got %.200q", got)
			}
			// One byte over: -32600 and the connection closes.
			got = converse(t, padded(t, 1, limit+1)+padded(t, 2, 100), chunks, Options{MaxMessageBytes: limit})
			if len(got) != 1 || (got[0] != fmt.Sprintf(over, limit+1)) {
				t.Fatalf("one over: got %q", got)
			}
			// Far over: rejected without reading it all.
			got = converse(t, padded(t, 1, 100*limit), chunks, Options{MaxMessageBytes: limit})
			var resp struct{ Error *Error }
			if len(got) != 1 || json.Unmarshal([]byte(got[0]), &resp) != nil || resp.Error == nil || resp.Error.Code != CodeInvalidRequest {
				t.Fatalf("far over: got %.300q", got)
			}
		})
	}
}

func TestScannerMatchesDecoder(t *testing.T) {
	for _, v := range []string{`{}`, `[]`, `{"a":"\\"}`, `["\"]"]`, `"x"`, `-1.5e+3`, `true`, `{"a":{"b":[{}]}}`} {
		s := newScanner()
		used, res := s.feed([]byte(v + " "))
		if res != scanDone || used != len(v) || s.n != int64(len(v)) {
			t.Errorf("%s: used %d, res %d, n %d", v, used, res, s.n)
		}
	}
}
