package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Client calls methods on an admin socket, one request at a time over one
// connection. It is safe for concurrent use (calls are serialised).
type Client struct {
	mu   sync.Mutex
	c    net.Conn
	dec  *json.Decoder
	next int64
}

// Dial connects to the admin socket at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin: connecting to %s: %w", path, err)
	}
	return &Client{c: c, dec: json.NewDecoder(bufio.NewReaderSize(c, 64<<10))}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

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

// CallRaw invokes method with raw JSON params (nil: none) and returns the raw
// result.
func (c *Client) CallRaw(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	if params != nil && !json.Valid(params) {
		return nil, errors.New("admin: params are not valid JSON")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	req := struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      int64           `json:"id"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params,omitempty"`
	}{"2.0", c.next, method, params}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("admin: encoding the request: %w", err)
	}
	dl, _ := ctx.Deadline() // none: the zero time, no deadline
	_ = c.c.SetDeadline(dl)
	// Cancelling ctx interrupts the call: a deadline in the past.
	stop := context.AfterFunc(ctx, func() { _ = c.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.c.Write(append(b, '\n')); err != nil {
		return nil, c.ioError(ctx, "sending", err)
	}
	var resp struct {
		ID     json.RawMessage `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  *Error          `json:"error"`
	}
	if err := c.dec.Decode(&resp); err != nil {
		return nil, c.ioError(ctx, "reading the response", err)
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	return resp.Result, nil
}

func (c *Client) ioError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("admin: %s: %w", what, ctx.Err())
	}
	return fmt.Errorf("admin: %s: %w", what, err)
}
