//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package store

import "os"

// tryLock does not lock on this platform: the embedded store directory is
// not protected from a second server here.
func tryLock(*os.File) (bool, error) { return true, nil }

// unlock has nothing to drop on this platform.
func unlock(*os.File) error { return nil }
