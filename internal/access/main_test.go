package access

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves goroutines behind: access
// checks run detached from their request, and upstream clients keep
// connections.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
