package engine_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

func reconcile(t *testing.T, e *engine.Engine) audit.Reconciliation {
	t.Helper()
	var rep audit.Reconciliation
	if st := getJSON(t, "http://"+e.HTTPAddr().String()+"/api/reconcile", &rep); st != 200 {
		t.Fatalf("GET /api/reconcile: status %d", st)
	}
	return rep
}

// TestReconcileAccountsForEveryMessage: delivered messages, a resend and a
// message routed to the data-quality queue all reach a terminal state, and
// the reconciler counts each once.
func TestReconcileAccountsForEveryMessage(t *testing.T) {
	forPipelines(t, testReconcileAccountsForEveryMessage)
}

func testReconcileAccountsForEveryMessage(t *testing.T, pipe string) {
	e, dir := startEngine(t, pipe)
	addr := mllpAddr(t, e)
	for _, m := range []string{
		adt("A01", "RC0001", "9990000018^^^NHS^NH"),
		adt("A01", "RC0001", "9990000018^^^NHS^NH"), // a resend
		adt("A01", "RC0002", "H12345^^^RX1^MR"),     // no NHS number
	} {
		if code, _ := send(t, addr, m); code != hl7v2.AckAA {
			t.Fatalf("ack %s, want AA", code)
		}
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	waitFiles(t, filepath.Join(dir, "out", "data-quality"), 1)
	var rep audit.Reconciliation
	waitFor(t, "every message to reach a terminal state", func() bool {
		rep = reconcile(t, e)
		return len(rep.Pending) == 0 && rep.Accepted == 3
	})
	want := map[string]int{audit.OutcomeDelivered: 2, audit.OutcomeDuplicate: 1}
	if diff := cmp.Diff(want, rep.Terminal, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("terminal outcomes (-want +got):\n%s", diff)
	}
}

// TestReconcileListsInFlightMessages: a message whose destination has not
// answered yet is listed with what it waits for, and leaves the list once
// delivered.
func TestReconcileListsInFlightMessages(t *testing.T) {
	forPipelines(t, testReconcileListsInFlightMessages)
}

func testReconcileListsInFlightMessages(t *testing.T, pipe string) {
	url, _, release := heldReceiver(t)
	routes, _ := filepath.Abs("testdata/routes")
	e, _ := startEngineWithRoutes(t, routes, `destinations:
  ehr:
    type: fhir
    url: `+url+`
    retry: {max_attempts: 1000, initial: 20ms, max: 100ms, multiplier: 2, timeout: 30s}
`+pipe)
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "RC0101", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s, want AA", code)
	}
	var rep audit.Reconciliation
	waitFor(t, "the message to be queued for the destination", func() bool {
		rep = reconcile(t, e)
		return len(rep.Pending) == 1 && slices.Contains(rep.Pending[0].Waiting, "delivery to-ehr -> ehr")
	})
	if rep.Pending[0].Source != "pas" || rep.Pending[0].Received.IsZero() {
		t.Errorf("pending entry %+v: want source pas and a receipt time", rep.Pending[0])
	}
	release()
	waitFor(t, "the delivery to be reconciled", func() bool {
		rep = reconcile(t, e)
		return len(rep.Pending) == 0 && rep.Terminal[audit.OutcomeDelivered] == 1
	})
}
