package server

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/config"
)

// Every key config marks live has an effect here, and nothing else does:
// marking a key live without code to apply it would report it applied while
// nothing changed.
func TestLiveKeysHaveEffects(t *testing.T) {
	for _, k := range config.Keys() {
		if has := len(effects(k.Name)) > 0; has != k.Live {
			t.Errorf("%s: live %v but effects %v", k.Name, k.Live, effects(k.Name))
		}
	}
}

func TestReloadSplitsLiveAndRestartKeys(t *testing.T) {
	next := config.Default()
	next.TagTTL = config.Duration(time.Second)
	next.Admin.MaxMessageBytes = 1 << 20
	next.Log.Level = "debug"
	next.MaxManifestBytes = 8 << 20
	s := &Server{cfg: config.Default(), log: slog.New(slog.DiscardHandler)}
	s.SetReloader(func() (config.Config, error) { return next, nil })
	applied, restart, err := s.Reload(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// No LevelVar was given: log.level needs a restart.
	if want := []string{"max_manifest_bytes", "tag_ttl"}; !slices.Equal(applied, want) {
		t.Errorf("applied %v, want %v", applied, want)
	}
	if want := []string{"admin.max_message_bytes", "log.level"}; !slices.Equal(restart, want) {
		t.Errorf("restart %v, want %v", restart, want)
	}
	if c := s.Config(); c.TagTTL != next.TagTTL || c.Admin.MaxMessageBytes == next.Admin.MaxMessageBytes {
		t.Errorf("config in force: %+v", c)
	}
}

func TestReloadWithoutSource(t *testing.T) {
	s := &Server{}
	if _, _, err := s.Reload(t.Context()); err == nil {
		t.Error("Reload without a source succeeded")
	}
}
