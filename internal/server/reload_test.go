package server

import (
	"slices"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/config"
)

func TestChangedKeys(t *testing.T) {
	a := config.Default()
	b := config.Default()
	if got := changedKeys(a, b); len(got) != 0 {
		t.Errorf("identical configs: %v", got)
	}
	b.TagTTL = config.Duration(time.Second)
	b.Admin.MaxMessageBytes = 1 << 20
	b.Log.Level = "debug"
	b.Upstreams = config.Default().Upstreams
	b.Upstreams["x.test"] = config.Upstream{URL: "https://x.test"}
	want := []string{"admin.max_message_bytes", "log.level", "tag_ttl", "upstreams"}
	if got := changedKeys(a, b); !slices.Equal(got, want) {
		t.Errorf("changedKeys = %v, want %v", got, want)
	}
}

func TestReloadWithoutSource(t *testing.T) {
	s := &Server{}
	if _, _, err := s.Reload(t.Context()); err == nil {
		t.Error("Reload without a source succeeded")
	}
}
