package bufchain

import (
	"sync"
	"sync/atomic"
)

// DefaultBlockSize is the block size of a [Pool] made with NewPool(0).
const DefaultBlockSize = 16 << 10

// Pool hands out fixed-size blocks to chains and takes them back. It is safe
// for concurrent use: a process typically shares one Pool between all its
// connections. Idle blocks are held in a [sync.Pool], so the garbage collector
// may free them when memory is needed elsewhere.
type Pool struct {
	size int
	free sync.Pool    // of *[]byte with len == size
	out  atomic.Int64 // blocks handed out and not yet returned
}

// NewPool returns a Pool of blocks of blockSize bytes. A blockSize of zero or
// less means [DefaultBlockSize].
func NewPool(blockSize int) *Pool {
	if blockSize <= 0 {
		blockSize = DefaultBlockSize
	}
	return &Pool{size: blockSize}
}

// BlockSize returns the size in bytes of every block in the pool.
func (p *Pool) BlockSize() int { return p.size }

// Outstanding returns the number of blocks currently held by chains: taken
// from the pool and not yet given back by [Chain.Discard] or [Chain.Reset].
func (p *Pool) Outstanding() int64 { return p.out.Load() }

// get returns a block of exactly p.size bytes, reusing an idle one if any.
func (p *Pool) get() *[]byte {
	p.out.Add(1)
	if b, ok := p.free.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, p.size)
	return &b
}

// put returns a block obtained from get. The caller must not use it again.
func (p *Pool) put(b *[]byte) {
	p.out.Add(-1)
	p.free.Put(b)
}
