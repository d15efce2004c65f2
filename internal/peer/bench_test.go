package peer

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/fetch"
)

// BenchmarkPeerSource reads a 64 MiB blob from a peer through the asking
// side (token, timeouts, byte counting and the whole-blob hash), as a fill
// does: Open, then Read into a pooled buffer until EOF.
func BenchmarkPeerSource(b *testing.B) {
	blob := make([]byte, 64<<20)
	for i := range blob {
		blob[i] = byte(i * 7)
	}
	keys := NewKeys("bench-secret-0123456789")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, newReaderAt(blob))
	}))
	defer srv.Close()
	f, _ := newTestFetcher(fixedOwners{"me", []Member{member("p", srv.URL), member("me", "")}}, keys)
	defer f.Close()
	src := f.Wrap(fetch.SourceFunc(func(context.Context, fetch.Request, int64) (io.ReadCloser, fetch.Meta, error) {
		b.Fatal("upstream used")
		return nil, fetch.Meta{}, nil
	}))
	req := reqFor(blob)
	bp := fetch.GetBuffer()
	defer fetch.PutBuffer(bp)
	b.SetBytes(int64(len(blob)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		body, _, err := src.Open(context.Background(), req, 0)
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := body.Read(*bp)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		_ = body.Close()
	}
}

type readerAt struct {
	b   []byte
	off int64
}

func newReaderAt(b []byte) *readerAt { return &readerAt{b: b} }

func (r *readerAt) Read(p []byte) (int, error) {
	if r.off >= int64(len(r.b)) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += int64(n)
	return n, nil
}

func (r *readerAt) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		r.off = off
	case io.SeekEnd:
		r.off = int64(len(r.b)) + off
	default:
		r.off += off
	}
	return r.off, nil
}
