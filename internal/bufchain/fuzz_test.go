package bufchain

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// splitReader returns data in chunks whose sizes come from sizes, one byte
// per Read (0 is an empty read); when sizes run out it returns the rest.
type splitReader struct {
	data, sizes []byte
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := len(r.data)
	if len(r.sizes) > 0 {
		k = min(k, int(r.sizes[0]))
		r.sizes = r.sizes[1:]
	}
	n := copy(p, r.data[:k])
	r.data = r.data[n:]
	return n, nil
}

// FuzzChain fills a chain through reads of random sizes, discarding random
// amounts in between, and checks every byte comes back in order. Each op byte
// of 0xc0 or more discards up to op-0xc0 bytes; any other is one Fill.
func FuzzChain(f *testing.F) {
	f.Add([]byte("hello, world"), []byte{1, 2, 0xc3, 5, 0, 7}, []byte{3, 0, 4}, uint8(4), uint16(0))
	f.Add(bytes.Repeat([]byte("0123456789"), 30), []byte{0, 0xff, 0, 0xc1, 0}, []byte{17, 64, 1}, uint8(15), uint16(100))
	f.Add([]byte{}, []byte{0}, []byte{}, uint8(0), uint16(1))
	f.Fuzz(func(t *testing.T, data, ops, sizes []byte, blockSize uint8, limit uint16) {
		bs := int(blockSize%32) + 1
		pool := NewPool(bs)
		c := New(pool, int64(limit))
		src := &splitReader{data: data, sizes: sizes}
		var stream []byte // every byte filled so far
		var gone int      // bytes discarded from the front of stream
		full := false     // the cap was crossed
		fill := func() error {
			before := src.data
			n, err := c.Fill(src)
			stream = append(stream, before[:n]...)
			var tl *TooLargeError
			if errors.As(err, &tl) {
				if tl.Size != c.Len() || tl.Size <= int64(limit) || tl.Size > int64(limit)+int64(bs) {
					t.Fatalf("%+v with Len %d, block size %d", tl, c.Len(), bs)
				}
				full = true
			}
			return err
		}
		for _, op := range ops {
			if op >= 0xc0 {
				n := min(int64(op-0xc0), c.Len())
				c.Discard(n)
				gone += int(n)
				full = c.limit > 0 && c.Len() > c.limit
			} else if !full {
				_ = fill()
			}
			checkInvariants(t, c, stream[gone:])
		}
		for !full {
			if err := fill(); err != nil {
				break
			}
		}
		checkInvariants(t, c, stream[gone:])
		if !full && !bytes.Equal(stream, data) {
			t.Fatalf("filled %d bytes of %d without crossing the cap", len(stream), len(data))
		}
		if err := iotest.TestReader(c.Reader(), stream[gone:]); err != nil {
			t.Fatal(err)
		}
		c.Reset()
		if pool.Outstanding() != 0 || c.Blocks() != 0 {
			t.Fatalf("after Reset: Outstanding %d, Blocks %d", pool.Outstanding(), c.Blocks())
		}
	})
}

func checkInvariants(t *testing.T, c *Chain, want []byte) {
	t.Helper()
	bs := c.pool.BlockSize()
	least := (len(want) + bs - 1) / bs
	if c.Len() != int64(len(want)) || c.Blocks() < least || c.Blocks() > least+1 {
		t.Fatalf("Len %d, Blocks %d; want Len %d in %d or %d blocks of %d", c.Len(), c.Blocks(), len(want), least, least+1, bs)
	}
	if c.pool.Outstanding() != int64(c.Blocks()) {
		t.Fatalf("Outstanding %d, Blocks %d", c.pool.Outstanding(), c.Blocks())
	}
	if got := c.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("Bytes = %q, want %q", got, want)
	}
}
