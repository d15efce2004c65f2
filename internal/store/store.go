// Package store keeps content-addressed blobs and manifests on disk, with
// their metadata and tag resolutions in bbolt, bounded in size by
// least-recently-used eviction.
//
// Content becomes visible only by Commit: the bytes are written to a temporary
// file in the data directory, synced, verified against their digest and size,
// then renamed into place. A crash leaves at most a temporary file, which Open
// removes.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// ErrNotFound means the store has no such content or tag.
var ErrNotFound = errors.New("store: not found")

// ErrDigestMismatch means committed bytes did not hash to their digest.
var ErrDigestMismatch = errors.New("store: digest mismatch")

var (
	bucketBlobs = []byte("blobs")
	bucketTags  = []byte("tags")
)

// Info describes one stored object.
type Info struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType,omitempty"`
	// Manifest is true for manifests (served from /manifests/).
	Manifest bool `json:"manifest,omitempty"`
	// Repository is the first repository the content was fetched for
	// (registry/repo), kept for listing and purging by repository.
	Repository string    `json:"repository,omitempty"`
	Added      time.Time `json:"added"`
	LastAccess time.Time `json:"lastAccess"`
}

// Options tune a Store. The zero value is usable.
type Options struct {
	// MaxBytes bounds the content kept; 0 means unbounded.
	MaxBytes int64
	// Logger receives eviction and recovery events (default: discard).
	Logger *slog.Logger
	// OnEvict is called with each evicted object (for metrics).
	OnEvict func(Info)
}

// Store is safe for concurrent use.
type Store struct {
	dir  string
	db   *bolt.DB
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	size    int64
	count   int
	touched map[digest.Digest]time.Time // access times not yet written to bbolt
}

// Open opens (creating if needed) the store in dir, removes leftover
// temporary files and reconciles metadata with the files present.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{dir, filepath.Join(dir, "blobs"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: opening metadata in %s: %w", dir, err)
	}
	s := &Store{dir: dir, db: db, opts: opts, log: opts.Logger, touched: map[digest.Digest]time.Time{}}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketBlobs, bucketTags} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := s.recover(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// Close writes pending access times and closes the database.
func (s *Store) Close() error {
	err := s.Flush()
	return errors.Join(err, s.db.Close())
}

// Dir is the data directory.
func (s *Store) Dir() string { return s.dir }

// Usage returns the bytes and objects stored.
func (s *Store) Usage() (bytes int64, objects int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size, s.count
}

// SetMaxBytes changes the size bound (0: unbounded) and evicts if needed.
func (s *Store) SetMaxBytes(n int64) {
	s.mu.Lock()
	s.opts.MaxBytes = n
	s.mu.Unlock()
	s.evict("")
}

func (s *Store) path(dg digest.Digest) string {
	enc := dg.Encoded()
	return filepath.Join(s.dir, "blobs", string(dg.Algorithm()), enc[:2], enc)
}

// Stat returns what the store knows of dg, or ErrNotFound.
func (s *Store) Stat(dg digest.Digest) (Info, error) {
	var info Info
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketBlobs).Get([]byte(dg))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &info)
	})
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", dg, err)
	}
	return info, nil
}

// Open opens stored content for reading and marks it used. The caller closes
// the file; eviction meanwhile is safe (the open file stays readable).
func (s *Store) Open(dg digest.Digest) (*os.File, Info, error) {
	info, err := s.Stat(dg)
	if err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(s.path(dg))
	if errors.Is(err, os.ErrNotExist) {
		// Metadata without a file (removed by hand): forget it.
		_ = s.Delete(dg)
		return nil, Info{}, fmt.Errorf("open %s: %w", dg, ErrNotFound)
	}
	if err != nil {
		return nil, Info{}, fmt.Errorf("store: open %s: %w", dg, err)
	}
	s.touch(dg)
	return f, info, nil
}

func (s *Store) touch(dg digest.Digest) {
	s.mu.Lock()
	s.touched[dg] = time.Now()
	s.mu.Unlock()
}

// Flush writes pending access times to the database.
func (s *Store) Flush() error {
	s.mu.Lock()
	pending := s.touched
	s.touched = make(map[digest.Digest]time.Time, len(pending))
	s.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs)
		for dg, t := range pending {
			v := b.Get([]byte(dg))
			if v == nil {
				continue
			}
			var info Info
			if err := json.Unmarshal(v, &info); err != nil {
				continue
			}
			info.LastAccess = t
			nv, _ := json.Marshal(info)
			if err := b.Put([]byte(dg), nv); err != nil {
				return err
			}
		}
		return nil
	})
}

// Delete removes dg's file and metadata. Deleting absent content is not an error.
func (s *Store) Delete(dg digest.Digest) error {
	var size int64 = -1
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs)
		v := b.Get([]byte(dg))
		if v == nil {
			return nil
		}
		var info Info
		if json.Unmarshal(v, &info) == nil {
			size = info.Size
		}
		return b.Delete([]byte(dg))
	})
	if err != nil {
		return fmt.Errorf("store: delete %s: %w", dg, err)
	}
	if err := os.Remove(s.path(dg)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: delete %s: %w", dg, err)
	}
	if size >= 0 {
		s.mu.Lock()
		s.size -= size
		s.count--
		delete(s.touched, dg)
		s.mu.Unlock()
	}
	return nil
}
