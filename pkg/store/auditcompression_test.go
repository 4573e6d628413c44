package store_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/logtest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestReplicatedAuditUncompressed opens stores on a real three-node
// cluster. The audit stream's S2-compressed replicas did not survive
// SIGKILLs of their nodes (nats-server 2.15.2 could no longer read them,
// and with two so damaged the stream lost its quorum and every stage
// stopped), while the uncompressed streams beside them did: a replicated
// audit stream is made uncompressed, and one a previous version
// compressed is switched off at the next start (later blocks only), with
// its records kept and the change logged.
func TestReplicatedAuditUncompressed(t *testing.T) {
	c, cfg := startCluster(t, "audit-compression-test")
	audit := func(t *testing.T) *jetstream.StreamInfo {
		t.Helper()
		st, err := c.JS.Stream(t.Context(), store.StreamAudit)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo()
	}
	tests := []struct {
		name    string
		before  func(t *testing.T)
		wantLog string
		records uint64
	}{
		{"new store", func(*testing.T) {}, "", 0},
		{"compressed by an earlier version", func(t *testing.T) {
			old := audit(t).Config
			old.Compression = jetstream.S2Compression
			if _, err := c.JS.UpdateStream(t.Context(), old); err != nil {
				t.Fatal(err)
			}
			if _, err := c.JS.Publish(t.Context(), store.SubjAudit+".x", []byte(`[{"kind":"received"}]`)); err != nil {
				t.Fatal(err)
			}
		}, `"compression":"S2 -> None"`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.before(t)
			var logs logtest.Buffer
			openSettled(t, cfg, jsonLog(&logs)).Close()
			info := audit(t)
			if info.Config.Compression != jetstream.NoCompression {
				t.Errorf("audit stream compression %s with 3 replicas, want none", info.Config.Compression)
			}
			if info.State.Msgs != tt.records {
				t.Errorf("audit stream holds %d records, want %d", info.State.Msgs, tt.records)
			}
			if tt.wantLog != "" && !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("the change was not logged with %s:\n%s", tt.wantLog, logs.String())
			}
		})
	}
}
