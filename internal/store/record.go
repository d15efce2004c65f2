package store

import (
	"encoding/json"
	"time"

	"github.com/opencontainers/go-digest"
)

// Kind says what a stored object is. Reads name the kind they expect, so a
// layer is never read as a manifest (containerd's lesson: the kind of stored
// content is part of the store's API, not a flag its readers may ignore).
type Kind uint8

const (
	// KindBlob is a layer or config, streamed from disk.
	KindBlob Kind = iota
	// KindManifest is a manifest or index: small, capped, read whole.
	KindManifest
	// KindPiece is one piece of a blob (fetch.PieceKey names it), kept by
	// the cluster member that owns the piece. It cannot be verified alone
	// and is never served as a blob: only OpenPiece reads it.
	KindPiece
)

func (k Kind) String() string {
	switch k {
	case KindManifest:
		return "manifest"
	case KindPiece:
		return "piece"
	}
	return "blob"
}

// record is an object's metadata as bbolt holds it. The field names are
// those of earlier versions, so a store written by them opens unchanged.
type record struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType,omitempty"`
	Manifest  bool          `json:"manifest,omitempty"`
	Piece     bool          `json:"piece,omitempty"`
	// Declared marks a manifest's MediaType as its body's own mediaType
	// field. Earlier versions kept the first upstream's Content-Type there:
	// without the mark it is not trusted, and the manifest is typed per
	// repository on its next read.
	Declared   bool      `json:"declared,omitempty"`
	Repository string    `json:"repository,omitempty"`
	Added      time.Time `json:"added"`
	LastAccess time.Time `json:"lastAccess"`
}

func encodeInfo(info Info) ([]byte, error) {
	r := record{
		Digest: info.Digest, Size: info.Size, MediaType: info.MediaType,
		Manifest: info.Kind == KindManifest, Piece: info.Kind == KindPiece, Declared: info.Kind == KindManifest && info.MediaType != "",
		Repository: info.Repository, Added: info.Added, LastAccess: info.LastAccess,
	}
	return json.Marshal(r)
}

func decodeInfo(v []byte) (Info, error) {
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return Info{}, err
	}
	info := Info{
		Digest: r.Digest, Size: r.Size, MediaType: r.MediaType,
		Repository: r.Repository, Added: r.Added, LastAccess: r.LastAccess,
	}
	if r.Piece {
		info.Kind = KindPiece
	}
	if r.Manifest {
		info.Kind = KindManifest
		if !r.Declared {
			info.MediaType = ""
		}
	}
	return info, nil
}
