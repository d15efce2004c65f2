package fetch

import (
	"fmt"
	"os"
)

// OpenFile opens the fill's file anew, with a file position of its own, so
// that a caller can hand it to sendfile (which reads from the position)
// while other readers do the same. The file may already have been renamed
// into the store or removed: /proc/self/fd reaches the inode either way. Only
// the bytes Next allows may be sent from it. The caller closes it.
func (r *Reader) OpenFile() (*os.File, error) {
	rc, err := r.f.file.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd uintptr
	if err := rc.Control(func(p uintptr) { fd = p }); err != nil {
		return nil, err
	}
	f, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return nil, fmt.Errorf("fetch: reopening fill of %s: %w", r.f.req.Digest, err)
	}
	return f, nil
}
