package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/berth-mirror/berth/internal/bufchain"
)

// Defaults for [Options].
const (
	DefaultMaxMessageBytes = 16 << 20
	DefaultMaxConns        = 16
	DefaultIdleTimeout     = 5 * time.Minute
	DefaultWriteTimeout    = time.Minute
)

// maxSocketPath is the longest path a Unix socket address can hold on Linux.
const maxSocketPath = 107

// Options configure a [Server]. Socket is required; zero values elsewhere
// mean the defaults.
type Options struct {
	// Socket is the Unix socket path. Its directory is created (0750) if
	// missing; the socket is made mode 0600.
	Socket string
	// MaxMessageBytes caps one message (default 16Mi, admin.max_message_bytes).
	MaxMessageBytes int64
	// MaxConns caps concurrent connections (default 16); one more is told so
	// and closed.
	MaxConns int
	// IdleTimeout closes a connection that sends nothing for this long
	// (default 5m).
	IdleTimeout time.Duration
	// WriteTimeout drops a peer that does not read a response (default 1m).
	WriteTimeout time.Duration
	// Pool supplies read buffers (default: one pool for this server's
	// connections).
	Pool *bufchain.Pool
	// Logger receives one line per rejected request or connection (default:
	// discard).
	Logger *slog.Logger
}

// Server serves a [Mux] on a Unix socket.
type Server struct {
	opts   Options
	mux    *Mux
	pool   *bufchain.Pool
	log    *slog.Logger
	ln     *net.UnixListener
	sock   os.FileInfo // the socket file we created, to remove only it
	sem    chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Start binds the socket and serves mux on it until Close. A stale socket
// file (nobody accepts on it) is replaced; a live one is an error.
func Start(opts Options, mux *Mux) (*Server, error) {
	s := newServer(opts, mux)
	ln, fi, err := listen(s.opts.Socket)
	if err != nil {
		s.cancel()
		return nil, err
	}
	s.ln, s.sock = ln, fi
	s.wg.Go(s.acceptLoop)
	return s, nil
}

// newServer applies the defaults; it does not listen.
func newServer(opts Options, mux *Mux) *Server {
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Pool == nil {
		opts.Pool = bufchain.NewPool(0)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		opts: opts, mux: mux, pool: opts.Pool, log: opts.Logger,
		sem: make(chan struct{}, opts.MaxConns), ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{},
	}
}

// Addr is the socket path.
func (s *Server) Addr() string { return s.opts.Socket }

// listen binds path with mode 0600: it binds a temporary name in the same
// directory, restricts it, then renames it into place, so the socket is never
// reachable with looser permissions.
func listen(path string) (*net.UnixListener, os.FileInfo, error) {
	if path == "" {
		return nil, nil, errors.New("admin: no socket path")
	}
	if len(path) > maxSocketPath {
		return nil, nil, fmt.Errorf("admin socket %s: path longer than %d bytes", path, maxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w (set admin.socket to a writable path, or to \"\" to disable the control plane)", path, err)
	}
	if err := clearStale(path); err != nil {
		return nil, nil, err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	if len(tmp) > maxSocketPath {
		tmp = filepath.Join(dir, fmt.Sprintf(".b%d", os.Getpid()))
	}
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return ln, fi, nil
}

// clearStale removes a socket file nobody answers on. A live socket, or a
// path that is not a socket, is left alone and reported.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("admin socket %s: the path exists and is not a socket", path)
	}
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(context.Background(), "unix", path)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("admin socket %s is in use by another process", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin socket %s: checking whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin socket %s: removing the stale socket: %w", path, err)
	}
	return nil
}

func (s *Server) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("admin socket: accept failed", "error", err)
			select {
			case <-time.After(50 * time.Millisecond):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			s.refuse(c)
			continue
		}
		if !s.track(c) {
			<-s.sem
			_ = c.Close()
			return
		}
		s.wg.Go(func() {
			defer func() {
				s.untrack(c)
				_ = c.Close()
				<-s.sem
			}()
			s.newConn(c).serve(s.ctx)
		})
	}
}

// refuse tells a connection over the cap why, and closes it.
func (s *Server) refuse(c net.Conn) {
	s.log.Warn("refused admin connection: too many connections", "limit", s.opts.MaxConns)
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(encodeLine(errorResponse(nil, Errorf(CodeServer,
		"too many admin connections (limit %d); try again later", s.opts.MaxConns))))
	_ = c.Close()
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close stops accepting, cancels requests in progress, closes every
// connection, waits for them, and removes the socket file (if it is still
// the one Start created).
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if fi, serr := os.Lstat(s.opts.Socket); serr == nil && os.SameFile(fi, s.sock) {
		if rerr := os.Remove(s.opts.Socket); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	return err
}
