package store_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/logtest"
	"github.com/junction-fhir/junction/pkg/store"
)

// startLazyServer runs a JetStream server with nats-server's default
// persistence: an fsync every two minutes, not on every write.
func startLazyServer(t *testing.T) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		ServerName: "lazy", Host: "127.0.0.1", Port: -1, HTTPHost: "127.0.0.1", HTTPPort: -1,
		JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatalf("configuring test server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatal("test server did not become ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

func TestGuardRefusesUnsafeNATS(t *testing.T) {
	lazy := startLazyServer(t)
	safe := startServer(t)
	for _, tc := range []struct {
		name    string
		srv     *server.Server
		monitor []string
		want    []string
	}{
		{"lazy fsync", lazy, monitorURLs(lazy), []string{"server lazy: jetstream.sync_interval is", "sync_interval: always"}},
		{"no monitoring endpoint", safe, nil, []string{"nats.monitor_urls: empty", "http://HOST:8222"}},
		// The client port does not speak HTTP.
		{"unreachable monitoring endpoint", safe, []string{"http://" + safe.Addr().String()}, []string{"could not read the server's settings"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := store.DefaultConfig()
			cfg.URL = tc.srv.ClientURL()
			cfg.MonitorURLs = tc.monitor
			err := openRefused(t, cfg)
			for _, w := range append(tc.want, "refusing to start", "nats.allow_unsafe") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestGuardAllowUnsafeLogsLoudly(t *testing.T) {
	lazy := startLazyServer(t)
	cfg := store.DefaultConfig()
	cfg.URL = lazy.ClientURL()
	cfg.MonitorURLs = monitorURLs(lazy)
	cfg.AllowUnsafe = true
	var logs bytes.Buffer
	s, err := store.Open(t.Context(), cfg, t.TempDir(), nil, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("Open with allow_unsafe: %v", err)
	}
	t.Cleanup(s.Close)
	if !strings.Contains(logs.String(), `"level":"ERROR"`) || !strings.Contains(logs.String(), "UNSAFE") || !strings.Contains(logs.String(), "sync_interval") {
		t.Errorf("unsafe start not logged as an error naming the setting:\n%s", logs.String())
	}
}

func TestGuardRefusesAsyncPersistStream(t *testing.T) {
	srv := startServer(t)
	js := clientJS(t, srv)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: store.StreamOutbound, Subjects: []string{store.SubjOutbound + ".>"}, PersistMode: jetstream.AsyncPersistMode}); err != nil {
		t.Fatalf("creating an async stream: %v", err)
	}
	cfg := store.DefaultConfig()
	cfg.URL = srv.ClientURL()
	cfg.MonitorURLs = monitorURLs(srv)
	err := openRefused(t, cfg)
	if want := "stream " + store.StreamOutbound + ": uses asynchronous persist mode"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

// openRefused opens a store that must be refused, allowing for a slow
// machine (openExpectError's short deadline is for errors that come
// before any stream is created; the guard runs after).
func openRefused(t *testing.T, cfg store.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, cfg, t.TempDir(), nil, discardLog())
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded, want it refused")
	}
	return err
}

// TestGuardStartsWithOneServerDown starts a store on a three-node cluster
// that fsyncs every write while one of its servers is down, as during a
// node's drain or restart. The two that answer are a majority: any
// quorum that stores an acknowledged write holds one of them, so Junction
// starts, warning of the server it could not check. Before, it refused
// to start, and a Junction restarting in such an outage crash-looped.
// (With two down, TestMajorityChecked's rule refuses; the store has no
// quorum then, and Open fails before the guard runs.)
func TestGuardStartsWithOneServerDown(t *testing.T) {
	c := jstest.StartCluster(t, "guard-test", func(o *server.Options) { o.SyncAlways = true })
	var monitors []string
	for _, srv := range c.Servers {
		monitors = append(monitors, monitorURLs(srv)...)
	}
	cfg := store.DefaultConfig()
	cfg.Replicas = 3
	cfg.MonitorURLs = monitors
	var urls []string
	for _, srv := range c.Servers {
		urls = append(urls, srv.ClientURL())
	}
	// The streams are made while every server is up, as they are before
	// a server is drained.
	cfg.URL = strings.Join(urls, ",")
	first, err := store.Open(t.Context(), cfg, t.TempDir(), nil, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	// A server that is not the meta leader goes down, so the test does
	// not wait on an election.
	var up []string
	downed := false
	for _, srv := range c.Servers {
		if !downed && !srv.JetStreamIsLeader() {
			srv.Shutdown()
			srv.WaitForShutdown()
			downed = true
			continue
		}
		up = append(up, srv.ClientURL())
	}
	cfg.URL = strings.Join(up, ",")
	var logs logtest.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	s, err := store.Open(ctx, cfg, t.TempDir(), nil, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("Open with one of three servers down: %v", err)
	}
	s.Close()
	if !strings.Contains(logs.String(), "a NATS server's settings were not checked") {
		t.Errorf("no warning naming the server not checked:\n%s", logs.String())
	}
}
