package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// memberlist's probe of a member waits for its ack timer (the probe
// interval) even after Shutdown, which cannot wait for it: a goroutine that
// ends by itself within a second is no leak of ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}
