package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/berth-mirror/berth/internal/bufchain"
)

// conn serves one admin connection: it reads a stream of messages into a
// chain of pooled blocks and answers each as soon as it is complete.
type conn struct {
	srv   *Server
	c     net.Conn
	chain *bufchain.Chain
	rd    *bufchain.Reader
	sc    scanner
	// scratch is where buffered bytes are copied to be scanned.
	scratch [4 << 10]byte
	log     *slog.Logger
}

func (s *Server) newConn(c net.Conn) *conn {
	cn := &conn{srv: s, c: c, chain: bufchain.New(s.pool, s.opts.MaxMessageBytes), sc: newScanner(), log: s.log}
	cn.rd = cn.chain.Reader()
	return cn
}

// serve runs until the peer closes, an error closes the stream, or ctx ends.
func (cn *conn) serve(ctx context.Context) {
	defer cn.chain.Reset()
	eof := false
	for {
		res, err := cn.scan()
		if err != nil {
			cn.log.Error("admin connection: reading the buffer", "error", err)
			return
		}
		switch res {
		case scanBad:
			cn.send(cn.srv.mux.parseError(errors.New("invalid character at the start of a value")))
			return
		case scanDone:
			if !cn.handle(ctx, cn.sc.n) {
				return
			}
			continue
		}
		if cn.chain.Len() > cn.limit() {
			cn.tooLarge(cn.chain.Len())
			return
		}
		if eof {
			if cn.sc.end() { // a top-level number or literal ends at EOF
				cn.handle(ctx, cn.sc.n)
			} else if cn.sc.started() {
				cn.send(cn.srv.mux.parseError(errors.New("unexpected end of input")))
			}
			return
		}
		if err := cn.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				eof = true
				continue
			}
			cn.readError(err)
			return
		}
	}
}

func (cn *conn) limit() int64 { return cn.srv.opts.MaxMessageBytes }

// scan feeds the scanner the bytes buffered and not yet scanned. Leading
// whitespace is discarded as soon as it is seen, so it never counts against
// the cap and an idle stream holds no blocks.
func (cn *conn) scan() (scanResult, error) {
	for {
		n, err := cn.rd.Read(cn.scratch[:])
		if errors.Is(err, io.EOF) {
			return scanMore, nil
		}
		if err != nil {
			return scanMore, err
		}
		used, res := cn.sc.feed(cn.scratch[:n])
		if used < n || res != scanMore {
			// Bytes after the value stay in the chain; they are scanned
			// again after the value is discarded.
			cn.dropLeadingSpace()
			return res, nil
		}
		cn.dropLeadingSpace()
	}
}

func (cn *conn) dropLeadingSpace() {
	drop := cn.sc.start
	if !cn.sc.started() {
		drop = cn.sc.n
	}
	if drop > 0 {
		cn.chain.Discard(drop)
		cn.sc.n -= drop
		if cn.sc.started() {
			cn.sc.start = 0
		}
	}
}

// handle decodes and answers the message of size bytes at the front of the
// chain, then discards it. It reports whether the connection stays open.
func (cn *conn) handle(ctx context.Context, size int64) bool {
	if size > cn.limit() {
		cn.tooLarge(size)
		return false
	}
	msg := make([]byte, size)
	_, err := io.ReadFull(cn.chain.Reader(), msg)
	cn.chain.Discard(size)
	cn.sc.reset()
	cn.rd = cn.chain.Reader()
	if err != nil {
		cn.log.Error("admin connection: reading the buffer", "error", err)
		return false
	}
	line, malformed := cn.srv.mux.serveMessage(ctx, msg)
	if line != nil && !cn.send(line) {
		return false
	}
	return !malformed
}

func (cn *conn) tooLarge(size int64) {
	cn.log.Warn("rejected admin request: too large; closing the connection",
		"code", CodeInvalidRequest, "size_at_least", size, "limit", cn.limit())
	cn.send(encodeLine(errorResponse(nil, Errorf(CodeInvalidRequest,
		"request of at least %d bytes exceeds the limit of %d bytes (admin.max_message_bytes)", size, cn.limit()))))
}

// fill reads once more from the peer, waiting at most the idle timeout. A
// chain over its cap is not an error here: the scanner decides whether a
// complete message within the cap is buffered.
func (cn *conn) fill() error {
	_ = cn.c.SetReadDeadline(time.Now().Add(cn.srv.opts.IdleTimeout))
	_, err := cn.chain.Fill(cn.c)
	var tl *bufchain.TooLargeError
	if errors.As(err, &tl) {
		return nil
	}
	return err
}

func (cn *conn) readError(err error) {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		cn.log.Info("admin connection idle; closing", "idle_timeout", cn.srv.opts.IdleTimeout)
	case errors.Is(err, net.ErrClosed):
	default:
		cn.log.Debug("admin connection read failed", "error", err)
	}
}

// send writes one response line; a peer that does not read for the write
// timeout is dropped.
func (cn *conn) send(line []byte) bool {
	_ = cn.c.SetWriteDeadline(time.Now().Add(cn.srv.opts.WriteTimeout))
	if _, err := cn.c.Write(line); err != nil {
		cn.log.Debug("admin connection write failed", "error", fmt.Sprint(err))
		return false
	}
	return true
}
