package store

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// NewManifest describes a manifest for PutManifest.
type NewManifest struct {
	Digest digest.Digest
	// Repository is the registry/repo it was fetched for.
	Repository string
	// DeclaredType is the body's own mediaType field, "" if it has none. It
	// holds for every repository, as the digest covers it.
	DeclaredType string
	// UpstreamType is the Content-Type Repository's upstream served it with.
	// Used when DeclaredType is "", and then for Repository only: another
	// registry serving the same bytes may label them differently, and one
	// must not decide for the other.
	UpstreamType string
	// PrivateOrigin, if set, marks the manifest private content first
	// fetched for this repository (named as for MarkPrivateRepo), in the
	// transaction that records it or, when it is already stored, that
	// retypes it; an existing mark is kept (MarkPrivateObject).
	PrivateOrigin string
}

// PutManifest stores body (already verified to be within the caller's cap)
// as a manifest, verifying it against m.Digest first, and returns its Info as
// ReadManifest gives it to m.Repository. An object already stored as a blob
// (a manifest fetched from the blobs endpoint) becomes a manifest.
func (s *Store) PutManifest(body []byte, m NewManifest) (Info, error) {
	if m.Digest.Validate() != nil || m.Digest.Algorithm().FromBytes(body) != m.Digest {
		return Info{}, fmt.Errorf("%w: manifest %s", ErrDigestMismatch, m.Digest)
	}
	info, err := s.Stat(m.Digest)
	switch {
	case err == nil:
		if err := s.retype(m); err != nil {
			return Info{}, err
		}
		s.touch(m.Digest)
	case IsNotFound(err):
		info = Info{Digest: m.Digest, Size: int64(len(body)), Kind: KindManifest, MediaType: m.DeclaredType, Repository: m.Repository,
			PrivateOrigin: m.PrivateOrigin}
		if err := s.commitBytes(body, info); err != nil {
			return Info{}, err
		}
		// Also when the object was committed meanwhile by another path
		// (a blob fill of the same bytes): it is a manifest now.
		if err := s.retype(m); err != nil {
			return Info{}, err
		}
	default:
		return Info{}, err
	}
	info.Kind = KindManifest
	info.MediaType = m.DeclaredType
	if info.MediaType == "" {
		info.MediaType = m.UpstreamType
	}
	return info, nil
}

func (s *Store) commitBytes(body []byte, info Info) error {
	f, err := s.TempFile()
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(body); err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("store: %w", err)
	}
	return s.Commit(f, info, true)
}

// retype records m's kind and type on an existing object: the manifest kind
// and declared type on its record, or the upstream's type for m.Repository;
// and m's private mark.
func (s *Store) retype(m NewManifest) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs)
		v := b.Get([]byte(m.Digest))
		if v == nil {
			return ErrNotFound
		}
		info, err := decodeInfo(v)
		if err != nil {
			return err
		}
		if err := markObject(tx, m.Digest, m.PrivateOrigin); err != nil {
			return err
		}
		if info.Kind != KindManifest || info.MediaType != m.DeclaredType {
			info.Kind, info.MediaType = KindManifest, m.DeclaredType
			nv, err := encodeInfo(info)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(m.Digest), nv); err != nil {
				return err
			}
		}
		if m.DeclaredType != "" {
			return nil
		}
		return tx.Bucket(bucketTypes).Put(typeKey(m.Digest, m.Repository), []byte(m.UpstreamType))
	})
	if err != nil {
		return fmt.Errorf("store: manifest %s: %w", m.Digest, err)
	}
	return nil
}

// ReadManifest returns the bytes of the manifest dg and its Info, with the
// MediaType repo is served: the body's own, or else the one repo's upstream
// gave it. It reads at most max bytes. It fails with ErrNotFound when dg is
// absent, when it is a blob (also ErrNotManifest), or when its body declares
// no type and repo's upstream has not given one yet (the caller fetches it
// from that upstream); with ErrTooLarge when it is over max.
func (s *Store) ReadManifest(repo string, dg digest.Digest, max int64) ([]byte, Info, error) {
	var info Info
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketBlobs).Get([]byte(dg))
		if v == nil {
			return ErrNotFound
		}
		var err error
		if info, err = decodeInfo(v); err != nil {
			return err
		}
		if info.Kind != KindManifest {
			return fmt.Errorf("%w (%w)", ErrNotFound, ErrNotManifest)
		}
		if info.MediaType == "" {
			t := tx.Bucket(bucketTypes).Get(typeKey(dg, repo))
			if t == nil {
				return fmt.Errorf("%w: no media type for %s", ErrNotFound, repo)
			}
			info.MediaType = string(t)
		}
		return nil
	})
	if err != nil {
		return nil, Info{}, fmt.Errorf("read manifest %s: %w", dg, err)
	}
	if info.Size < 0 || info.Size > max {
		return nil, Info{}, fmt.Errorf("%w: %s is %d bytes, the cap is %d", ErrTooLarge, dg, info.Size, max)
	}
	f, err := s.openFile(dg)
	if err != nil {
		return nil, Info{}, err
	}
	defer f.Close()
	// Bounded by the cap, not by the record: the file is read no further
	// than max+1 bytes whatever its size on disk.
	b := make([]byte, info.Size+1)
	n, err := io.ReadFull(io.LimitReader(f, max+1), b)
	if err != nil && err != io.ErrUnexpectedEOF {
		return nil, Info{}, fmt.Errorf("store: read %s: %w", dg, err)
	}
	if int64(n) != info.Size {
		return nil, Info{}, fmt.Errorf("store: %s: size changed on disk", dg)
	}
	s.touch(dg)
	return b[:n], info, nil
}

func typeKey(dg digest.Digest, repo string) []byte {
	return []byte(string(dg) + " " + repo)
}

// forget removes what the store keeps about dg besides its record: its
// per-repository types, private mark and tag resolutions.
func forget(tx *bolt.Tx, dg digest.Digest) error {
	if err := deletePrefix(tx.Bucket(bucketTypes), dg); err != nil {
		return err
	}
	if err := deleteTags(tx, dg); err != nil {
		return err
	}
	if b := tx.Bucket(bucketPrivateObjects); b != nil {
		return b.Delete([]byte(dg))
	}
	return nil
}

// deletePrefix removes the keys "<dg> …" of b.
func deletePrefix(b *bolt.Bucket, dg digest.Digest) error {
	c := b.Cursor()
	prefix := []byte(string(dg) + " ")
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}
