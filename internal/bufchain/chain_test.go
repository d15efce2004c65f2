package bufchain

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

const testBlock = 64 // small blocks make many-block cases cheap

func TestFillRoundTrip(t *testing.T) {
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one-byte", iotest.OneByteReader},
		{"half", iotest.HalfReader},
		{"data-err", iotest.DataErrReader},
	}
	sizes := []struct {
		name string
		n    int
	}{
		{"empty", 0},
		{"one", 1},
		{"block-1", testBlock - 1},
		{"block", testBlock},
		{"block+1", testBlock + 1},
		{"many", 37*testBlock + 5},
	}
	for _, rd := range readers {
		for _, sz := range sizes {
			t.Run(rd.name+"/"+sz.name, func(t *testing.T) {
				pool := NewPool(testBlock)
				c := New(pool, 0)
				want := patternBytes(sz.n)
				if err := fillAll(c, rd.wrap(bytes.NewReader(want))); err != nil {
					t.Fatalf("fill: %v", err)
				}
				if c.Len() != int64(sz.n) {
					t.Errorf("Len = %d, want %d", c.Len(), sz.n)
				}
				if wantBlocks := (sz.n + testBlock - 1) / testBlock; c.Blocks() != wantBlocks {
					t.Errorf("Blocks = %d, want %d", c.Blocks(), wantBlocks)
				}
				if got := c.Bytes(); !bytes.Equal(got, want) {
					t.Errorf("Bytes differ: got %d bytes, want %d", len(got), len(want))
				}
				if err := iotest.TestReader(c.Reader(), want); err != nil {
					t.Errorf("Reader: %v", err)
				}
				var out bytes.Buffer
				if n, err := c.Reader().WriteTo(&out); err != nil || n != int64(sz.n) || !bytes.Equal(out.Bytes(), want) {
					t.Errorf("WriteTo = %d, %v; content equal %v", n, err, bytes.Equal(out.Bytes(), want))
				}
				c.Reset()
				if got := pool.Outstanding(); got != 0 {
					t.Errorf("Outstanding after Reset = %d, want 0", got)
				}
			})
		}
	}
}

func TestFillCap(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		limit   int64
		wrap    func(io.Reader) io.Reader
		wantErr bool
	}{
		{"under", 99, 100, iotest.OneByteReader, false},
		{"exactly-at-cap", 100, 100, iotest.OneByteReader, false},
		{"one-over", 101, 100, iotest.OneByteReader, true},
		{"at-cap-block-multiple", 4 * testBlock, 4 * testBlock, nil, false},
		{"one-over-block-multiple", 4*testBlock + 1, 4 * testBlock, nil, true},
		{"far-over-whole-reads", 50 * testBlock, 3*testBlock + 7, nil, true},
		{"far-over-half-reads", 50 * testBlock, 3*testBlock + 7, iotest.HalfReader, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := NewPool(testBlock)
			c := New(pool, tt.limit)
			if c.Cap() != tt.limit {
				t.Fatalf("Cap = %d, want %d", c.Cap(), tt.limit)
			}
			var src io.Reader = bytes.NewReader(patternBytes(tt.size))
			if tt.wrap != nil {
				src = tt.wrap(src)
			}
			cr := &countingReader{r: src}
			err := fillAll(c, cr)
			if !tt.wantErr {
				if err != nil || c.Len() != int64(tt.size) {
					t.Fatalf("fill = %v with Len %d, want nil with Len %d", err, c.Len(), tt.size)
				}
				return
			}
			var tl *TooLargeError
			if !errors.As(err, &tl) {
				t.Fatalf("fill error = %v, want *TooLargeError", err)
			}
			if tl.Limit != tt.limit || tl.Size != c.Len() || tl.Size <= tt.limit || tl.Size > tt.limit+testBlock {
				t.Errorf("error = %+v with Len %d, want Limit %d < Size = Len <= Limit+block", tl, c.Len(), tt.limit)
			}
			if tt.wrap != nil && tt.size == int(tt.limit)+1 && tl.Size != tt.limit+1 {
				t.Errorf("Size = %d, want %d", tl.Size, tt.limit+1)
			}
			if maxBlocks := int(tt.limit/testBlock) + 1; c.Blocks() > maxBlocks {
				t.Errorf("Blocks = %d, want at most %d", c.Blocks(), maxBlocks)
			}
			calls := cr.calls
			if _, err := c.Fill(cr); !errors.As(err, &tl) || cr.calls != calls {
				t.Errorf("Fill after cap = %v after %d more reads, want *TooLargeError and no read", err, cr.calls-calls)
			}
		})
	}
}

func TestTooLargeErrorMessage(t *testing.T) {
	err := error(&TooLargeError{Size: 16777217, Limit: 16777216})
	want := "bufchain: message of at least 16777217 bytes exceeds the limit of 16777216 bytes"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
}

