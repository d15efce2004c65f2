package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

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
	// bucketPrivateRepos: repository → when it was marked; at most
	// maxPrivateRepos, the least recently marked dropped first (a dropped
	// repository is asked anonymously again, and marked again if it
	// refuses: its cached content keeps its own marks).
	bucketPrivateRepos = []byte("private-repos")
	// bucketPrivateObjects: digest → origin repository, for stored objects
	// only: written with the object's record (Info.PrivateOrigin), removed
	// with it (eviction, Delete), and at Open for objects not stored (marks
	// written ahead of a fill that failed, by MarkPrivateObject).
	bucketPrivateObjects = []byte("private-objects")
)

// maxPrivateRepos bounds bucketPrivateRepos: 10,000 distinct names asked
// for must not grow meta.db by megabytes.
const maxPrivateRepos = 1024

// MarkPrivateRepo records that a repository (named by the caller, e.g. its
// endpoint URL and name) refused anonymous access upstream. Past
// maxPrivateRepos marks the oldest quarter is dropped.
func (s *Store) MarkPrivateRepo(target string) error {
	var at [8]byte
	binary.BigEndian.PutUint64(at[:], uint64(time.Now().UnixNano()))
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketPrivateRepos)
		if err != nil {
			return err
		}
		if b.Get([]byte(target)) == nil && b.Stats().KeyN >= maxPrivateRepos {
			if err := dropOldest(b, maxPrivateRepos/4); err != nil {
				return err
			}
		}
		return b.Put([]byte(target), at[:])
	})
	if err != nil {
		return fmt.Errorf("store: %s: %w", bucketPrivateRepos, err)
	}
	return nil
}

// dropOldest deletes the n keys of b with the oldest mark times (values of
// earlier versions, a single byte, count as oldest).
func dropOldest(b *bolt.Bucket, n int) error {
	type mark struct {
		k  []byte
		at uint64
	}
	var all []mark
	_ = b.ForEach(func(k, v []byte) error {
		m := mark{k: append([]byte(nil), k...)}
		if len(v) == 8 {
			m.at = binary.BigEndian.Uint64(v)
		}
		all = append(all, m)
		return nil
	})
	sort.Slice(all, func(i, j int) bool { return all[i].at < all[j].at })
	for _, m := range all[:min(n, len(all))] {
		if err := b.Delete(m.k); err != nil {
			return err
		}
	}
	return nil
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
//
// Deprecated: a mark written ahead of a fill stays until the next Open if
// the fill fails. Give the origin to the commit instead: Info.PrivateOrigin
// for Commit, NewManifest.PrivateOrigin for PutManifest.
func (s *Store) MarkPrivateObject(dg digest.Digest, origin string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return markObject(tx, dg, origin)
	})
	if err != nil {
		return fmt.Errorf("store: marking %s private: %w", dg, err)
	}
	return nil
}

// markObject marks dg as first fetched for origin unless origin is "" or
// dg is marked already.
func markObject(tx *bolt.Tx, dg digest.Digest, origin string) error {
	if origin == "" {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bucketPrivateObjects)
	if err != nil {
		return err
	}
	if b.Get([]byte(dg)) != nil {
		return nil
	}
	return b.Put([]byte(dg), []byte(origin))
}

// pruneOrphans drops, at Open (no fill in flight), the private marks and
// tag resolutions of objects the store does not hold: marks written ahead of
// a fill that failed, and what earlier versions left behind at eviction. It
// also indexes tag resolutions by digest (bucketTagIndex) where earlier
// versions did not.
func (s *Store) pruneOrphans() error {
	var marks, tags int
	err := s.db.Update(func(tx *bolt.Tx) error {
		blobs := tx.Bucket(bucketBlobs)
		if b := tx.Bucket(bucketPrivateObjects); b != nil {
			var drop [][]byte
			_ = b.ForEach(func(k, _ []byte) error {
				if blobs.Get(k) == nil {
					drop = append(drop, append([]byte(nil), k...))
				}
				return nil
			})
			for _, k := range drop {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			marks = len(drop)
		}
		var err error
		tags, err = indexTags(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: pruning metadata: %w", err)
	}
	if marks+tags > 0 {
		s.log.Info("dropped metadata of content not stored", "private_marks", marks, "tags", tags)
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
