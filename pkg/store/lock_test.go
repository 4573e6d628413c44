//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package store_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/store"
)

// checkInUse checks that err is the clear refusal for storeDir.
func checkInUse(t *testing.T, err error, storeDir string) *store.InUseError {
	t.Helper()
	var inUse *store.InUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second Open: %v, want an *store.InUseError", err)
	}
	if inUse.Dir != storeDir {
		t.Errorf("InUseError.Dir = %q, want %q", inUse.Dir, storeDir)
	}
	for _, want := range []string{storeDir, "in use", "junction serve", "another junction command", "stop it first"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	return inUse
}

// TestEmbeddedStoreDirIsExclusive opens an embedded store, then a second
// one on the same data directory, however it is spelled: the second is
// refused, naming the store directory, until the first is closed.
func TestEmbeddedStoreDirIsExclusive(t *testing.T) {
	for _, tc := range []struct {
		name string
		// second returns the spelling of dataDir the second Open uses.
		second func(t *testing.T, dataDir string) string
	}{
		{"same path", func(_ *testing.T, dataDir string) string { return dataDir }},
		{"relative path", func(t *testing.T, dataDir string) string {
			t.Chdir(filepath.Dir(dataDir))
			return filepath.Base(dataDir)
		}},
		{"symlink", func(t *testing.T, dataDir string) string {
			link := filepath.Join(t.TempDir(), "link")
			if err := os.Symlink(dataDir, link); err != nil {
				t.Fatal(err)
			}
			return link
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			storeDir := filepath.Join(dataDir, "jetstream")
			first, err := store.Open(t.Context(), store.DefaultConfig(), dataDir, nil, discardLog())
			if err != nil {
				t.Fatalf("first Open: %v", err)
			}
			defer first.Close()
			other := tc.second(t, dataDir)

			second, err := store.Open(t.Context(), store.DefaultConfig(), other, nil, discardLog())
			if err == nil {
				second.Close()
				t.Fatal("second Open on a data directory in use succeeded")
			}
			if inUse := checkInUse(t, err, filepath.Join(mustAbs(t, other), "jetstream")); inUse.PID != os.Getpid() {
				t.Errorf("InUseError.PID = %d, want this process's %d", inUse.PID, os.Getpid())
			}
			// The first store is untouched by the refusal.
			if !first.Healthy() {
				t.Error("first store unhealthy after the refused second Open")
			}

			first.Close()
			third, err := store.Open(t.Context(), store.DefaultConfig(), other, nil, discardLog())
			if err != nil {
				t.Fatalf("Open after the first closed: %v", err)
			}
			third.Close()
			if _, err := os.Stat(filepath.Join(storeDir, store.LockFile)); err != nil {
				t.Errorf("lock file: %v", err)
			}
		})
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestExternalStoreNotLocked: with nats.url set nothing is started on the
// data directory, so an embedded store holding it does not get in the way.
func TestExternalStoreNotLocked(t *testing.T) {
	srv := startServer(t)
	dataDir := t.TempDir()
	embedded := openEmbedded(t, store.DefaultConfig(), dataDir)
	cfg := store.DefaultConfig()
	cfg.URL = srv.ClientURL()
	cfg.AllowUnsafe = true // no monitor_urls: the guard would refuse
	for i := range 2 {
		s, err := store.Open(t.Context(), cfg, dataDir, nil, discardLog())
		if err != nil {
			t.Fatalf("external Open %d with the data directory in use: %v", i+1, err)
		}
		defer s.Close()
	}
	if !embedded.Healthy() {
		t.Error("embedded store unhealthy")
	}
}

// lockHolderEnv names the data directory TestLockHolderProcess locks.
const lockHolderEnv = "JUNCTION_TEST_STORE_LOCK_HOLDER"

// TestLockHolderProcess is not a test: run by TestKilledHolderDoesNotBlock
// in a child process, it opens an embedded store, says so, and waits to
// be killed.
func TestLockHolderProcess(t *testing.T) {
	dataDir := os.Getenv(lockHolderEnv)
	if dataDir == "" {
		t.Skip("helper process for TestKilledHolderDoesNotBlock")
	}
	s, err := store.Open(t.Context(), store.DefaultConfig(), dataDir, nil, discardLog())
	if err != nil {
		t.Fatalf("helper Open: %v", err)
	}
	defer s.Close()
	os.Stdout.WriteString("locked\n")
	time.Sleep(time.Minute)
}

// TestKilledHolderDoesNotBlock: a store held by another process is
// refused; once that process is SIGKILLed (no Close, the lock file left
// behind) it opens.
func TestKilledHolderDoesNotBlock(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHolderProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockHolderEnv+"="+dataDir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "locked" {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("helper process ended without locking the store")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("helper process did not lock the store within 30s")
	}

	s, err := store.Open(t.Context(), store.DefaultConfig(), dataDir, nil, discardLog())
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded while another process runs the embedded server on the directory")
	}
	if inUse := checkInUse(t, err, filepath.Join(dataDir, "jetstream")); inUse.PID != cmd.Process.Pid {
		t.Errorf("InUseError.PID = %d, want the holder's %d", inUse.PID, cmd.Process.Pid)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if _, err := os.Stat(filepath.Join(dataDir, "jetstream", store.LockFile)); err != nil {
		t.Fatalf("lock file after the kill: %v", err)
	}
	s, err = store.Open(t.Context(), store.DefaultConfig(), dataDir, nil, discardLog())
	if err != nil {
		t.Fatalf("Open after the holder was killed: %v", err)
	}
	s.Close()
}
