package registry

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/berth-mirror/berth/internal/fetch"
)

// TestPeerPieces: the owner's side of a piece request (servePiece). A piece
// nobody holds is fetched alone from the upstream (one ranged GET) and
// kept; asked again it comes from the kept piece; once the whole blob is
// stored, from the blob. Bad requests are refused without upstream work:
// a Range outside the piece (416), a size that plans no pieces (400). A
// kept piece is never served as a blob, by /v2/ or by the peer API.
func TestPeerPieces(t *testing.T) {
	up := newCountingUpstream(t)
	const size = fetch.PieceThreshold + 3*fetch.MinPieceSize + 777
	img := up.pushImage(t, "team/app", "v1", size)
	layer := img.layers[0]
	data := img.data[layer]
	plan := fetch.PlanFor(size)
	s1, e1 := plan.Bounds(1)
	ps := newPeerStack(t, up)
	auth := []string{"Authorization", "Berth-Peer good"}
	blobPath := "/peer/v1/blobs/" + layer.String() + "?registry=registry.test:5000&repository=team/app"
	piece := func(i int, sz int64) string { return fmt.Sprintf("%s&piece=%d&size=%d", blobPath, i, sz) }
	rng := func(a, b int64) []string { return append([]string{"Range", fmt.Sprintf("bytes=%d-%d", a, b-1)}, auth...) }
	blobGets := func() int { return up.count("GET", "/v2/team/app/blobs/"+layer.String()) }

	tests := []struct {
		name       string
		path       string
		hdr        []string
		status     int
		body       []byte
		blobGets   int // upstream GETs of the blob it may cause
		contentRng string
	}{
		{"piece nobody holds: fetched alone", piece(1, size), rng(s1+10, e1), 206, data[s1+10 : e1], 1, fmt.Sprintf("bytes %d-%d/%d", s1+10, e1-1, size)},
		{"again: from the kept piece", piece(1, size), rng(s1, s1+100), 206, data[s1 : s1+100], 0, fmt.Sprintf("bytes %d-%d/%d", s1, s1+99, size)},
		{"whole piece without a Range", piece(1, size), auth, 206, data[s1:e1], 0, ""},
		{"Range outside the piece", piece(1, size), rng(s1-10, e1), 416, nil, 0, ""},
		{"Range in another piece", piece(1, size), rng(0, 100), 416, nil, 0, ""},
		{"a size with no pieces", piece(0, 1000), rng(0, 100), 400, nil, 0, ""},
		{"no such piece", piece(plan.Count, size), auth, 400, nil, 0, ""},
		{"the blob, whole", blobPath, auth, 200, data, 1, ""},
		{"a piece of the stored blob", piece(0, size), rng(5, 50), 206, data[5:50], 0, ""},
		{"a piece for another size of a stored blob", piece(0, size+fetch.MinPieceSize), rng(5, 50), 404, nil, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := blobGets()
			resp, body := ps.get(t, http.MethodGet, tt.path, tt.hdr...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %.200s", resp.StatusCode, tt.status, body)
			}
			if tt.body != nil && body != string(tt.body) {
				t.Errorf("body: %d bytes, want %d", len(body), len(tt.body))
			}
			if tt.contentRng != "" && resp.Header.Get("Content-Range") != tt.contentRng {
				t.Errorf("Content-Range %q, want %q", resp.Header.Get("Content-Range"), tt.contentRng)
			}
			if got := blobGets() - n; got > tt.blobGets {
				t.Errorf("%d upstream GETs of the blob, want at most %d", got, tt.blobGets)
			}
		})
	}
	ps.fetcher.Wait()
	if n := ps.store.Pieces(); n != 1 {
		t.Errorf("%d pieces kept, want 1", n)
	}
	// The kept piece under its key: not a blob for /v2/ or the peer API.
	key := fetch.PieceKey(layer, plan, 1)
	if resp, _ := ps.get(t, http.MethodGet, "/peer/v1/blobs/"+key.String()+"?registry=registry.test:5000&repository=team/app&held=1", auth...); resp.StatusCode != 404 {
		t.Errorf("a kept piece asked as a held blob: %d, want 404", resp.StatusCode)
	}
	if _, _, err := ps.store.OpenBlob(key); err == nil {
		t.Error("a kept piece opened as a blob")
	}
}
