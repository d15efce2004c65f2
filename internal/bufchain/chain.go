package bufchain

import (
	"errors"
	"fmt"
	"io"
)

// TooLargeError is returned by [Chain.Fill] once the chain holds more bytes
// than its cap. Test for it with errors.As.
type TooLargeError struct {
	Size  int64 // bytes buffered when the cap was crossed, the crossing read included
	Limit int64 // the chain's cap
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("bufchain: message of at least %d bytes exceeds the limit of %d bytes", e.Size, e.Limit)
}

// errBadRead reports a reader that broke the io.Reader contract.
var errBadRead = errors.New("bufchain: reader returned an invalid count")

// Chain buffers bytes in a list of fixed-size blocks from a [Pool]. Every
// block but the last is full; bytes are consumed from the front of the first.
// A Chain is not safe for concurrent use; its Pool is.
type Chain struct {
	pool   *Pool
	limit  int64
	blocks []*[]byte
	off    int   // bytes already discarded from blocks[0]
	end    int   // bytes written into the last block
	n      int64 // bytes buffered: written and not discarded
	start  int64 // stream offset of the first buffered byte
}

// New returns an empty chain that takes blocks from p and holds at most limit
// bytes; past that [Chain.Fill] fails with a [*TooLargeError]. A limit of
// zero or less means none. A nil p means a private pool of [DefaultBlockSize]
// blocks.
func New(p *Pool, limit int64) *Chain {
	if p == nil {
		p = NewPool(0)
	}
	return &Chain{pool: p, limit: limit}
}

// Len returns the number of bytes buffered.
func (c *Chain) Len() int64 { return c.n }

// Blocks returns the number of blocks the chain holds.
func (c *Chain) Blocks() int { return len(c.blocks) }

// Cap returns the limit on buffered bytes given to [New]; zero or less means
// none.
func (c *Chain) Cap() int64 { return c.limit }

// Fill performs one Read from r into the free tail of the last block, taking
// a new block from the pool when the last one is full, and returns what Read
// returned. Earlier blocks are never moved or copied.
//
// If the chain then holds more than its cap, Fill returns the bytes read and
// a [*TooLargeError]; later calls return the same error without reading until
// [Chain.Discard] or [Chain.Reset] brings the chain under its cap. No block is
// taken once the cap is crossed, so a chain holds at most one block more than
// the cap requires (two if its first block was partly discarded).
func (c *Chain) Fill(r io.Reader) (int, error) {
	if c.over() {
		return 0, c.tooLarge()
	}
	bs := c.pool.size
	fresh := len(c.blocks) == 0 || c.end == bs
	if fresh {
		c.blocks = append(c.blocks, c.pool.get())
		c.end = 0
	}
	tail := (*c.blocks[len(c.blocks)-1])[c.end:]
	n, err := r.Read(tail)
	if n < 0 || n > len(tail) {
		n, err = 0, errBadRead
	}
	if n == 0 && fresh {
		c.dropLast()
	}
	c.end += n
	c.n += int64(n)
	if c.over() {
		return n, c.tooLarge()
	}
	return n, err
}

// Discard drops the first n buffered bytes, typically a complete message
// parsed from the front. Blocks that become wholly consumed go back to the
// pool; if nothing remains, all blocks do. It panics if n is negative or
// greater than [Chain.Len]. Readers positioned before the new front become
// invalid.
func (c *Chain) Discard(n int64) {
	if n < 0 || n > c.n {
		panic(fmt.Sprintf("bufchain: Discard(%d) out of range [0, %d]", n, c.n))
	}
	c.n -= n
	c.start += n
	if c.n == 0 {
		c.release()
		return
	}
	bs := int64(c.pool.size)
	pos := int64(c.off) + n
	drop := int(pos / bs)
	c.off = int(pos % bs)
	for _, b := range c.blocks[:drop] {
		c.pool.put(b)
	}
	k := copy(c.blocks, c.blocks[drop:])
	clear(c.blocks[k:])
	c.blocks = c.blocks[:k]
}

// Reset discards everything buffered and returns all blocks to the pool. The
// chain keeps its cap and may be filled again. Readers become invalid.
func (c *Chain) Reset() {
	c.start += c.n
	c.n = 0
	c.release()
}

// Bytes returns a copy of the buffered bytes in one new slice. It is meant
// for tests and small messages; use [Chain.Reader] on hot paths.
func (c *Chain) Bytes() []byte {
	out := make([]byte, 0, c.n)
	for pos := c.start; ; {
		b := c.span(pos)
		if len(b) == 0 {
			return out
		}
		out = append(out, b...)
		pos += int64(len(b))
	}
}

// span returns the buffered bytes from stream offset pos to the end of the
// block that holds it, or nil if pos is outside the buffered range.
func (c *Chain) span(pos int64) []byte {
	rel := pos - c.start
	if rel < 0 || rel >= c.n {
		return nil
	}
	bs := int64(c.pool.size)
	phys := int64(c.off) + rel
	i := int(phys / bs)
	end := c.pool.size
	if i == len(c.blocks)-1 {
		end = c.end
	}
	return (*c.blocks[i])[phys%bs : end]
}

func (c *Chain) over() bool { return c.limit > 0 && c.n > c.limit }

func (c *Chain) tooLarge() error { return &TooLargeError{Size: c.n, Limit: c.limit} }

// dropLast returns the last block, which must be empty, to the pool.
func (c *Chain) dropLast() {
	last := len(c.blocks) - 1
	c.pool.put(c.blocks[last])
	c.blocks[last] = nil
	c.blocks = c.blocks[:last]
	c.end = 0
	if last > 0 {
		c.end = c.pool.size
	}
}

// release returns every block to the pool and empties the chain.
func (c *Chain) release() {
	for _, b := range c.blocks {
		c.pool.put(b)
	}
	clear(c.blocks)
	c.blocks = c.blocks[:0]
	c.off, c.end = 0, 0
}
