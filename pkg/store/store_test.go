package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/logtest"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/testnet"
)

// serverDefaultDuplicates is the dedupe window nats-server gives a stream
// whose config leaves it zero (the quarantine stream).
const serverDefaultDuplicates = 2 * time.Minute

// discardLog returns a logger that drops everything.
func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testConfig returns the embedded defaults with non-default retention and
// dedupe settings, so a test can tell the stream settings came from it.
func testConfig() store.Config {
	cfg := store.DefaultConfig()
	cfg.DedupeWindow = 90 * time.Minute
	cfg.IngressMaxAge = 48 * time.Hour
	cfg.OutboundMaxAge = 72 * time.Hour
	cfg.QuarantineMaxAge = 240 * time.Hour
	cfg.QuarantineMaxBytes = 64 << 20
	cfg.Partitions = 7
	return cfg
}

// openEmbedded opens an embedded store on dir and closes it when the test
// ends.
func openEmbedded(t *testing.T, cfg store.Config, dir string) *store.Store {
	t.Helper()
	return openLogged(t, cfg, dir, discardLog())
}

// openLogged opens a store with cfg on dir that logs to log, and closes
// it when the test ends.
func openLogged(t *testing.T, cfg store.Config, dir string, log *slog.Logger) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), cfg, dir, nil, log)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// startServer runs a standalone JetStream server on a random loopback port.
func startServer(t *testing.T) *server.Server {
	t.Helper()
	return startServerWith(t, nil)
}

