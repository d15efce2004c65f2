package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Retries: transient failures (connection errors, 5xx, 429) are retried with
// exponential backoff and equal jitter, so clients that failed together do not
// come back together and no retry is immediate. A 429 or 503 that says
// Retry-After is not asked again before then; if then is past the request's
// deadline or MaxRetryWait, the request gives up at once with the StatusError
// carrying RetryAfter, for the caller to pass on.

const (
	defaultMaxRetryWait = 10 * time.Second
	// maxRetryAfter bounds a parsed Retry-After (no overflow, no silliness).
	maxRetryAfter = 24 * time.Hour
)

// do sends one request for repo, retrying transient failures.
// A non-2xx response is returned as a *StatusError with its body closed.
func (c *Client) do(ctx context.Context, method, repo, path string, hdr http.Header) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := c.once(ctx, method, repo, path, hdr)
		if err == nil {
			return resp, nil
		}
		wait, ok := c.retryWait(ctx, err, attempt)
		if !ok {
			return nil, err
		}
		c.opts.Logger.LogAttrs(ctx, slog.LevelWarn, "retrying upstream request",
			slog.String("upstream", c.ep.Name), slog.String("repo", repo),
			slog.Int("attempt", attempt+1), slog.Duration("wait", wait), slog.String("error", err.Error()))
		if cerr := sleep(ctx, wait); cerr != nil {
			return nil, fmt.Errorf("%w: %s: %w (waiting to retry after: %w)", ErrUnreachable, c.ep.Name, cerr, err)
		}
	}
}

// retryWait returns how long to wait before retry number attempt+1 after
// err, or false when err is final: not transient, retries used up, or the
// wait would outlast the budget (the context's deadline or MaxRetryWait).
func (c *Client) retryWait(ctx context.Context, err error, attempt int) (time.Duration, bool) {
	if attempt >= c.opts.Retries || ctx.Err() != nil || !retryable(err) {
		return 0, false
	}
	d := c.backoff(attempt)
	if ra, ok := RetryAfter(err); ok && ra > d {
		d = ra
	}
	if d > c.opts.MaxRetryWait {
		return 0, false
	}
	if dl, ok := ctx.Deadline(); ok && d >= time.Until(dl) {
		return 0, false
	}
	return d, true
}

// backoff is Backoff doubled per attempt, capped at MaxRetryWait, with equal
// jitter: somewhere in its upper half.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.opts.Backoff << min(attempt, 30)
	if d <= 0 || d > c.opts.MaxRetryWait {
		d = c.opts.MaxRetryWait
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrRefused) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status >= 500 || se.Status == http.StatusTooManyRequests
	}
	return errors.Is(err, ErrUnreachable)
}

// RetryAfter reports how long the upstream asked to be left alone, from the
// Retry-After of a 429 or 503 in err's chain.
func RetryAfter(err error) (time.Duration, bool) {
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > 0 {
		return se.RetryAfter, true
	}
	return 0, false
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP-date
// (RFC 9110 section 10.2.3). A date in the past is a zero wait.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		d = maxRetryAfter
		if n < uint64(maxRetryAfter/time.Second) {
			d = time.Duration(n) * time.Second
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = max(t.Sub(now), 0)
	} else {
		return 0, false
	}
	return min(d, maxRetryAfter), true
}
