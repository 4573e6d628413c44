package store

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// An embedded server whose stream fails a write (the disk full: ENOSPC)
// keeps that stream failing every later write, stored nowhere and
// answered to no one, until JetStream restarts, however much space is
// freed. The probe looks for such a stream each second: while there is
// one, the store refuses inbound messages at once (Refusing, WriteFailed)
// rather than let each sender wait out the write's timeout, and once the
// disk has room again (roomToRestart) it restarts JetStream, at most
// every restartEvery, which recovers the streams from disk as a start
// does.
const (
	restartFree  = 64 << 20
	restartEvery = 30 * time.Second
)

// roomToRestart reports whether a filesystem of total bytes with free
// bytes free has room to write again: restartFree, or a sixteenth of a
// smaller filesystem.
func roomToRestart(free, total int64) bool {
	return free >= min(restartFree, total/16)
}

// diskFreeFunc is diskFree, replaced in tests.
var diskFreeFunc = diskFree

// DiskFree returns, for the embedded store, the bytes free to it on the
// filesystem holding its directory and that filesystem's size; ok is
// false for an external store, or where it cannot tell.
func (s *Store) DiskFree() (free, total int64, ok bool) {
	if s.srv == nil {
		return 0, 0, false
	}
	return diskFree(s.storeDir)
}

// StorageLimit returns, for the embedded store, the storage limit its
// JetStream runs with (reckoned at start as three quarters of the disk
// then free plus what the store held, or raised since by checkLimit) and
// the bytes its streams use against it; past the limit the store refuses
// writes, whatever the disk has free. ok is false for an external store,
// whose servers' limits are their own, or while JetStream is not running.
func (s *Store) StorageLimit() (limit, used int64, ok bool) {
	if s.srv == nil {
		return 0, 0, false
	}
	js, err := s.srv.Jsz(nil)
	if err != nil || js.Disabled || js.Config.MaxStore <= 0 {
		return 0, 0, false
	}
	return js.Config.MaxStore, int64(js.Store), true
}

// writeFailure is a stream of the embedded server that has stopped
// writing, as the server's health check reports it.
type writeFailure struct {
	stream string
	err    string
}

// WriteFailed returns an error while a stream of the embedded server has
// stopped writing after a write error (see checkWrites), else nil.
func (s *Store) WriteFailed() error {
	if f := s.writeFailed.Load(); f != nil {
		return fmt.Errorf("stream %s cannot write until space is freed (see the log)", f.stream)
	}
	return nil
}

// checkWrites notes whether a stream of the embedded server has stopped
// writing, logging when that starts and ends, and restarts JetStream to
// clear it once the disk has room.
func (s *Store) checkWrites() {
	if s.srv == nil {
		return
	}
	f := streamWriteFailure(s.srv)
	if f == nil {
		if s.writeFailed.Swap(nil) != nil {
			s.log.Info("store writing again")
		}
		s.checkLimit()
		return
	}
	if s.writeFailed.Swap(f) == nil {
		s.log.Error("store cannot write: a stream failed a write (the disk full?) and stores nothing more until JetStream restarts; refusing inbound messages and not ready, restarting JetStream once the disk has room",
			"stream", f.stream, "err", f.err)
	}
	if !s.restartedAt.IsZero() && time.Since(s.restartedAt) < restartEvery {
		return
	}
	free, total, known := diskFreeFunc(s.storeDir)
	if known && !roomToRestart(free, total) {
		return
	}
	s.restartedAt = time.Now()
	attrs := []any{"stream", f.stream}
	if known {
		attrs = append(attrs, "free_bytes", free)
	}
	s.log.Warn("restarting the embedded store's JetStream to clear the write failure", attrs...)
	if err := s.restartJetStream(); err != nil {
		s.log.Error("restarting the embedded store's JetStream failed; restart Junction", "err", err.Error())
	}
}

// streamWriteFailure returns the first stream of srv that has stopped
// writing, or nil. JetStream stopped (the server stops it on some write
// errors, and a restart that failed leaves it stopped) stops them all.
func streamWriteFailure(srv *server.Server) *writeFailure {
	if !srv.JetStreamEnabled() {
		return &writeFailure{stream: "(every stream)", err: "JetStream is not running"}
	}
	h := srv.Healthz(&server.HealthzOptions{Details: true})
	for _, e := range h.Errors {
		if e.Type == server.HealthzErrorStream && strings.Contains(e.Error, "write error") {
			msg := e.Error
			if _, rest, ok := strings.Cut(msg, "write error: "); ok {
				msg = rest
			}
			return &writeFailure{stream: e.Stream, err: msg}
		}
	}
	return nil
}

// checkLimit raises the embedded server's storage limit when the store
// has reached it and the disk now has room for more. The server reckons
// the limit once, at start, as three quarters of the disk free then plus
// of what the store held: space freed later (a file destination's output
// collected, another file deleted) would not let a store at its limit
// write again until Junction restarted. With the limit within a
// sixteenth (at most 64 MiB) of what the store holds, and three quarters
// of what is free now plus what the store holds above it by as much
// again, JetStream is restarted with that limit (at most every
// restartEvery).
func (s *Store) checkLimit() {
	if !s.restartedAt.IsZero() && time.Since(s.restartedAt) < restartEvery {
		return
	}
	js, err := s.srv.Jsz(nil)
	if err != nil || js.Disabled {
		return
	}
	limit, used := js.Config.MaxStore, int64(js.Store)
	margin := min(restartFree, limit/16)
	if limit <= 0 || used < limit-margin {
		return
	}
	free, _, known := diskFreeFunc(s.storeDir)
	if !known {
		return
	}
	raised := (free + used) / 4 * 3
	if raised < limit+margin {
		return
	}
	s.restartedAt = time.Now()
	s.log.Warn("store at its storage limit with room on the disk: restarting the embedded store's JetStream with a higher limit",
		"limit_bytes", limit, "used_bytes", used, "free_bytes", free, "new_limit_bytes", raised)
	if err := s.restartJetStreamWith(raised); err != nil {
		s.log.Error("restarting the embedded store's JetStream failed; restart Junction", "err", err.Error())
	}
}

// restartJetStream stops the embedded server's JetStream and starts it
// again with the settings it last started with (its size limit among
// them, reckoned from the disk at start), recovering every stream from
// disk.
func (s *Store) restartJetStream() error { return s.restartJetStreamWith(0) }

// restartJetStreamWith is restartJetStream with the storage limit
// maxStore instead, when it is above 0.
func (s *Store) restartJetStreamWith(maxStore int64) error {
	if s.jsConfig == nil {
		return errors.New("JetStream's settings at start are not known")
	}
	next := *s.jsConfig
	if maxStore > 0 {
		next.MaxStore = maxStore
	}
	// EnableJetStream makes its own directory in the one it is given, as
	// at start.
	next.StoreDir = s.storeDir
	if err := s.srv.ShutdownJetStream(); err != nil {
		return fmt.Errorf("stopping JetStream: %w", err)
	}
	if err := s.srv.EnableJetStream(&next); err != nil {
		return fmt.Errorf("starting JetStream: %w", err)
	}
	s.jsConfig = s.srv.JetStreamConfig()
	return nil
}
