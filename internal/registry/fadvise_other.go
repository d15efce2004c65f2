//go:build !linux

package registry

import "os"

func adviseSequential(*os.File) {}
