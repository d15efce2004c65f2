package admin_test

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-mirror/berth/internal/admin"
	"github.com/berth-mirror/berth/internal/config"
)

// TestPrefetchHonoursManifestCap: prefetch holds a manifest to
// max_manifest_bytes, the cap of /v2/ itself, not to a cap of its own (it
// was a fixed 4 MiB): a 5 MiB manifest is prefetched under a 6 MiB cap.
func TestPrefetchHonoursManifestCap(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.MaxManifestBytes = 6 << 20 })
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.Annotations(img, map[string]string{"pad": strings.Repeat("x", 5<<20)}).(v1.Image)
	ref, err := name.ParseReference(h.host + "/test/big:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	c := h.client()
	var sub admin.PrefetchResult
	h.call(c, "images.prefetch", admin.PrefetchParams{Images: []string{"registry.test/test/big:v1"}}, &sub)
	job := h.waitJob(c, sub.Job)
	if job.State != admin.StateDone || len(job.Images) != 1 || job.Images[0].State != admin.StateDone {
		t.Fatalf("prefetch of a 5 MiB manifest under a 6 MiB cap: %+v", job)
	}
	dg, _ := img.Digest()
	if job.Images[0].Digest != dg.String() {
		t.Errorf("job digest %q, want %s", job.Images[0].Digest, dg)
	}
}
