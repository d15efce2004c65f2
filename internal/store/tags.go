package store

import (
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

// SetTag records a resolution of registry/repo:tag.
func (s *Store) SetTag(registry, repo, tag string, t Tag) error {
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTags).Put(tagKey(registry, repo, tag), v)
	}); err != nil {
		return fmt.Errorf("store: set tag: %w", err)
	}
	return nil
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