// startServerWith is startServer with the options changed by edit.
func startServerWith(t *testing.T, edit func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{
		ServerName: "store-test",
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		SyncAlways: true,
		HTTPHost:   "127.0.0.1",
		HTTPPort:   -1,
		NoLog:      true,
		NoSigs:     true,
	}
	if edit != nil {
		edit(opts)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("configuring test server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatal("test server did not become ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// clientJS returns a JetStream handle on srv, on a connection of its own
// closed when the test ends.
func clientJS(t *testing.T, srv *server.Server) jetstream.JetStream {
	t.Helper()
	return jstest.Connect(t, srv.ClientURL())
}

// monitorURLs returns the monitoring endpoint of srv, for the durability
// guard.
func monitorURLs(srv *server.Server) []string {
	return []string{"http://" + srv.MonitorAddr().String()}
}

// onServer returns cfg with the client and monitoring URLs of the
// external server srv.
func onServer(cfg store.Config, srv *server.Server) store.Config {
	cfg.URL = srv.ClientURL()
	cfg.MonitorURLs = monitorURLs(srv)
	return cfg
}

// jsonLog returns a logger that writes JSON lines to w.
func jsonLog(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// startCluster runs a three-node cluster named name whose servers fsync
// every write, and returns it with the default store config for three
// replicas on it, naming every server's client and monitoring URL.
func startCluster(t *testing.T, name string) (*jstest.Cluster, store.Config) {
	t.Helper()
	c := jstest.StartCluster(t, name, func(o *server.Options) { o.SyncAlways = true })
	return c, clusterConfig(c)
}

// clusterConfig is the store's defaults with three replicas on c, each of
// its servers named for clients and monitoring.
func clusterConfig(c *jstest.Cluster) store.Config {
	cfg := store.DefaultConfig()
	cfg.Replicas = 3
	var urls []string
	for _, srv := range c.Servers {
		urls = append(urls, srv.ClientURL())
		cfg.MonitorURLs = append(cfg.MonitorURLs, monitorURLs(srv)...)
	}
	cfg.URL = strings.Join(urls, ",")
	return cfg
}

// openSettled opens a store with cfg that logs to log, allowing a minute
// for a cluster to settle, and closes it when the test ends.
func openSettled(t *testing.T, cfg store.Config, log *slog.Logger) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := store.Open(ctx, cfg, t.TempDir(), nil, log)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// waitFor calls check every 50 ms until it returns nil, and fails the
// test with the last error it returned if that has not happened within d.
func waitFor(t *testing.T, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// streamView is the part of a stream's config Junction decides.
type streamView struct {
	Subjects   []string
	Retention  jetstream.RetentionPolicy
	Storage    jetstream.StorageType
	Discard    jetstream.DiscardPolicy
	Replicas   int
	MaxAge     time.Duration
	MaxBytes   int64
	Duplicates time.Duration
	DenyDelete bool
	DenyPurge  bool
	// AllowDirect: direct gets, on with one replica only.
	AllowDirect bool
	Compression jetstream.StoreCompression
}

func viewOf(c jetstream.StreamConfig) streamView {
	return streamView{
		Subjects: c.Subjects, Retention: c.Retention, Storage: c.Storage, Discard: c.Discard,
		Replicas: c.Replicas, MaxAge: c.MaxAge, MaxBytes: c.MaxBytes, Duplicates: c.Duplicates,
		DenyDelete: c.DenyDelete, DenyPurge: c.DenyPurge, AllowDirect: c.AllowDirect,
		Compression: c.Compression,
	}
}

// wantStreams is what the server should hold after Open with cfg.
func wantStreams(cfg store.Config) map[string]streamView {
	limits := func(subj string, maxAge, dup time.Duration) streamView {
		return streamView{
			Subjects: []string{subj}, Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage,
			Discard: jetstream.DiscardOld, Replicas: cfg.Replicas, MaxAge: maxAge, MaxBytes: -1, Duplicates: dup,
			AllowDirect: cfg.Replicas == 1,
		}
	}
	quarantine := limits("junction.quarantine.>", cfg.QuarantineMaxAge, serverDefaultDuplicates)
	quarantine.MaxBytes = cfg.QuarantineMaxBytes
	audit := limits("junction.audit.>", 0, cfg.DedupeWindow)
	audit.DenyDelete, audit.DenyPurge = true, true
	audit.Compression = jetstream.S2Compression
	if cfg.Replicas > 1 {
		audit.Compression = jetstream.NoCompression
	}
	return map[string]streamView{
		"JUNCTION_INGRESS":    limits("junction.in.>", cfg.IngressMaxAge, cfg.DedupeWindow),
		"JUNCTION_OUTBOUND":   limits("junction.out.>", cfg.OutboundMaxAge, cfg.DedupeWindow),
		"JUNCTION_DEADLETTER": limits("junction.dlq.>", 0, 2*time.Minute),
		"JUNCTION_AUDIT":      audit,
		"JUNCTION_INGEST_LOG": limits("junction.log.>", cfg.IngressMaxAge, 2*time.Minute),
		"JUNCTION_QUARANTINE": quarantine,
	}
}

// gotStreams reads every stream on the server.
func gotStreams(t *testing.T, js jetstream.JetStream) map[string]streamView {
	t.Helper()
	got := map[string]streamView{}
	lister := js.ListStreams(t.Context())
	for info := range lister.Info() {
		got[info.Config.Name] = viewOf(info.Config)
	}
	if err := lister.Err(); err != nil {
		t.Fatalf("listing streams: %v", err)
	}
	return got
}

func TestOpenEmbeddedCreatesStreams(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func() store.Config
	}{
		{"defaults", store.DefaultConfig},
		{"custom windows", testConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg()
			dir := t.TempDir()
			s := openEmbedded(t, cfg, dir)
			if diff := cmp.Diff(wantStreams(cfg), gotStreams(t, s.JS)); diff != "" {
				t.Errorf("streams (-want +got):\n%s", diff)
			}
			if !s.Embedded() {
				t.Error("Embedded() = false for an empty URL")
			}
			if !s.Healthy() {
				t.Error("Healthy() = false on a fresh store")
			}
			if got := s.Partitions(); got != cfg.Partitions {
				t.Errorf("Partitions() = %d, want %d", got, cfg.Partitions)
			}
			if got := s.GroupCommit(); got != cfg.GroupCommit {
				t.Errorf("GroupCommit() = %v, want %v", got, cfg.GroupCommit)
			}
			if fi, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil || !fi.IsDir() {
				t.Errorf("store directory %s/jetstream: %v", dir, err)
			}
		})
	}
}

// TestStreamConfigsMatchServer checks that what StreamConfigs declares is
// what the server holds, so callers can rely on it.
func TestStreamConfigsMatchServer(t *testing.T) {
	s := openEmbedded(t, testConfig(), t.TempDir())
	got := gotStreams(t, s.JS)
	var names []string
	for _, c := range s.StreamConfigs() {
		names = append(names, c.Name)
		want := viewOf(c)
		if want.Duplicates == 0 {
			want.Duplicates = serverDefaultDuplicates
		}
		if diff := cmp.Diff(want, got[c.Name]); diff != "" {
			t.Errorf("stream %s (-declared +server):\n%s", c.Name, diff)
		}
	}
	wantNames := []string{store.StreamIngress, store.StreamOutbound, store.StreamDeadLetter, store.StreamAudit, store.StreamIngestLog, store.StreamQuarantine}
	slices.Sort(names)
	slices.Sort(wantNames)
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("StreamConfigs names (-want +got):\n%s", diff)
	}
}

func TestOpenEmbeddedReopenKeepsMessages(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	cfg := testConfig()
	payloads := [][]byte{[]byte("MSH|^~\\&|PAS|TRUST|one"), []byte("MSH|^~\\&|PAS|TRUST|two"), []byte("MSH|^~\\&|PAS|TRUST|three")}

	first, err := store.Open(ctx, cfg, dir, nil, discardLog())
	if err != nil {
		t.Fatalf("first Open: %v", err)
	}
	for i, p := range payloads {
		if _, err := first.JS.Publish(ctx, store.SubjIngress+".pas.0", p, jetstream.WithMsgID("id-"+string(rune('a'+i)))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	first.Close()

	second := openEmbedded(t, cfg, dir)
	st, err := second.JS.Stream(ctx, store.StreamIngress)
	if err != nil {
		t.Fatalf("ingress stream after reopen: %v", err)
	}
	var got [][]byte
	for seq := uint64(1); seq <= uint64(len(payloads)); seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("GetMsg(%d) after reopen: %v", seq, err)
		}
		got = append(got, m.Data)
	}
	if diff := cmp.Diff(payloads, got); diff != "" {
		t.Errorf("stored messages after reopen (-want +got):\n%s", diff)
	}
	// The dedupe window survives a restart: a resend after reopening is
	// recognised.
	ack, err := second.JS.Publish(ctx, store.SubjIngress+".pas.0", payloads[0], jetstream.WithMsgID("id-a"))
	if err != nil {
		t.Fatalf("resend after reopen: %v", err)
	}
	if !ack.Duplicate {
		t.Errorf("resend after reopen: Duplicate = false, want true (seq %d)", ack.Sequence)
	}
}

func TestEmbeddedMaxPayload(t *testing.T) {
	s := openEmbedded(t, store.DefaultConfig(), t.TempDir())
	if got := s.MaxPayload(); got != store.EmbeddedMaxPayload {
		t.Errorf("MaxPayload() = %d, want %d", got, store.EmbeddedMaxPayload)
	}
	// Larger than nats-server's 1 MiB default: accepted and stored whole.
	big := bytes.Repeat([]byte("x"), 3<<20)
	ack, err := s.JS.Publish(t.Context(), store.SubjIngress+".fhir.0", big)
	if err != nil {
		t.Fatalf("publishing %d bytes: %v", len(big), err)
	}
	st, err := s.JS.Stream(t.Context(), store.StreamIngress)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(t.Context(), ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Data) != len(big) {
		t.Errorf("stored %d bytes, want %d", len(m.Data), len(big))
	}
}

func TestOpenEmbeddedReportsStreamRefusal(t *testing.T) {
	// nats-server refuses a dedupe window longer than the stream's max
	// age; Open must fail (at once: no retries in embedded mode) naming the
	// stream.
	cfg := store.DefaultConfig()
	cfg.DedupeWindow = 2 * time.Hour
	cfg.IngressMaxAge = time.Hour
	s, err := store.Open(t.Context(), cfg, t.TempDir(), nil, discardLog())
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded with dedupe_window > ingress_max_age")
	}
	if !strings.Contains(err.Error(), "creating stream "+store.StreamIngress) {
		t.Errorf("error %q does not name stream %s", err, store.StreamIngress)
	}
}

func TestCloseIdempotent(t *testing.T) {
	srv := startServer(t)
	for _, tc := range []struct {
		name string
		url  string
	}{
		{"embedded", ""},
		{"external", srv.ClientURL()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := store.DefaultConfig()
			cfg.URL = tc.url
			if tc.url != "" {
				cfg.MonitorURLs = monitorURLs(srv)
			}
			s, err := store.Open(t.Context(), cfg, t.TempDir(), nil, discardLog())
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			s.Close()
			s.Close()
			if s.Healthy() {
				t.Error("Healthy() = true after Close")
			}
			if !s.NC.IsClosed() {
				t.Error("connection still open after Close")
			}
		})
	}
	// Closing an external store leaves the server alone.
	if !srv.Running() {
		t.Error("external server stopped by Close")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*store.Config)
		want []string // the setting each error names, in order
	}{
		{"defaults", func(*store.Config) {}, nil},
		{"replicas 0", func(c *store.Config) { c.Replicas = 0 }, []string{"nats.replicas", "nats.replicas"}},
		{"replicas 0 external", func(c *store.Config) { c.URL, c.Replicas = "nats://n1:4222", 0 }, []string{"nats.replicas"}},
		{"replicas 6 external", func(c *store.Config) { c.URL, c.Replicas = "nats://n1:4222", 6 }, []string{"nats.replicas"}},
		{"replicas 5 external", func(c *store.Config) { c.URL, c.Replicas = "nats://n1:4222", 5 }, nil},
		{"replicas 3 external", func(c *store.Config) { c.URL, c.Replicas = "nats://n1:4222", 3 }, nil},
		{"replicas 3 embedded", func(c *store.Config) { c.Replicas = 3 }, []string{"nats.replicas"}},
		{"partitions 0", func(c *store.Config) { c.Partitions = 0 }, []string{"nats.partitions"}},
		{"partitions 1", func(c *store.Config) { c.Partitions = 1 }, nil},
		{"partitions 1024", func(c *store.Config) { c.Partitions = 1024 }, nil},
		{"partitions 1025", func(c *store.Config) { c.Partitions = 1025 }, []string{"nats.partitions"}},
		{"partitions negative", func(c *store.Config) { c.Partitions = -3 }, []string{"nats.partitions"}},
		{"dedupe zero", func(c *store.Config) { c.DedupeWindow = 0 }, []string{"nats.dedupe_window"}},
		{"dedupe negative", func(c *store.Config) { c.DedupeWindow = -time.Second }, []string{"nats.dedupe_window"}},
		// The store refuses a dedupe window longer than a stream's max age.
		{"dedupe longer than outbound max age", func(c *store.Config) { c.OutboundMaxAge = 30 * time.Second }, []string{"nats.outbound_max_age"}},
		{"dedupe longer than ingress max age", func(c *store.Config) { c.IngressMaxAge = time.Minute }, []string{"nats.ingress_max_age"}},
		{"dedupe as long as the max ages", func(c *store.Config) { c.IngressMaxAge, c.OutboundMaxAge = time.Hour, time.Hour }, nil},
		{"max ages kept for ever", func(c *store.Config) { c.IngressMaxAge, c.OutboundMaxAge, c.QuarantineMaxAge = 0, 0, 0 }, nil},
		{"max ages negative", func(c *store.Config) {
			c.IngressMaxAge, c.OutboundMaxAge, c.QuarantineMaxAge = -time.Hour, -time.Hour, -time.Hour
		},
			[]string{"nats.ingress_max_age", "nats.outbound_max_age", "nats.quarantine_max_age"}},
		{"listen with an external server", func(c *store.Config) { c.URL, c.Listen = "nats://n1:4222", "127.0.0.1:4222" }, []string{"nats.listen"}},
		{"quarantine too small", func(c *store.Config) { c.QuarantineMaxBytes = 1 << 19 }, []string{"nats.quarantine_max_bytes"}},
		{"quarantine 1 MiB", func(c *store.Config) { c.QuarantineMaxBytes = 1 << 20 }, nil},
		{"pings too often", func(c *store.Config) { c.PingInterval = 50 * time.Millisecond }, []string{"nats.ping_interval"}},
		{"pings every 100ms", func(c *store.Config) { c.PingInterval = 100 * time.Millisecond }, nil},
		{"pings a minute apart, 10 missed", func(c *store.Config) { c.PingInterval, c.MaxPingsOut = time.Minute, 10 }, nil},
		{"no pings missed", func(c *store.Config) { c.MaxPingsOut = 0 }, []string{"nats.max_pings_out"}},
		{"101 pings missed", func(c *store.Config) { c.MaxPingsOut = 101 }, []string{"nats.max_pings_out"}},
		{"password in the url", func(c *store.Config) { c.URL = "nats://n1:4222,tls://junction:S3cret@n2:4222" }, []string{"nats.url"}},
		{"password in a url without a scheme", func(c *store.Config) { c.URL = "junction:S3cret@n2:4222" }, []string{"nats.url"}},
		{"host and port alone", func(c *store.Config) { c.URL = "n1:4222, n2:4222" }, nil},
		{"credentials inline", func(c *store.Config) {
			c.URL, c.Credentials = "nats://n1:4222", "-----BEGIN NATS USER JWT-----xyz"
		}, []string{"nats.credentials"}},
		{"credentials from the environment", func(c *store.Config) { c.URL, c.Credentials = "nats://n1:4222", "env:CREDS" }, []string{"nats.credentials"}},
		{"credentials by file", func(c *store.Config) { c.URL, c.Credentials = "nats://n1:4222", "file:/run/secrets/junction.creds" }, nil},
		{"nkey seed by file", func(c *store.Config) { c.URL, c.NkeySeed = "nats://n1:4222", "file:/run/secrets/junction.nk" }, nil},
		{"nkey seed inline", func(c *store.Config) { c.URL, c.NkeySeed = "nats://n1:4222", "SUAB" }, []string{"nats.nkey_seed"}},
		{"nkey seed and credentials", func(c *store.Config) {
			c.URL, c.NkeySeed, c.Credentials = "nats://n1:4222", "file:/run/secrets/junction.nk", "file:/run/secrets/junction.creds"
		}, []string{"nats.nkey_seed"}},
		{"tls by reference", func(c *store.Config) {
			c.URL, c.TLS = "tls://n1:4222", &store.TLSConfig{CA: "file:/ca.pem", Cert: "file:/c.pem", Key: "file:/k.pem"}
		}, nil},
		{"tls inline or half", func(c *store.Config) {
			c.URL, c.TLS = "tls://n1:4222", &store.TLSConfig{CA: "env:CA", Cert: "file:/c.pem"}
		},
			[]string{"nats.tls.ca", "nats.tls"}},
		{"everything wrong", func(c *store.Config) { c.Replicas, c.Partitions, c.DedupeWindow = 9, 0, 0 },
			[]string{"nats.replicas", "nats.partitions", "nats.dedupe_window", "nats.replicas"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := store.DefaultConfig()
			tc.edit(&cfg)
			var got []string
			for _, err := range cfg.Validate() {
				field, _, ok := strings.Cut(err.Error(), ":")
				if !ok {
					t.Errorf("error %q does not start with the setting's name", err)
				}
				got = append(got, field)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Validate() settings named (-want +got):\n%s", diff)
			}
		})
	}
}

