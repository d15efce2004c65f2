package store

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Private marks: which repositories needed credentials upstream, and which
// content was first fetched for one of them (with the registry/repository it
// came from). They survive restarts so that cached private content is never
// served as public after one. They hold names and digests only, never a
// credential. Buckets are created on first use so that the store's schema
// stays as it was for those who never see a private repository.
var (
	bucketPrivateRepos   = []byte("private-repos")
	bucketPrivateObjects = []byte("private-objects")
)

// MarkPrivateRepo records that a repository (named by the caller, e.g. its
// endpoint URL and name) refused anonymous access upstream.
func (s *Store) MarkPrivateRepo(target string) error {
	return s.putMark(bucketPrivateRepos, []byte(target), []byte{1})
}

// UnmarkPrivateRepo forgets a repository's private mark (its upstream now
// answers anonymous requests). Content marks stay: they say where content
// came from.
func (s *Store) UnmarkPrivateRepo(target string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketPrivateRepos); b != nil {
			return b.Delete([]byte(target))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: %s: %w", bucketPrivateRepos, err)
	}
	return nil
}

// PrivateRepos lists the repositories marked private.
func (s *Store) PrivateRepos() ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPrivateRepos)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: private repositories: %w", err)
	}
	return out, nil
}

// MarkPrivateObject records that dg was first fetched for the private
// repository origin (named as for MarkPrivateRepo). An existing mark is kept: the origin is
// where the content was first seen.
func (s *Store) MarkPrivateObject(dg digest.Digest, origin string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketPrivateObjects)
		if err != nil {
			return err
		}
		if b.Get([]byte(dg)) != nil {
			return nil
		}
		return b.Put([]byte(dg), []byte(origin))
	})
	if err != nil {
		return fmt.Errorf("store: marking %s private: %w", dg, err)
	}
	return nil
}

// PrivateObject returns the origin repository of private content dg, or
// ErrNotFound (unwrapped: this is asked on every request, and a miss is the
// common case) when dg was never fetched for a private repository.
func (s *Store) PrivateObject(dg digest.Digest) (string, error) {
	var origin string
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPrivateObjects)
		if b == nil {
			return ErrNotFound
		}
		v := b.Get([]byte(dg))
		if v == nil {
			return ErrNotFound
		}
		origin = string(v)
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("store: private mark %s: %w", dg, err)
	}
	return origin, err
}

// HasPrivateObjects reports whether any content is marked private, so that
// a node that never saw a private repository pays nothing per request.
func (s *Store) HasPrivateObjects() (bool, error) {
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketPrivateObjects); b != nil {
			k, _ := b.Cursor().First()
			found = k != nil
		}
		return nil
	})
	return found, err
}

func (s *Store) putMark(bucket, k, v []byte) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.Put(k, v)
	})
	if err != nil {
		return fmt.Errorf("store: %s: %w", bucket, err)
	}
	return nil
}
