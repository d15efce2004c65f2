package bufchain

import (
	"bytes"
	"io"
	"testing"
)

var benchSizes = []struct {
	name string
	n    int64
}{
	{"1KiB", 1 << 10},
	{"1MiB", 1 << 20},
	{"64MiB", 64 << 20},
}

// drain reads r to the end in 4 KiB reads, as a json.Decoder would.
func drain(b *testing.B, r io.Reader, buf []byte) {
	for {
		if _, err := r.Read(buf); err != nil {
			if err != io.EOF {
				b.Fatal(err)
			}
			return
		}
	}
}

// BenchmarkChain fills a reused chain from a shared pool, reads it back and
// resets it. One untimed message warms the pool first, so the numbers are the
// steady state. peak-bytes-held is the block memory the message occupied.
func BenchmarkChain(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			pool := NewPool(0)
			c := New(pool, s.n)
			src := &patternReader{}
			buf := make([]byte, 4<<10)
			src.reset(s.n)
			if err := fillAll(c, src); err != nil {
				b.Fatal(err)
			}
			c.Reset()
			peak := 0
			b.SetBytes(s.n)
			b.ReportAllocs()
			for b.Loop() {
				src.reset(s.n)
				if err := fillAll(c, src); err != nil {
					b.Fatal(err)
				}
				peak = max(peak, c.Blocks()*pool.BlockSize())
				drain(b, c.Reader(), buf)
				c.Reset()
			}
			b.ReportMetric(float64(peak), "peak-bytes-held")
		})
	}
}

// BenchmarkBytesBuffer is the baseline: a fresh bytes.Buffer per message,
// filled with ReadFrom and read back the same way. peak-bytes-held is its Cap.
func BenchmarkBytesBuffer(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			src := &patternReader{}
			buf := make([]byte, 4<<10)
			peak := 0
			b.SetBytes(s.n)
			b.ReportAllocs()
			for b.Loop() {
				src.reset(s.n)
				var bb bytes.Buffer
				if _, err := bb.ReadFrom(src); err != nil {
					b.Fatal(err)
				}
				peak = max(peak, bb.Cap())
				drain(b, &bb, buf)
			}
			b.ReportMetric(float64(peak), "peak-bytes-held")
		})
	}
}
