package store

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func open(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s *Store, data []byte) digest.Digest {
	t.Helper()
	f, err := s.TempFile()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	dg := digest.FromBytes(data)
	if err := s.Commit(f, Info{Digest: dg, Size: int64(len(data)), MediaType: "application/octet-stream"}, false); err != nil {
		t.Fatal(err)
	}
	return dg
}

func TestCommit(t *testing.T) {
	good := []byte("hello, berth")
	tests := []struct {
		name    string
		write   []byte
		info    Info
		wantErr error
	}{
		{"verified content", good, Info{Digest: digest.FromBytes(good), Size: int64(len(good))}, nil},
		{"wrong size", good, Info{Digest: digest.FromBytes(good), Size: 3}, ErrDigestMismatch},
		{"wrong digest", good, Info{Digest: digest.FromString("other"), Size: int64(len(good))}, ErrDigestMismatch},
		{"empty blob", nil, Info{Digest: digest.FromBytes(nil), Size: 0}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, t.TempDir(), Options{})
			defer s.Close()
			f, err := s.TempFile()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, _ = f.Write(tt.write)
			err = s.Commit(f, tt.info, false)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Commit() = %v, want %v", err, tt.wantErr)
			}
			if left, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(left) != 0 {
				t.Errorf("temporary file left behind")
			}
			_, _, oerr := s.Open(tt.info.Digest)
			if tt.wantErr != nil {
				if !IsNotFound(oerr) {
					t.Errorf("rejected content visible: %v", oerr)
				}
				return
			}
			rf, info, err := s.Open(tt.info.Digest)
			if err != nil {
				t.Fatal(err)
			}
			defer rf.Close()
			b, _ := io.ReadAll(rf)
			if string(b) != string(tt.write) || info.Size != int64(len(tt.write)) {
				t.Errorf("read back %q (%d)", b, info.Size)
			}
		})
	}
}

func TestRecoverRemovesLeftoversAndKeepsContent(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	dg := put(t, s, []byte("kept"))
	if err := s.SetTag("r", "a/b", "v1", Tag{Digest: dg, MediaType: "x", Resolved: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash mid-fill leaves a temp file; a crash between rename and record
	// leaves an unrecorded file; a file removed by hand leaves a record.
	_ = os.WriteFile(filepath.Join(dir, "tmp", "fill-123"), []byte("half"), 0o600)
	orphan := digest.FromString("orphan")
	_ = os.MkdirAll(filepath.Dir((&Store{dir: dir}).path(orphan)), 0o750)
	_ = os.WriteFile((&Store{dir: dir}).path(orphan), []byte("orphan"), 0o600)

	s = open(t, dir, Options{})
	defer s.Close()
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Errorf("leftover temp files: %d", len(left))
	}
	if _, err := os.Stat(s.path(orphan)); !os.IsNotExist(err) {
		t.Errorf("unrecorded file kept")
	}
	if _, _, err := s.Open(dg); err != nil {
		t.Errorf("committed content lost: %v", err)
	}
	if tag, err := s.Tag("r", "a/b", "v1"); err != nil || tag.Digest != dg {
		t.Errorf("tag lost: %v %v", tag, err)
	}
	if b, n := s.Usage(); b != 4 || n != 1 {
		t.Errorf("usage %d bytes %d objects", b, n)
	}
}

func TestEvictLeastRecentlyUsed(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxBytes: 3000})
	defer s.Close()
	mk := func(c byte) []byte { b := make([]byte, 1000); b[0] = c; return b }
	a := put(t, s, mk('a'))
	time.Sleep(2 * time.Millisecond)
	b := put(t, s, mk('b'))
	time.Sleep(2 * time.Millisecond)
	// Touch a: b becomes the least recently used.
	f, _, err := s.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	time.Sleep(2 * time.Millisecond)
	c := put(t, s, mk('c'))
	d := put(t, s, mk('d')) // 4000 > 3000: evict down to 2700
	for dg, want := range map[digest.Digest]bool{a: false, b: false, c: true, d: true} {
		_, err := s.Stat(dg)
		if (err == nil) != want {
			t.Errorf("%s present=%v, want %v", dg.Encoded()[:8], err == nil, want)
		}
	}
	if size, _ := s.Usage(); size > 3000 {
		t.Errorf("size %d over bound", size)
	}
	_ = b
}

func TestPutManifestVerifies(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	body := []byte(`{"schemaVersion":2}`)
	if err := s.PutManifest(body, Info{Digest: digest.FromString("x")}); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("bad manifest accepted: %v", err)
	}
	dg := digest.FromBytes(body)
	if err := s.PutManifest(body, Info{Digest: dg, MediaType: "m"}); err != nil {
		t.Fatal(err)
	}
	got, info, err := s.ReadManifest(dg)
	if err != nil || string(got) != string(body) || info.MediaType != "m" || !info.Manifest {
		t.Errorf("ReadManifest = %q %+v %v", got, info, err)
	}
	list, err := s.List(Filter{DigestPrefix: "sha256:"})
	if err != nil || len(list) != 1 {
		t.Errorf("List = %v %v", list, err)
	}
}
