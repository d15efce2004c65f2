//go:build !linux

package store

import "os"

// AdviseSequential is a no-op where fadvise is not available.
func AdviseSequential(*os.File) {}
