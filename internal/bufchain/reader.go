package bufchain

import (
	"errors"
	"io"
)

// ErrDiscarded is returned by a [Reader] whose position was dropped from its
// chain by [Chain.Discard] or [Chain.Reset].
var ErrDiscarded = errors.New("bufchain: read position was discarded")

var errUnread = errors.New("bufchain: UnreadByte at the front of the chain")

// Reader reads a chain's buffered bytes in order without consuming them and
// without gathering them into one slice. At the end of the buffered bytes it
// returns io.EOF; if the chain is filled further, reading goes on. Use
// [Chain.Discard] to consume. A Reader shares its chain's lack of concurrency
// safety.
type Reader struct {
	c   *Chain
	pos int64 // stream offset of the next byte to read
}

// Reader returns a [Reader] positioned at the front of the chain.
func (c *Chain) Reader() *Reader { return &Reader{c: c, pos: c.start} }

// Read implements [io.Reader].
func (r *Reader) Read(p []byte) (int, error) {
	if r.pos < r.c.start {
		return 0, ErrDiscarded
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	for n < len(p) {
		b := r.c.span(r.pos)
		if len(b) == 0 {
			break
		}
		k := copy(p[n:], b)
		n += k
		r.pos += int64(k)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// ReadByte implements [io.ByteReader].
func (r *Reader) ReadByte() (byte, error) {
	if r.pos < r.c.start {
		return 0, ErrDiscarded
	}
	b := r.c.span(r.pos)
	if len(b) == 0 {
		return 0, io.EOF
	}
	r.pos++
	return b[0], nil
}

// UnreadByte implements [io.ByteScanner]: it steps back one byte, failing at
// the front of the chain.
func (r *Reader) UnreadByte() error {
	if r.pos <= r.c.start {
		return errUnread
	}
	r.pos--
	return nil
}

// WriteTo implements [io.WriterTo], writing the unread bytes block by block.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	if r.pos < r.c.start {
		return 0, ErrDiscarded
	}
	var total int64
	for {
		b := r.c.span(r.pos)
		if len(b) == 0 {
			return total, nil
		}
		n, err := w.Write(b)
		total += int64(n)
		r.pos += int64(n)
		if err != nil {
			return total, err
		}
		if n < len(b) {
			return total, io.ErrShortWrite
		}
	}
}
