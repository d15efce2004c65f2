package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
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
			_, _, oerr := s.OpenBlob(tt.info.Digest)
			if tt.wantErr != nil {
				if !IsNotFound(oerr) {
					t.Errorf("rejected content visible: %v", oerr)
				}
				return
			}
			rf, info, err := s.OpenBlob(tt.info.Digest)
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
	if _, _, err := s.OpenBlob(dg); err != nil {
		t.Errorf("committed content lost: %v", err)
	}
	if tag, err := s.Tag("r", "a/b", "v1"); err != nil || tag.Digest != dg {
		t.Errorf("tag lost: %v %v", tag, err)
	}
	if b, n := s.Usage(); b != 4 || n != 1 {
		t.Errorf("usage %d bytes %d objects", b, n)
	}
}

// TestReconcileDropsUndecodableRecords: a record that cannot be decoded is
// dropped with its file at open and never counted, so the totals match what
// List sees and stay exact when content is deleted or evicted afterwards.
func TestReconcileDropsUndecodableRecords(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	good := put(t, s, []byte("good content"))
	bad := put(t, s, []byte("bad record"))
	// An undecodable record, and one whose key is no digest at all.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketBlobs).Put([]byte("x"), []byte("{}")); err != nil {
			return err
		}
		return tx.Bucket(bucketBlobs).Put([]byte(bad), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{})
	defer s.Close()
	if b, n := s.Usage(); b != int64(len("good content")) || n != 1 {
		t.Errorf("usage after reopen: %d bytes %d objects, want %d and 1", b, n, len("good content"))
	}
	if _, err := os.Stat(s.path(bad)); !os.IsNotExist(err) {
		t.Errorf("file of the undecodable record kept: %v", err)
	}
	list, err := s.List(Filter{})
	if err != nil || len(list) != 1 || list[0].Digest != good {
		t.Errorf("List = %v %v", list, err)
	}
	// Deleting both (one is gone already) leaves exactly zero.
	for _, dg := range []digest.Digest{bad, good, good} {
		if err := s.Delete(dg); err != nil {
			t.Fatal(err)
		}
	}
	if b, n := s.Usage(); b != 0 || n != 0 {
		t.Errorf("usage after deleting everything: %d bytes %d objects", b, n)
	}
}

// TestDeleteUndecodableRecordKeepsTotals: a record that turns undecodable
// while the store runs is removed without changing the totals it was never
// part of... and those of the rest stay exact.
func TestDeleteUndecodableRecordKeepsTotals(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	a := put(t, s, []byte("aaaa"))
	odd := digest.FromString("odd")
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlobs).Put([]byte(odd), []byte("[]"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(odd); err != nil {
		t.Fatal(err)
	}
	if b, n := s.Usage(); b != 4 || n != 1 {
		t.Errorf("usage %d bytes %d objects, want 4 and 1", b, n)
	}
	if err := s.Delete(a); err != nil {
		t.Fatal(err)
	}
	if b, n := s.Usage(); b != 0 || n != 0 {
		t.Errorf("usage %d bytes %d objects, want 0", b, n)
	}
}

// TestFailedFlushKeepsAccessTimes: access times that could not be written
// stay pending and are written by the next Flush.
func TestFailedFlushKeepsAccessTimes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	dg := put(t, s, []byte("used"))
	f, _, err := s.OpenBlob(dg)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	s.mu.Lock()
	used := s.touched[dg]
	s.mu.Unlock()
	// A database that cannot be written: the transaction fails.
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err == nil {
		t.Fatal("Flush on a closed database succeeded")
	}
	s.mu.Lock()
	kept, ok := s.touched[dg]
	s.mu.Unlock()
	if !ok || !kept.Equal(used) {
		t.Fatalf("access time dropped by a failed flush (kept %v %v)", kept, ok)
	}
	s.db, err = bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	delete(s.touched, dg) // read what bbolt holds, not the pending overlay
	s.mu.Unlock()
	info, err := s.Stat(dg)
	if err != nil || !info.LastAccess.Equal(used) {
		t.Errorf("LastAccess %v, want %v (%v)", info.LastAccess, used, err)
	}
}

