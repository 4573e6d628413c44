package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockFile is the name of the lock file in the embedded store directory.
// Whoever runs the embedded server on the directory holds an exclusive
// advisory lock (flock) on it for as long as the server runs: two servers
// on one store would each read what the other has not yet flushed, and
// can damage it. The kernel drops the lock when its holder exits, however
// it exits, so a file left by a killed process does not block the next.
const LockFile = "junction.lock"

// InUseError is returned by Open when another embedded server, in this
// process or another, runs on the store directory.
type InUseError struct {
	// Dir is the store directory, made absolute.
	Dir string
	// PID is the process id the holder wrote in the lock file, or 0 when
	// it could not be read.
	PID int
}

// Error names the directory and says what to do; it holds no message data.
func (e *InUseError) Error() string {
	holder := ""
	if e.PID > 0 {
		holder = fmt.Sprintf(" (its lock file names pid %d)", e.PID)
	}
	return fmt.Sprintf("the embedded NATS store %s is in use: the engine (junction serve) or another junction command is running on this data_dir%s; stop it first", e.Dir, holder)
}

// dirLock is a held lock on a store directory.
type dirLock struct {
	f *os.File
}

// lockDir takes the lock on dir without waiting. It returns an
// *InUseError when another holder has it.
func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening store lock file: %w", err)
	}
	ok, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking store directory %s: %w", dir, err)
	}
	if !ok {
		f.Close()
		abs, aerr := filepath.Abs(dir)
		if aerr != nil {
			abs = dir
		}
		return nil, &InUseError{Dir: abs, PID: holderPID(path)}
	}
	// The pid only helps a person find the holder; the lock is the flock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f: f}, nil
}

// holderPID reads the pid the lock's holder wrote, or 0.
func holderPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// release drops the lock. The file stays: removing it could let two
// processes lock different files of the same name.
func (l *dirLock) release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := errors.Join(unlock(l.f), l.f.Close())
	l.f = nil
	if err != nil {
		return fmt.Errorf("releasing store lock: %w", err)
	}
	return nil
}
