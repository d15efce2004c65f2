package registry

import (
	"encoding/json"
	"sync"

	"github.com/opencontainers/go-digest"
)

// maxSizeHints bounds the blob sizes remembered from manifests: 16,384
// entries of about 100 bytes (a few thousand images' layers). Past it, an
// eighth of the entries (arbitrary ones, map order) are dropped: a missing
// hint costs one HEAD, never a wrong answer.
const maxSizeHints = 16384

// sizeHints remembers the sizes that image manifests give their config and
// layers, so a blob's fill knows its size, and so its piece plan, before it
// asks anyone (fetch.Request.Size): a pull always passes the manifest
// first. A hint is only a hint: the source's own answer must agree.
type sizeHints struct {
	mu sync.Mutex
	m  map[digest.Digest]int64 // at most maxSizeHints
}

func newSizeHints() *sizeHints { return &sizeHints{m: map[digest.Digest]int64{}} }

// imageManifest is what sizeHints reads of a manifest.
type imageManifest struct {
	Config *descriptorSize  `json:"config"`
	Layers []descriptorSize `json:"layers"`
}

type descriptorSize struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

// learn records the blob sizes an image manifest's body gives. An index
// or anything else records nothing.
func (s *sizeHints) learn(body []byte) {
	var m imageManifest
	if json.Unmarshal(body, &m) != nil || len(m.Layers) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	add := func(d descriptorSize) {
		if d.Size <= 0 || d.Digest.Validate() != nil {
			return
		}
		if len(s.m) >= maxSizeHints {
			drop := maxSizeHints / 8
			for k := range s.m {
				delete(s.m, k)
				if drop--; drop == 0 {
					break
				}
			}
		}
		s.m[d.Digest] = d.Size
	}
	if m.Config != nil {
		add(*m.Config)
	}
	for _, l := range m.Layers {
		add(l)
	}
}

// isImageManifest reports whether mt is a single image's manifest (its
// layers have sizes), not an index.
func isImageManifest(mt string) bool {
	return mt == "application/vnd.oci.image.manifest.v1+json" || mt == "application/vnd.docker.distribution.manifest.v2+json"
}

// size returns the size a manifest gave dg, or 0.
func (s *sizeHints) size(dg digest.Digest) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[dg]
}

// len returns the number of hints held.
func (s *sizeHints) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