// TestEvictLeastRecentlyUsed: over its bound, the store evicts exactly the
// least recently used object (down to 90% of the bound) and keeps the one
// read since.
func TestEvictLeastRecentlyUsed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Bound 3500: four 1000-byte objects are 500 over, and 90% of the
		// bound (3150) is reached by evicting exactly one.
		s := open(t, t.TempDir(), Options{MaxBytes: 3500})
		defer s.Close()
		mk := func(c byte) []byte { b := make([]byte, 1000); b[0] = c; return b }
		a := put(t, s, mk('a'))
		time.Sleep(time.Second)
		b := put(t, s, mk('b'))
		time.Sleep(time.Second)
		c := put(t, s, mk('c'))
		time.Sleep(time.Second)
		// Read a: b becomes the least recently used.
		f, _, err := s.OpenBlob(a)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		time.Sleep(time.Second)
		d := put(t, s, mk('d'))
		synctest.Wait() // the evictor is idle again
		for _, tc := range []struct {
			name string
			dg   digest.Digest
			want bool
		}{{"a (read recently)", a, true}, {"b (least recently used)", b, false}, {"c", c, true}, {"d (new)", d, true}} {
			if _, err := s.Stat(tc.dg); (err == nil) != tc.want {
				t.Errorf("%s: present=%v, want %v", tc.name, err == nil, tc.want)
			}
		}
		if size, n := s.Usage(); size != 3000 || n != 3 {
			t.Errorf("usage %d bytes %d objects, want 3000 and 3", size, n)
		}
	})
}

// TestEvictManyInBatches: eviction larger than one batch and one scan
// still reaches 90% of the bound, oldest first, with exact totals.
func TestEvictManyInBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := open(t, t.TempDir(), Options{})
		defer s.Close()
		const n = 300
		var dgs []digest.Digest
		for i := range n {
			dgs = append(dgs, put(t, s, []byte(fmt.Sprintf("object %04d", i))))
			time.Sleep(time.Millisecond)
		}
		size, _ := s.Usage()
		per := size / n
		s.SetMaxBytes(per * 100) // to 90 objects
		synctest.Wait()
		got, count := s.Usage()
		if count != 90 || got != per*90 {
			t.Fatalf("usage %d bytes %d objects, want %d and 90", got, count, per*90)
		}
		for i, dg := range dgs {
			_, err := s.Stat(dg)
			if want := i >= n-90; (err == nil) != want {
				t.Errorf("object %d present=%v, want %v", i, err == nil, want)
			}
		}
	})
}

// TestCommitDoesNotWaitForEviction: a commit that takes the store over its
// bound returns while eviction has not even started its work; a Commit that
// evicted inline would deadlock here, which synctest reports.
func TestCommitDoesNotWaitForEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var evicted []digest.Digest
		s := open(t, t.TempDir(), Options{MaxBytes: 2500, OnEvict: func(i Info) {
			evicted = append(evicted, i.Digest)
			<-release
		}})
		a := put(t, s, bytes.Repeat([]byte{'a'}, 1000))
		time.Sleep(time.Second)
		put(t, s, bytes.Repeat([]byte{'b'}, 1000))
		time.Sleep(time.Second)
		put(t, s, bytes.Repeat([]byte{'c'}, 1000)) // 3000 > 2500: returns at once
		synctest.Wait()                            // the evictor is held in OnEvict
		if len(evicted) != 1 || evicted[0] != a {
			t.Errorf("evicting %v, want the oldest", evicted)
		}
		close(release)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if len(evicted) != 1 {
			t.Errorf("evicted %d objects, want 1", len(evicted))
		}
	})
}

func putManifest(t *testing.T, s *Store, body []byte, m NewManifest) Info {
	t.Helper()
	m.Digest = digest.FromBytes(body)
	info, err := s.PutManifest(body, m)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestPutManifestVerifies(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	body := []byte(`{"schemaVersion":2,"mediaType":"m"}`)
	if _, err := s.PutManifest(body, NewManifest{Digest: digest.FromString("x")}); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("bad manifest accepted: %v", err)
	}
	dg := digest.FromBytes(body)
	putManifest(t, s, body, NewManifest{DeclaredType: "m", Repository: "r/a"})
	got, info, err := s.ReadManifest("other/repo", dg, 1<<20)
	if err != nil || string(got) != string(body) || info.MediaType != "m" || info.Kind != KindManifest {
		t.Errorf("ReadManifest = %q %+v %v", got, info, err)
	}
	list, err := s.List(Filter{DigestPrefix: "sha256:"})
	if err != nil || len(list) != 1 || list[0].Kind != KindManifest {
		t.Errorf("List = %v %v", list, err)
	}
}

