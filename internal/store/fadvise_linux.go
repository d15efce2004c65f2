package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// AdviseSequential tells the kernel a file will be read front to back, which
// doubles its readahead window: sendfile from a blob that no longer fits in
// the page cache then reads the disk in larger pieces.
func AdviseSequential(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.Fadvise(int(fd), 0, 0, unix.FADV_SEQUENTIAL)
	})
}
