package bufchain

import (
	"errors"
	"io"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pattern is the content patternReader repeats. Its length is not a multiple
// of any block size used in the tests, so a misplaced block shows.
var pattern = func() []byte {
	p := make([]byte, 32<<10-3)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}()

// patternReader yields n bytes of the stream pattern, pattern, ... and then
// io.EOF, without allocating. reset makes it reusable.
type patternReader struct{ pos, n int64 }

func (r *patternReader) reset(n int64) { r.pos, r.n = 0, n }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.pos >= r.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n-r.pos)]
	n := 0
	for n < len(p) {
		n += copy(p[n:], pattern[(r.pos+int64(n))%int64(len(pattern)):])
	}
	r.pos += int64(n)
	return n, nil
}

// patternBytes returns the first n bytes patternReader yields.
func patternBytes(n int) []byte {
	b, err := io.ReadAll(&patternReader{n: int64(n)})
	if err != nil {
		panic(err)
	}
	return b
}

// fillAll calls Fill until it returns an error and returns that error, or nil
// for io.EOF.
func fillAll(c *Chain, r io.Reader) error {
	for {
		if _, err := c.Fill(r); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// countingReader counts Read calls.
type countingReader struct {
	r     io.Reader
	calls int
}

func (r *countingReader) Read(p []byte) (int, error) {
	r.calls++
	return r.r.Read(p)
}
