//go:build darwin || dragonfly || freebsd || linux

package store

import "syscall"

// diskFree returns the bytes free to an unprivileged writer on the
// filesystem holding dir and its size, and whether it could tell.
func diskFree(dir string) (free, total int64, ok bool) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return 0, 0, false
	}
	return int64(uint64(fs.Bavail) * uint64(fs.Bsize)), int64(uint64(fs.Blocks) * uint64(fs.Bsize)), true
}
