package registry

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/metrics"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

func TestDecodeTags(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string // tags joined by ","
		wantErr bool
	}{
		{name: "plain", in: `{"name":"a/b","tags":["v1","latest","1.2.3-rc.1_x"]}`, want: "v1,latest,1.2.3-rc.1_x"},
		{name: "spaces and other members", in: " {\n \"tags\" : [ \"a\" , \"b\" ] , \"name\":\"x\", \"extra\": {\"k\": [1, -2.5e3, true, null, \"]}\"]}, \"n\": 3 }\n", want: "a,b"},
		{name: "null tags", in: `{"name":"a","tags":null}`, want: ""},
		{name: "empty tags", in: `{"tags":[]}`, want: ""},
		{name: "no tags member", in: `{"name":"a"}`, want: ""},
		{name: "escaped name is skipped", in: `{"na\"me":"a\\b","tags":["x"]}`, want: "x"},
		{name: "not an object", in: `["a"]`, wantErr: true},
		{name: "truncated", in: `{"name":"a","tags":["v1","v`, wantErr: true},
		{name: "truncated after a tag", in: `{"tags":["v1"`, wantErr: true},
		{name: "tag with a slash", in: `{"tags":["a/b"]}`, wantErr: true},
		{name: "tag starting with a dot", in: `{"tags":[".a"]}`, wantErr: true},
		{name: "escaped tag", in: `{"tags":["\u0041"]}`, wantErr: true},
		{name: "tag too long", in: `{"tags":["` + strings.Repeat("a", 129) + `"]}`, wantErr: true},
		{name: "tag of the longest length", in: `{"tags":["` + strings.Repeat("a", 128) + `"]}`, want: strings.Repeat("a", 128)},
		{name: "tag not a string", in: `{"tags":[1]}`, wantErr: true},
		{name: "tags not an array", in: `{"tags":"a"}`, wantErr: true},
		{name: "data after the object", in: `{"tags":[]} {}`, wantErr: true},
		{name: "missing comma", in: `{"tags":["a" "b"]}`, wantErr: true},
		{name: "unbalanced member", in: `{"x":]}`, wantErr: true},
		{name: "empty", in: ``, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			err := decodeTags(bufio.NewReader(strings.NewReader(tt.in)), func(tag []byte) { got = append(got, string(tag)) })
			if tt.wantErr {
				if err == nil || !errors.Is(err, errTagList) {
					t.Fatalf("err = %v, want a malformed list (tags %q)", err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := strings.Join(got, ","); s != tt.want {
				t.Errorf("tags %q, want %q", s, tt.want)
			}
		})
	}
}

// tagsStack is a Handler in front of an upstream that answers tags/list with serve.
func tagsStack(t *testing.T, serve http.HandlerFunc) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			_, _ = io.WriteString(w, "{}")
			return
		}
		serve(w, r)
	}))
	t.Cleanup(up.Close)
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := upstream.New(upstream.Endpoint{Name: "registry.test", URL: up.URL}, upstream.Options{Retries: 0})
	if err != nil {
		t.Fatal(err)
	}
	h := New(Options{Store: st, Fetcher: fetch.New(st, fetch.Options{}), Metrics: metrics.New(),
		Upstreams: upstreamMap{"registry.test": c}, DefaultRegistry: "registry.test"})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func tagList(n int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"name":"upstream/name","tags":[`)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `"v%d.%d"`, i/1000, i%1000)
	}
	sb.WriteString("]}")
	return []byte(sb.String())
}

// TestTagsStreamedInBoundedMemory: a 14 MB upstream list (1.3M tags) is
// passed through whole, with the client's name, while the bytes allocated
// for the request stay a small fraction of the list: it is streamed, not
// buffered and expanded.
func TestTagsStreamedInBoundedMemory(t *testing.T) {
	body := tagList(1_300_000)
	srv := tagsStack(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	resp, err := http.Get(srv.URL + "/v2/test/app/tags/list")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Read the head, then count the rest without holding it.
	head := make([]byte, 64)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("list of %d bytes; response %d bytes; %d KiB allocated", len(body), int64(len(head))+n, allocated>>10)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(head), `{"name":"test/app","tags":["v0.0","v0.1",`) {
		t.Fatalf("%d %q", resp.StatusCode, head)
	}
	if want := int64(len(body)) - int64(len(`upstream/name`)-len(`test/app`)); int64(len(head))+n != want {
		t.Errorf("response of %d bytes, want %d", int64(len(head))+n, want)
	}
	if allocated > uint64(len(body))/8 {
		t.Errorf("%d bytes allocated for a list of %d bytes", allocated, len(body))
	}
}

// TestTagsSmallListWhole: a list that fits the buffer goes out with its
// Content-Length; a malformed one gets a 502 OCI error, not half a body.
func TestTagsSmallListWhole(t *testing.T) {
	var bad atomic.Bool
	srv := tagsStack(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			w.Header().Set("Link", `</v2/upstream/name/tags/list?`+r.URL.RawQuery+`>; rel="next"`)
		}
		if bad.Load() {
			_, _ = io.WriteString(w, `{"name":"x","tags":["ok","not/ok"]}`)
			return
		}
		_, _ = io.WriteString(w, `{"name":"x","tags":["a","b"]}`)
	})
	resp, err := http.Get(srv.URL + "/v2/test/app/tags/list?n=2&last=a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != `{"name":"test/app","tags":["a","b"]}` || resp.ContentLength != int64(len(b)) {
		t.Errorf("%q, Content-Length %d", b, resp.ContentLength)
	}
	if l := resp.Header.Get("Link"); l != `</v2/test/app/tags/list?n=2&last=a>; rel="next"` {
		t.Errorf("Link %q", l)
	}
	bad.Store(true)
	resp, err = http.Get(srv.URL + "/v2/test/app/tags/list")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var eb errorBody
	if resp.StatusCode != http.StatusBadGateway || json.Unmarshal(b, &eb) != nil || eb.Errors[0].Code != CodeUnavailable {
		t.Errorf("malformed list: %d %q", resp.StatusCode, b)
	}
}

// TestTagsMalformedAfterStreamingAborts: a list that turns bad after the
// response began ends the connection short: the client sees a failed
// transfer, not a complete-looking body.
func TestTagsMalformedAfterStreamingAborts(t *testing.T) {
	body := tagList(20_000)
	body = append(body[:len(body)-2], []byte(`,"bad/tag"]}`)...)
	srv := tagsStack(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) })
	resp, err := http.Get(srv.URL + "/v2/test/app/tags/list")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatal("a malformed list streamed to the end looked complete")
	}
}

// TestTagsConcurrencyBounded: past maxTagLists in flight, tags/list gets 503
// TOOMANYREQUESTS with Retry-After instead of another upstream request.
func TestTagsConcurrencyBounded(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	var inFlight atomic.Int32
	srv := tagsStack(t, func(w http.ResponseWriter, _ *http.Request) {
		inFlight.Add(1)
		<-release
		_, _ = io.WriteString(w, `{"tags":["a"]}`)
	})
	client := &http.Client{Timeout: 10 * time.Second}
	get := func() (*http.Response, []byte, error) {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/v2/test/app/tags/list", nil)
		resp, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	var wg sync.WaitGroup
	codes := make(chan int, maxTagLists)
	for range maxTagLists {
		wg.Go(func() {
			resp, _, err := get()
			if err != nil {
				t.Error(err)
				return
			}
			codes <- resp.StatusCode
		})
	}
	for deadline := time.Now().Add(10 * time.Second); inFlight.Load() < maxTagLists; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d upstream requests in flight, want %d", inFlight.Load(), maxTagLists)
		}
	}
	for range 3 {
		resp, b, err := get()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(string(b), CodeTooManyRequests) {
			t.Errorf("over the bound: %d %v %q", resp.StatusCode, resp.Header, b)
		}
	}
	releaseOnce.Do(func() { close(release) })
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Errorf("a request within the bound got %d", c)
		}
	}
	if n := inFlight.Load(); n != maxTagLists {
		t.Errorf("%d upstream requests, want %d", n, maxTagLists)
	}
}
