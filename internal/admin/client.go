package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Client calls methods on an admin socket. It is safe for concurrent use:
// each call has a connection of its own for its duration (idle ones are
// reused, others dialled as needed), so a call that times out or is cancelled
// spoils only its own connection, which is then closed, never the next
// call's.
type Client struct {
	path string
	next atomic.Int64

	mu     sync.Mutex
	idle   []*clientConn // at most maxIdle connections kept between calls
	closed bool
}

// maxIdle bounds the connections a Client keeps open between calls; the
// server caps connections (16 by default) for every client together.
const maxIdle = 2

// clientConn is one connection and the decoder reading its responses. A
// json.Decoder keeps its first error forever, so a clientConn whose read or
// write failed is closed, never reused.
type clientConn struct {
	c   net.Conn
	dec *json.Decoder
	// spoiled is set when ctx ended as a call finished: a deadline in the
	// past may be set on c, so it is not reused.
	spoiled bool
}

// ErrClientClosed is returned by calls on a closed Client.
var ErrClientClosed = errors.New("admin: client closed")

// Dial connects to the admin socket at path. The connection is checked now
// (so a missing server is reported at once) and reused by calls.
func Dial(ctx context.Context, path string) (*Client, error) {
	c := &Client{path: path}
	cc, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.idle = append(c.idle, cc)
	return c, nil
}

func (c *Client) dial(ctx context.Context) (*clientConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, fmt.Errorf("admin: connecting to %s: %w", c.path, err)
	}
	return &clientConn{c: conn, dec: json.NewDecoder(bufio.NewReaderSize(conn, 64<<10))}, nil
}

// Close closes the idle connections; calls in progress finish on their own,
// later calls fail with ErrClientClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var err error
	for _, cc := range c.idle {
		err = errors.Join(err, cc.c.Close())
	}
	c.idle = nil
	return err
}

// get takes the idle connection or dials a new one.
func (c *Client) get(ctx context.Context) (*clientConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClientClosed
	}
	if n := len(c.idle); n > 0 {
		cc := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return cc, nil
	}
	c.mu.Unlock()
	return c.dial(ctx)
}

// put keeps a healthy connection for a later call, or closes it when
// enough are kept already or the client is closed.
func (c *Client) put(cc *clientConn) {
	c.mu.Lock()
	if !c.closed && len(c.idle) < maxIdle && !cc.spoiled {
		c.idle = append(c.idle, cc)
		cc = nil
	}
	c.mu.Unlock()
	if cc != nil {
		_ = cc.c.Close()
	}
}

// Call invokes method with params (marshalled; nil sends none) and decodes
// the result into result (unless nil). An error response is returned as an
// *Error.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	var raw json.RawMessage
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			return fmt.Errorf("admin: encoding params: %w", err)
		}
		raw = b
	}
	res, err := c.CallRaw(ctx, method, raw)
	if err != nil || result == nil {
		return err
	}
	if err := json.Unmarshal(res, result); err != nil {
		return fmt.Errorf("admin: decoding the result of %s: %w", method, err)
	}
	return nil
}

// clientResponse is a response as the client reads it.
type clientResponse struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *Error          `json:"error"`
}

// CallRaw invokes method with raw JSON params (nil: none) and returns the raw
// result. ctx's deadline bounds the call; cancelling ctx interrupts it.
func (c *Client) CallRaw(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	if params != nil && !json.Valid(params) {
		return nil, errors.New("admin: params are not valid JSON")
	}
	id := c.next.Add(1)
	req := struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      int64           `json:"id"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params,omitempty"`
	}{"2.0", id, method, params}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("admin: encoding the request: %w", err)
	}
	cc, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := cc.roundTrip(ctx, append(b, '\n'))
	if err != nil {
		_ = cc.c.Close()
		return nil, err
	}
	if !bytes.Equal(bytes.TrimSpace(resp.ID), []byte(strconv.FormatInt(id, 10))) {
		// Not the answer to this request: the stream cannot be trusted.
		_ = cc.c.Close()
		if resp.Error != nil {
			return nil, resp.Error // e.g. a parse error, sent with id null
		}
		return nil, fmt.Errorf("admin: response id %s does not match request id %d", resp.ID, id)
	}
	c.put(cc)
	if resp.Error != nil {
		return nil, resp.Error
	}
	return resp.Result, nil
}

// roundTrip sends one request line and reads one response under ctx's
// deadline and cancellation. Any error leaves the connection unusable.
func (cc *clientConn) roundTrip(ctx context.Context, line []byte) (*clientResponse, error) {
	dl, _ := ctx.Deadline() // none: the zero time, no deadline
	if err := cc.c.SetDeadline(dl); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	// Cancelling ctx interrupts the call: a deadline in the past.
	stop := context.AfterFunc(ctx, func() { _ = cc.c.SetDeadline(time.Unix(1, 0)) })
	if _, err := cc.c.Write(line); err != nil {
		stop()
		return nil, ioError(ctx, "sending", err)
	}
	var resp clientResponse
	err := cc.dec.Decode(&resp)
	if !stop() {
		cc.spoiled = true
	}
	if err != nil {
		return nil, ioError(ctx, "reading the response", err)
	}
	return &resp, nil
}

func ioError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("admin: %s: %w", what, ctx.Err())
	}
	// The connection's deadline may fire just before ctx's own timer.
	if _, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("admin: %s: %w", what, context.DeadlineExceeded)
	}
	return fmt.Errorf("admin: %s: %w", what, err)
}
