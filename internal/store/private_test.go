package store

import (
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestPrivateMarks(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dg := digest.FromString("private")
	if _, err := s.PrivateObject(dg); !IsNotFound(err) {
		t.Fatalf("unmarked object: %v, want not found", err)
	}
	if has, err := s.HasPrivateObjects(); err != nil || has {
		t.Fatalf("HasPrivateObjects on a new store: %v %v", has, err)
	}
	if repos, err := s.PrivateRepos(); err != nil || len(repos) != 0 {
		t.Fatalf("PrivateRepos on a new store: %v %v", repos, err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.MarkPrivateRepo("http://r/team/app"))
	must(s.MarkPrivateObject(dg, "http://r/team/app"))
	must(s.MarkPrivateObject(dg, "http://r/other")) // the first origin stays
	must(s.Close())

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
