package store_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/logtest"
	"github.com/junction-fhir/junction/pkg/store"
)

// startLazyServer runs a JetStream server with nats-server's default
// persistence: an fsync every two minutes, not on every write.
func startLazyServer(t *testing.T) *server.Server {
	t.Helper()
	return startServerWith(t, func(o *server.Options) {
		o.ServerName = "lazy"
		o.SyncAlways = false
	})
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
	s, err := store.Open(t.Context(), cfg, t.TempDir(), nil, jsonLog(&logs))
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
	cfg := onServer(store.DefaultConfig(), srv)
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
	return openFailsWithin(t, cfg, 30*time.Second)
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
	c, cfg := startCluster(t, "guard-test")
	// The streams are made while every server is up, as they are before
	// a server is drained.
	openSettled(t, cfg, discardLog()).Close()
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
	openSettled(t, cfg, jsonLog(&logs)).Close()
	if !strings.Contains(logs.String(), "a NATS server's settings were not checked") {
		t.Errorf("no warning naming the server not checked:\n%s", logs.String())
	}
}
