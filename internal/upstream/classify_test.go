package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestClassify(t *testing.T) {
	st := func(code int) error { return fmt.Errorf("wrapped: %w", &StatusError{Upstream: "r", Status: code}) }
	for _, tt := range []struct {
		err      error
		want     Outcome
		definite bool
		unavail  bool
	}{
		{nil, Found, false, false},
		{st(http.StatusNotFound), NotFound, true, false},
		{st(http.StatusUnauthorized), Refused, true, false},
		{st(http.StatusForbidden), Refused, true, false},
		{st(http.StatusBadRequest), Invalid, true, false},
		{st(http.StatusTooManyRequests), RateLimited, false, true},
		{st(http.StatusBadGateway), Unavailable, false, true},
		{fmt.Errorf("%w: dial", ErrUnreachable), Unavailable, false, true},
		{context.DeadlineExceeded, Unavailable, false, true},
		{fmt.Errorf("%w: x", ErrDigestMismatch), Corrupt, false, false},
		{fmt.Errorf("%w: x", ErrTooLarge), TooLarge, false, false},
		{errors.New("anything else"), Unavailable, false, true},
	} {
		got := Classify(tt.err)
		if got != tt.want || got.Definite() != tt.definite || IsUnavailable(tt.err) != tt.unavail {
			t.Errorf("Classify(%v) = %s (definite %v, unavailable %v), want %s (%v, %v)",
				tt.err, got, got.Definite(), IsUnavailable(tt.err), tt.want, tt.definite, tt.unavail)
		}
	}
}
