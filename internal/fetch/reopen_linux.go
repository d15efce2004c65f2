package fetch

import (
	"fmt"
	"os"

	"github.com/berth-mirror/berth/internal/store"
)

// reopen opens the fill's file anew, with a file position of its own. The
// file may already have been renamed into the store or removed:
// /proc/self/fd reaches the inode either way. Only the bytes next allows may
// be sent from it. The caller closes it.
func (r *Reader) reopen() (*os.File, error) {
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
		return nil, fmt.Errorf("fetch: reopening fill of %s: %w", r.f.dg, err)
	}
	store.AdviseSequential(f)
	return f, nil
}
