package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
)

// scripted is an in-memory upstream (no sockets, so it runs inside a
// synctest bubble): /v2/ answers 200, every other request gets the next
// answer of the script (the last one repeats), and the time it came is noted.
type scripted struct {
	mu      sync.Mutex
	answers []func() *http.Response
	times   []time.Time
}

func (s *scripted) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/v2/" {
		return answer(http.StatusOK, "")(), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.times = append(s.times, time.Now())
	resp := s.answers[min(len(s.times), len(s.answers))-1]()
	resp.Request = r
	return resp, nil
}

func (s *scripted) gaps() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var g []time.Duration
	for i := 1; i < len(s.times); i++ {
		g = append(g, s.times[i].Sub(s.times[i-1]))
	}
	return g
}

func answer(status int, retryAfter string) func() *http.Response {
	return func() *http.Response {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader("")), ContentLength: 0}
	}
}

// inSeconds answers with a Retry-After HTTP-date d from now (the bubble's now).
func inSeconds(status int, d time.Duration) func() *http.Response {
	return func() *http.Response {
		return answer(status, time.Now().Add(d).UTC().Format(http.TimeFormat))()
	}
}

func TestRetryTiming(t *testing.T) {
	cases := []struct {
		name     string
		answers  []func() *http.Response
		deadline time.Duration // of the caller's context, 0: none
		// gaps between requests: each within [min, max].
		gaps [][2]time.Duration
		// retryAfter, when set, is the StatusError's RetryAfter (the
		// request gave up at once); else the request succeeds.
		retryAfter time.Duration
	}{
		{name: "429 waits its Retry-After seconds",
			answers: []func() *http.Response{answer(429, "3"), answer(200, "")},
			gaps:    [][2]time.Duration{{3 * time.Second, 3 * time.Second}}},
		{name: "503 waits its Retry-After date",
			answers: []func() *http.Response{inSeconds(503, 5*time.Second), answer(200, "")},
			gaps:    [][2]time.Duration{{5 * time.Second, 5 * time.Second}}},
		{name: "429 without Retry-After is not retried at once",
			answers: []func() *http.Response{answer(429, ""), answer(429, ""), answer(200, "")},
			gaps:    [][2]time.Duration{{500 * time.Millisecond, time.Second}, {time.Second, 2 * time.Second}}},
		{name: "Retry-After past the cap gives up at once",
			answers:    []func() *http.Response{answer(429, "3600"), answer(200, "")},
			retryAfter: time.Hour},
		{name: "Retry-After past the deadline gives up at once",
			answers:    []func() *http.Response{answer(503, "5"), answer(200, "")},
			deadline:   2 * time.Second,
			retryAfter: 5 * time.Second},
		{name: "a backoff past the deadline gives up at once",
			answers:  []func() *http.Response{answer(502, ""), answer(200, "")},
			deadline: 400 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				up := &scripted{answers: tc.answers}
				c, err := New(Endpoint{Name: "registry.test", URL: "https://registry.test"},
					Options{Transport: up, Retries: 3, Backoff: time.Second})
				if err != nil {
					t.Fatal(err)
				}
				ctx := context.Background()
				if tc.deadline > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.deadline)
					defer cancel()
				}
				start := time.Now()
				_, err = c.HeadBlob(ctx, "org/app", digest.FromString("x"))
				gaps := up.gaps()
				if tc.gaps == nil {
					if err == nil || time.Since(start) != 0 || len(gaps) != 0 {
						t.Fatalf("err %v after %v and %d retries, want a failure at once", err, time.Since(start), len(gaps))
					}
					ra, ok := RetryAfter(err)
					if ra != tc.retryAfter || ok != (tc.retryAfter > 0) {
						t.Errorf("RetryAfter %v, want %v", ra, tc.retryAfter)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(gaps) != len(tc.gaps) {
					t.Fatalf("%d retries, want %d", len(gaps), len(tc.gaps))
				}
				for i, g := range gaps {
					if g < tc.gaps[i][0] || g > tc.gaps[i][1] {
						t.Errorf("retry %d after %v, want %v..%v", i+1, g, tc.gaps[i][0], tc.gaps[i][1])
					}
				}
			})
		})
	}
}

// Clients that failed together must not come back together: the backoff
// of one attempt varies, within its upper half.
func TestBackoffJitter(t *testing.T) {
	c, err := New(Endpoint{Name: "r", URL: "https://r.test"}, Options{Backoff: 100 * time.Millisecond, MaxRetryWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for attempt, step := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second} {
		seen := map[time.Duration]bool{}
		for range 100 {
			d := c.backoff(attempt)
			if d < step/2 || d > step {
				t.Fatalf("attempt %d: backoff %v outside %v..%v", attempt, d, step/2, step)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("attempt %d: %d distinct backoffs in 100, want jitter", attempt, len(seen))
		}
	}
	if d := c.backoff(100); d > time.Second || d <= 0 {
		t.Errorf("backoff after many attempts %v", d)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{strconv.FormatUint(1<<63, 10), maxRetryAfter, true},
		{"-5", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%q: %v %v, want %v %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// A client cancel while waiting to retry ends the wait and says so.
func TestRetryWaitEndsOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := &scripted{answers: []func() *http.Response{answer(503, "5"), answer(200, "")}}
		c, err := New(Endpoint{Name: "registry.test", URL: "https://registry.test"}, Options{Transport: up, Retries: 3})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel)
		_, err = c.HeadBlob(ctx, "org/app", digest.FromString("x"))
		if !errors.Is(err, context.Canceled) || len(up.gaps()) != 0 {
			t.Fatalf("err %v, %d retries", err, len(up.gaps()))
		}
		var se *StatusError
		if !errors.As(err, &se) || se.Status != 503 {
			t.Errorf("the upstream's answer is lost: %v", err)
		}
	})
}
