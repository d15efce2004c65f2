package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/registry"
)

// connGate bounds what client connections can cost, and keeps room for the
// kubelet's probes and Prometheus when every client slot is busy.
//
// Memory: a connection still reading its request headers holds them (in
// net/http's buffers, then its header map) until the last line arrives, so
// the worst case grows with max_connections × the header cap (budget.go
// relates the two to the memory limit). Past max_connections, Accept waits:
// further clients queue in the kernel's backlog, which costs berth nothing.
//
// Probes: a probe that queued behind busy downloads would time out and the
// kubelet would restart a healthy pod. So past max_connections a small
// reserve of connections is accepted that may serve only /healthz, /readyz
// and /metrics, one request each, for a short life; any other request on one
// gets 503 TOOMANYREQUESTS with Retry-After, and the connection closes.
//
// Oversized headers: net/http answers headers past Server.MaxHeaderBytes with
// a plain-text 431, and a client still sending them may see a reset instead.
// The gate counts the bytes of each request's header section as they are
// read and, past the cap, answers berth's OCI 431 itself, closes the write
// side and drains what the client still sends before closing, so the client
// reads the answer. Headers under the cap but over max_header_bytes are
// answered by the registry handler, which sees the parsed size.
type connGate struct {
	clients   chan struct{} // a token per client connection; nil: unbounded
	reserve   chan struct{} // a token per probe-reserve connection
	maxConns  int
	headerCap int    // bytes of request line and headers read before the gate answers 431
	tooLarge  []byte // that answer, whole
	// reserveLife bounds a reserve connection's life, whatever deadlines
	// net/http sets (a probe is answered in milliseconds).
	reserveLife time.Duration
	// drainTime bounds how long a refused connection is drained.
	drainTime time.Duration
	log       *slog.Logger
	// onTooLarge counts a connection refused for its headers.
	onTooLarge func()

	open          [2]atomic.Int64 // by slot
	reserveRefuse atomic.Uint64   // requests refused on a reserve connection
}

type slot int

const (
	slotClient slot = iota
	slotReserve
)

func (s slot) String() string { return [...]string{"client", "reserve"}[s] }

// probeReserve is how many connections past max_connections may be open for
// probes and /metrics: the kubelet's three probes and a scraper or two.
const probeReserve = 8

const (
	// refuseDrainTime: past it, a connection refused for its headers is
	// closed even if the client still sends.
	refuseDrainTime = time.Second
	// reserveLifetime is a reserve connection's longest life.
	reserveLifetime = 5 * time.Second
)

var errHeadersTooLarge = errors.New("request headers too large")

func newConnGate(cfg config.Config, log *slog.Logger, onTooLarge func()) *connGate {
	g := &connGate{
		maxConns:    cfg.MaxConnections,
		headerCap:   headerCap(int(cfg.MaxHeaderBytes)),
		reserveLife: reserveLifetime,
		drainTime:   refuseDrainTime,
		log:         log,
		onTooLarge:  onTooLarge,
	}
	if cfg.MaxConnections > 0 {
		g.clients = make(chan struct{}, cfg.MaxConnections)
		g.reserve = make(chan struct{}, probeReserve)
	}
	g.tooLarge = tooLargeResponse(int(cfg.MaxHeaderBytes))
	return g
}

// tooLargeResponse is the whole HTTP response the gate writes for headers
// past its cap: the OCI error body, and a close.
func tooLargeResponse(limit int) []byte {
	body := registry.ErrorBody(registry.CodeTooLarge,
		fmt.Sprintf("request headers exceed the limit of %d bytes or %d lines", limit, maxHeaderLines))
	return fmt.Appendf(nil, "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}

// listen wraps ln: Accept waits for a client or reserve slot.
func (g *connGate) listen(ln net.Listener) net.Listener {
	return &gatedListener{Listener: ln, g: g, done: make(chan struct{})}
}

// acquire takes a client slot if one is free, else the first slot of either
// kind to free up.
func (g *connGate) acquire(done <-chan struct{}) (slot, error) {
	if g.clients == nil {
		return slotClient, nil
	}
	select {
	case g.clients <- struct{}{}:
		return slotClient, nil
	default:
	}
	select {
	case g.clients <- struct{}{}:
		return slotClient, nil
	case g.reserve <- struct{}{}:
		return slotReserve, nil
	case <-done:
		return 0, net.ErrClosed
	}
}

// upgrade moves a reserve connection to a client slot freed while Accept
// waited for the connection itself.
func (g *connGate) upgrade() bool {
	select {
	case g.clients <- struct{}{}:
		<-g.reserve
		return true
	default:
		return false
	}
}

func (g *connGate) release(s slot) {
	switch {
	case g.clients == nil:
	case s == slotClient:
		<-g.clients
	default:
		<-g.reserve
	}
}

type gatedListener struct {
	net.Listener
	g         *connGate
	done      chan struct{}
	closeOnce sync.Once
}

func (l *gatedListener) Accept() (net.Conn, error) {
	s, err := l.g.acquire(l.done)
	if err != nil {
		return nil, err
	}
	c, err := l.Listener.Accept()
	if err != nil {
		l.g.release(s)
		return nil, err
	}
	if s == slotReserve && l.g.upgrade() {
		s = slotClient
	}
	return l.g.wrap(c, s), nil
}

// Close also ends an Accept waiting for a slot.
func (l *gatedListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (g *connGate) wrap(c net.Conn, s slot) *gatedConn {
	gc := &gatedConn{Conn: c, g: g, slot: s}
	g.open[s].Add(1)
	if s == slotReserve {
		gc.expires = time.Now().Add(g.reserveLife)
		_ = c.SetDeadline(gc.expires)
	}
	return gc
}

// connState follows net/http's connection states: the header bytes of a
// request are counted from the end of the previous response (StateIdle) until
// the request has been parsed (StateActive).
func (g *connGate) connState(c net.Conn, st http.ConnState) {
	gc, ok := c.(*gatedConn)
	if !ok {
		return
	}
	switch st {
	case http.StateActive:
		gc.inRequest.Store(true)
	case http.StateIdle:
		gc.headerBytes.Store(0)
		gc.headerLines.Store(0)
		gc.inRequest.Store(false)
	}
}

type reserveKey struct{}

// connContext marks the requests of reserve connections.
func (g *connGate) connContext(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*gatedConn); ok && gc.slot == slotReserve {
		return context.WithValue(ctx, reserveKey{}, true)
	}
	return ctx
}

// reservePaths are what a reserve connection may ask for.
var reservePaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// handler lets reserve connections reach only reservePaths, once each.
func (g *connGate) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(reserveKey{}) == nil {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close")
		if reservePaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		g.reserveRefuse.Add(1)
		registry.WriteError(w, r, &registry.Error{
			Status:  http.StatusServiceUnavailable,
			Code:    registry.CodeTooManyRequests,
			Message: fmt.Sprintf("all %d client connections are in use; retry later", g.maxConns),
			Header:  http.Header{"Retry-After": {"1"}},
		})
	})
}
