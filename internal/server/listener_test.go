package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/config"
)

// running is a Server serving on a loopback port until the test ends.
type running struct {
	s    *Server
	addr string
}

func startServer(t *testing.T, cfg config.Config, prepare func(*Server), wrap func(net.Listener) net.Listener) *running {
	t.Helper()
	cfg.Admin.Socket = ""
	s, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	runOn(t, s, ln)
	return &running{s: s, addr: addr}
}

// dialHeld opens a connection that holds a slot: it is idle after one request.
func (r *running) dialHeld(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitOpen waits until the gate counts n connections in slot s.
func (r *running) waitOpen(t *testing.T, s slot, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.s.conns.open[s].Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s connections open: %d, want %d", s, r.s.conns.open[s].Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// get asks path on a new connection, bounded by a client deadline.
func (r *running) get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + r.addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp, body
}

// TestProbesAnsweredWhenConnectionsFull: with every client slot held by idle
// and half-sent connections, the probes and /metrics are still answered, a
// registry request on the reserve gets 503 TOOMANYREQUESTS and a close, and a
// freed slot serves the registry again.
func TestProbesAnsweredWhenConnectionsFull(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConnections = 2
	r := startServer(t, cfg, nil, nil)

	idle := r.dialHeld(t)
	if _, err := io.WriteString(idle, "GET /v2/ HTTP/1.1\r\nHost: berth\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ on the first connection: %v %v", resp, err)
	}
	stalled := r.dialHeld(t)
	if _, err := io.WriteString(stalled, "GET /v2/ HTTP/1.1\r\nHost: berth\r\n"); err != nil {
		t.Fatal(err)
	}
	r.waitOpen(t, slotClient, 2)

	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/healthz"} {
		t.Run(path, func(t *testing.T) {
			resp, body := r.get(t, path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if !resp.Close {
				t.Error("a reserve connection was kept open")
			}
		})
	}
	resp, body := r.get(t, "/v2/")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(body), `"TOOMANYREQUESTS"`) {
		t.Fatalf("/v2/ on the reserve: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if n := r.s.conns.reserveRefuse.Load(); n != 1 {
		t.Errorf("reserve refusals counted: %d", n)
	}

	_ = idle.Close()
	r.waitOpen(t, slotClient, 1)
	if resp, body := r.get(t, "/v2/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/v2/ after a slot freed: %d %s", resp.StatusCode, body)
	}
}

// TestReserveConnectionsExpire: a reserve connection that sends nothing is
// closed after its short life, whatever net/http's own timeouts.
func TestReserveConnectionsExpire(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConnections = 1
	r := startServer(t, cfg, func(s *Server) { s.conns.reserveLife = 100 * time.Millisecond }, nil)
	_ = r.dialHeld(t)
	r.waitOpen(t, slotClient, 1)
	c := r.dialHeld(t)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("reserve connection not closed by the server: %v", err)
	}
}

// TestOversizedHeadersGetOCIError: headers over max_header_bytes get the OCI
// 431 body, from the handler under the gate's cap and from the gate past it
// (1 MiB), and the client reads the whole answer: no reset.
func TestOversizedHeadersGetOCIError(t *testing.T) {
	cfg := testConfig(t)
	r := startServer(t, cfg, nil, nil)
	limit := int(cfg.MaxHeaderBytes)
	for _, tt := range []struct {
		name    string
		headers string
	}{
		{"over max_header_bytes, under the cap", "X-Big: " + strings.Repeat("a", limit+1024) + "\r\n"},
		{"1 MiB", "X-Big: " + strings.Repeat("a", 1<<20) + "\r\n"},
		{"8 MiB", "X-Big: " + strings.Repeat("a", 8<<20) + "\r\n"},
		{"too many lines", strings.Repeat("X-A: 1\r\n", maxHeaderLines+1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go func() {
				// The server may stop reading before the end: a write error is expected then.
				_, _ = io.WriteString(c, "GET /v2/ HTTP/1.1\r\nHost: berth\r\n"+tt.headers+"\r\n")
			}()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("reading the response: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("reading the body: %v", err)
			}
			var oci struct {
				Errors []struct{ Code string } `json:"errors"`
			}
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || json.Unmarshal(body, &oci) != nil ||
				len(oci.Errors) != 1 || oci.Errors[0].Code != "SIZE_INVALID" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
		})
	}
}

