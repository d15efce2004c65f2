package upstream

import (
	"net/url"
	"regexp"
	"strings"
)

// URLs reach error text from many places (net/http's url.Error, redirect
// refusals, go-containerregistry's transport errors, an upstream's error
// message), and a blob store's presigned URL carries its signature in the
// query. Every error leaving this package goes through redact, which strips
// query, fragment and userinfo from any URL in the text.

var urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>]+`)

// redactURL returns s without userinfo, query or fragment.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		// Not parsable: cut at the query and drop anything before an '@'.
		s, _, _ = strings.Cut(s, "?")
		if scheme, rest, ok := strings.Cut(s, "://"); ok {
			if _, host, ok := strings.Cut(rest, "@"); ok {
				s = scheme + "://" + host
			}
		}
		return s
	}
	hadQuery := u.RawQuery != "" || u.ForceQuery
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	if hadQuery {
		return u.String() + "?redacted"
	}
	return u.String()
}

// redactText redacts every URL in s.
func redactText(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlInText.ReplaceAllStringFunc(s, redactURL)
}

// redactedError is err with a redacted message. It unwraps to err so
// errors.Is and errors.As still work; the outermost url.Error of err is
// replaced by a redacted copy, so unwrapping to it does not undo the work.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redact returns err with every URL in its text stripped of secrets.
func redact(err error) error {
	if err == nil {
		return nil
	}
	if ue, ok := err.(*url.Error); ok {
		err = &url.Error{Op: ue.Op, URL: redactURL(ue.URL), Err: ue.Err}
	}
	msg := err.Error()
	if red := redactText(msg); red != msg {
		return &redactedError{msg: red, err: err}
	}
	return err
}
