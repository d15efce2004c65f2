package registry

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// httpRange is one satisfiable byte range.
type httpRange struct {
	start, length int64
}

// maxRanges bounds the ranges one request may ask for.
const maxRanges = 16

// checkRange validates a Range header against a blob of size bytes
// (RFC 9110 §14.1.2). It returns nil for no header or several ranges (which
// http.ServeContent serves as multipart; a fill in progress serves the whole
// body), the range for one, and a 416 *Error for a malformed or
// unsatisfiable header.
func checkRange(header string, size int64) (*httpRange, error) {
	if header == "" {
		return nil, nil
	}
	invalid := func(why string) error {
		e := newError(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid, "invalid Range %q: %s", truncate(header, 64), why)
		e.Header = http.Header{"Content-Range": {fmt.Sprintf("bytes */%d", size)}}
		return e
	}
	spec, ok := strings.CutPrefix(header, "bytes=")
	if !ok {
		return nil, invalid("only bytes ranges are supported")
	}
	parts := strings.Split(spec, ",")
	if len(parts) > maxRanges {
		return nil, invalid("too many ranges")
	}
	var ranges []httpRange
	for _, p := range parts {
		rg, err := parseOne(strings.TrimSpace(p), size)
		if err != nil {
			return nil, invalid(err.Error())
		}
		if rg.length > 0 {
			ranges = append(ranges, rg)
		}
	}
	if len(ranges) == 0 {
		return nil, invalid("no range overlaps the blob")
	}
	if len(ranges) > 1 {
		return nil, nil
	}
	return &ranges[0], nil
}

// parseOne parses "a-b", "a-" or "-n". An unsatisfiable but well-formed
// range returns length 0.
func parseOne(s string, size int64) (httpRange, error) {
	first, last, ok := strings.Cut(s, "-")
	if !ok {
		return httpRange{}, fmt.Errorf("missing '-'")
	}
	if first == "" {
		n, err := parseNum(last)
		if err != nil {
			return httpRange{}, err
		}
		if n == 0 {
			return httpRange{}, nil
		}
		if n > size {
			n = size
		}
		return httpRange{start: size - n, length: n}, nil
	}
	start, err := parseNum(first)
	if err != nil {
		return httpRange{}, err
	}
	end := size - 1
	if last != "" {
		if end, err = parseNum(last); err != nil {
			return httpRange{}, err
		}
		if end < start {
			return httpRange{}, fmt.Errorf("end before start")
		}
		if end >= size {
			end = size - 1
		}
	}
	if start >= size {
		return httpRange{}, nil
	}
	return httpRange{start: start, length: end - start + 1}, nil
}

func parseNum(s string) (int64, error) {
	if s == "" || len(s) > 19 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a byte position", truncate(s, 24))
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", truncate(s, 24))
	}
	return n, nil
}
