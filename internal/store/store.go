// Package store keeps content-addressed blobs and manifests on disk, with
// their metadata and tag resolutions in bbolt, bounded in size by
// least-recently-used eviction.
//
// Content becomes visible only by Commit: the bytes are written to a temporary
// file in the data directory, synced, verified against their digest and size,
// then renamed into place. A crash leaves at most a temporary file, which Open
// removes.
//
// Every object has a Kind, and reads name the kind they expect: OpenBlob
// streams any object, ReadManifest reads only manifests, and only up to a cap.
// Eviction runs in the background, so no commit waits for it.
package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// ErrNotFound means the store has no such content or tag.
var ErrNotFound = errors.New("store: not found")

// ErrDigestMismatch means committed bytes did not hash to their digest.
var ErrDigestMismatch = errors.New("store: digest mismatch")

// ErrNotManifest means an object asked for as a manifest is stored as a blob.
// Errors wrapping it also wrap ErrNotFound: for the manifest API the object
// does not exist.
var ErrNotManifest = errors.New("store: not a manifest")

// ErrTooLarge means a stored manifest is larger than the reader's cap.
var ErrTooLarge = errors.New("store: manifest over the size cap")

// The buckets of meta.db, each with its bound.
var (
	// bucketBlobs: one record per stored object; bounded by MaxBytes
	// through eviction.
	bucketBlobs = []byte("blobs")
	// bucketTags: one resolution per (registry/repo, tag) whose manifest is
	// stored; removed with the manifest (tags.go), so bounded by the
	// stored manifests times the tags each was resolved from.
	bucketTags = []byte("tags")
	// bucketTagIndex: "<digest> <tag key>" for each record of bucketTags,
	// so that evicting a manifest finds its tags without a scan. Same bound.
	bucketTagIndex = []byte("tag-index")
	// bucketTypes holds the media type of a manifest whose body declares
	// none, per repository that served it: "<digest> <registry/repo>".
	// Removed with the manifest: bounded by stored manifests times the
	// repositories that served each.
	bucketTypes = []byte("manifest-types")
)

// Info describes one stored object.
type Info struct {
	Digest digest.Digest
	Size   int64
	Kind   Kind
	// MediaType is a blob's Content-Type as first fetched, or a manifest's
	// own mediaType field ("" when its body has none; ReadManifest then
	// gives the type the asking repository's upstream served it with).
	MediaType string
	// Repository is the first repository the content was fetched for
	// (registry/repo), kept for listing and purging by repository.
	Repository string
	// PrivateOrigin, given to Commit, marks new content as private,
	// first fetched for this repository (named as for MarkPrivateRepo), in
	// the transaction that records it: the object is never visible
	// unmarked, and a failed fill leaves no mark. Stat and List leave it
	// empty; PrivateObject reads the mark.
	PrivateOrigin string
	Added         time.Time
	LastAccess    time.Time
}

// Options tune a Store. The zero value is usable.
type Options struct {
	// MaxBytes bounds the content kept; 0 means unbounded.
	MaxBytes int64
	// Logger receives eviction and recovery events (default: discard).
	Logger *slog.Logger
	// OnEvict is called with each evicted object (for metrics), from the
	// evicting goroutine.
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
	pieces  int                         // of count, KindPiece entries
	touched map[digest.Digest]time.Time // access times not yet written to bbolt

	ev evictor
}

// Open opens (creating if needed) the store in dir, removes leftover
// temporary files, reconciles metadata with the files present and starts
// the background evictor, which Close stops.
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
		for _, b := range [][]byte{bucketBlobs, bucketTags, bucketTagIndex, bucketTypes} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := s.reconcile(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.pruneOrphans(); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.ev.start(s)
	s.wakeEvictor()
	return s, nil
}

// Close stops the evictor, writes pending access times and closes the database.
func (s *Store) Close() error {
	s.ev.stop()
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

// Pieces returns the number of pieces stored (KindPiece, included in Usage).
func (s *Store) Pieces() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pieces
}

// SetMaxBytes changes the size bound (0: unbounded); the evictor brings the
// store under a lower bound in the background.
func (s *Store) SetMaxBytes(n int64) {
	s.mu.Lock()
	s.opts.MaxBytes = n
	s.mu.Unlock()
	s.wakeEvictor()
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
		var err error
		info, err = decodeInfo(v)
		return err
	})
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", dg, err)
	}
	return info, nil
}

// OpenBlob opens stored content of either kind for streaming and marks it
// used: a manifest's bytes are a blob too, and registries serve them from
// the blobs endpoint. Nothing is read into memory; the file is advised for
// sequential reading (it is sent front to back). The caller closes the
// file; eviction meanwhile is safe (the open file stays readable).
func (s *Store) OpenBlob(dg digest.Digest) (*os.File, Info, error) {
	return s.open(dg, KindBlob, KindManifest)
}

// OpenPiece opens a stored piece (KindPiece) by its key, as OpenBlob does
// for content: a piece is unverifiable on its own, so no other read finds it.
func (s *Store) OpenPiece(key digest.Digest) (*os.File, Info, error) {
	return s.open(key, KindPiece, KindPiece)
}

func (s *Store) open(dg digest.Digest, kinds ...Kind) (*os.File, Info, error) {
	info, err := s.Stat(dg)
	if err != nil {
		return nil, Info{}, err
	}
	if !slices.Contains(kinds, info.Kind) {
		return nil, Info{}, fmt.Errorf("open %s: a %s: %w", dg, info.Kind, ErrNotFound)
	}
	f, err := s.openFile(dg)
	if err != nil {
		return nil, Info{}, err
	}
	AdviseSequential(f)
	s.touch(dg)
	return f, info, nil
}

func (s *Store) openFile(dg digest.Digest) (*os.File, error) {
	f, err := os.Open(s.path(dg))
	if errors.Is(err, os.ErrNotExist) {
		// Metadata without a file (removed by hand): forget it.
		_ = s.Delete(dg)
		return nil, fmt.Errorf("open %s: %w", dg, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dg, err)
	}
	return f, nil
}

func (s *Store) touch(dg digest.Digest) {
	s.mu.Lock()
	s.touched[dg] = time.Now()
	s.mu.Unlock()
}

// Flush writes pending access times to the database. If that fails they
// stay pending (the next Flush writes them), so LRU order survives a
// transient metadata error.
func (s *Store) Flush() error {
	s.mu.Lock()
	pending := s.touched
	s.touched = make(map[digest.Digest]time.Time, len(pending))
	s.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs)
		for dg, t := range pending {
			v := b.Get([]byte(dg))
			if v == nil {
				continue
			}
			info, err := decodeInfo(v)
			if err != nil {
				continue
			}
			info.LastAccess = t
			nv, err := encodeInfo(info)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(dg), nv); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.requeue(pending)
		return fmt.Errorf("store: writing access times: %w", err)
	}
	return nil
}

// requeue puts access times that could not be written back, unless the
// object was used again meanwhile (the newer time wins).
func (s *Store) requeue(pending map[digest.Digest]time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for dg, t := range pending {
		if cur, ok := s.touched[dg]; !ok || cur.Before(t) {
			s.touched[dg] = t
		}
	}
}

// Delete removes dg's file and metadata. Deleting absent content is not an error.
func (s *Store) Delete(dg digest.Digest) error {
	_, err := s.deleteBatch([]digest.Digest{dg}, nil)
	return err
}

// deleteBatch removes the given objects in one transaction, then their
// files, and returns what it removed. skip, if set, is consulted inside the
// transaction and keeps an object. The totals change by exactly the sizes
// recorded in the removed records; a record that cannot be decoded was never
// counted (reconcile drops those) and is removed without changing them.
func (s *Store) deleteBatch(dgs []digest.Digest, skip func(Info) bool) ([]Info, error) {
	var removed []Info
	var undecodable []digest.Digest
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs)
		for _, dg := range dgs {
			v := b.Get([]byte(dg))
			if v == nil {
				continue
			}
			info, derr := decodeInfo(v)
			if derr == nil && skip != nil && skip(info) {
				continue
			}
			if err := b.Delete([]byte(dg)); err != nil {
				return err
			}
			if err := forget(tx, dg); err != nil {
				return err
			}
			if derr != nil {
				undecodable = append(undecodable, dg)
				continue
			}
			removed = append(removed, info)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: delete: %w", err)
	}
	var ferr error
	for _, dg := range undecodable {
		ferr = errors.Join(ferr, s.removeFile(dg))
	}
	s.mu.Lock()
	for _, info := range removed {
		s.size -= info.Size
		s.count--
		if info.Kind == KindPiece {
			s.pieces--
		}
		delete(s.touched, info.Digest)
	}
	s.mu.Unlock()
	for _, info := range removed {
		ferr = errors.Join(ferr, s.removeFile(info.Digest))
	}
	return removed, ferr
}

func (s *Store) removeFile(dg digest.Digest) error {
	if err := os.Remove(s.path(dg)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: delete %s: %w", dg, err)
	}
	return nil
}
