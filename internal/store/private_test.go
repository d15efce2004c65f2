package store

import (
	"encoding/json"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestPrivateMarks(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dg := put(t, s, []byte("private"))
	if _, err := s.PrivateObject(dg); !IsNotFound(err) {
		t.Fatalf("unmarked object: %v, want not found", err)
	}
	if has, err := s.HasPrivateObjects(); err != nil || has {
		t.Fatalf("HasPrivateObjects on a new store: %v %v", has, err)
	}
	if repos, err := s.PrivateRepos(); err != nil || len(repos) != 0 {
		t.Fatalf("PrivateRepos on a new store: %v %v", repos, err)
	}
	must(t, s.MarkPrivateRepo("http://r/team/app"))
	must(t, s.MarkPrivateObject(dg, "http://r/team/app"))
	must(t, s.MarkPrivateObject(dg, "http://r/other")) // the first origin stays
	must(t, s.Close())

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if origin, err := s.PrivateObject(dg); err != nil || origin != "http://r/team/app" {
		t.Fatalf("after reopening: origin %q, %v", origin, err)
	}
	if has, err := s.HasPrivateObjects(); err != nil || !has {
		t.Fatalf("HasPrivateObjects after a mark: %v %v", has, err)
	}
	if repos, err := s.PrivateRepos(); err != nil || len(repos) != 1 || repos[0] != "http://r/team/app" {
		t.Fatalf("PrivateRepos after reopening: %v %v", repos, err)
	}
}

func commitWith(s *Store, data []byte, info Info) error {
	f, err := s.TempFile()
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return s.Commit(f, info, false)
}

// TestPrivateMarkWithCommit: a mark given to Commit or PutManifest is there
// as soon as the object is, a commit that fails leaves none, and Delete
// removes it with the object.
func TestPrivateMarkWithCommit(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	const origin = "http://r/team/app"
	blob := []byte("a private layer")
	dg := digest.FromBytes(blob)
	// Wrong size: the fill failed, nothing is stored, nothing is marked.
	if err := commitWith(s, blob, Info{Digest: dg, Size: 3, PrivateOrigin: origin}); err == nil {
		t.Fatal("a wrong size was committed")
	}
	if _, err := s.PrivateObject(dg); !IsNotFound(err) {
		t.Fatalf("mark after a failed commit: %v, want not found", err)
	}
	must(t, commitWith(s, blob, Info{Digest: dg, Size: int64(len(blob)), PrivateOrigin: origin}))
	if o, err := s.PrivateObject(dg); err != nil || o != origin {
		t.Fatalf("after Commit: origin %q, %v", o, err)
	}
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	mdg := digest.FromBytes(body)
	if _, err := s.PutManifest(body, NewManifest{Digest: mdg, Repository: "r/team/app", PrivateOrigin: origin}); err != nil {
		t.Fatal(err)
	}
	if o, err := s.PrivateObject(mdg); err != nil || o != origin {
		t.Fatalf("after PutManifest: origin %q, %v", o, err)
	}
	for _, d := range []digest.Digest{dg, mdg} {
		must(t, s.Delete(d))
		if _, err := s.PrivateObject(d); !IsNotFound(err) {
			t.Errorf("mark of %s after Delete: %v, want not found", d, err)
		}
	}
}

// TestPrivateMarkEvicted: eviction removes an object's mark with it.
func TestPrivateMarkEvicted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := open(t, t.TempDir(), Options{MaxBytes: 3500})
		defer s.Close()
		var dgs []digest.Digest
		for i := range 4 {
			b := make([]byte, 1000)
			b[0] = byte(i)
			dg := digest.FromBytes(b)
			must(t, commitWith(s, b, Info{Digest: dg, Size: 1000, PrivateOrigin: fmt.Sprint("http://r/repo", i)}))
			dgs = append(dgs, dg)
			time.Sleep(time.Second)
		}
		synctest.Wait()
		if _, err := s.Stat(dgs[0]); !IsNotFound(err) {
			t.Fatalf("the oldest object was not evicted: %v", err)
		}
		if _, err := s.PrivateObject(dgs[0]); !IsNotFound(err) {
			t.Fatalf("mark of an evicted object: %v, want not found", err)
		}
		if o, err := s.PrivateObject(dgs[3]); err != nil || o != "http://r/repo3" {
			t.Fatalf("mark of a kept object: %q, %v", o, err)
		}
	})
}

// TestOrphanMarksDroppedAtOpen: a mark written ahead of a fill that never
// committed (MarkPrivateObject) is gone after a restart; a stored object's
// stays.
func TestOrphanMarksDroppedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	kept := put(t, s, []byte("stored"))
	orphan := digest.FromString("never stored")
	must(t, s.MarkPrivateObject(kept, "http://r/a"))
	must(t, s.MarkPrivateObject(orphan, "http://r/a"))
	must(t, s.Close())
	s = open(t, dir, Options{})
	defer s.Close()
	if _, err := s.PrivateObject(orphan); !IsNotFound(err) {
		t.Errorf("orphan mark after Open: %v, want not found", err)
	}
	if _, err := s.PrivateObject(kept); err != nil {
		t.Errorf("mark of a stored object after Open: %v", err)
	}
}

