package server

import (
	"context"
	"net"
	"sync"
	"testing"
)

// runHandle is a Server running in a test.
type runHandle struct {
	cancel context.CancelFunc
	done   chan error // Run's result, if it returns by itself
	once   sync.Once
	err    error
}

// runOn starts s.Run on ln. A cleanup stops it and reports Run's error.
func runOn(t *testing.T, s *Server, ln net.Listener) *runHandle {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &runHandle{cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- s.Run(ctx, ln) }()
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

// stop ends Run (once; later calls return the same result) and returns its error.
func (h *runHandle) stop() error {
	h.once.Do(func() { h.cancel(); h.err = <-h.done })
	return h.err
}
