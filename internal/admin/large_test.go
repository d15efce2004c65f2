package admin_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/admin"
	"github.com/berth-mirror/berth/internal/config"
)

// purgeRequest builds a cache.purge request of at least size bytes listing
// distinct digests, none of them stored; it returns the request and the
// number of digests.
func purgeRequest(size int) (string, int) {
	var b strings.Builder
	b.Grow(size + 100)
	b.WriteString(`{"jsonrpc":"2.0","id":1,"method":"cache.purge","params":{"digests":[`)
	n := 0
	for b.Len() < size {
		if n > 0 {
			b.WriteByte(',')
		}
		sum := sha256.Sum256([]byte(fmt.Sprint(n)))
		b.WriteString(`"sha256:` + hex.EncodeToString(sum[:]) + `"`)
		n++
	}
	b.WriteString("]}}\n")
	return b.String(), n
}

// send writes req on a new connection and returns the first response line;
// with checkClose, also whether the server then closed the connection.
func send(t *testing.T, socket, req string, checkClose bool) (line string, closed bool) {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	go func() { _, _ = io.WriteString(c, req) }() // the server may stop reading early
	r := bufio.NewReader(c)
	line, err = r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	if !checkClose {
		return line, false
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = r.ReadByte()
	return line, err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

func TestLargeRequestUnderRaisedCap(t *testing.T) {
	if testing.Short() {
		t.Skip("48 MiB request")
	}
	h := newHarness(t, func(c *config.Config) { c.Admin.MaxMessageBytes = 64 << 20 })
	req, n := purgeRequest(48 << 20)
	line, _ := send(t, h.socket, req, false)
	var resp struct {
		Result admin.PurgeResult
		Error  *admin.Error
	}
	if err := json.Unmarshal([]byte(line), &resp); err != nil || resp.Error != nil {
		t.Fatalf("48 MiB request: %.300s (%v)", line, err)
	}
	if resp.Result.Missing != n || resp.Result.Purged != 0 {
		t.Errorf("result %+v, want %d missing", resp.Result, n)
	}
}

func TestOversizedRequestIsolated(t *testing.T) {
	if testing.Short() {
		t.Skip("17 MiB request")
	}
	h := newHarness(t, nil)
	h.push("test/app", "v1", 1, 1024)
	other := h.client()
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := purgeRequest(17 << 20)
		line, closed := send(t, h.socket, req, true)
		want := `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"request of at least `
		if !strings.HasPrefix(line, want) || !strings.Contains(line, "exceeds the limit of 16777216 bytes (admin.max_message_bytes)") {
			t.Errorf("17 MiB request: %s", line)
		}
		if !closed {
			t.Error("connection left open after an oversized request")
		}
	}()
	// Meanwhile the other connection and the registry keep answering.
	for i := 0; ; i++ {
		var st admin.Status
		h.call(other, "status", nil, &st)
		resp, err := http.Get(h.url + "/v2/")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("registry during the oversized request: %v %v", resp, err)
		}
		_ = resp.Body.Close()
		select {
		case <-done:
			h.pull("test/app", "v1")
			var st admin.Status
			h.call(other, "status", nil, &st)
			if n := strings.Count(h.logs.String(), "rejected admin request: too large"); n != 1 {
				t.Errorf("the rejection was logged %d times, want once", n)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		if i > 10000 {
			t.Fatal("oversized request never answered")
		}
	}
}

func TestClientTimeout(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Call(ctx, "status", nil, nil); err == nil {
		t.Error("call with a canceled context succeeded")
	}
}
