package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-mirror/berth/internal/registry"
)

// gatedConn is one accepted connection holding a slot.
type gatedConn struct {
	net.Conn
	g       *connGate
	slot    slot
	expires time.Time // reserve connections only
	// headerBytes counts what was read of the current request's header
	// section; not counted while inRequest (a handler reading a body).
	headerBytes atomic.Int64
	headerLines atomic.Int64
	inRequest   atomic.Bool
	closeOnce   sync.Once
}

func (c *gatedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.inRequest.Load() && c.overCap(p[:n]) {
		c.refuse()
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errHeadersTooLarge}
	}
	return n, err
}

// overCap counts p into the current header section and reports whether the
// section is past the gate's cap in bytes or in lines. Lines are capped
// because each costs net/http a map entry or a slice element far bigger than
// a short line itself: 64 KiB of "Xn:1" lines cost over 900 KiB.
func (c *gatedConn) overCap(p []byte) bool {
	b := c.headerBytes.Add(int64(len(p)))
	l := c.headerLines.Add(int64(bytes.Count(p, newline)))
	return b > int64(c.g.headerCap) || l > maxHeaderLines
}

var newline = []byte{'\n'}

// refuse answers headers past the cap the way net/http answers its own 431,
// but with the OCI body and a drain: write the answer, close the write side,
// and read what the client still sends (until it closes, or drainTime), so
// that closing does not reset the connection under the client's read. The
// read error returned after it makes net/http close the connection quietly.
func (c *gatedConn) refuse() {
	if c.g.onTooLarge != nil {
		c.g.onTooLarge()
	}
	c.g.log.LogAttrs(context.Background(), slog.LevelInfo, "rejected request",
		slog.String("remote", c.RemoteAddr().String()), slog.String("code", registry.CodeTooLarge),
		slog.String("error", fmt.Sprintf("request headers past %d bytes or %d lines", c.g.headerCap, maxHeaderLines)))
	deadline := time.Now().Add(c.g.drainTime)
	_ = c.Conn.SetDeadline(deadline)
	if _, err := c.Write(c.g.tooLarge); err != nil {
		return
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	buf := drainBufs.Get().(*[]byte)
	defer drainBufs.Put(buf)
	for {
		if _, err := c.Conn.Read(*buf); err != nil {
			return
		}
	}
}

var drainBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

func (c *gatedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.g.open[c.slot].Add(-1)
		c.g.release(c.slot)
	})
	return err
}

// A reserve connection's deadlines never pass its expiry: a client cannot
// keep one by trickling bytes or by idling.
func (c *gatedConn) clamp(t time.Time) time.Time {
	if c.slot != slotReserve || (!t.IsZero() && t.Before(c.expires)) {
		return t
	}
	return c.expires
}

func (c *gatedConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *gatedConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c *gatedConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }

// CloseWrite lets net/http half-close, as it does after its own errors.
func (c *gatedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps sendfile: net/http hands files to the connection's ReadFrom.
func (c *gatedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

type writerOnly struct{ io.Writer }