// TestReadManifestKindsAndCap: a manifest read names its kind and a cap; a
// blob is not a manifest, and nothing over the cap is read.
func TestReadManifestKindsAndCap(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	layer := put(t, s, bytes.Repeat([]byte{'L'}, 64<<10))
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	mf := putManifest(t, s, body, NewManifest{DeclaredType: "application/vnd.oci.image.manifest.v1+json"}).Digest
	tests := []struct {
		name    string
		dg      digest.Digest
		max     int64
		wantErr []error
	}{
		{"manifest within the cap", mf, int64(len(body)), nil},
		{"manifest over the cap", mf, int64(len(body)) - 1, []error{ErrTooLarge}},
		{"a blob is not a manifest", layer, 1 << 30, []error{ErrNotFound, ErrNotManifest}},
		{"absent", digest.FromString("absent"), 1 << 20, []error{ErrNotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _, err := s.ReadManifest("r/a", tt.dg, tt.max)
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("err = %v, want %v", err, want)
				}
			}
			if tt.wantErr == nil && (err != nil || !bytes.Equal(b, body)) {
				t.Errorf("ReadManifest = %q, %v", b, err)
			}
		})
	}
	// A manifest's bytes are a blob too: OpenBlob serves either kind.
	if f, info, err := s.OpenBlob(mf); err != nil || info.Kind != KindManifest {
		t.Errorf("OpenBlob(manifest) = %+v %v", info, err)
	} else {
		f.Close()
	}
	// A file grown on disk behind the record is not read past the record.
	if err := os.WriteFile(s.path(mf), append(body, ' '), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReadManifest("r/a", mf, 1<<20); err == nil {
		t.Error("a manifest whose file changed size was served")
	}
}

// TestManifestTypePerRepository: a body without a mediaType field keeps each
// repository's upstream type; one repository's label never serves another.
func TestManifestTypePerRepository(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	body := []byte(`{"schemaVersion":2,"manifests":[]}`)
	dg := digest.FromBytes(body)
	const idx, list = "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"
	if info := putManifest(t, s, body, NewManifest{Repository: "a.test/x", UpstreamType: idx}); info.MediaType != idx {
		t.Errorf("PutManifest type %q", info.MediaType)
	}
	if _, _, err := s.ReadManifest("b.test/x", dg, 1<<20); !IsNotFound(err) {
		t.Errorf("repository b served a's type: %v", err)
	}
	putManifest(t, s, body, NewManifest{Repository: "b.test/x", UpstreamType: list})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{})
	for repo, want := range map[string]string{"a.test/x": idx, "b.test/x": list} {
		if _, info, err := s.ReadManifest(repo, dg, 1<<20); err != nil || info.MediaType != want {
			t.Errorf("%s: type %q (%v), want %q", repo, info.MediaType, err, want)
		}
	}
	// Deleting the manifest deletes its types: refetched bytes start afresh.
	if err := s.Delete(dg); err != nil {
		t.Fatal(err)
	}
	putManifest(t, s, body, NewManifest{Repository: "a.test/x", UpstreamType: idx})
	if _, _, err := s.ReadManifest("b.test/x", dg, 1<<20); !IsNotFound(err) {
		t.Errorf("type of a deleted manifest survived: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBlobBecomesManifest: bytes first fetched from the blobs endpoint are a
// blob; stored again as a manifest they become one (same bytes, same digest).
func TestBlobBecomesManifest(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	dg := put(t, s, body)
	if _, _, err := s.ReadManifest("r/a", dg, 1<<20); !errors.Is(err, ErrNotManifest) {
		t.Fatalf("blob read as manifest: %v", err)
	}
	putManifest(t, s, body, NewManifest{DeclaredType: "application/vnd.oci.image.index.v1+json", Repository: "r/a"})
	if _, info, err := s.ReadManifest("r/a", dg, 1<<20); err != nil || info.Kind != KindManifest {
		t.Errorf("after PutManifest: %+v %v", info, err)
	}
	if b, n := s.Usage(); b != int64(len(body)) || n != 1 {
		t.Errorf("usage %d bytes %d objects", b, n)
	}
}

// TestLegacyManifestRecordRetyped: a manifest recorded by an earlier version
// (its mediaType the first upstream's header) is not trusted for its type.
func TestLegacyManifestRecordRetyped(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	body := []byte(`{"schemaVersion":2}`)
	dg := put(t, s, body)
	legacy := []byte(`{"digest":"` + dg.String() + `","size":19,"mediaType":"application/vnd.oci.image.index.v1+json","manifest":true}`)
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketBlobs).Put([]byte(dg), legacy) }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReadManifest("r/a", dg, 1<<20); !IsNotFound(err) {
		t.Errorf("legacy first-come type served: %v", err)
	}
}
