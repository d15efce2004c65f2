package bufchain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

// TestStream drives a chain the way the admin server does: fill, parse every
// complete message from the front, discard it, fill again.
func TestStream(t *testing.T) {
	var in strings.Builder
	var want []string
	for i := range 20 {
		msg := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"cache.purge","params":{"pad":%q}}`, i, strings.Repeat("x", i*37))
		want = append(want, msg)
		in.WriteString(msg + strings.Repeat(" \n", i%3))
	}
	pool := NewPool(testBlock)
	c := New(pool, 1<<10)
	src := iotest.HalfReader(strings.NewReader(in.String()))
	var got []string
	for eof := false; !eof; {
		_, err := c.Fill(src)
		if errors.Is(err, io.EOF) {
			eof = true
		} else if err != nil {
			t.Fatal(err)
		}
		for c.Len() > 0 {
			var msg json.RawMessage
			dec := json.NewDecoder(c.Reader())
			if err := dec.Decode(&msg); err != nil {
				break // incomplete: wait for more bytes
			}
			got = append(got, string(msg))
			c.Discard(dec.InputOffset())
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("messages:\n got %q\nwant %q", got, want)
	}
}

func TestResetReturnsBlocks(t *testing.T) {
	pool := NewPool(testBlock)
	a, b := New(pool, 0), New(pool, 0)
	for _, c := range []*Chain{a, b} {
		if err := fillAll(c, bytes.NewReader(patternBytes(10*testBlock+1))); err != nil {
			t.Fatal(err)
		}
	}
	if got := pool.Outstanding(); got != 22 {
		t.Fatalf("Outstanding = %d, want 22", got)
	}
	a.Reset()
	if got := pool.Outstanding(); got != 11 {
		t.Errorf("Outstanding after one Reset = %d, want 11", got)
	}
	b.Reset()
	if got := pool.Outstanding(); got != 0 || a.Blocks() != 0 || b.Blocks() != 0 {
		t.Errorf("after both Resets: Outstanding = %d, Blocks = %d, %d; want all 0", got, a.Blocks(), b.Blocks())
	}
}

func TestPoolSharedConcurrently(t *testing.T) {
	pool := NewPool(testBlock)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Go(func() {
			c := New(pool, 0)
			for round := range 20 {
				size := (g*131 + round*977) % (40 * testBlock)
				want := patternBytes(size)
				if err := fillAll(c, iotest.HalfReader(bytes.NewReader(want))); err != nil {
					errs <- err
					return
				}
				c.Discard(int64(size / 3))
				if !bytes.Equal(c.Bytes(), want[size/3:]) {
					errs <- fmt.Errorf("goroutine %d round %d: bytes differ", g, round)
					return
				}
				c.Reset()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := pool.Outstanding(); got != 0 {
		t.Errorf("Outstanding = %d after every chain was reset, want 0", got)
	}
}

// TestSteadyStateAllocs checks that with a warm pool, filling a reused chain
// allocates nothing, whatever the message size.
func TestSteadyStateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race")
	}
	pool := NewPool(0)
	c := New(pool, 0)
	src := &patternReader{}
	for _, size := range []int64{64 << 10, 1 << 20, 4 << 20} {
		allocs := testing.AllocsPerRun(20, func() {
			src.reset(size)
			if err := fillAll(c, src); err != nil {
				t.Fatal(err)
			}
			if c.Len() != size {
				t.Fatalf("Len = %d, want %d", c.Len(), size)
			}
			c.Reset()
		})
		if allocs != 0 {
			t.Errorf("%d bytes: %v allocations per message, want 0", size, allocs)
		}
	}
}
