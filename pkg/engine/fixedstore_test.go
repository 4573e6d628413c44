package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jstest"
)

// TestCreateStreamsFalse runs engines on a NATS server whose streams and
// buckets an operator keeps (nats.create_streams: false): an engine
// refuses to start while one is missing, creates nothing itself, and
// changes nothing it finds: a bucket an operator made with more history
// keeps it.
func TestCreateStreamsFalse(t *testing.T) {
	srv, js := startNATS(t, 0)
	routes, err := filepath.Abs("../../routes")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := func(create bool) error {
		return startAndStop(t, dir, engineConfig(dir, routes)+fmt.Sprintf("patient_index:\n  enabled: true\nnats:\n  url: %s\n  monitor_urls: [http://%s]\n  create_streams: %t\n", srv.ClientURL(), srv.MonitorAddr(), create))
	}
	names := func() []string {
		var got []string
		for n := range js.StreamNames(t.Context()).Name() {
			got = append(got, n)
		}
		return got
	}

	err = start(false)
	if err == nil || !strings.Contains(err.Error(), "does not exist and nats.create_streams is false") {
		t.Fatalf("start on an empty server: %v, want a refusal naming what is missing", err)
	}
	if got := names(); len(got) != 0 {
		t.Errorf("an engine with create_streams false made %v", got)
	}

	if err := start(true); err != nil {
		t.Fatalf("start with create_streams true: %v", err)
	}
	made := names()
	if !slices.Contains(made, "KV_consent_key") || !slices.Contains(made, "KV_JUNCTION_PATIENTS") {
		t.Fatalf("streams after a start with create_streams true: %v, want the consent_key and patient index buckets among them", made)
	}
	// The operator keeps more history in the patient index than Junction
	// asks for.
	kv, err := js.KeyValue(t.Context(), "JUNCTION_PATIENTS")
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config
	cfg.MaxMsgsPerSubject = 4
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if err := start(false); err != nil {
		t.Fatalf("start with create_streams false on what the first made: %v", err)
	}
	if h := history(t, js, "KV_JUNCTION_PATIENTS"); h != 4 {
		t.Errorf("patient index history = %d after a start with create_streams false, want the operator's 4 kept", h)
	}

	if err := js.DeleteStream(t.Context(), "KV_JUNCTION_PATIENTS"); err != nil {
		t.Fatal(err)
	}
	err = start(false)
	if err == nil || !strings.Contains(err.Error(), "bucket JUNCTION_PATIENTS: bucket does not exist and nats.create_streams is false") {
		t.Fatalf("start without the patient index bucket: %v, want a refusal naming it", err)
	}
	if slices.Contains(names(), "KV_JUNCTION_PATIENTS") {
		t.Error("an engine with create_streams false made the patient index bucket")
	}
}

func history(t *testing.T, js jetstream.JetStream, stream string) int64 {
	t.Helper()
	st, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config.MaxMsgsPerSubject
}

// startNATS runs a nats-server with JetStream (at most maxStore bytes of
// file storage if not zero, and payloads up to 16 MiB, as inputs accept)
// and its monitoring endpoint, for an engine to use as an external store,
// and returns it with a JetStream handle on it.
func startNATS(t *testing.T, maxStore int64) (*server.Server, jetstream.JetStream) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, HTTPHost: "127.0.0.1", HTTPPort: -1,
		JetStream: true, StoreDir: t.TempDir(), SyncAlways: true,
		JetStreamMaxStore: maxStore, MaxPayload: 16 << 20, NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return srv, jstest.Connect(t, srv.ClientURL())
}

// engineConfig is the start of a config file for an engine on dir with
// the routes directory routes and the three inputs on free ports.
func engineConfig(dir, routes string) string {
	return fmt.Sprintf("data_dir: %s\nhttp:\n  listen: 127.0.0.1:0\nroutes: [%s]\ninputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n  pathology:\n    type: pathology\n    listen: 127.0.0.1:0\n  fhir:\n    type: fhir\n", dir, routes)
}

// startAndStop starts an engine on config body and shuts it down,
// returning the error Start gave.
func startAndStop(t *testing.T, dir, body string) error {
	t.Helper()
	return startAndStopLogging(t, dir, body, slog.New(slog.DiscardHandler))
}

// startAndStopLogging is startAndStop with an engine that logs to log.
func startAndStopLogging(t *testing.T, dir, body string, log *slog.Logger) error {
	t.Helper()
	e := engineLogging(t, dir, body, log)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	serr := e.Start(ctx)
	if serr == nil {
		if err := e.Shutdown(ctx); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	}
	return serr
}