func TestDiscard(t *testing.T) {
	const size = 6*testBlock + 3
	tests := []struct {
		name  string
		steps []int64 // successive Discard amounts
	}{
		{"nothing", []int64{0}},
		{"within-first-block", []int64{1, testBlock - 2}},
		{"to-block-boundary", []int64{testBlock}},
		{"across-boundary", []int64{testBlock - 1, 2}},
		{"several-blocks-at-once", []int64{3*testBlock + 5}},
		{"byte-by-byte-past-boundary", []int64{testBlock - 1, 1, 1, 1}},
		{"all-but-one", []int64{size - 1}},
		{"everything", []int64{size}},
		{"everything-in-steps", []int64{testBlock + 1, 2*testBlock - 1, size - 3*testBlock}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := NewPool(testBlock)
			c := New(pool, 0)
			all := patternBytes(size)
			if err := fillAll(c, iotest.HalfReader(bytes.NewReader(all))); err != nil {
				t.Fatal(err)
			}
			var gone int64
			for _, n := range tt.steps {
				c.Discard(n)
				gone += n
				checkChain(t, c, all[gone:])
			}
		})
	}
}

// checkChain checks c holds exactly want, within the fewest blocks that can,
// plus one for a partly discarded first block, and that its pool agrees.
func checkChain(t *testing.T, c *Chain, want []byte) {
	t.Helper()
	if c.Len() != int64(len(want)) {
		t.Fatalf("Len = %d, want %d", c.Len(), len(want))
	}
	bs := c.pool.BlockSize()
	least := (len(want) + bs - 1) / bs
	if b := c.Blocks(); b < least || b > least+1 || (len(want) == 0 && b != 0) {
		t.Errorf("Blocks = %d for %d bytes of %d-byte blocks", b, len(want), bs)
	}
	if got := c.pool.Outstanding(); got != int64(c.Blocks()) {
		t.Errorf("Outstanding = %d, want Blocks = %d", got, c.Blocks())
	}
	if got := c.Bytes(); !bytes.Equal(got, want) {
		t.Errorf("Bytes = %q, want %q", got, want)
	}
	if err := iotest.TestReader(c.Reader(), want); err != nil {
		t.Errorf("Reader: %v", err)
	}
}

func TestDiscardOutOfRangePanics(t *testing.T) {
	for _, n := range []int64{-1, 4} {
		c := New(NewPool(testBlock), 0)
		if err := fillAll(c, bytes.NewReader([]byte("abc"))); err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Discard(%d) of 3 bytes did not panic", n)
				}
			}()
			c.Discard(n)
		}()
	}
}

func TestReaderAfterDiscard(t *testing.T) {
	c := New(NewPool(testBlock), 0)
	all := patternBytes(3 * testBlock)
	if err := fillAll(c, bytes.NewReader(all)); err != nil {
		t.Fatal(err)
	}
	old := c.Reader()
	c.Discard(testBlock + 10)
	if _, err := old.Read(make([]byte, 1)); !errors.Is(err, ErrDiscarded) {
		t.Errorf("stale Read error = %v, want ErrDiscarded", err)
	}
	if _, err := old.ReadByte(); !errors.Is(err, ErrDiscarded) {
		t.Errorf("stale ReadByte error = %v, want ErrDiscarded", err)
	}
	got, err := io.ReadAll(c.Reader())
	if err != nil || !bytes.Equal(got, all[testBlock+10:]) {
		t.Errorf("ReadAll after Discard = %d bytes, %v; want the %d remaining", len(got), err, len(all)-testBlock-10)
	}
	c.Reset()
	if _, err := c.Reader().Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("Read after Reset = %v, want io.EOF", err)
	}
}

func TestReaderSeesLaterFill(t *testing.T) {
	c := New(NewPool(testBlock), 0)
	r := c.Reader()
	if _, err := r.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("Read of empty chain = %v, want io.EOF", err)
	}
	if _, err := c.Fill(bytes.NewReader([]byte("abc"))); err != nil {
		t.Fatal(err)
	}
	b, err := r.ReadByte()
	if err != nil || b != 'a' {
		t.Fatalf("ReadByte = %q, %v", b, err)
	}
	if err := r.UnreadByte(); err != nil {
		t.Fatal(err)
	}
	if err := r.UnreadByte(); err == nil {
		t.Error("UnreadByte at the front succeeded")
	}
	if got, _ := io.ReadAll(r); string(got) != "abc" {
		t.Errorf("ReadAll = %q, want %q", got, "abc")
	}
}

func TestEmptyReadKeepsNoBlock(t *testing.T) {
	pool := NewPool(testBlock)
	c := New(pool, 0)
	if n, err := c.Fill(bytes.NewReader(nil)); n != 0 || err != io.EOF {
		t.Fatalf("Fill = %d, %v; want 0, io.EOF", n, err)
	}
	if c.Blocks() != 0 || pool.Outstanding() != 0 {
		t.Errorf("Blocks = %d, Outstanding = %d after an empty read; want 0, 0", c.Blocks(), pool.Outstanding())
	}
}

func TestNilPoolAndDefaults(t *testing.T) {
	c := New(nil, 0)
	if got := c.pool.BlockSize(); got != DefaultBlockSize {
		t.Errorf("nil pool block size = %d, want %d", got, DefaultBlockSize)
	}
	if got := NewPool(-1).BlockSize(); got != DefaultBlockSize {
		t.Errorf("NewPool(-1).BlockSize() = %d, want %d", got, DefaultBlockSize)
	}
}
