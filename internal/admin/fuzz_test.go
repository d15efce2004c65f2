package admin

import (
	"encoding/json"
	"regexp"
	"slices"
	"testing"
)

var atLeast = regexp.MustCompile(`at least [0-9]+ bytes`)

// FuzzFraming feeds arbitrary bytes to a connection in arbitrary read sizes.
// The responses must not depend on how the stream was split, each must be a
// complete JSON-RPC response on one line, and every buffer block must return
// to the pool.
func FuzzFraming(f *testing.F) {
	f.Add([]byte(req(1, "add", `{"a":1,"b":2}`)+"\n"+req(2, "echo", `{"s":"]}\"{"}`)), uint8(1), uint8(5))
	f.Add([]byte(`[`+req(1, "add", "")+`,{"jsonrpc":"2.0","method":"add"},7]`), uint8(3), uint8(2))
	f.Add([]byte(`  {"jsonrpc":"2.0","id":1,"method":"echo","params":{"p":"`+string(make([]byte, 300))+`"}}`), uint8(17), uint8(64))
	f.Add([]byte(`1 "x" {"a":[}]`), uint8(1), uint8(1))
	f.Add([]byte(`[]{"jsonrpc":"2.0","id":1,`), uint8(2), uint8(9))
	f.Fuzz(func(t *testing.T, data []byte, a, b uint8) {
		opts := Options{MaxMessageBytes: 256}
		whole := converse(t, string(data), nil, opts)
		split := converse(t, string(data), []int{int(a), int(b)}, opts)
		// How much of an oversized request was read depends on the reads.
		norm := func(l []string) []string {
			out := make([]string, len(l))
			for i, s := range l {
				out[i] = atLeast.ReplaceAllString(s, "at least N bytes")
			}
			return out
		}
		if !slices.Equal(norm(whole), norm(split)) {
			t.Fatalf("responses depend on read sizes:\nwhole %q\nsplit %q", whole, split)
		}
		for _, line := range whole {
			var one response
			var batch []response
			if json.Unmarshal([]byte(line), &one) == nil && one.JSONRPC == "2.0" {
				if (one.Error == nil) == (one.Result == nil) {
					t.Fatalf("response with neither or both of result and error: %s", line)
				}
				continue
			}
			if json.Unmarshal([]byte(line), &batch) != nil || len(batch) == 0 {
				t.Fatalf("not a JSON-RPC response: %q", line)
			}
		}
	})
}