// openExternal opens a store with cfg against a server of its own,
// started for the test, and returns both.
func openExternal(t *testing.T, cfg store.Config) (*store.Store, *server.Server) {
	t.Helper()
	srv := startServer(t)
	return openOn(t, srv, cfg), srv
}

// openOn opens a store with cfg on the external server srv and closes it
// when the test ends.
func openOn(t *testing.T, srv *server.Server, cfg store.Config) *store.Store {
	t.Helper()
	return openLogged(t, onServer(cfg, srv), t.TempDir(), discardLog())
}

func TestOpenExternalCreatesStreams(t *testing.T) {
	cfg := testConfig()
	s, srv := openExternal(t, cfg)
	cfg = onServer(cfg, srv)
	if diff := cmp.Diff(wantStreams(cfg), gotStreams(t, s.JS)); diff != "" {
		t.Errorf("streams (-want +got):\n%s", diff)
	}
	if s.Embedded() {
		t.Error("Embedded() = true with a URL")
	}
	if got, want := s.MaxPayload(), int64(server.MAX_PAYLOAD_SIZE); got != want {
		t.Errorf("MaxPayload() = %d, want the server's %d", got, want)
	}

	// A second process opening the same streams changes nothing.
	openOn(t, srv, cfg).Close()
	if diff := cmp.Diff(wantStreams(cfg), gotStreams(t, s.JS)); diff != "" {
		t.Errorf("streams after a second Open (-want +got):\n%s", diff)
	}
}

