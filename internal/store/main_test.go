package store

import (
	"testing"

	"go.uber.org/goleak"
)

// The evictor is a goroutine per Store: Close must end it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
