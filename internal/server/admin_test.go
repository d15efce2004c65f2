package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/admin"
	"github.com/berth-mirror/berth/internal/config"
)

func testConfig(t *testing.T) config.Config {
	t.Helper()
	dir, err := os.MkdirTemp("", "b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Admin.Socket = filepath.Join(dir, "run", "admin.sock")
	return cfg
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestRunServesAdminSocket: Run opens the socket, answers on it, and removes
// it on shutdown.
func TestRunServesAdminSocket(t *testing.T) {
	cfg := testConfig(t)
	s, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	h := runOn(t, s, ln)
	var c *admin.Client
	for i := 0; ; i++ {
		if c, err = admin.Dial(context.Background(), cfg.Admin.Socket); err == nil {
			break
		}
		if i > 500 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var st admin.Status
	if err := c.Call(context.Background(), "status", nil, &st); err != nil || st.Listen != ln.Addr().String() {
		t.Errorf("status: %+v, %v", st, err)
	}
	_ = c.Close()
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(cfg.Admin.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after shutdown: %v", err)
	}
}

// TestRunFailsOnLiveSocket: a socket another process answers on is a
// start-up error, and the other socket is left alone.
func TestRunFailsOnLiveSocket(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(filepath.Dir(cfg.Admin.Socket), 0o750); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", cfg.Admin.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	s, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(context.Background(), ln)
	if err == nil || !strings.Contains(err.Error(), "is in use by another process") {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(cfg.Admin.Socket); err != nil {
		t.Errorf("the other process's socket was removed: %v", err)
	}
}

func TestRunWithoutAdminSocket(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.Socket = ""
	s, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx, ln); err != nil {
		t.Fatal(err)
	}
}
