package registry

import (
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestSizeHints(t *testing.T) {
	s := newSizeHints()
	l1, l2, cfg := digest.FromString("l1"), digest.FromString("l2"), digest.FromString("c")
	s.learn(fmt.Appendf(nil, `{"schemaVersion":2,"config":{"digest":%q,"size":7},"layers":[{"digest":%q,"size":100},{"digest":%q,"size":200}]}`, cfg, l1, l2))
	if s.size(l1) != 100 || s.size(l2) != 200 || s.size(cfg) != 7 {
		t.Errorf("sizes %d %d %d", s.size(l1), s.size(l2), s.size(cfg))
	}
	// An index, garbage, a bad digest or size: nothing.
	s2 := newSizeHints()
	for _, b := range []string{`{"manifests":[{"digest":"` + l1.String() + `","size":5}]}`, `nope`, `{"layers":[{"digest":"sha256:xyz","size":5},{"digest":"` + l1.String() + `","size":-1}]}`} {
		s2.learn([]byte(b))
	}
	if s2.len() != 0 {
		t.Errorf("%d hints from bodies that give none", s2.len())
	}
}

// TestSizeHintsBounded: a flood of distinct layers stays within the bound.
func TestSizeHintsBounded(t *testing.T) {
	s := newSizeHints()
	for i := range 3 * maxSizeHints / 64 {
		body := `{"layers":[`
		for j := range 64 {
			if j > 0 {
				body += ","
			}
			body += fmt.Sprintf(`{"digest":%q,"size":1}`, digest.FromString(fmt.Sprint(i, j)))
		}
		s.learn([]byte(body + "]}"))
		if s.len() > maxSizeHints {
			t.Fatalf("%d hints, over %d", s.len(), maxSizeHints)
		}
	}
}
