package registry

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// CodePaginationInvalid answers an n that is not a number >= 0.
const CodePaginationInvalid = "PAGINATION_NUMBER_INVALID"

// maxTagsBody caps a tags/list response read from upstream.
const maxTagsBody = 16 << 20

// serveTags passes GET /v2/<name>/tags/list through to the upstream, with its
// n and last pagination. Not cached.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-tags
func (h *Handler) serveTags(w http.ResponseWriter, r *http.Request, req *request) error {
	q := r.URL.Query()
	pass := make([]string, 0, 2)
	for _, k := range []string{"n", "last"} {
		if v := q.Get(k); v != "" {
			if k == "n" {
				if n, err := strconv.Atoi(v); err != nil || n < 0 {
					return newError(http.StatusBadRequest, CodePaginationInvalid, "invalid n %q", truncate(v, 24))
				}
			}
			pass = append(pass, k+"="+urlQueryEscape(v))
		}
	}
	resp, err := req.client.Tags(r.Context(), req.target.Repository, strings.Join(pass, "&"))
	if err != nil {
		h.countFailure(r.Context(), req.target, err)
		return upstreamError(req.target, err, CodeNameUnknown)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTagsBody+1))
	if err != nil || len(body) > maxTagsBody {
		return newError(http.StatusBadGateway, CodeUnavailable, "reading tags from %s failed", req.target.Registry)
	}
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return newError(http.StatusBadGateway, CodeUnavailable, "upstream %s sent an invalid tag list", req.target.Registry)
	}
	// Clients asked by their own name; answer with it.
	list.Name = req.path.Name
	if list.Tags == nil {
		list.Tags = []string{}
	}
	out, _ := json.Marshal(list)
	if link := resp.Header.Get("Link"); link != "" {
		w.Header().Set("Link", rewriteLink(link, req, r.URL.Query().Get("ns")))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(out)
	}
	return nil
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
