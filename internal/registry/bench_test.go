package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// warmBlob pushes a blob of size n upstream and pulls it once through berth.
func warmBlob(t testing.TB, s *stack, n int) string {
	t.Helper()
	dg := s.up.pushBlob(t, "test/bench", randomBytes(n, int64(n)))
	path := "/v2/test/bench/blobs/" + dg.String() + "?ns=registry.test:5000"
	if resp, _ := s.do(t, "GET", path); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %s", resp.Status)
	}
	s.fetcher.Wait()
	return path
}

// getDiscard GETs path over a real TCP connection and discards the body.
func getDiscard(tb testing.TB, client *http.Client, url string, want int64) {
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != want || resp.StatusCode != 200 {
		tb.Fatalf("GET: %s, %d bytes, %v", resp.Status, n, err)
	}
}

// TestWarmGetAllocsDoNotGrowWithSize is a property, not a timing: serving a
// cached blob costs the same allocations at 1 MiB and at 64 MiB, because the
// body goes from file to socket with sendfile and no per-chunk buffer.
func TestWarmGetAllocsDoNotGrowWithSize(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes a 64 MiB blob")
	}
	up := newCountingUpstream(t)
	s := newStack(t, up, time.Minute)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	allocs := map[int]float64{}
	for _, n := range []int{1 << 20, 64 << 20} {
		url := s.srv.URL + warmBlob(t, s, n)
		getDiscard(t, client, url, int64(n))
		allocs[n] = testing.AllocsPerRun(20, func() { getDiscard(t, client, url, int64(n)) })
	}
	t.Logf("allocs per warm GET: 1 MiB %.0f, 64 MiB %.0f", allocs[1<<20], allocs[64<<20])
	// A small slack for the runtime's own bookkeeping; a per-chunk
	// allocation would add ~500 at 64 MiB with 128 KiB chunks.
	if allocs[64<<20] > allocs[1<<20]+20 {
		t.Errorf("allocations grow with blob size: %.0f at 1 MiB, %.0f at 64 MiB", allocs[1<<20], allocs[64<<20])
	}
}

// BenchmarkWarmBlobGet measures serving a cached blob over loopback TCP:
// throughput (MB/s) and allocations per GET (client and server together).
func BenchmarkWarmBlobGet(b *testing.B) {
	for _, n := range []int{1 << 20, 256 << 20} {
		b.Run(fmt.Sprintf("%dMiB", n>>20), func(b *testing.B) {
			up := newCountingUpstream(b)
			s := newStack(b, up, time.Minute)
			url := s.srv.URL + warmBlob(b, s, n)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			b.SetBytes(int64(n))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				getDiscard(b, client, url, int64(n))
			}
		})
	}
}

// BenchmarkColdBlobGet measures a miss: the fill from the in-process
// upstream plus streaming it to one client.
func BenchmarkColdBlobGet(b *testing.B) {
	const n = 64 << 20
	up := newCountingUpstream(b)
	data := randomBytes(n, 1)
	dg := up.pushBlob(b, "test/bench", data)
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		s := newStack(b, up, time.Minute)
		client := &http.Client{}
		b.StartTimer()
		getDiscard(b, client, s.srv.URL+"/v2/test/bench/blobs/"+dg.String()+"?ns=registry.test:5000", n)
	}
	_ = digest.Canonical
}