// TestHeaderCapPerRequest: the gate counts each request's headers afresh:
// requests on one connection whose headers together pass the cap, each under
// max_header_bytes, are all served.
func TestHeaderCapPerRequest(t *testing.T) {
	cfg := testConfig(t)
	r := startServer(t, cfg, nil, nil)
	c := r.dialHeld(t)
	br := bufio.NewReader(c)
	big := strings.Repeat("a", int(cfg.MaxHeaderBytes)-2048)
	for i := range 4 {
		if _, err := io.WriteString(c, "GET /v2/ HTTP/1.1\r\nHost: berth\r\nX-Big: "+big+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
	}
}

// countingListener counts the bytes the server has read from its connections.
type countingListener struct {
	net.Listener
	read *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, read: l.read}, nil
}

type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// TestHeaderMemoryPerConnection: many connections holding unfinished headers
// just under the gate's cap are bounded by max_connections (the rest wait in
// the kernel's backlog), and each accepted one holds no more than
// connMemory, the figure the memory budget is built on. Each shape of header
// that costs net/http the most is tried: one long line, many short distinct
// names, one name repeated.
func TestHeaderMemoryPerConnection(t *testing.T) {
	const conns, extra = 16, 24
	for _, tt := range []struct {
		name string
		line func(i int) string
	}{
		{"one long line", nil},
		{"short distinct names, then a long line", func(i int) string { return fmt.Sprintf("X%x:1\r\n", i) }},
		{"one name repeated, then a long line", func(int) string { return "X:1\r\n" }},
		{"distinct names, long values", func(i int) string { return fmt.Sprintf("X%x: %s\r\n", i, strings.Repeat("v", 130)) }},
		{"one name repeated, long values", func(int) string { return "X: " + strings.Repeat("v", 130) + "\r\n" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.MaxConnections = conns
			var read atomic.Int64
			r := startServer(t, cfg, func(s *Server) { s.conns.reserveLife = time.Minute },
				func(ln net.Listener) net.Listener { return countingListener{ln, &read} })
			budget := r.s.conns.headerCap - 512
			head := "GET /v2/ HTTP/1.1\r\nHost: berth\r\n"
			var sb strings.Builder
			sb.WriteString(head)
			if tt.line == nil {
				sb.WriteString("X-Long: " + strings.Repeat("a", budget-len(head)-8))
			} else {
				for i := 0; i < maxHeaderLines-8 && sb.Len() < budget-160; i++ {
					sb.WriteString(tt.line(i))
				}
				sb.WriteString("X-Long: " + strings.Repeat("a", budget-sb.Len()-8))
			}
			req := sb.String()
			base := heapInUse()
			for range conns + probeReserve + extra {
				c := r.dialHeld(t)
				if _, err := io.WriteString(c, req); err != nil {
					t.Fatal(err)
				}
			}
			r.waitOpen(t, slotClient, conns)
			r.waitOpen(t, slotReserve, probeReserve)
			want := int64((conns + probeReserve) * len(req))
			deadline := time.Now().Add(10 * time.Second)
			for read.Load() < want {
				if time.Now().After(deadline) {
					t.Fatalf("server read %d bytes, want %d", read.Load(), want)
				}
				time.Sleep(5 * time.Millisecond)
			}
			perConn := (heapInUse() - base) / (conns + probeReserve)
			t.Logf("%d connections accepted of %d; %d KiB per connection holding %d bytes of headers (budget %d KiB)",
				conns+probeReserve, conns+probeReserve+extra, perConn>>10, len(req), connMemory(int(cfg.MaxHeaderBytes))>>10)
			if perConn > connMemory(int(cfg.MaxHeaderBytes)) {
				t.Errorf("%d bytes per connection, over the budget's %d", perConn, connMemory(int(cfg.MaxHeaderBytes)))
			}
			if n := read.Load(); n > want {
				t.Errorf("read %d bytes: connections past max_connections and the reserve were read", n)
			}
		})
	}
}

// heapInUse is the live heap and the goroutine stacks, after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}
