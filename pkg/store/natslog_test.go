package store_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/logtest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestEmbeddedServerDamageIsLogged: what the embedded nats-server finds
// wrong with a stream's files when it recovers them (here the audit
// stream's block cut short, as a torn copy or a damaged disk leaves it)
// reaches Junction's log as a warning naming the stream, and a whole
// store reopens without a warning from it.
func TestEmbeddedServerDamageIsLogged(t *testing.T) {
	dir := t.TempDir()
	open := func() string {
		t.Helper()
		var logs logtest.Buffer
		s, err := store.Open(t.Context(), testConfig(), dir, nil, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		for i := range 50 {
			if _, err := s.JS.Publish(t.Context(), store.SubjAudit+".m"+strings.Repeat("x", i%3), []byte(strings.Repeat("record ", 200))); err != nil {
				t.Fatalf("publishing: %v", err)
			}
		}
		s.Close()
		return logs.String()
	}
	open()
	if logged := open(); strings.Contains(logged, `"component":"nats"`) {
		t.Fatalf("reopening a whole store logged a warning from the embedded server: %s", logged)
	}
	blk := filepath.Join(dir, "jetstream", "jetstream", "$G", "streams", store.StreamAudit, "msgs", "1.blk")
	fi, err := os.Stat(blk)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(blk, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	logged := open()
	if !strings.Contains(logged, `"component":"nats"`) || !strings.Contains(logged, store.StreamAudit) {
		t.Errorf("reopening with the audit stream's block cut short logged %q, want the embedded server's warning naming %s", logged, store.StreamAudit)
	}
}
