package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowServer serves testMux plus "slow", which answers only when release is
// called (or the server stops), and "nap", which answers after 20ms.
func slowServer(t *testing.T) (sock string, release func()) {
	t.Helper()
	ch := make(chan struct{})
	m := testMux()
	m.Handle("slow", func(ctx context.Context, _ json.RawMessage) (any, error) {
		select {
		case <-ch:
		case <-ctx.Done():
		}
		return "late", nil
	})
	m.Handle("nap", func(context.Context, json.RawMessage) (any, error) {
		time.Sleep(20 * time.Millisecond)
		return "late", nil
	})
	// Calls cancelled early leave their connections busy on the server
	// until the method returns: room for them.
	s, err := Start(Options{Socket: filepath.Join(shortDir(t), "a.sock"), MaxConns: 64}, m)
	if err != nil {
		t.Fatal(err)
	}
	once := sync.OnceFunc(func() { close(ch) })
	t.Cleanup(func() { once(); _ = s.Close() })
	return s.Addr(), once
}

// A call that times out must not break the client for the calls after it,
// nor hand them the late answer.
func TestClientUsableAfterTimeout(t *testing.T) {
	sock, release := slowServer(t)
	c, err := Dial(t.Context(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := c.Call(ctx, "slow", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow call: %v, want a deadline error", err)
	}
	release() // the late answer is written to the timed-out call's connection
	for i := range 3 {
		var got map[string]int
		if err := c.Call(t.Context(), "echo", map[string]int{"n": i}, &got); err != nil {
			t.Fatalf("call %d after a timeout: %v", i, err)
		}
		if got["n"] != i {
			t.Fatalf("call %d after a timeout got %v", i, got)
		}
	}
}

// Concurrent calls, some of them cancelled, each get their own answer.
func TestClientConcurrent(t *testing.T) {
	sock, _ := slowServer(t)
	c, err := Dial(t.Context(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := range 6 {
		wg.Go(func() {
			for i := range 15 {
				if i%5 == 4 {
					ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
					_ = c.Call(ctx, "nap", nil, nil)
					cancel()
					continue
				}
				var got struct{ G, I int }
				if err := c.Call(t.Context(), "echo", map[string]int{"g": g, "i": i}, &got); err != nil {
					errs <- err
					return
				}
				if got.G != g || got.I != i {
					errs <- fmt.Errorf("goroutine %d call %d got %+v", g, i, got)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A response whose id is not the request's is refused, and the next call
// does not read what followed it on that connection.
func TestClientChecksResponseID(t *testing.T) {
	sock := filepath.Join(shortDir(t), "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					var req struct {
						ID int64 `json:"id"`
					}
					_ = json.Unmarshal([]byte(line), &req)
					id := req.ID
					if strings.Contains(line, `"wrong"`) {
						id += 1000 // an answer to some other request
					}
					fmt.Fprintf(conn, `{"jsonrpc":"2.0","id":%d,"result":%d}`+"\n", id, id)
				}
			})
		}
	})
	c, err := Dial(t.Context(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Call(t.Context(), "wrong", nil, nil); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched id: %v", err)
	}
	var got int64
	if err := c.Call(t.Context(), "right", nil, &got); err != nil || got != 2 {
		t.Errorf("next call: %d, %v; want 2", got, err)
	}
}

func TestClientClosed(t *testing.T) {
	sock, _ := slowServer(t)
	c, err := Dial(t.Context(), sock)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if err := c.Call(t.Context(), "echo", nil, nil); !errors.Is(err, ErrClientClosed) {
		t.Errorf("call on a closed client: %v", err)
	}
}
