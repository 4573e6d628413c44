package engine_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/logtest"
	"github.com/junction-fhir/junction/pkg/router"
	"github.com/junction-fhir/junction/pkg/telemetry"
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

// TestReconcileWindow: with since, only the messages received at or after
// it are counted (an earlier one, stored within the minute read before
// the window for clocks out of step, is not), and the report says from
// when; a since that is not a time is refused.
func TestReconcileWindow(t *testing.T) {
	forPipelines(t, testReconcileWindow)
}

func testReconcileWindow(t *testing.T, pipe string) {
	e, dir := startEngine(t, pipe)
	addr := mllpAddr(t, e)
	if code, _ := send(t, addr, adt("A01", "RW0001", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s, want AA", code)
	}
	time.Sleep(20 * time.Millisecond)
	since := time.Now().UTC()
	for _, ctrl := range []string{"RW0002", "RW0003"} {
		if code, _ := send(t, addr, adt("A01", ctrl, "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("ack %s, want AA", code)
		}
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 3)
	base := "http://" + e.HTTPAddr().String() + "/api/reconcile"
	var all, window audit.Reconciliation
	waitFor(t, "every message to reach a terminal state", func() bool {
		all = reconcile(t, e)
		return len(all.Pending) == 0 && all.Accepted == 3
	})
	if st := getJSON(t, base+"?since="+url.QueryEscape(since.Format(time.RFC3339Nano)), &window); st != 200 {
		t.Fatalf("GET /api/reconcile?since=: status %d", st)
	}
	if window.Accepted != 2 || window.Terminal[audit.OutcomeDelivered] != 2 || len(window.Pending) != 0 {
		t.Errorf("window since the second message: %+v, want 2 accepted, 2 delivered", window)
	}
	if !window.Since.Equal(since) {
		t.Errorf("report's since %v, want %v", window.Since, since)
	}
	if !all.Since.IsZero() {
		t.Errorf("report without a window has since %v", all.Since)
	}
	if st := getJSON(t, base+"?since=yesterday", nil); st != 400 {
		t.Errorf("since=yesterday: status %d, want 400", st)
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

// TestReconcileRouteAddedLater: a route added after messages were
// accepted never sees them (its consumers start at new messages), so the
// reconciler does not wait for it on them; it does on later ones.
func TestReconcileRouteAddedLater(t *testing.T) {
	forPipelines(t, testReconcileRouteAddedLater)
}

func testReconcileRouteAddedLater(t *testing.T, pipe string) {
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes")
	if err := os.Mkdir(routes, 0o755); err != nil {
		t.Fatal(err)
	}
	route := func(name, dest string) string {
		return "name: " + name + "\nsource:\n  adapter: pas\nconsent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\ndestinations:\n  - name: " + dest + "\n"
	}
	if err := os.WriteFile(filepath.Join(routes, "first.yaml"), []byte(route("first", "fhir-store")), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() *engine.Engine {
		body := fmt.Sprintf("data_dir: %s\nhttp:\n  listen: 127.0.0.1:0\nroutes: [%s]\nrouter:\n%s"+
			"inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n"+
			"destinations:\n  fhir-store:\n    type: file\n    dir: out/fhir-store\n  data-quality:\n    type: file\n    dir: out/data-quality\n",
			dir, routes, pipelineOf(pipe))
		return startFromConfig(t, dir, body)
	}
	stop := func(e *engine.Engine) { stopEngine(t, e) }
	e := start()
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "LATE0001", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	waitFor(t, "the first message to finish", func() bool { return len(reconcile(t, e).Pending) == 0 })
	stop(e)

	if err := os.WriteFile(filepath.Join(routes, "second.yaml"), []byte(route("second", "data-quality")), 0o600); err != nil {
		t.Fatal(err)
	}
	e = start()
	defer stop(e)
	if rep := reconcile(t, e); len(rep.Pending) != 0 || rep.Accepted != 1 {
		t.Errorf("after adding a route: %d accepted, pending %+v; want 1 and none", rep.Accepted, rep.Pending)
	}
	// Routed again after the route was added, the message is stored
	// again; reconcile still waits for its own route only.
	var found struct {
		Messages []router.Found `json:"messages"`
	}
	if st := getJSON(t, "http://"+e.HTTPAddr().String()+"/api/messages?control_id=LATE0001", &found); st != http.StatusOK || len(found.Messages) != 1 {
		t.Fatalf("find LATE0001: status %d, %+v", st, found.Messages)
	}
	id := found.Messages[0].ID
	if status, res := postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{IDs: []string{id}}, Again: true}); status != http.StatusOK {
		t.Fatalf("replay: status %d, %+v", status, res)
	}
	// The file destination writes the message's file again, in place.
	waitFor(t, "the replay's delivery", func() bool {
		return testutil.ToFloat64(e.Metrics().Delivered.WithLabelValues("fhir-store", "delivered")) == 1
	})
	waitFor(t, "the replay to finish", func() bool { return len(reconcile(t, e).Pending) == 0 })
	if rep := reconcile(t, e); rep.Accepted != 1 {
		t.Errorf("after the replay: %d accepted, want 1", rep.Accepted)
	}
	found.Messages = nil
	if st := getJSON(t, "http://"+e.HTTPAddr().String()+"/api/messages?control_id=LATE0001", &found); st != http.StatusOK || len(found.Messages) != 1 || len(found.Messages[0].Waiting) != 0 {
		t.Errorf("find LATE0001 after the replay: status %d, %+v; want it waiting for nothing", st, found.Messages)
	}
	// A replay routes the stored input by the routes loaded now: the
	// route added since takes it too.
	if files := waitFiles(t, filepath.Join(dir, "out", "data-quality"), 1); !strings.HasPrefix(filepath.Base(files[0]), id+".") {
		t.Errorf("data-quality holds %v, want the replayed message's file", files)
	}
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "LATE0002", "9990000026^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFiles(t, filepath.Join(dir, "out", "data-quality"), 2)
	var rep audit.Reconciliation
	waitFor(t, "both messages to finish", func() bool {
		rep = reconcile(t, e)
		return len(rep.Pending) == 0 && rep.Accepted == 2
	})
	if rep.Terminal[audit.OutcomeDelivered] != 2 {
		t.Errorf("terminal %v, want 2 delivered", rep.Terminal)
	}
}

// TestReconcileOfUnknownDestination: a reconcile asked about a
// destination the engine does not know (a typo) is refused, as "nothing
// waits for it" would read as all clear; a configured one is answered.
func TestReconcileOfUnknownDestination(t *testing.T) {
	e, _ := startEngine(t, "")
	base := "http://" + e.HTTPAddr().String() + "/api/reconcile?destination="
	for _, tt := range []struct {
		dest string
		want int
	}{
		{"fhir-store", http.StatusOK},
		{"fhir-stor", http.StatusBadRequest},
	} {
		var body map[string]any
		if st := getJSON(t, base+url.QueryEscape(tt.dest), &body); st != tt.want {
			t.Errorf("reconcile of destination %q: %d %v, want %d", tt.dest, st, body, tt.want)
		}
	}
}

// TestScheduledReconcile: with reconcile.interval set, the engine checks
// the windows of acknowledged messages on its own and exports what it
// found: a delivered message is counted finished in a window checked
// after it, nothing unfinished, and the drain stops the schedule. (Its
// interval and lag are shortened past what validation allows, so the
// test need not wait minutes.)
func TestScheduledReconcile(t *testing.T) {
	routes, err := filepath.Abs("../../routes")
	if err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	e, dir := startEnginePlan(t, routes, "", engine.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, func(p *engine.Plan) {
		p.Config.Reconcile.Interval, p.Config.Reconcile.Lag = 200*time.Millisecond, 100*time.Millisecond
	})
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "SR0001", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s, want AA", code)
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	delivered := time.Now()
	m := e.Metrics()
	// What every window checked held, from the log line each writes
	// (the gauges show only the last).
	checked := func() (accepted, finished int) {
		for line := range strings.SplitSeq(logs.String(), "\n") {
			var l struct {
				Msg                string
				Accepted, Finished int
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "reconcile window checked" {
				accepted += l.Accepted
				finished += l.Finished
			}
		}
		return accepted, finished
	}
	waitFor(t, "a window checked past the delivery", func() bool {
		return testutil.ToFloat64(m.ReconcileWindowEnd) > float64(delivered.UnixNano())/1e9
	})
	if a, f := checked(); a != 1 || f != 1 {
		t.Errorf("windows checked held %d accepted, %d finished; want 1 and 1", a, f)
	}
	if u, f := testutil.ToFloat64(m.ReconcileUnfinished), testutil.ToFloat64(m.ReconcileRuns.WithLabelValues(telemetry.ReconcileFailed)); u != 0 || f != 0 {
		t.Errorf("unfinished_messages_total %v, failed runs %v; want 0 and 0", u, f)
	}
}
