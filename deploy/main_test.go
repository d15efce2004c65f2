package deploy

import (
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that the in-process berth of the Prometheus test leaves no
// goroutine behind.
func TestMain(m *testing.M) {
	code := m.Run()
	// Idle keep-alive connections of the tests' HTTP client are not leaks.
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}
