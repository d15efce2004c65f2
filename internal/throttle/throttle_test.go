package throttle

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

// sink counts what it gets and whether ReadFrom was used.
type sink struct {
	bytes.Buffer
	readFroms int
}

func (s *sink) ReadFrom(r io.Reader) (int64, error) {
	s.readFroms++
	return s.Buffer.ReadFrom(r)
}

func TestUnlimitedPassesThrough(t *testing.T) {
	var s sink
	w := New(0).Writer(context.Background(), &s, nil)
	n, err := w.(io.ReaderFrom).ReadFrom(io.LimitReader(bytes.NewReader(make([]byte, 3*Chunk)), 2*Chunk+5))
	if err != nil || n != 2*Chunk+5 || s.readFroms != 1 {
		t.Fatalf("n %d, err %v, %d ReadFroms", n, err, s.readFroms)
	}
}

// TestPaced: at 1 MiB/s, 4 MiB take about 4 s less the first burst, sent
// in chunks by ReadFrom, the outer limit respected.
func TestPaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(1 << 20)
		var s sink
		w := l.Writer(context.Background(), &s, nil)
		start := time.Now()
		src := &io.LimitedReader{R: bytes.NewReader(make([]byte, 8<<20)), N: 4 << 20}
		n, err := w.(io.ReaderFrom).ReadFrom(src)
		took := time.Since(start)
		if err != nil || n != 4<<20 || src.N != 0 {
			t.Fatalf("n %d, err %v, left %d", n, err, src.N)
		}
		if s.readFroms != 16 {
			t.Errorf("%d chunks, want 16", s.readFroms)
		}
		if took < 3500*time.Millisecond || took > 4*time.Second {
			t.Errorf("4 MiB at 1 MiB/s took %v", took)
		}
	})
}

// TestLiveChange: the rate changes for writes already running.
func TestLiveChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(1 << 20)
		if l.Rate() != 1<<20 {
			t.Fatalf("rate %d", l.Rate())
		}
		l.Set(0)
		if l.Rate() != 0 {
			t.Fatalf("rate %d after Set(0)", l.Rate())
		}
		var s sink
		start := time.Now()
		if _, err := l.Writer(context.Background(), &s, nil).Write(make([]byte, 64<<20)); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) != 0 {
			t.Error("unlimited write waited")
		}
	})
}

// TestCancelEndsWait: a peer that goes away ends the wait.
func TestCancelEndsWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(64 << 10)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var s sink
		_, err := l.Writer(ctx, &s, nil).Write(make([]byte, 4<<20))
		if err == nil {
			t.Fatal("no error after the context ended")
		}
	})
}

// TestFileBySendfileChunks: a file is sent whole through chunked ReadFrom.
func TestFileBySendfileChunks(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	data := bytes.Repeat([]byte("berth"), Chunk/2)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var s sink
	n, err := New(1<<30).Writer(context.Background(), &s, nil).(io.ReaderFrom).ReadFrom(f)
	if err != nil || n != int64(len(data)) || !bytes.Equal(s.Bytes(), data) {
		t.Fatalf("n %d, err %v", n, err)
	}
}
