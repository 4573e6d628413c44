//go:build linux

package store

import (
	"bytes"
	"context"
	"log/slog"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/logtest"
)

// TestWriteFailureRefusesAndRecovers fails the embedded server's writes
// as a full disk does (here by the process's file size limit, which
// fails a write past it as ENOSPC fails one at the disk's end), and
// checks that the store refuses inbound messages at once and is not
// ready while JetStream cannot write, waits for room before restarting
// it, and once there is room writes again without losing a message it
// acknowledged.
func TestWriteFailureRefusesAndRecovers(t *testing.T) {
	signal.Ignore(syscall.SIGXFSZ)
	t.Cleanup(func() { signal.Reset(syscall.SIGXFSZ) })
	var free atomic.Int64 // what the fake disk has free
	free.Store(restartFree - 1)
	fakeDiskFree(t, free.Load)

	var logs logtest.Buffer
	s := openLogging(t, slog.New(slog.NewJSONHandler(&logs, nil)))

	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(restore)
	small := limit
	small.Cur = 256 << 10
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &small); err != nil {
		t.Fatal(err)
	}

	body := bytes.Repeat([]byte("x"), 16<<10)
	publish := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := s.JS.Publish(ctx, SubjIngress+".pas.0."+strconv.Itoa(i), body)
		return err
	}
	acked := 0
	for ; acked < 64; acked++ {
		if publish(acked) != nil {
			break
		}
	}
	if acked == 64 {
		t.Fatal("every write was stored past the file size limit")
	}
	waitFor(t, "the write failure noticed", func() bool { return s.WriteFailed() != nil })
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"Refusing", s.Refusing()},
		{"RefusedForGood of a timeout", s.RefusedForGood(context.DeadlineExceeded)},
		{"error names the stream", strings.Contains(s.WriteFailed().Error(), StreamIngress)},
		{"log has the cause", strings.Contains(logs.String(), "file too large")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok {
				t.Errorf("false while the ingress stream cannot write: %v", s.WriteFailed())
			}
		})
	}
	// Without room, JetStream is not restarted: the failure stays.
	time.Sleep(2 * probeInterval)
	if s.WriteFailed() == nil {
		t.Fatal("write failure cleared with the disk still full")
	}

	// Space freed.
	restore()
	free.Store(restartFree)
	waitFor(t, "writing again", func() bool { return s.WriteFailed() == nil })
	if s.Refusing() {
		t.Error("still Refusing once writing again")
	}
	if err := publish(acked); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	st, err := s.JS.Stream(t.Context(), StreamIngress)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.CachedInfo().State.Msgs, uint64(acked+1); got != want {
		t.Errorf("ingress holds %d messages, want the %d acknowledged", got, want)
	}
	for _, want := range []string{"store cannot write", "restarting the embedded store's JetStream", "store writing again"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	if strings.Count(logs.String(), "store cannot write") != 1 {
		t.Errorf("the failure was logged more than once:\n%s", logs.String())
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fakeDiskFree makes the disk report free() bytes free, of 1 TiB, until
// the test ends.
func fakeDiskFree(t *testing.T, free func() int64) {
	t.Helper()
	diskFreeFunc = func(string) (int64, int64, bool) { return free(), 1 << 40, true }
	t.Cleanup(func() { diskFreeFunc = diskFree })
}

// openLogging opens an embedded store with the default config that logs
// to log, and closes it when the test ends.
func openLogging(t *testing.T, log *slog.Logger) *Store {
	t.Helper()
	s, err := Open(t.Context(), DefaultConfig(), t.TempDir(), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestRoomToRestart(t *testing.T) {
	for _, tc := range []struct {
		name        string
		free, total int64
		want        bool
	}{
		{"large disk, full", 1 << 20, 1 << 40, false},
		{"large disk, restartFree free", restartFree, 1 << 40, true},
		{"small disk, a sixteenth free", 4 << 20, 64 << 20, true},
		{"small disk, less than a sixteenth free", 4<<20 - 1, 64 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := roomToRestart(tc.free, tc.total); got != tc.want {
				t.Errorf("roomToRestart(%d, %d) = %v, want %v", tc.free, tc.total, got, tc.want)
			}
		})
	}
}

// TestJetStreamStoppedIsRestarted checks that JetStream stopped under a
// running store (as the server stops it on a write it is denied, or a
// restart that failed leaves it) counts as every stream unable to write,
// and is started again while the disk has room.
func TestJetStreamStoppedIsRestarted(t *testing.T) {
	fakeDiskFree(t, func() int64 { return 1 << 30 })
	s := openLogging(t, slog.New(slog.DiscardHandler))
	if err := s.srv.ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "JetStream running again", func() bool { return s.srv.JetStreamEnabled() && s.WriteFailed() == nil })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.JS.Publish(ctx, SubjIngress+".pas.0", []byte("x")); err != nil {
		t.Errorf("write once JetStream runs again: %v", err)
	}
}

// TestLimitRaisedWhenDiskHasRoom checks that a store at the storage limit
// the server reckoned at start writes again once the disk has room for
// more, without Junction restarting, and not before.
func TestLimitRaisedWhenDiskHasRoom(t *testing.T) {
	var free atomic.Int64
	fakeDiskFree(t, free.Load)
	var logs logtest.Buffer
	s := openLogging(t, slog.New(slog.NewJSONHandler(&logs, nil)))
	// As if the disk had had 1 MiB free at start.
	if err := s.restartJetStreamWith(1 << 20); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 32<<10)
	publish := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := s.JS.Publish(ctx, SubjIngress+".pas.0", body)
		return err
	}
	var refused error
	for range 64 {
		if refused = publish(); refused != nil {
			break
		}
	}
	if !OutOfStorage(refused) {
		t.Fatalf("filling the store to its limit ended with %v, want a refusal for want of storage", refused)
	}
	// The limit and what the store uses of it, as the gauges report
	// them: refused, the store holds within a message or two of its
	// limit, or past it by one (the server refuses writes once what the
	// store holds is over its limit, not those that would take it over).
	if limit, used, ok := s.StorageLimit(); !ok || limit != 1<<20 || used <= limit-int64(2*len(body)) || used >= limit+int64(2*len(body)) {
		t.Errorf("StorageLimit() = %d, %d, %v at the limit: want 1 MiB, and used within two messages of it", limit, used, ok)
	}
	// No room on the disk: the limit stays.
	time.Sleep(2 * probeInterval)
	if err := publish(); !OutOfStorage(err) {
		t.Fatalf("with the disk full: %v, want still refused", err)
	}
	// Room freed.
	free.Store(64 << 20)
	waitFor(t, "writing again", func() bool { return publish() == nil })
	if !strings.Contains(logs.String(), "with a higher limit") {
		t.Errorf("the raise was not logged:\n%s", logs.String())
	}
	if got := s.srv.JetStreamConfig().MaxStore; got < 32<<20 {
		t.Errorf("limit %d after the raise, want three quarters of the 64 MiB free and more", got)
	}
	if limit, _, ok := s.StorageLimit(); !ok || limit != s.srv.JetStreamConfig().MaxStore {
		t.Errorf("StorageLimit() = %d, %v after the raise, want the raised limit %d", limit, ok, s.srv.JetStreamConfig().MaxStore)
	}
}
