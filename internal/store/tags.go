package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Tag is a tag's last known resolution.
type Tag struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Resolved  time.Time     `json:"resolved"`
}

func tagKey(registry, repo, tag string) []byte {
	return []byte(registry + "/" + repo + ":" + tag)
}

// Tag returns the last resolution of registry/repo:tag, or ErrNotFound.
func (s *Store) Tag(registry, repo, tag string) (Tag, error) {
	var t Tag
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTags).Get(tagKey(registry, repo, tag))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &t)
	})
	if err != nil {
		return Tag{}, fmt.Errorf("tag %s/%s:%s: %w", registry, repo, tag, err)
	}
	return t, nil
}

// SetTag records a resolution of registry/repo:tag. The record lives as
// long as the manifest t.Digest is stored: one for a manifest the store
// does not hold is not kept (it could serve nothing, and its removal would
// wait for an eviction that never comes).
func (s *Store) SetTag(registry, repo, tag string, t Tag) error {
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketBlobs).Get([]byte(t.Digest)) == nil {
			return nil
		}
		k := tagKey(registry, repo, tag)
		tags, index := tx.Bucket(bucketTags), tx.Bucket(bucketTagIndex)
		if old := tags.Get(k); old != nil {
			var o Tag
			if json.Unmarshal(old, &o) == nil && o.Digest != t.Digest {
				if err := index.Delete(indexKey(o.Digest, k)); err != nil {
					return err
				}
			}
		}
		if err := index.Put(indexKey(t.Digest, k), indexed); err != nil {
			return err
		}
		return tags.Put(k, v)
	}); err != nil {
		return fmt.Errorf("store: set tag: %w", err)
	}
	return nil
}

// indexed is the value of a bucketTagIndex key (the key says it all).
var indexed = []byte{1}

func indexKey(dg digest.Digest, tagKey []byte) []byte {
	return append([]byte(string(dg)+" "), tagKey...)
}

// deleteTags removes the resolutions to dg (its manifest is going).
func deleteTags(tx *bolt.Tx, dg digest.Digest) error {
	tags, index := tx.Bucket(bucketTags), tx.Bucket(bucketTagIndex)
	c := index.Cursor()
	prefix := []byte(string(dg) + " ")
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		tk := k[len(prefix):]
		// Only if the tag still resolves to dg: a moved tag's entry was
		// removed by SetTag, but be sure.
		if v := tags.Get(tk); v != nil {
			var t Tag
			if json.Unmarshal(v, &t) != nil || t.Digest == dg {
				if err := tags.Delete(tk); err != nil {
					return err
				}
			}
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// indexTags drops tag resolutions whose manifest is not stored and indexes
// the others by digest; it returns how many it dropped.
func indexTags(tx *bolt.Tx) (int, error) {
	blobs, tags, index := tx.Bucket(bucketBlobs), tx.Bucket(bucketTags), tx.Bucket(bucketTagIndex)
	var drop, add [][]byte
	_ = tags.ForEach(func(k, v []byte) error {
		var t Tag
		if json.Unmarshal(v, &t) != nil || blobs.Get([]byte(t.Digest)) == nil {
			drop = append(drop, append([]byte(nil), k...))
			return nil
		}
		if ik := indexKey(t.Digest, k); index.Get(ik) == nil {
			add = append(add, ik)
		}
		return nil
	})
	for _, k := range drop {
		if err := tags.Delete(k); err != nil {
			return 0, err
		}
	}
	for _, ik := range add {
		if err := index.Put(ik, indexed); err != nil {
			return 0, err
		}
	}
	return len(drop), nil
}

// Filter selects objects in List.
type Filter struct {
	// Repository, if set, keeps objects first fetched for this registry/repo.
	Repository string
	// DigestPrefix, if set, keeps digests starting with it.
	DigestPrefix string
}

// List returns stored objects matching f, in digest order.
func (s *Store) List(f Filter) ([]Info, error) {
	var out []Info
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlobs).ForEach(func(k, v []byte) error {
			if f.DigestPrefix != "" && !strings.HasPrefix(string(k), f.DigestPrefix) {
				return nil
			}
			info, err := decodeInfo(v)
			if err != nil {
				return nil
			}
			if f.Repository != "" && info.Repository != f.Repository {
				return nil
			}
			out = append(out, info)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list: %w", err)
	}
	s.mu.Lock()
	for i := range out {
		if t, ok := s.touched[out[i].Digest]; ok {
			out[i].LastAccess = t
		}
	}
	s.mu.Unlock()
	return out, nil
}
