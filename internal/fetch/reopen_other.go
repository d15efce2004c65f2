//go:build !linux

package fetch

import (
	"errors"
	"os"
)

// reopen is Linux-only; elsewhere WriteTo copies until the commit.
func (r *Reader) reopen() (*os.File, error) {
	return nil, errors.New("fetch: reopening a fill needs /proc/self/fd")
}
