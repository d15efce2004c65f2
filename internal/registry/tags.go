package registry

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// CodePaginationInvalid answers an n that is not a number >= 0.
const CodePaginationInvalid = "PAGINATION_NUMBER_INVALID"

const (
	// maxTagsBody caps what is read of one upstream tag list. The list is
	// streamed, never held: this bounds the time and bandwidth one request
	// can take (Docker Hub's largest lists are a few MB).
	maxTagsBody = 64 << 20
	// maxTagLists bounds the tag list requests in flight: each holds an
	// upstream connection and two buffers; more get 503 TOOMANYREQUESTS.
	maxTagLists = 4
	// tagsBufSize is the read and write buffer of one tag list request.
	tagsBufSize = 32 << 10
)

// errAbortResponse: a response failed after its first bytes went out, so
// its end must not look complete (ServeHTTP aborts the connection).
var errAbortResponse = errors.New("response aborted")

// serveTags passes GET /v2/<name>/tags/list through to the upstream, with its
// n and last pagination: the upstream's page is streamed to the client with
// the client's name, through fixed buffers, whatever its length. Not cached.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-tags
func (h *Handler) serveTags(w http.ResponseWriter, r *http.Request, req *request) error {
	query, err := tagsQuery(r.URL.Query())
	if err != nil {
		return err
	}
	select {
	case h.tagLists <- struct{}{}:
		defer func() { <-h.tagLists }()
	default:
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeTooManyRequests,
			Message: "too many tag lists in flight; retry later", Header: http.Header{"Retry-After": {"1"}}}
	}
	resp, err := req.client.Tags(r.Context(), req.target.Repository, query)
	if err != nil {
		h.countFailure(r.Context(), req.target, err)
		return upstreamError(req.target, err, CodeNameUnknown)
	}
	defer resp.Body.Close()
	if link := resp.Header.Get("Link"); link != "" {
		w.Header().Set("Link", rewriteLink(link, req, r.URL.Query().Get("ns")))
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	return streamTags(w, io.LimitReader(resp.Body, maxTagsBody), req)
}

// tagsQuery is the upstream query: the client's n (checked) and last.
func tagsQuery(q url.Values) (string, error) {
	pass := make([]string, 0, 2)
	for _, k := range []string{"n", "last"} {
		if v := q.Get(k); v != "" {
			if k == "n" {
				if n, err := strconv.Atoi(v); err != nil || n < 0 {
					return "", newError(http.StatusBadRequest, CodePaginationInvalid, "invalid n %q", truncate(v, 24))
				}
			}
			pass = append(pass, k+"="+urlQueryEscape(v))
		}
	}
	return strings.Join(pass, "&"), nil
}

var (
	tagReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, tagsBufSize) }}
	tagWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, tagsBufSize) }}
)

// streamTags rewrites the upstream list src as {"name":<the client's
// name>,"tags":[…]} into w. A list that fits the write buffer goes out whole
// with its Content-Length, and a bad one gets a clean 502; past the buffer,
// a failure aborts the response.
func streamTags(w http.ResponseWriter, src io.Reader, req *request) error {
	br := tagReaders.Get().(*bufio.Reader)
	br.Reset(src)
	sent := &countWriter{w: w}
	bw := tagWriters.Get().(*bufio.Writer)
	bw.Reset(sent)
	defer func() {
		br.Reset(nil)
		bw.Reset(nil)
		tagReaders.Put(br)
		tagWriters.Put(bw)
	}()
	name, _ := json.Marshal(req.path.Name)
	_, _ = bw.WriteString(`{"name":`)
	_, _ = bw.Write(name)
	_, _ = bw.WriteString(`,"tags":[`)
	n := 0
	err := decodeTags(br, func(tag []byte) {
		if n > 0 {
			_ = bw.WriteByte(',')
		}
		n++
		_ = bw.WriteByte('"')
		_, _ = bw.Write(tag)
		_ = bw.WriteByte('"')
	})
	if err == nil {
		_, err = bw.WriteString("]}")
	}
	if err != nil && sent.n == 0 {
		w.Header().Del("Link")
		return newError(http.StatusBadGateway, CodeUnavailable, "upstream %s sent an invalid tag list: %v", req.target.Registry, err)
	}
	if err != nil {
		return errors.Join(errAbortResponse, err)
	}
	if sent.n == 0 {
		w.Header().Set("Content-Length", strconv.Itoa(bw.Buffered()))
	}
	if err := bw.Flush(); err != nil {
		return errors.Join(errAbortResponse, err)
	}
	return nil
}

// countWriter counts the bytes that went out.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// rewriteLink points the upstream's next-page link at this mirror's name for the repository.
func rewriteLink(link string, req *request, ns string) string {
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start < 0 || end < start {
		return link
	}
	target := link[start+1 : end]
	_, query, _ := strings.Cut(target, "?")
	next := "/v2/" + req.path.Name + "/tags/list"
	if query != "" {
		next += "?" + query
	}
	if ns != "" {
		sep := "?"
		if query != "" {
			sep = "&"
		}
		next += sep + "ns=" + urlQueryEscape(ns)
	}
	return link[:start+1] + next + link[end:]
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }
