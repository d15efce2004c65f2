package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

const tempPrefix = "fill-"

// TempFile creates a file for incoming content in the data directory (same
// filesystem as the store, so Commit can rename it).
func (s *Store) TempFile() (*os.File, error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return f, nil
}

// Commit makes the temporary file f visible as info.Digest, marked private
// in the same transaction when info.PrivateOrigin is set. The caller has
// already verified the digest while writing (verified=true) or Commit hashes
// the file itself. f is synced, checked for size and renamed into place; f is
// left open (the caller closes it) but its name no longer exists in tmp/.
// Committing content already present succeeds and removes f's file (and
// adds no mark: the content was let in by whoever committed it).
func (s *Store) Commit(f *os.File, info Info, verified bool) error {
	tmp := f.Name()
	fail := func(err error) error {
		_ = os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("store: sync %s: %w", info.Digest, err))
	}
	st, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("store: %w", err))
	}
	if st.Size() != info.Size {
		return fail(fmt.Errorf("%w: %s: %d bytes, expected %d", ErrDigestMismatch, info.Digest, st.Size(), info.Size))
	}
	if !verified {
		v := info.Digest.Verifier()
		if _, err := io.Copy(v, io.NewSectionReader(f, 0, st.Size())); err != nil {
			return fail(fmt.Errorf("store: verify %s: %w", info.Digest, err))
		}
		if !v.Verified() {
			return fail(fmt.Errorf("%w: %s", ErrDigestMismatch, info.Digest))
		}
	}
	dst := s.path(info.Digest)
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return fail(fmt.Errorf("store: %w", err))
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fail(fmt.Errorf("store: commit %s: %w", info.Digest, err))
	}
	syncDir(filepath.Dir(dst))
	now := time.Now()
	info.Added, info.LastAccess = now, now
	if _, err := s.record(info); err != nil {
		return err
	}
	return nil
}

// record writes info, and its private mark, unless present; it reports
// whether it was new.
func (s *Store) record(info Info) (bool, error) {
	added := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs)
		if b.Get([]byte(info.Digest)) != nil {
			return nil
		}
		v, err := encodeInfo(info)
		if err != nil {
			return err
		}
		added = true
		if err := b.Put([]byte(info.Digest), v); err != nil {
			return err
		}
		return markObject(tx, info.Digest, info.PrivateOrigin)
	})
	if err != nil {
		return false, fmt.Errorf("store: record %s: %w", info.Digest, err)
	}
	if added {
		s.mu.Lock()
		s.size += info.Size
		s.count++
		if info.Kind == KindPiece {
			s.pieces++
		}
		over := s.opts.MaxBytes > 0 && s.size > s.opts.MaxBytes
		s.mu.Unlock()
		if over {
			s.wakeEvictor()
		}
	}
	return added, nil
}

// reconcile removes leftover temporary files, drops metadata whose file is
// gone and files that have no metadata, and computes the store's size.
func (s *Store) reconcile() error {
	tmpDir := filepath.Join(s.dir, "tmp")
	entries, err := os.ReadDir(tmpDir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(tmpDir, e.Name())); err == nil {
			s.log.Info("removed leftover temporary file", "file", e.Name())
		}
	}
	known := map[string]bool{}
	var stale []digest.Digest
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlobs).ForEach(func(k, v []byte) error {
			dg := digest.Digest(k)
			info, derr := decodeInfo(v)
			if derr != nil || dg.Validate() != nil || info.Digest != dg {
				stale = append(stale, dg)
				return nil
			}
			st, err := os.Stat(s.path(dg))
			if err != nil || st.Size() != info.Size {
				stale = append(stale, dg)
				return nil
			}
			known[s.path(dg)] = true
			s.size += info.Size
			s.count++
			if info.Kind == KindPiece {
				s.pieces++
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("store: reading metadata: %w", err)
	}
	if len(stale) > 0 {
		if err := s.db.Update(func(tx *bolt.Tx) error {
			for _, dg := range stale {
				if err := tx.Bucket(bucketBlobs).Delete([]byte(dg)); err != nil {
					return err
				}
				if err := forget(tx, dg); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		for _, dg := range stale {
			if dg.Validate() == nil {
				_ = os.Remove(s.path(dg))
			}
		}
		s.log.Warn("dropped metadata without matching content", "count", len(stale))
	}
	return filepath.WalkDir(filepath.Join(s.dir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || known[p] {
			return nil
		}
		// Renamed into place but never recorded (crash between the two): it
		// was verified, but without its media type it is cheaper to refetch.
		if rerr := os.Remove(p); rerr == nil {
			s.log.Info("removed unrecorded content", "file", strings.TrimPrefix(p, s.dir))
		}
		return nil
	})
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// IsNotFound reports whether err means absent content.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
