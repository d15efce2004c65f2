package registry

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves goroutines behind: fills,
// access checks (their singleflight runs detached) and upstream clients
// must all end with their test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
