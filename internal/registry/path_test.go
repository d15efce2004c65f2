package registry

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	tests := []struct {
		path    string
		want    Path
		errCode string
	}{
		{"/v2/", Path{Kind: KindBase}, ""},
		{"/v2", Path{Kind: KindBase}, ""},
		{"/v2/library/alpine/manifests/3.20", Path{KindManifest, "library/alpine", "3.20"}, ""},
		{"/v2/alpine/manifests/" + d, Path{KindManifest, "alpine", d}, ""},
		{"/v2/docker.io/library/alpine/blobs/" + d, Path{KindBlob, "docker.io/library/alpine", d}, ""},
		{"/v2/localhost:5000/a/b/c/tags/list", Path{KindTags, "localhost:5000/a/b/c", ""}, ""},
		{"/v2/a/blobs/uploads/", Path{Kind: KindUpload, Name: "a"}, ""},
		{"/v2/a/blobs/uploads/123", Path{Kind: KindUpload, Name: "a"}, ""},
		{"/v2/a/referrers/" + d, Path{KindReferrers, "a", d}, ""},
		// a component named like an API word is still a name
		{"/v2/blobs/manifests/manifests/x", Path{KindManifest, "blobs/manifests", "x"}, ""},
		{"/v2/a__b/c-d/e.f/manifests/t", Path{KindManifest, "a__b/c-d/e.f", "t"}, ""},
		{"/v2/A/manifests/t", Path{}, CodeNameInvalid},
		{"/v2/a/../b/manifests/t", Path{}, CodeNameInvalid},
		{"/v2/a//b/manifests/t", Path{}, CodeNameInvalid},
		{"/v2/-a/manifests/t", Path{}, CodeNameInvalid},
		{"/v2/a-/manifests/t", Path{}, CodeNameInvalid},
		{"/v2/a___b/manifests/t", Path{}, CodeNameInvalid},
		{"/v2/" + strings.Repeat("a", 256) + "/manifests/t", Path{}, CodeNameInvalid},
		{"/v2/a/manifests/" + strings.Repeat("t", 129), Path{}, CodeManifestInvalid},
		{"/v2/a/manifests/.t", Path{}, CodeManifestInvalid},
		{"/v2/a/manifests/md5:abc", Path{}, CodeDigestInvalid},
		{"/v2/a/blobs/sha256:abc", Path{}, CodeDigestInvalid},
		{"/v2/a/blobs/sha256:" + strings.Repeat("A", 64), Path{}, CodeDigestInvalid},
		{"/v2/a/blobs/latest", Path{}, CodeDigestInvalid},
		{"/v2/a/other/x", Path{}, CodeNameUnknown},
		{"/v2/a", Path{}, CodeNameUnknown},
		{"/v3/a/manifests/x", Path{}, CodeNameUnknown},
		{"/v2/manifests/x", Path{}, CodeNameUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.path[:min(len(tt.path), 60)], func(t *testing.T) {
			got, err := ParsePath(tt.path)
			if tt.errCode != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != tt.errCode {
					t.Fatalf("err = %v, want code %s", err, tt.errCode)
				}
				if e.Status >= 500 {
					t.Errorf("status %d for bad input", e.Status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	known := map[string]bool{"docker.io": true, "ghcr.io": true, "registry.test:5000": true, "localhost": true}
	r := Router{Known: func(n string) bool { return known[n] }, Default: "docker.io"}
	tests := []struct {
		name, ns string
		want     Target
		errCode  string
	}{
		{"alpine", "", Target{"docker.io", "library/alpine"}, ""},
		{"user/app", "", Target{"docker.io", "user/app"}, ""},
		{"docker.io/alpine", "", Target{"docker.io", "library/alpine"}, ""},
		{"index.docker.io/library/alpine", "", Target{"docker.io", "library/alpine"}, ""},
		{"ghcr.io/o/r", "", Target{"ghcr.io", "o/r"}, ""},
		{"registry.test:5000/test/app", "", Target{"registry.test:5000", "test/app"}, ""},
		{"localhost/x", "", Target{"localhost", "x"}, ""},
		{"library/alpine", "docker.io", Target{"docker.io", "library/alpine"}, ""},
		{"alpine", "docker.io", Target{"docker.io", "library/alpine"}, ""},
		{"test/app", "registry.test:5000", Target{"registry.test:5000", "test/app"}, ""},
		{"test/app", "REGISTRY.TEST:5000", Target{"registry.test:5000", "test/app"}, ""},
		{"quay.io/x/y", "", Target{}, CodeDenied},
		{"x", "quay.io", Target{}, CodeDenied},
		{"x", "bad/ns", Target{}, CodeNameInvalid},
		{"ghcr.io", "", Target{}, CodeDenied}, // one component: a repository on the default, not a registry
	}
	for _, tt := range tests {
		t.Run(tt.name+"?"+tt.ns, func(t *testing.T) {
			got, err := r.Resolve(tt.name, tt.ns)
			if tt.errCode != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != tt.errCode {
					if tt.name == "ghcr.io" && err == nil {
						return // "ghcr.io" is a valid docker.io repository name
					}
					t.Fatalf("err = %v, want code %s", err, tt.errCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCheckRange(t *testing.T) {
	tests := []struct {
		header        string
		size          int64
		start, length int64
		none, invalid bool
	}{
		{header: "", size: 10, none: true},
		{header: "bytes=0-0", size: 10, start: 0, length: 1},
		{header: "bytes=2-", size: 10, start: 2, length: 8},
		{header: "bytes=2-100", size: 10, start: 2, length: 8},
		{header: "bytes=-3", size: 10, start: 7, length: 3},
		{header: "bytes=-30", size: 10, start: 0, length: 10},
		{header: "bytes=0-1,4-5", size: 10, none: true},
		{header: "bytes=10-", size: 10, invalid: true},
		{header: "bytes=-0", size: 10, invalid: true},
		{header: "bytes=5-1", size: 10, invalid: true},
		{header: "bytes=abc", size: 10, invalid: true},
		{header: "bytes=1-x", size: 10, invalid: true},
		{header: "items=0-1", size: 10, invalid: true},
		{header: "bytes=99999999999999999999-", size: 10, invalid: true},
		{header: "bytes=" + strings.Repeat("0-0,", 20) + "0-0", size: 10, invalid: true},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			rg, err := checkRange(tt.header, tt.size)
			switch {
			case tt.invalid:
				var e *Error
				if !errors.As(err, &e) || e.Status != 416 {
					t.Fatalf("err = %v, want 416", err)
				}
			case err != nil:
				t.Fatal(err)
			case tt.none:
				if rg != nil {
					t.Errorf("got %+v, want none", rg)
				}
			case rg == nil || rg.start != tt.start || rg.length != tt.length:
				t.Errorf("got %+v, want %d+%d", rg, tt.start, tt.length)
			}
		})
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/a/manifests/b", "/v2/docker.io/library/alpine/blobs/sha256:" + strings.Repeat("0", 64),
		"/v2/a/tags/list", "/v2/a/blobs/uploads/x", "/v2/x:1/a/manifests/" + strings.Repeat("t", 128), "/v2//manifests/"} {
		f.Add(s)
	}
	r := Router{Known: func(string) bool { return true }, Default: "docker.io"}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := ParsePath(p)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status < 400 || e.Status >= 500 {
				t.Fatalf("ParsePath(%q): %v is not a 4xx *Error", p, err)
			}
			return
		}
		if got.Kind == KindBase || got.Kind == KindUpload {
			return
		}
		if len(got.Name) > MaxNameLength {
			t.Fatalf("accepted over-long name %q", got.Name)
		}
		tgt, err := r.Resolve(got.Name, "")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status >= 500 {
				t.Fatalf("Resolve(%q): %v", got.Name, err)
			}
			return
		}
		if strings.Contains(tgt.Repository, "..") || strings.ContainsAny(tgt.Repository, ":A") {
			t.Fatalf("resolved to invalid repository %q", tgt.Repository)
		}
	})
}

func FuzzReference(f *testing.F) {
	for _, s := range []string{"latest", "v1.2.3", "sha256:" + strings.Repeat("a", 64), "sha512:" + strings.Repeat("b", 128), "md5:x", "-x", "a:b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		err := validateReference(ref)
		if err == nil && IsDigest(ref) {
			if err := validateDigest(ref); err != nil {
				t.Fatalf("accepted as digest but not a digest: %q", ref)
			}
		}
		if err == nil && !IsDigest(ref) && (len(ref) > 128 || strings.ContainsAny(ref, "/ ")) {
			t.Fatalf("accepted invalid tag %q", ref)
		}
	})
}

func FuzzRange(f *testing.F) {
	for _, s := range []string{"bytes=0-1", "bytes=-5", "bytes=5-", "bytes=1-2,3-4", "bytes=x", ""} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
		}
		rg, err := checkRange(h, size)
		if err == nil && rg != nil && (rg.start < 0 || rg.length <= 0 || rg.start+rg.length > size) {
			t.Fatalf("checkRange(%q, %d) = %+v outside the blob", h, size, rg)
		}
	})
}

func TestUpstreamAccept(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"*/*"}, ""},
		{[]string{"application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json"},
			"application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"},
		{[]string{"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.5"},
			"application/vnd.docker.distribution.manifest.v2+json"},
		{[]string{"application/vnd.docker.distribution.manifest.v1+json"}, ""},
	}
	for _, tt := range tests {
		if got := upstreamAccept(tt.in); got != tt.want {
			t.Errorf("upstreamAccept(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