// TestPrivateReposBounded: maxPrivateRepos+1 repositories leave at most
// maxPrivateRepos marks, the oldest dropped, the newest kept; a mark of an
// earlier version (value 1) counts as oldest.
func TestPrivateReposBounded(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	must(t, s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketPrivateRepos)
		if err != nil {
			return err
		}
		return b.Put([]byte("legacy"), []byte{1})
	}))
	for i := range maxPrivateRepos {
		must(t, s.MarkPrivateRepo(fmt.Sprint("http://r/repo", i)))
	}
	repos, err := s.PrivateRepos()
	must(t, err)
	if len(repos) > maxPrivateRepos {
		t.Fatalf("%d private repositories kept, bound %d", len(repos), maxPrivateRepos)
	}
	set := map[string]bool{}
	for _, r := range repos {
		set[r] = true
	}
	if set["legacy"] || !set[fmt.Sprint("http://r/repo", maxPrivateRepos-1)] {
		t.Fatalf("legacy kept %v, newest kept %v", set["legacy"], set[fmt.Sprint("http://r/repo", maxPrivateRepos-1)])
	}
}

// TestTagsPrunedWithManifest: a tag resolution goes with its manifest
// (Delete or eviction), a moved tag stays with its new manifest, and a
// resolution to a manifest not stored is not kept.
func TestTagsPrunedWithManifest(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	m1, m2 := storeManifest(t, s, "one"), storeManifest(t, s, "two")
	must(t, s.SetTag("r", "app", "v1", Tag{Digest: m1}))
	must(t, s.SetTag("r", "app", "latest", Tag{Digest: m1}))
	must(t, s.SetTag("r", "app", "moved", Tag{Digest: m1}))
	must(t, s.SetTag("r", "app", "moved", Tag{Digest: m2}))
	must(t, s.SetTag("r", "app", "ghost", Tag{Digest: digest.FromString("not stored")}))
	if _, err := s.Tag("r", "app", "ghost"); !IsNotFound(err) {
		t.Errorf("tag of a manifest not stored: %v, want not found", err)
	}
	must(t, s.Delete(m1))
	for _, tag := range []string{"v1", "latest"} {
		if _, err := s.Tag("r", "app", tag); !IsNotFound(err) {
			t.Errorf("tag %s after its manifest was deleted: %v, want not found", tag, err)
		}
	}
	if got, err := s.Tag("r", "app", "moved"); err != nil || got.Digest != m2 {
		t.Errorf("moved tag: %v, %v; want %s", got.Digest, err, m2)
	}
	if n := bucketLen(t, s, bucketTagIndex); n != 1 {
		t.Errorf("%d index entries left, want 1", n)
	}
}

// TestLegacyTagsIndexedAtOpen: tag records of an earlier version (no
// index) whose manifest is gone are dropped at Open; the others are
// indexed, so that their manifest's eviction removes them.
func TestLegacyTagsIndexedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	m := storeManifest(t, s, "kept")
	must(t, s.db.Update(func(tx *bolt.Tx) error {
		for tag, dg := range map[string]digest.Digest{"kept": m, "gone": digest.FromString("evicted long ago")} {
			v, _ := json.Marshal(Tag{Digest: dg})
			if err := tx.Bucket(bucketTags).Put(tagKey("r", "app", tag), v); err != nil {
				return err
			}
		}
		return nil
	}))
	must(t, s.Close())
	s = open(t, dir, Options{})
	defer s.Close()
	if _, err := s.Tag("r", "app", "gone"); !IsNotFound(err) {
		t.Errorf("legacy tag of a missing manifest after Open: %v", err)
	}
	if _, err := s.Tag("r", "app", "kept"); err != nil {
		t.Fatalf("legacy tag of a stored manifest after Open: %v", err)
	}
	must(t, s.Delete(m))
	if _, err := s.Tag("r", "app", "kept"); !IsNotFound(err) {
		t.Errorf("legacy tag after its manifest was deleted: %v", err)
	}
}

func storeManifest(t *testing.T, s *Store, name string) digest.Digest {
	t.Helper()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","name":"` + name + `"}`)
	dg := digest.FromBytes(body)
	if _, err := s.PutManifest(body, NewManifest{Digest: dg, Repository: "r/app"}); err != nil {
		t.Fatal(err)
	}
	return dg
}

func bucketLen(t *testing.T, s *Store, name []byte) int {
	t.Helper()
	n := 0
	must(t, s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(name).ForEach(func(_, _ []byte) error { n++; return nil })
	}))
	return n
}