// TestOpenExternalWithNkey: against a server that lists its users by
// NKey, Open connects with nkey_seed; without a seed, or with another
// user's, the server refuses it, and a file that holds no seed is
// reported by name without its content.
func TestOpenExternalWithNkey(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	srv := startServerWith(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return "file:" + p
	}
	ours, theirs, junk := write("ours.nk", seed), write("theirs.nk", otherSeed), write("junk.nk", []byte("not a seed at all: SECRETISH"))
	cfg := onServer(testConfig(), srv)

	cfg.NkeySeed = ours
	s, err := store.Open(t.Context(), cfg, t.TempDir(), nil, discardLog())
	if err != nil {
		t.Fatalf("Open with the listed user's seed: %v", err)
	}
	if diff := cmp.Diff(wantStreams(cfg), gotStreams(t, s.JS)); diff != "" {
		t.Errorf("streams (-want +got):\n%s", diff)
	}
	s.Close()

	for _, tc := range []struct{ name, seed, want string }{
		{"no seed", "", "authorization"},
		{"another user's seed", theirs, "authorization"},
		{"not a seed", junk, "nats.nkey_seed: reading the seed in " + strings.TrimPrefix(junk, "file:")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			c.NkeySeed = tc.seed
			err := openExpectError(t, c)
			if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.want)) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "SECRETISH") || strings.Contains(err.Error(), string(seed)) {
				t.Errorf("error %q shows what the seed file holds", err)
			}
		})
	}
}

