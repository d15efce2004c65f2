package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func batchOf(n int, params string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"echo","params":%s}`, i, params)
	}
	b.WriteByte(']')
	return b.String()
}

// A batch longer than MaxBatch is refused whole, naming its length and the
// limit; one at the limit is served.
func TestBatchLengthCap(t *testing.T) {
	m := testMux()
	line, malformed := m.serveMessage(context.Background(), []byte(batchOf(MaxBatch+1, `{}`)))
	want := fmt.Sprintf(`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: a batch of %d requests exceeds the limit of %d"}}`+"\n", MaxBatch+1, MaxBatch)
	if malformed || string(line) != want {
		t.Errorf("over the cap: %q (malformed %v), want %q", line, malformed, want)
	}
	line, _ = m.serveMessage(context.Background(), []byte(batchOf(MaxBatch, `{}`)))
	var out []response
	if err := json.Unmarshal(line, &out); err != nil || len(out) != MaxBatch {
		t.Errorf("at the cap: %d responses, %v", len(out), err)
	}
	// Past the cap, a malformed element is still a parse error.
	if _, malformed := m.serveMessage(context.Background(), []byte(batchOf(MaxBatch+1, `{}`)[:100]+"]")); !malformed {
		t.Error("a malformed long batch was not a parse error")
	}
}

// A response over the cap becomes an error for that request; in a batch the
// cap bounds the whole line.
func TestResponseSizeCap(t *testing.T) {
	m := testMux()
	m.maxResponse = 400
	big := `{"s":"` + strings.Repeat("x", 500) + `"}`
	small := `{"s":"` + strings.Repeat("x", 100) + `"}`

	line, _ := m.serveMessage(context.Background(), []byte(`{"jsonrpc":"2.0","id":7,"method":"echo","params":`+big+`}`))
	var r response
	if err := json.Unmarshal(line, &r); err != nil || r.Error == nil || r.Error.Code != CodeServer ||
		string(r.ID) != "7" || !strings.Contains(r.Error.Message, "limit of 400 bytes") {
		t.Errorf("single over the cap: %s", line)
	}

	line, _ = m.serveMessage(context.Background(), []byte(batchOf(6, small)))
	var out []response
	if err := json.Unmarshal(line, &out); err != nil || len(out) != 6 {
		t.Fatalf("batch: %s (%v)", line, err)
	}
	results := 0
	for i, r := range out {
		if string(r.ID) != fmt.Sprint(i) {
			t.Errorf("response %d has id %s", i, r.ID)
		}
		if r.Result != nil {
			results++
			if results != i+1 {
				t.Errorf("a result after a refused response: %s", line)
			}
		}
	}
	if results == 0 || results == 6 {
		t.Errorf("%d of 6 results sent within 400 bytes, want some but not all: %s", results, line)
	}
	if len(line) > 400+6*200 {
		t.Errorf("batch line of %d bytes", len(line))
	}
}
