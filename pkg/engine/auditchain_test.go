package engine_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// TestAuditChainVerifies: the engine's audit writer chains every record
// it writes (per-message and batch records alike) and signs checkpoints
// with the configured key, so verifying the stream while it runs finds
// no tampering and a checkpoint that covers the traffic.
func TestAuditChainVerifies(t *testing.T) { forPipelines(t, testAuditChainVerifies) }

func testAuditChainVerifies(t *testing.T, pipe string) {
	priv, pub, err := audit.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "audit.pem")
	if err := os.WriteFile(keyFile, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	pk, err := audit.ParsePublicKey(string(pub))
	if err != nil {
		t.Fatal(err)
	}
	e, dir := startEngine(t, fmt.Sprintf("audit:\n  signing_key: file:%s\n  checkpoint_interval: 200ms\n", keyFile)+pipe)
	addr := mllpAddr(t, e)
	for i := range 5 {
		if code, _ := send(t, addr, adt("A01", fmt.Sprintf("CHAIN%03d", i), "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
	}
	if code, _ := send(t, addr, adt("A01", "CHAIN000", "9990000018^^^NHS^NH")); code != hl7v2.AckAA { // a resend
		t.Fatalf("ack %s", code)
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 5)
	var rep *audit.Report
	waitFor(t, "a signed checkpoint covering every audit record", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rep, err = audit.VerifyStream(ctx, e.Store().JS, pk)
		if testing.Verbose() && rep != nil {
			t.Logf("report: messages %d, unchained %d, checkpoints %d, chains %+v, findings %v", rep.Messages, rep.Unchained, rep.Checkpoints, rep.Chains, rep.Findings)
		}
		if err != nil || rep.Tampered() || len(rep.Chains) == 0 {
			return false
		}
		for _, c := range rep.Chains {
			if c.Checkpoint == nil || c.Uncovered > 0 {
				return false
			}
		}
		return rep.Messages > 5
	})
	if testing.Verbose() && rep != nil {
		t.Logf("report: messages %d, chains %+v, findings %v", rep.Messages, rep.Chains, rep.Findings)
	}
	if rep.Unchained != 0 {
		t.Errorf("%d audit messages were written outside the chain", rep.Unchained)
	}
	if rep.Tampered() {
		t.Errorf("findings on an untouched stream: %v", rep.Findings)
	}
	// The reconciler reads the same stream, checkpoints and all.
	var rc audit.Reconciliation
	waitFor(t, "every message reconciled", func() bool {
		rc = reconcile(t, e)
		return rc.Accepted == 6 && len(rc.Pending) == 0
	})
	if rc.Terminal[audit.OutcomeDelivered] != 5 || rc.Terminal[audit.OutcomeDuplicate] != 1 {
		t.Errorf("terminal outcomes %v, want 5 delivered and 1 duplicate", rc.Terminal)
	}
}
