//go:build !linux

package fetch

import (
	"errors"
	"os"
)

// OpenFile is Linux-only; elsewhere callers copy with Read.
func (r *Reader) OpenFile() (*os.File, error) {
	return nil, errors.New("fetch: reopening a fill needs /proc/self/fd")
}