// openExpectError opens cfg and returns the error Open must report. Open
// retries for up to a minute against an external server while it may be
// settling, so the context ends it sooner: after long enough for one
// attempt on a busy machine, shorter than the 2s before Open would try
// again.
func openExpectError(t *testing.T, cfg store.Config) error {
	t.Helper()
	return openFailsWithin(t, cfg, 1500*time.Millisecond)
}

// openFailsWithin opens cfg, giving Open d, and returns the error it must
// report.
func openFailsWithin(t *testing.T, cfg store.Config, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	s, err := store.Open(ctx, cfg, t.TempDir(), nil, discardLog())
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded, want an error")
	}
	return err
}

// openExpectPrompt opens cfg, which only an operator can make start, and
// returns the error Open must report at once rather than after waiting
// for a cluster to settle.
func openExpectPrompt(t *testing.T, cfg store.Config) error {
	t.Helper()
	start := time.Now()
	s, err := store.Open(t.Context(), cfg, t.TempDir(), nil, discardLog())
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded, want an error")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Open took %s to report streams it may not change; want no retrying", took.Round(time.Second))
	}
	return err
}

func TestOpenExternalMissingStreams(t *testing.T) {
	srv := startServer(t)
	cfg := onServer(store.DefaultConfig(), srv)
	cfg.CreateStreams = false
	err := openExpectPrompt(t, cfg)
	for _, name := range []string{store.StreamIngress, store.StreamOutbound, store.StreamDeadLetter, store.StreamAudit, store.StreamIngestLog, store.StreamQuarantine} {
		want := "stream " + name + " does not exist and nats.create_streams is false"
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Nothing was created.
	js := clientJS(t, srv)
	if got := gotStreams(t, js); len(got) != 0 {
		t.Errorf("streams created with create_streams false: %v", slices.Sorted(maps.Keys(got)))
	}
}

func TestOpenExternalFewerReplicas(t *testing.T) {
	// A single non-clustered server holds only R1 streams, so the streams
	// are created with one replica and then opened with a config wanting
	// three. Raising replicas successfully needs a 3-node cluster, which is
	// too slow to start for this package's test budget; the chart's
	// deployment exercises it.
	srv := startServer(t)
	cfg := onServer(store.DefaultConfig(), srv)
	openOn(t, srv, cfg).Close() // creates the R1 streams

	for _, tc := range []struct {
		name   string
		create bool
		want   func(stream string) string
	}{
		{"create_streams false", false, func(name string) string {
			return "stream " + name + " has 1 replicas, config wants 3"
		}},
		{"create_streams true on a single node", true, func(name string) string {
			return "updating stream " + name + " (replicas, max age and bytes, dedupe window, direct get):"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := cfg
			cfg.Replicas = 3
			cfg.CreateStreams = tc.create
			open := openExpectError
			if !tc.create {
				open = openExpectPrompt // only an operator can raise them
			}
			err := open(t, cfg)
			for _, name := range []string{store.StreamIngress, store.StreamAudit, store.StreamQuarantine} {
				if want := tc.want(name); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

func TestOpenExternalReferences(t *testing.T) {
	// Open must refuse these before connecting; the URL points at nothing.
	const url = "nats://127.0.0.1:1"
	missing := filepath.Join(t.TempDir(), "missing.creds")
	for _, tc := range []struct {
		name  string
		creds string
		tls   *store.TLSConfig
		want  string
	}{
		{"credentials env", "env:NATS_CREDS", nil, "nats.credentials: must be a file:PATH reference"},
		{"credentials bare path", "/etc/junction/nats.creds", nil, "nats.credentials: must be a file:PATH reference"},
		{"credentials empty file ref", "file:", nil, "nats.credentials: must be a file:PATH reference"},
		{"ca env", "", &store.TLSConfig{CA: "env:NATS_CA"}, "nats.tls.ca: must be a file:PATH reference"},
		{"cert env", "", &store.TLSConfig{Cert: "env:NATS_CERT", Key: "file:/k.pem"}, "nats.tls.cert: must be a file:PATH reference"},
		{"key env", "", &store.TLSConfig{Cert: "file:/c.pem", Key: "env:NATS_KEY"}, "nats.tls.key: must be a file:PATH reference"},
		{"key without cert", "", &store.TLSConfig{Key: "file:/k.pem"}, "nats.tls.cert: must be a file:PATH reference"},
		{"cert without key", "", &store.TLSConfig{Cert: "file:/c.pem"}, "nats.tls.key: must be a file:PATH reference"},
		{"credentials file missing", "file:" + missing, nil, "connecting to NATS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := store.DefaultConfig()
			cfg.URL = url
			cfg.Credentials = tc.creds
			cfg.TLS = tc.tls
			s, err := store.Open(t.Context(), cfg, t.TempDir(), nil, discardLog())
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestReopenAppliesChangedWindows: a changed dedupe window or max age in
// the config reaches streams that already exist, and the change is logged
// with the values before and after (processes sharing a store with
// different settings would otherwise change them back and forth unseen).
// A start that changes nothing logs nothing.
func TestReopenAppliesChangedWindows(t *testing.T) {
	dir := t.TempDir()
	cfg := store.DefaultConfig()
	var unchanged logtest.Buffer
	for range 2 {
		openLogged(t, cfg, dir, jsonLog(&unchanged)).Close()
	}
	if strings.Contains(unchanged.String(), "stream settings changed") {
		t.Errorf("starts with the same config logged a change:\n%s", unchanged.String())
	}
	cfg.DedupeWindow = 10 * time.Minute
	cfg.IngressMaxAge = 48 * time.Hour
	var logs logtest.Buffer
	st := openLogged(t, cfg, dir, jsonLog(&logs))
	s, err := st.JS.Stream(context.Background(), store.StreamIngress)
	if err != nil {
		t.Fatal(err)
	}
	got := s.CachedInfo().Config
	if got.Duplicates != 10*time.Minute || got.MaxAge != 48*time.Hour {
		t.Errorf("ingress stream: duplicates %s, max age %s; want 10m, 48h", got.Duplicates, got.MaxAge)
	}
	for _, want := range []string{`"stream":"` + store.StreamIngress + `"`, `"dedupe_window":"1h0m0s -> 10m0s"`, `"max_age":"168h0m0s -> 48h0m0s"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the change was not logged with %s:\n%s", want, logs.String())
		}
	}
}

// TestReopenKeepsOperatorLimits: the limits an operator set by hand on
// the streams Junction gives none (dead letters, audit) survive a start,
// ages as sizes.
func TestReopenKeepsOperatorLimits(t *testing.T) {
	srv := startServer(t)
	js := clientJS(t, srv)
	cfg := testConfig()
	openOn(t, srv, cfg).Close()
	const age, size = 90 * 24 * time.Hour, int64(1 << 30)
	for _, name := range []string{store.StreamDeadLetter, store.StreamAudit} {
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		c.MaxAge, c.MaxBytes = age, size
		if _, err := js.UpdateStream(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	openOn(t, srv, cfg)
	for _, name := range []string{store.StreamDeadLetter, store.StreamAudit} {
		t.Run(name, func(t *testing.T) {
			s, err := js.Stream(t.Context(), name)
			if err != nil {
				t.Fatal(err)
			}
			if c := s.CachedInfo().Config; c.MaxAge != age || c.MaxBytes != size {
				t.Errorf("after a start: max age %s, max bytes %d; want the operator's %s, %d", c.MaxAge, c.MaxBytes, age, size)
			}
		})
	}
}

// TestReopenCompressesAudit: an audit stream made before Junction asked
// for compression is given it at the next start, which says so, and
// keeps its records.
func TestReopenCompressesAudit(t *testing.T) {
	srv := startServer(t)
	js := clientJS(t, srv)
	cfg := testConfig()
	var old jetstream.StreamConfig
	for _, c := range openOn(t, srv, cfg).StreamConfigs() {
		if c.Name == store.StreamAudit {
			old = c
		}
	}
	if err := js.DeleteStream(t.Context(), store.StreamAudit); err != nil {
		t.Fatal(err)
	}
	old.Compression = jetstream.NoCompression
	if _, err := js.CreateStream(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), store.SubjAudit+".x", []byte(`{"kind":"received"}`)); err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	openLogged(t, onServer(cfg, srv), t.TempDir(), jsonLog(&logs))
	s, err := js.Stream(t.Context(), store.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Config.Compression != jetstream.S2Compression {
		t.Errorf("audit stream compression %s, want s2", info.Config.Compression)
	}
	if info.State.Msgs != 1 {
		t.Errorf("audit stream holds %d records after the change, want 1", info.State.Msgs)
	}
	if want := `"compression":"None -> S2"`; !strings.Contains(logs.String(), want) {
		t.Errorf("the change was not logged with %s:\n%s", want, logs.String())
	}
}

// TestReopenWithOtherPartitionsRefused: the partition count is kept with
// the partitioned streams, and a process configured with another count is
// refused, naming the count to set, since it would leave queued messages
// in partitions no process reads.
func TestReopenWithOtherPartitionsRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := store.DefaultConfig()
	cfg.Partitions = 16
	openEmbedded(t, cfg, dir).Close()
	cfg.Partitions = 8
	st, err := store.Open(t.Context(), cfg, dir, nil, discardLog())
	if err == nil {
		st.Close()
		t.Fatal("opened with 8 partitions a store written with 16")
	}
	for _, want := range []string{"nats.partitions is 8", "stream JUNCTION_INGRESS was written with 16 partitions", "stream JUNCTION_OUTBOUND", "set it back to 16"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	cfg.Partitions = 16
	openEmbedded(t, cfg, dir).Close() // the count it was written with
}

// TestReopenKeepsMaxAgeThatWouldDelete: a shorter max age in the config
// is not given to a stream holding messages older than it (they may still
// be waiting for delivery), and those messages stay.
func TestReopenKeepsMaxAgeThatWouldDelete(t *testing.T) {
	dir := t.TempDir()
	cfg := store.DefaultConfig()
	st := openEmbedded(t, cfg, dir)
	if _, err := st.JS.Publish(t.Context(), store.SubjOutbound+".test.0", []byte("queued")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	time.Sleep(1500 * time.Millisecond) // the message is now older than the new max age
	cfg.OutboundMaxAge, cfg.DedupeWindow = time.Second, time.Second
	st = openEmbedded(t, cfg, dir)
	s, err := st.JS.Stream(t.Context(), store.StreamOutbound)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != store.DefaultConfig().OutboundMaxAge || info.State.Msgs != 1 {
		t.Errorf("outbound stream: max age %s with %d messages; want %s kept, and the message", info.Config.MaxAge, info.State.Msgs, store.DefaultConfig().OutboundMaxAge)
	}
	// The dedupe window, which deletes nothing, follows the config.
	if info.Config.Duplicates != time.Second {
		t.Errorf("outbound stream: duplicates %s, want 1s", info.Config.Duplicates)
	}
}

// TestQuarantineBound: the quarantine is bounded by
// nats.quarantine_max_bytes, also when an older version made it without a
// bound; a size limit an operator set on another stream stays; and a bound
// the disk cannot reserve leaves the quarantine unbounded rather than
// stopping the engine.
func TestQuarantineBound(t *testing.T) {
	ctx := context.Background()
	maxBytes := func(t *testing.T, st *store.Store, name string) int64 {
		t.Helper()
		s, err := st.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config.MaxBytes
	}
	t.Run("bounded, an operator's limit kept", func(t *testing.T) {
		dir := t.TempDir()
		cfg := store.DefaultConfig()
		st := openEmbedded(t, cfg, dir)
		// As an older version left it, and an operator's own limit.
		for name, mb := range map[string]int64{store.StreamQuarantine: -1, store.StreamIngress: 64 << 20} {
			s, err := st.JS.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			c := s.CachedInfo().Config
			c.MaxBytes = mb
			if _, err := st.JS.UpdateStream(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		st.Close()
		cfg.QuarantineMaxBytes = 8 << 20
		st = openEmbedded(t, cfg, dir)
		if got := maxBytes(t, st, store.StreamQuarantine); got != 8<<20 {
			t.Errorf("quarantine max bytes %d, want %d", got, 8<<20)
		}
		if got := maxBytes(t, st, store.StreamIngress); got != 64<<20 {
			t.Errorf("ingress max bytes %d, want the operator's %d", got, 64<<20)
		}
	})
	t.Run("too large to reserve", func(t *testing.T) {
		cfg := store.DefaultConfig()
		cfg.QuarantineMaxBytes = 1 << 55
		st := openEmbedded(t, cfg, t.TempDir())
		if got := maxBytes(t, st, store.StreamQuarantine); got != -1 {
			t.Errorf("quarantine max bytes %d, want none (-1)", got)
		}
	})
}

// TestHealthyFollowsProbes checks that a store whose connection is up but
// which cannot serve the ingress stream (here deleted, as on a server
// restarted without its storage) stops being healthy within a few
// probes, and is healthy again once it can.
func TestHealthyFollowsProbes(t *testing.T) {
	s := openEmbedded(t, store.DefaultConfig(), t.TempDir())
	var mu sync.Mutex
	var told []bool
	s.OnHealth(func(ok bool) {
		mu.Lock()
		told = append(told, ok)
		mu.Unlock()
	})
	if !s.Healthy() {
		t.Fatal("a store just opened is not healthy")
	}
	st, err := s.JS.Stream(t.Context(), store.StreamIngress)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if err := s.JS.DeleteStream(t.Context(), store.StreamIngress); err != nil {
		t.Fatal(err)
	}
	waitHealthy := func(want bool) {
		t.Helper()
		waitFor(t, 10*time.Second, func() error {
			if s.Healthy() != want {
				return fmt.Errorf("Healthy() still %v after 10s", !want)
			}
			return nil
		})
	}
	waitHealthy(false)
	if !s.NC.IsConnected() {
		t.Fatal("the connection went down; the probe is what should have noticed")
	}
	if _, err := s.JS.CreateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	waitHealthy(true)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(told, false) {
		t.Errorf("OnHealth was told %v, never false", told)
	}
}

// TestExternalConnectionEventsLogged: losing and regaining the
// connection to an external NATS is logged, naming the server.
func TestExternalConnectionEventsLogged(t *testing.T) {
	srv := startServer(t)
	cfg := onServer(testConfig(), srv)
	var logged logtest.Buffer
	s := openLogged(t, cfg, t.TempDir(), slog.New(slog.NewTextHandler(&logged, nil)))
	// The server dropping the connection makes the client reconnect.
	id, err := s.NC.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.DisconnectClientByID(id); err != nil {
		t.Fatal(err)
	}
	// Each line names the server.
	lineWith := func(out, msg string) bool {
		for line := range strings.Lines(out) {
			if strings.Contains(line, msg) && strings.Contains(line, srv.ClientURL()) {
				return true
			}
		}
		return false
	}
	waitFor(t, 10*time.Second, func() error {
		out := logged.String()
		if lineWith(out, "disconnected from NATS") && lineWith(out, "reconnected to NATS") {
			return nil
		}
		return fmt.Errorf("disconnect and reconnect not both logged with the server:\n%s", out)
	})
	// Stopping is not a disconnect to warn about.
	before := strings.Count(logged.String(), "disconnected from NATS")
	s.Close()
	time.Sleep(200 * time.Millisecond)
	if after := strings.Count(logged.String(), "disconnected from NATS"); after != before {
		t.Errorf("closing the store logged a disconnect:\n%s", logged.String())
	}
}

// TestBulkReadsOnItsOwnConnection: Bulk gives a JetStream on a
// connection of its own, embedded or external, that reads the store and
// closes when done, leaving the engine's connection up.
func TestBulkReadsOnItsOwnConnection(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *store.Store
	}{
		{"embedded", func(t *testing.T) *store.Store { return openEmbedded(t, testConfig(), t.TempDir()) }},
		{"external", func(t *testing.T) *store.Store {
			s, _ := openExternal(t, testConfig())
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.open(t)
			js, done, err := s.Bulk()
			if err != nil {
				t.Fatal(err)
			}
			bulk := js.Conn()
			if bulk == s.NC {
				t.Fatal("Bulk gave the engine's own connection")
			}
			mine, err := s.NC.GetClientID()
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := bulk.GetClientID()
			if err != nil {
				t.Fatal(err)
			}
			if mine == theirs {
				t.Fatalf("bulk connection has the engine's client id %d", mine)
			}
			if _, err := js.Stream(t.Context(), store.StreamIngress); err != nil {
				t.Fatalf("reading the ingress stream on the bulk connection: %v", err)
			}
			done()
			if !bulk.IsClosed() {
				t.Error("bulk connection open after done")
			}
			if !s.NC.IsConnected() {
				t.Error("engine's connection closed with the bulk one")
			}
		})
	}
}

// TestRefusingWhenOutOfStorage fills a server's storage and checks that
// its refusal is recognised and makes the store refuse readiness until a
// write succeeds.
func TestRefusingWhenOutOfStorage(t *testing.T) {
	s := openOn(t, startServerWith(t, func(o *server.Options) { o.JetStreamMaxStore = 1 << 20 }), testConfig())

	if s.Refusing() {
		t.Fatal("Refusing before any write")
	}
	s.NoteIngest(context.DeadlineExceeded)
	if s.Refusing() {
		t.Error("Refusing after a write that timed out: that is the probe's to judge")
	}
	chunk := make([]byte, 64<<10)
	var refused error
	for i := 0; i < 64 && refused == nil; i++ {
		_, refused = s.JS.Publish(t.Context(), store.SubjIngestLog+".0", chunk)
	}
	if refused == nil {
		t.Fatal("4 MiB stored on a server limited to 1 MiB")
	}
	if !store.OutOfStorage(refused) {
		t.Fatalf("OutOfStorage(%v) = false", refused)
	}
	if store.OutOfStorage(context.DeadlineExceeded) || store.OutOfStorage(jetstream.ErrNoStreamResponse) {
		t.Error("OutOfStorage of an error that is not a refusal")
	}
	s.NoteIngest(refused)
	if !s.Refusing() {
		t.Error("not Refusing after a refusal for want of storage")
	}
	s.NoteIngest(nil)
	if s.Refusing() {
		t.Error("Refusing after a write succeeded")
	}
}

// TestWhenSettled: against an external cluster, opening state that fails
// the way a settling cluster does (a timeout, no responders, a 503) is
// tried again until it succeeds, and a lasting error stops it at once; in
// embedded mode every error is returned at once.
func TestWhenSettled(t *testing.T) {
	external, _ := openExternal(t, testConfig())
	embedded := openEmbedded(t, testConfig(), t.TempDir())
	other := errors.New("bucket refused")
	tests := []struct {
		name      string
		s         *store.Store
		errs      []error
		wantCalls int
		wantErr   error
	}{
		{"external timeout then ok", external, []error{nats.ErrTimeout, context.DeadlineExceeded, nil}, 3, nil},
		{"external no responders then ok", external, []error{nats.ErrNoResponders, nil}, 2, nil},
		{"external 503 then ok", external, []error{&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}, nil}, 2, nil},
		{"external lasting error", external, []error{other, nil}, 1, other},
		{"embedded timeout", embedded, []error{nats.ErrTimeout, nil}, 1, nats.ErrTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := tc.s.WhenSettled(t.Context(), "test", func() error {
				calls++
				return tc.errs[calls-1]
			})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("WhenSettled = %v, want %v", err, tc.wantErr)
			}
			if calls != tc.wantCalls {
				t.Errorf("fn called %d times, want %d", calls, tc.wantCalls)
			}
		})
	}
}

// TestCloseContextWithTheStoreFrozen: with the NATS server frozen (stopped
// with SIGSTOP, or cut off), CloseContext gives up once its context ends,
// rather than waiting out the connection's drain (5 s) and a probe in
// flight (2 s) after the engine's shutdown_timeout has already been spent.
func TestCloseContextWithTheStoreFrozen(t *testing.T) {
	srv := startServer(t)
	proxy := testnet.NewProxy(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	cfg := testConfig()
	cfg.URL = "nats://" + proxy.Addr()
	cfg.MonitorURLs = monitorURLs(srv)
	s, err := store.Open(t.Context(), cfg, t.TempDir(), nil, discardLog())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	proxy.Freeze()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() {
		s.CloseContext(ctx)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("CloseContext still waiting on a frozen store 3 s after its 200 ms context ended")
	}
}

// TestStreamDeletedIsLogged: a store one of whose streams was deleted
// (or lost with its directory) after the store held messages makes the
// stream again at its next open and says at ERROR which stream was lost
// (the audit stream in words of its own, since audit verify reports it
// too); a store made new, or whole, says nothing.
func TestStreamDeletedIsLogged(t *testing.T) {
	const lost = "stream missing beside a store that has held messages"
	tests := []struct{ name, want string }{
		{store.StreamIngress, lost},
		{store.StreamOutbound, lost},
		{store.StreamDeadLetter, lost},
		{store.StreamIngestLog, lost},
		{store.StreamQuarantine, lost},
		{store.StreamAudit, "audit " + lost},
	}
	for _, tc := range tests {
		name := tc.name
		t.Run(name, func(t *testing.T) {
			srv := startServer(t)
			cfg := onServer(store.DefaultConfig(), srv)
			open := func() string {
				t.Helper()
				var logs logtest.Buffer
				s, err := store.Open(t.Context(), cfg, t.TempDir(), nil, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError})))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(s.Close)
				// A used store: input taken, and its audit records.
				for _, subj := range []string{store.SubjIngress + ".test.0", store.SubjAudit + ".test"} {
					if _, err := s.JS.Publish(t.Context(), subj, []byte("x")); err != nil {
						t.Fatal(err)
					}
				}
				return logs.String()
			}
			if logged := open(); logged != "" {
				t.Fatalf("first open logged errors: %s", logged)
			}
			if logged := open(); logged != "" {
				t.Fatalf("reopening a whole store logged errors: %s", logged)
			}
			js := clientJS(t, srv)
			if err := js.DeleteStream(t.Context(), name); err != nil {
				t.Fatal(err)
			}
			logged := open()
			if !strings.Contains(logged, tc.want) || !strings.Contains(logged, `"stream":"`+name+`"`) {
				t.Errorf("reopening without %s logged %q, want an error naming it as lost", name, logged)
			}
			if _, err := js.Stream(t.Context(), name); err != nil {
				t.Errorf("%s not made again: %v", name, err)
			}
		})
	}
}
