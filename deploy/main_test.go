package deploy

import (
	"fmt"
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
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
