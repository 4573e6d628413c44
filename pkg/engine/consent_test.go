package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/router"
	"github.com/junction-fhir/junction/pkg/store"
)

// Synthetic patients (999 range, valid check digits).
const (
	deniedPatient  = "9990000026"
	controlPatient = "9990000034"
)

// denyTo is a Consent in the Junction profile by which patient refuses
// disclosure to the organisation ods, with the given status.
func denyTo(id, patient, ods, status string) []byte {
	return []byte(`{"resourceType":"Consent","id":"` + id + `","status":"` + status + `",` +
		`"scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},` +
		`"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],` +
		`"patient":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + patient + `"}},` +
		`"provision":{"type":"deny","actor":[{` +
		`"role":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ParticipationType","code":"IRCP"}]},` +
		`"reference":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"` + ods + `"}}}]}}`)
}

// postConsent posts a Consent and returns the status and body.
func postConsent(t *testing.T, base string, body []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(base+"/fhir/Consent", "application/fhir+json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// trails returns the audit trail of every message with records.
func trails(t *testing.T, e *engine.Engine) map[string][]audit.Record {
	t.Helper()
	ctx := context.Background()
	st, err := e.Store().JS.Stream(ctx, store.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(store.SubjAudit+".>"))
	if err != nil {
		t.Fatal(err)
	}
	// A subject holds one message's records, or (the batch pipeline's
	// audit batches) the records of every message in a span: group them
	// by the message they are about.
	out := map[string][]audit.Record{}
	for subj := range info.State.Subjects {
		recs, err := audit.Trail(ctx, e.Store().JS, strings.TrimPrefix(subj, store.SubjAudit+"."))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			out[r.MessageID] = append(out[r.MessageID], r)
		}
	}
	return out
}

// TestConsentEndToEnd posts a Consent refusing disclosure to the FHIR
// store's organisation through POST /fhir/Consent, sends that patient's
// admission and another patient's over MLLP, and checks that only the
// other patient's reaches the store, that the refusal is audited with the
// deciding rule and counted, and that withdrawing the Consent lets the
// next admission through.
func TestConsentEndToEnd(t *testing.T) { forPipelines(t, testConsentEndToEnd) }

func testConsentEndToEnd(t *testing.T, pipe string) {
	e, dir := startEngine(t, pipe+"consent:\n  destinations:\n    fhir-store: {ods: RX1}\n")
	base := "http://" + e.HTTPAddr().String()
	if st, body := postConsent(t, base, denyTo("c-deny-rx1", deniedPatient, "RX1", "active")); st != http.StatusCreated || !strings.Contains(body, `"resourceType":"Consent"`) {
		t.Fatalf("POST Consent: %d %s", st, body)
	}
	if st, _ := postConsent(t, base, denyTo("c-deny-rx1", deniedPatient, "RX1", "active")); st != http.StatusOK {
		t.Fatalf("POST same Consent again: %d, want 200", st)
	}
	// The patient index records that the patient has a Consent in force.
	hasConsent := func() bool {
		rec, err := e.PatientIndex().Get(context.Background(), deniedPatient)
		return err == nil && rec.Consent.HasActiveConsent
	}
	if !hasConsent() {
		t.Error("patient index: no active Consent recorded after POST /fhir/Consent")
	}
	bad := bytes.Replace(denyTo("c-bad", deniedPatient, "RX1", "active"), []byte(`"IRCP"`), []byte(`"AUT"`), 1)
	if st, body := postConsent(t, base, bad); st != http.StatusUnprocessableEntity || !strings.Contains(body, "OperationOutcome") {
		t.Fatalf("POST Consent outside the profile: %d %s", st, body)
	}
	addr := mllpAddr(t, e)
	for _, m := range []struct{ ctrl, nhs string }{{"CONS0001", deniedPatient}, {"CONS0002", controlPatient}} {
		if code, _ := send(t, addr, adt("A01", m.ctrl, m.nhs+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("send %s: %s", m.ctrl, code)
		}
	}
	outDir := filepath.Join(dir, "out", "fhir-store")
	files := waitFiles(t, outDir, 1)
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), controlPatient) || strings.Contains(string(data), deniedPatient) {
		t.Fatalf("the store received the wrong patient's admission")
	}
	// The refused admission's trail shows the decision and its rule.
	const rule = "consent:c-deny-rx1:Consent.provision"
	var denied []audit.Record
	deadline := time.Now().Add(15 * time.Second)
	for denied == nil {
		for _, trail := range trails(t, e) {
			for _, r := range trail {
				if r.Event == audit.Consent && r.Route == "adt-to-fhir-store" && r.Destination == "fhir-store" && r.Outcome == "deny" {
					denied = trail
				}
			}
		}
		if denied == nil {
			if time.Now().After(deadline) {
				t.Fatal("no consent denial recorded for fhir-store")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var decision, withheld int
	for _, r := range denied {
		if strings.Contains(r.Reason, deniedPatient) || strings.Contains(r.Rule, deniedPatient) {
			t.Errorf("audit record holds the NHS number: %+v", r)
		}
		switch {
		case r.Event == audit.Queued && r.Destination == "fhir-store":
			t.Errorf("refused message queued for fhir-store: %+v", r)
		case r.Event == audit.Consent && r.Destination == "fhir-store" && r.Outcome == "deny":
			decision++
			if r.Rule != rule {
				t.Errorf("decision rule %q, want %q", r.Rule, rule)
			}
		case r.Event == audit.Consent && r.Destination == "fhir-store" && r.Outcome == "withheld":
			withheld++
			if r.Rule != rule {
				t.Errorf("resource record rule %q, want %q", r.Rule, rule)
			}
		}
	}
	if decision != 1 || withheld == 0 {
		t.Errorf("trail has %d decisions and %d withheld resources for fhir-store, want 1 and some: %+v", decision, withheld, denied)
	}
	if v := testutil.ToFloat64(e.Metrics().Consent.WithLabelValues("adt-to-fhir-store", "fhir-store", "deny")); v != 1 {
		t.Errorf("consent deny count = %v, want 1", v)
	}
	// Withdrawing the Consent applies to the next message.
	if st, _ := postConsent(t, base, denyTo("c-deny-rx1", deniedPatient, "RX1", "inactive")); st != http.StatusOK {
		t.Fatalf("POST withdrawal: %d, want 200", st)
	}
	if hasConsent() {
		t.Error("patient index: the withdrawn Consent still counts as active")
	}
	if code, _ := send(t, addr, adt("A01", "CONS0003", deniedPatient+"^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("send CONS0003: %s", code)
	}
	waitFiles(t, outDir, 2)
}

// TestConsentHashKeyMismatch starts an engine with one hash key, stops it,
// and checks that another key is refused at start, since the Consents
// stored under the first would no longer be found.
func TestConsentHashKeyMismatch(t *testing.T) {
	dir := t.TempDir()
	routes, err := filepath.Abs("../../routes")
	if err != nil {
		t.Fatal(err)
	}
	start := func(key string) error {
		t.Setenv("JUNCTION_TEST_CONSENT_KEY", key)
		return startAndStop(t, dir, engineConfig(dir, routes)+"consent:\n  hash_key: env:JUNCTION_TEST_CONSENT_KEY\n")
	}
	if err := start("first-test-key-0123456789"); err != nil {
		t.Fatalf("first start: %v", err)
	}
	if err := start("first-test-key-0123456789"); err != nil {
		t.Fatalf("restart with the same key: %v", err)
	}
	err = start("other-test-key-0123456789")
	if err == nil || !strings.Contains(err.Error(), "consent.hash_key") {
		t.Fatalf("start with another key: %v, want a consent.hash_key error", err)
	}
	if strings.Contains(err.Error(), "first-test-key") || strings.Contains(err.Error(), "other-test-key") {
		t.Errorf("error reveals a key: %v", err)
	}
}

// consentFeedRoute takes Consent bundles that another system posts to
// /fhir and stores their Consents for the consent engine.
const consentFeedRoute = `name: consent-feed
source:
  adapter: fhir
match: bundle.entry.exists(e, e.resource.resourceType == "Consent")
consent:
  purpose: direct-care
  legal_basis: direct-care
  default: permit
destinations:
  - name: consents
`

// TestConsentThroughARoute posts a Bundle holding a Consent that refuses
// disclosure to the FHIR store's organisation; a route delivers it to a
// consent-store destination, after which that patient's admission is
// refused at the store and another patient's is not. A Consent outside
// the profile dead-letters its delivery.
func TestConsentThroughARoute(t *testing.T) { forPipelines(t, testConsentThroughARoute) }

func testConsentThroughARoute(t *testing.T, pipe string) {
	shipped, err := filepath.Abs("../../routes/adt-to-fhir-store.yaml")
	if err != nil {
		t.Fatal(err)
	}
	adtRoute, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	routes := writeRoutes(t, map[string]string{"feed.yaml": consentFeedRoute, "adt.yaml": string(adtRoute)})
	e, dir := startEngineWithRoutes(t, routes, pipe+
		"consent:\n  destinations:\n    fhir-store: {ods: RX1}\n"+
		"destinations:\n  fhir-store:\n    type: file\n    dir: out/fhir-store\n  consents:\n    type: consent-store\n")
	base := "http://" + e.HTTPAddr().String()
	post := func(b []byte) {
		postAccepted(t, base+"/fhir", `{"resourceType":"Bundle","type":"collection","entry":[{"resource":`+string(b)+`}]}`)
	}
	post(denyTo("c-feed-rx1", deniedPatient, "RX1", "active"))
	waitFor(t, "the Consent to be stored", func() bool {
		return testutil.ToFloat64(e.Metrics().Delivered.WithLabelValues("consents", "delivered")) == 1
	})
	addr := mllpAddr(t, e)
	for _, m := range []struct{ ctrl, nhs string }{{"FEED0001", deniedPatient}, {"FEED0002", controlPatient}} {
		if code, _ := send(t, addr, adt("A01", m.ctrl, m.nhs+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("send %s: %s", m.ctrl, code)
		}
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	waitFor(t, "the refusal", func() bool {
		return testutil.ToFloat64(e.Metrics().Consent.WithLabelValues("adt-to-fhir-store", "fhir-store", "deny")) == 1
	})
	files := waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), controlPatient) || strings.Contains(string(data), deniedPatient) {
		t.Fatal("the store received the wrong patient's admission")
	}
	bad := bytes.Replace(denyTo("c-feed-bad", deniedPatient, "RX1", "active"), []byte(`"IRCP"`), []byte(`"AUT"`), 1)
	post(bad)
	waitFor(t, "the bad Consent to be dead-lettered", func() bool {
		return testutil.ToFloat64(e.Metrics().Delivered.WithLabelValues("consents", "dead_lettered")) == 1
	})
	// A refusal of every disclosure does not stop the patient's own later
	// Consent reaching the store: that is no disclosure.
	denyAll := func(status string) []byte {
		return []byte(`{"resourceType":"Consent","id":"c-feed-all","status":"` + status + `",` +
			`"scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},` +
			`"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],` +
			`"patient":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + deniedPatient + `"}},` +
			`"provision":{"type":"deny"}}`)
	}
	post(denyAll("active"))
	waitFor(t, "the refusal of everything to be stored", func() bool {
		return testutil.ToFloat64(e.Metrics().Delivered.WithLabelValues("consents", "delivered")) == 2
	})
	post(denyAll("inactive"))
	waitFor(t, "its withdrawal to be stored", func() bool {
		return testutil.ToFloat64(e.Metrics().Delivered.WithLabelValues("consents", "delivered")) == 3
	})
}

// startFromConfig starts an engine on config body written in dir; the
// caller stops it (stopEngine), as a test of restarts needs.
func startFromConfig(t *testing.T, dir, body string) *engine.Engine {
	t.Helper()
	e := engineFromConfig(t, dir, body)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

// stopEngine drains e, failing the test if the drain fails.
func stopEngine(t *testing.T, e *engine.Engine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// engineFromConfig writes body as dir/junction.yaml and returns an engine
// planned from it, not started: for tests that restart an engine on the
// same data directory.
func engineFromConfig(t *testing.T, dir, body string) *engine.Engine {
	t.Helper()
	return engineLogging(t, dir, body, slog.New(slog.DiscardHandler))
}

// engineLogging is engineFromConfig with an engine that logs to log.
func engineLogging(t *testing.T, dir, body string, log *slog.Logger) *engine.Engine {
	t.Helper()
	path := filepath.Join(dir, "junction.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.NewPlan(cfg, engine.NewRegistry(all.Factories()...))
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(p, engine.Options{Logger: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// startWithEHRDown starts an engine whose ehr destination (organisation
// RX2) answers 503 until the test clears srv's script, retrying every
// 200 ms, with consent checked again before every attempt.
func startWithEHRDown(t *testing.T, pipe string) (*engine.Engine, *fhirServer) {
	t.Helper()
	return startWithEHRDownEvery(t, pipe, "200ms")
}

// startWithEHRDownEvery is startWithEHRDown with attempts every (a
// duration in config form) apart.
func startWithEHRDownEvery(t *testing.T, pipe, every string) (*engine.Engine, *fhirServer) {
	t.Helper()
	srv, url := downReceiver(t)
	routes, _ := filepath.Abs("testdata/routes")
	e, _ := startEngineWithRoutes(t, routes, `destinations:
  ehr:
    type: fhir
    url: `+url+`
    retry: {max_attempts: 200, initial: `+every+`, max: `+every+`, multiplier: 1, timeout: 5s}
consent:
  recheck_after: 0s
  destinations:
    ehr: {ods: RX2}
`+pipe)
	return e, srv
}

// downReceiver is a FHIR server answering 503 until the test clears its
// script, and its URL.
func downReceiver(t *testing.T) (*fhirServer, string) {
	t.Helper()
	srv := &fhirServer{}
	down := make([]int, 1000)
	for i := range down {
		down[i] = http.StatusServiceUnavailable
	}
	srv.script(down...)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return srv, hs.URL
}

// TestConsentChangeWhileQueued: a payload decided before its patient
// refused the destination, still waiting because the receiver is down,
// is not sent when the receiver comes back: the delivery stage sees the
// Consent written after the decision, decides again for that destination,
// and the refusal withholds it. Another patient's payload, waiting beside
// it, is checked, found unchanged and delivered as queued.
func TestConsentChangeWhileQueued(t *testing.T) {
	forPipelines(t, func(t *testing.T, pipe string) {
		e, srv := startWithEHRDown(t, pipe)
		addr := mllpAddr(t, e)
		ids := map[string]string{}
		for _, m := range []struct{ ctrl, nhs string }{{"CQ0001", deniedPatient}, {"CQ0002", controlPatient}} {
			if code, _ := send(t, addr, adt("A01", m.ctrl, m.nhs+"^^^NHS^NH")); code != hl7v2.AckAA {
				t.Fatalf("send %s: %s", m.ctrl, code)
			}
		}
		m := e.Metrics()
		waitFor(t, "both payloads tried and refused by the receiver", func() bool {
			return testutil.ToFloat64(m.Attempts.WithLabelValues("ehr", "transient")) >= 2
		})
		for id, trail := range trails(t, e) {
			for _, r := range trail {
				if r.Event == audit.Queued && r.Destination == "ehr" {
					ids[r.Patient] = id
				}
			}
		}
		if len(ids) != 2 {
			t.Fatalf("queued payloads of %d patients, want 2", len(ids))
		}
		base := "http://" + e.HTTPAddr().String()
		if st, body := postConsent(t, base, denyTo("c-deny-q", deniedPatient, "RX2", "active")); st != http.StatusCreated {
			t.Fatalf("POST Consent: %d %s", st, body)
		}
		var deniedID string
		waitFor(t, "the payload decided again and withheld", func() bool {
			for id, trail := range trails(t, e) {
				withheld, refused := false, false
				for _, r := range trail {
					withheld = withheld || r.Event == audit.Filtered && r.Destination == "ehr" && r.Outcome == audit.OutcomeWithheld
					refused = refused || r.Event == audit.Consent && r.Destination == "ehr" && r.Outcome == "deny" && r.Rule == "consent:c-deny-q:Consent.provision"
				}
				if withheld && refused {
					deniedID = id
					return true
				}
			}
			return false
		})
		srv.mu.Lock()
		srv.statuses = nil // the receiver is back
		srv.mu.Unlock()
		waitFor(t, "the other patient's delivery", func() bool {
			return testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "delivered")) >= 1
		})
		got := srv.accepted()
		if len(got) != 1 || strings.Contains(got[0], deniedID) {
			t.Errorf("the receiver accepted %q; want only the other patient's payload (the refused one is %s)", got, deniedID)
		}
		if v := testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "withheld")); v != 1 {
			t.Errorf("withheld = %v, want 1 (only the refused patient's)", v)
		}
		if v := testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "redecided")); v != 0 {
			t.Errorf("redecided = %v, want 0: the other patient's consent did not change", v)
		}
		for _, r := range trails(t, e)[deniedID] {
			if r.Event == audit.Delivered {
				t.Errorf("refused payload delivered: %+v", r)
			}
		}
		// The reconciler counts the refused message finished, as denied.
		var rec audit.Reconciliation
		waitFor(t, "reconciliation", func() bool {
			if st := getJSON(t, base+"/api/reconcile", &rec); st != 200 {
				t.Fatalf("reconcile: %d", st)
			}
			return len(rec.Pending) == 0
		})
		if rec.Terminal[audit.OutcomeConsentDenied] != 1 || rec.Terminal[audit.OutcomeDelivered] != 1 {
			t.Errorf("reconciliation %+v: want one delivered and one consent-denied", rec.Terminal)
		}
	})
}

// TestConsentChangeKeepsOrder: a payload whose patient's consent changed
// while it waited, and that the new decision still sends, is sent in its
// own place, so the patient's later payload, decided after the change and
// queued behind it, still follows it. (Routed again, it would have been
// queued behind the later one and arrived after it.) Its trail shows the
// new decision and what was sent.
func TestConsentChangeKeepsOrder(t *testing.T) {
	forPipelines(t, func(t *testing.T, pipe string) {
		// Attempts 3 s apart, so the later payload is decided and queued
		// between the first payload's attempts, after the change.
		e, srv := startWithEHRDownEvery(t, pipe, "3s")
		addr := mllpAddr(t, e)
		m := e.Metrics()
		if code, _ := send(t, addr, adt("A01", "KO0001", deniedPatient+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("send the first: %s", code)
		}
		waitFor(t, "the first payload tried and refused by the receiver", func() bool {
			return testutil.ToFloat64(m.Attempts.WithLabelValues("ehr", "transient")) >= 1
		})
		base := "http://" + e.HTTPAddr().String()
		// A change that still lets the ehr (RX2) have it: a refusal of
		// another organisation.
		if st, body := postConsent(t, base, denyTo("c-deny-other", deniedPatient, "RX9", "active")); st != http.StatusCreated {
			t.Fatalf("POST Consent: %d %s", st, body)
		}
		if code, _ := send(t, addr, adt("A01", "KO0002", deniedPatient+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("send the second: %s", code)
		}
		waitFor(t, "the first payload decided again", func() bool {
			return testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "redecided")) == 1
		})
		srv.mu.Lock()
		srv.statuses = nil // the receiver is back
		srv.mu.Unlock()
		waitFor(t, "both deliveries", func() bool {
			return testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "delivered")) == 2
		})
		// The two messages, in the order they were queued.
		type queued struct {
			id string
			at time.Time
		}
		var order []queued
		for id, trail := range trails(t, e) {
			for _, r := range trail {
				if r.Event == audit.Queued && r.Destination == "ehr" {
					order = append(order, queued{id, r.Time})
				}
			}
		}
		if len(order) != 2 {
			t.Fatalf("%d payloads queued, want 2", len(order))
		}
		slices.SortFunc(order, func(a, b queued) int { return a.at.Compare(b.at) })
		first, second := order[0].id, order[1].id
		got := srv.accepted()
		if len(got) != 2 || !strings.HasPrefix(got[0], first) || !strings.HasPrefix(got[1], second) {
			t.Fatalf("the receiver accepted %q; want %s's payload, then %s's", got, first, second)
		}
		var redecided, delivered *audit.Record
		for _, r := range trails(t, e)[first] {
			switch {
			case r.Event == audit.Replayed && r.Outcome == audit.OutcomeRedecided && r.Destination == "ehr":
				redecided = &r
			case r.Event == audit.Delivered && r.Destination == "ehr":
				delivered = &r
			}
		}
		if redecided == nil || delivered == nil || redecided.SentSeq == 0 || delivered.SentSeq != redecided.SentSeq || delivered.Hash != redecided.Hash {
			t.Fatalf("first payload's trail: redecided %+v, delivered %+v; want both naming what was sent", redecided, delivered)
		}
		var view engine.MessageView
		if st := getJSON(t, base+"/api/messages/"+first, &view); st != http.StatusOK {
			t.Fatalf("GET message: %d", st)
		}
		// What was tried as queued, then what was sent in its place.
		if n := len(view.Outbound); n != 2 || view.Outbound[n-1].Seq != delivered.SentSeq || view.Outbound[0].Seq == delivered.SentSeq {
			seqs := []uint64{}
			for _, p := range view.Outbound {
				seqs = append(seqs, p.Seq)
			}
			t.Errorf("message view shows outbound payloads at %v; want the queued one as tried, then what was sent (%d)", seqs, delivered.SentSeq)
		}
		var rec audit.Reconciliation
		waitFor(t, "reconciliation", func() bool {
			if st := getJSON(t, base+"/api/reconcile", &rec); st != 200 {
				t.Fatalf("reconcile: %d", st)
			}
			return len(rec.Pending) == 0
		})
		if rec.Terminal[audit.OutcomeDelivered] != 2 {
			t.Errorf("reconciliation %+v: want both delivered", rec.Terminal)
		}
	})
}

// TestConsentChangeAcrossRestart: a payload decided again, tried and
// refused by the receiver, then left unacknowledged by a stopping engine
// is decided again by the next one to the same stored payload (not a
// second copy), which is what reaches the receiver, once.
func TestConsentChangeAcrossRestart(t *testing.T) {
	forPipelines(t, func(t *testing.T, pipe string) {
		srv, url := downReceiver(t)
		routes, _ := filepath.Abs("testdata/routes")
		dir := t.TempDir()
		body := fmt.Sprintf("data_dir: %s\nhttp:\n  listen: 127.0.0.1:0\nroutes: [%s]\nrouter:\n  ack_wait: 2s\n%s"+
			"inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n  fhir:\n    type: fhir\n"+
			"destinations:\n  ehr:\n    type: fhir\n    url: %s\n    retry: {max_attempts: 200, initial: 500ms, max: 500ms, multiplier: 1, timeout: 5s}\n"+
			"consent:\n  recheck_after: 0s\n  destinations:\n    ehr: {ods: RX2}\n", dir, routes, pipelineOf(pipe), url)
		e := startFromConfig(t, dir, body)
		if code, _ := send(t, mllpAddr(t, e), adt("A01", "RS0001", deniedPatient+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("send: %s", code)
		}
		m := e.Metrics()
		waitFor(t, "a refused attempt", func() bool {
			return testutil.ToFloat64(m.Attempts.WithLabelValues("ehr", "transient")) >= 1
		})
		base := "http://" + e.HTTPAddr().String()
		if st, body := postConsent(t, base, denyTo("c-deny-elsewhere", deniedPatient, "RX9", "active")); st != http.StatusCreated {
			t.Fatalf("POST Consent: %d %s", st, body)
		}
		// The payload decided again, and tried: a failed attempt names
		// where the new payload is stored.
		var sentSeq uint64
		waitFor(t, "an attempt at the payload decided again", func() bool {
			for _, trail := range trails(t, e) {
				for _, r := range trail {
					if r.Event == audit.Failed && r.Destination == "ehr" && r.SentSeq != 0 {
						sentSeq = r.SentSeq
						return true
					}
				}
			}
			return false
		})
		stopEngine(t, e)
		srv.mu.Lock()
		srv.statuses = nil // the receiver is back
		srv.mu.Unlock()

		e = startFromConfig(t, dir, body)
		defer stopEngine(t, e)
		m = e.Metrics()
		waitFor(t, "the delivery after the restart", func() bool {
			return testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "delivered")) == 1
		})
		if got := srv.accepted(); len(got) != 1 {
			t.Errorf("the receiver accepted %q, want one payload", got)
		}
		// Decided again after the restart to the payload already stored:
		// not counted as a new decision, nor stored twice.
		if v := testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "redecided")); v != 0 {
			t.Errorf("payloads decided again after the restart = %v, want 0 (the same as before)", v)
		}
		ost, err := e.Store().JS.Stream(t.Context(), store.StreamOutbound)
		if err != nil {
			t.Fatal(err)
		}
		info, err := ost.Info(t.Context(), jetstream.WithSubjectFilter(store.SubjOutbound+".ehr._redecided"))
		if err != nil {
			t.Fatal(err)
		}
		if n := info.State.Subjects[store.SubjOutbound+".ehr._redecided"]; n != 1 {
			t.Errorf("%d payloads stored as decided again, want 1", n)
		}
		var delivered *audit.Record
		redecisions := 0
		for _, trail := range trails(t, e) {
			for _, r := range trail {
				if r.Event == audit.Delivered && r.Destination == "ehr" {
					delivered = &r
				}
				if r.Event == audit.Replayed && r.Outcome == audit.OutcomeRedecided && r.Destination == "ehr" {
					redecisions++
				}
			}
		}
		if delivered == nil || delivered.SentSeq != sentSeq {
			t.Errorf("delivered record %+v; want it naming the payload decided before the restart (%d)", delivered, sentSeq)
		}
		// One record of the decision: the one made after the restart,
		// to the payload already stored, is the same decision.
		if redecisions != 1 {
			t.Errorf("%d records of consent decided again for ehr, want 1", redecisions)
		}
	})
}

// TestConsentChangeAtAnotherDestination: deciding consent again for a
// payload queued at one destination decides for that destination alone.
// The message went to the archive at once and waits for the ehr; the
// patient then refuses the archive's organisation. The ehr payload, still
// permitted, is sent in its place, and the message reconciles as
// delivered, not refused: the archive's release already happened, and
// the new decision is not the archive's.
func TestConsentChangeAtAnotherDestination(t *testing.T) {
	forPipelines(t, func(t *testing.T, pipe string) {
		srv, url := downReceiver(t)
		routes := t.TempDir()
		route := "name: to-both\nsource:\n  adapter: pas\nmatch: msg.type == \"ADT^A01\"\n" +
			"consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\ndestinations:\n  - name: ehr\n  - name: archive\n"
		if err := os.WriteFile(filepath.Join(routes, "to-both.yaml"), []byte(route), 0o600); err != nil {
			t.Fatal(err)
		}
		e, _ := startEngineWithRoutes(t, routes, "destinations:\n  ehr:\n    type: fhir\n    url: "+url+"\n"+
			"    retry: {max_attempts: 200, initial: 200ms, max: 200ms, multiplier: 1, timeout: 5s}\n"+
			"  archive:\n    type: file\n    dir: out/archive\n"+
			"consent:\n  recheck_after: 0s\n  destinations:\n    ehr: {ods: RX2}\n    archive: {ods: RX3}\n"+pipe)
		m := e.Metrics()
		if code, _ := send(t, mllpAddr(t, e), adt("A01", "AD0001", deniedPatient+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("send: %s", code)
		}
		waitFor(t, "the archive's delivery and a refused ehr attempt", func() bool {
			return testutil.ToFloat64(m.Delivered.WithLabelValues("archive", "delivered")) == 1 &&
				testutil.ToFloat64(m.Attempts.WithLabelValues("ehr", "transient")) >= 1
		})
		base := "http://" + e.HTTPAddr().String()
		if st, body := postConsent(t, base, denyTo("c-deny-archive", deniedPatient, "RX3", "active")); st != http.StatusCreated {
			t.Fatalf("POST Consent: %d %s", st, body)
		}
		waitFor(t, "the ehr payload decided again", func() bool {
			return testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "redecided")) == 1
		})
		srv.mu.Lock()
		srv.statuses = nil
		srv.mu.Unlock()
		waitFor(t, "the ehr delivery", func() bool {
			return testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "delivered")) == 1
		})
		for _, trail := range trails(t, e) {
			for _, r := range trail {
				if r.Event == audit.Consent && r.Destination == "archive" && r.Outcome == "deny" {
					t.Errorf("deciding again for the ehr wrote a decision for the archive: %+v", r)
				}
			}
		}
		// Nor is one counted: the ehr's decisions are the first and the
		// new one; the archive's, the first alone.
		for _, c := range []struct {
			dest, outcome string
			want          float64
		}{{"ehr", "permit", 2}, {"archive", "permit", 1}, {"archive", "deny", 0}} {
			if v := testutil.ToFloat64(m.Consent.WithLabelValues("to-both", c.dest, c.outcome)); v != c.want {
				t.Errorf("consent decisions{%s, %s} = %v, want %v", c.dest, c.outcome, v, c.want)
			}
		}
		// Deciding again is not another routing of the message.
		if v := testutil.ToFloat64(m.Routed.WithLabelValues("to-both", "matched")); v != 1 {
			t.Errorf("route messages{matched} = %v, want 1", v)
		}
		var rec audit.Reconciliation
		waitFor(t, "reconciliation", func() bool {
			if st := getJSON(t, base+"/api/reconcile", &rec); st != 200 {
				t.Fatalf("reconcile: %d", st)
			}
			return len(rec.Pending) == 0
		})
		if rec.Terminal[audit.OutcomeDelivered] != 1 || rec.Terminal[audit.OutcomeConsentDenied] != 0 {
			t.Errorf("reconciliation %+v: want delivered and nothing refused", rec.Terminal)
		}
	})
}

// TestConsentChangeWhileQueuedInputGone: when a waiting payload's consent
// changed and its stored input is gone, so consent cannot be decided
// again, it is dead-lettered with consent.changed, not sent as decided.
func TestConsentChangeWhileQueuedInputGone(t *testing.T) {
	forPipelines(t, func(t *testing.T, pipe string) {
		e, _ := startWithEHRDown(t, pipe)
		if code, _ := send(t, mllpAddr(t, e), adt("A01", "CG0001", deniedPatient+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("send: %s", code)
		}
		m := e.Metrics()
		waitFor(t, "a refused attempt", func() bool {
			return testutil.ToFloat64(m.Attempts.WithLabelValues("ehr", "transient")) >= 1
		})
		var id string
		for mid, trail := range trails(t, e) {
			for _, r := range trail {
				if r.Event == audit.Queued && r.Destination == "ehr" {
					id = mid
				}
			}
		}
		ctx := context.Background()
		// The batch pipeline's trail finds the input in its accepted batch.
		full, err := router.Trail(ctx, e.Store().JS, id)
		if err != nil {
			t.Fatal(err)
		}
		var inputSeq uint64
		for _, r := range full {
			if r.Event == audit.Received && r.Stream == store.StreamIngress {
				inputSeq = r.Seq
			}
		}
		if inputSeq == 0 {
			t.Fatalf("no stored input recorded for %q", id)
		}
		st, err := e.Store().JS.Stream(ctx, store.StreamIngress)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteMsg(ctx, inputSeq); err != nil {
			t.Fatalf("removing the stored input: %v", err)
		}
		base := "http://" + e.HTTPAddr().String()
		if st, body := postConsent(t, base, denyTo("c-deny-g", deniedPatient, "RX2", "active")); st != http.StatusCreated {
			t.Fatalf("POST Consent: %d %s", st, body)
		}
		var dls []router.DeadLetter
		waitFor(t, "the dead letter", func() bool { dls = deadLetters(t, e); return len(dls) == 1 })
		if dls[0].MessageID != id || dls[0].Code != string(fault.CodeConsentChanged) || dls[0].Stage != "delivery" {
			t.Errorf("dead letter %+v: want message %s at delivery with %s", dls[0], id, fault.CodeConsentChanged)
		}
		for _, outcome := range []string{"withheld", "redecided"} {
			if v := testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", outcome)); v != 0 {
				t.Errorf("%s = %v, want 0", outcome, v)
			}
		}
	})
}

// TestConsentChangeAfterRouteChanged: a waiting payload whose consent
// changed cannot be decided again by a route that no longer delivers to
// its destination (the routes changed across a restart), so it is
// dead-lettered with consent.changed, not sent as decided.
func TestConsentChangeAfterRouteChanged(t *testing.T) {
	forPipelines(t, func(t *testing.T, pipe string) {
		srv, url := downReceiver(t)
		dir := t.TempDir()
		before, _ := filepath.Abs("testdata/routes")
		after := t.TempDir()
		route := "name: to-ehr\nsource:\n  adapter: pas\nmatch: msg.type == \"ADT^A01\"\n" +
			"consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\ndestinations:\n  - name: archive\n"
		if err := os.WriteFile(filepath.Join(after, "to-ehr.yaml"), []byte(route), 0o600); err != nil {
			t.Fatal(err)
		}
		start := func(routes string) *engine.Engine {
			body := fmt.Sprintf("data_dir: %s\nhttp:\n  listen: 127.0.0.1:0\nroutes: [%s]\nrouter:\n  ack_wait: 2s\n%s"+
				"inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n  fhir:\n    type: fhir\n"+
				"consent:\n  recheck_after: 0s\n  destinations:\n    ehr: {ods: RX2}\n"+
				"destinations:\n  ehr:\n    type: fhir\n    url: %s\n    retry: {max_attempts: 200, initial: 200ms, max: 200ms, multiplier: 1, timeout: 5s}\n"+
				"  archive:\n    type: file\n    dir: out/archive\n",
				dir, routes, pipelineOf(pipe), url)
			return startFromConfig(t, dir, body)
		}
		e := start(before)
		if code, _ := send(t, mllpAddr(t, e), adt("A01", "CR0001", deniedPatient+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("send: %s", code)
		}
		waitFor(t, "a refused attempt", func() bool {
			return testutil.ToFloat64(e.Metrics().Attempts.WithLabelValues("ehr", "transient")) >= 1
		})
		stopEngine(t, e)
		e = start(after)
		defer stopEngine(t, e)
		base := "http://" + e.HTTPAddr().String()
		if st, body := postConsent(t, base, denyTo("c-deny-r", deniedPatient, "RX2", "active")); st != http.StatusCreated {
			t.Fatalf("POST Consent: %d %s", st, body)
		}
		var dls []router.DeadLetter
		waitFor(t, "the dead letter", func() bool { dls = deadLetters(t, e); return len(dls) == 1 })
		if dls[0].Code != string(fault.CodeConsentChanged) || dls[0].Destination != "ehr" || !strings.Contains(dls[0].Reason, "no longer delivers to ehr") {
			t.Errorf("dead letter %+v: want %s at ehr, saying the route no longer delivers there", dls[0], fault.CodeConsentChanged)
		}
		if n := len(srv.accepted()); n != 0 {
			t.Errorf("the receiver accepted %d payloads", n)
		}
	})
}

// TestOptOutWhileQueued: a patient who joins the national data opt-out
// while two of their payloads wait for a receiver that is down stops the
// one a research route decided (the opt-out gate applied to it): it is
// decided again and withheld. The direct-care route's payload, which the
// opt-out does not reach, is checked, found unchanged and delivered as
// queued, in its place.
func TestOptOutWhileQueued(t *testing.T) {
	forPipelines(t, func(t *testing.T, pipe string) {
		srv, url := downReceiver(t)
		routes := t.TempDir()
		for name, body := range map[string]string{
			"care.yaml":     "name: care\nsource:\n  adapter: pas\nmatch: msg.type == \"ADT^A01\"\nconsent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\ndestinations:\n  - name: ehr\n",
			"research.yaml": "name: study\nsource:\n  adapter: pas\nmatch: msg.type == \"ADT^A01\"\nconsent:\n  purpose: research\n  legal_basis: s251\n  default: permit\ndestinations:\n  - name: registry\n",
		} {
			if err := os.WriteFile(filepath.Join(routes, name), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		retry := "    retry: {max_attempts: 200, initial: 200ms, max: 200ms, multiplier: 1, timeout: 5s}\n"
		e, _ := startEngineWithRoutes(t, routes, "destinations:\n  ehr:\n    type: fhir\n    url: "+url+"\n"+retry+
			"  registry:\n    type: fhir\n    url: "+url+"\n"+retry+
			"consent:\n  recheck_after: 0s\n"+pipe)
		base := "http://" + e.HTTPAddr().String()
		asOf := "?as_of=" + time.Now().UTC().Format(time.RFC3339)
		if st, _, body := postOptOuts(t, base, asOf, controlPatient+"\n"); st != http.StatusOK {
			t.Fatalf("first opt-out list: %d %s", st, body)
		}
		if code, _ := send(t, mllpAddr(t, e), adt("A01", "OQ0001", deniedPatient+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("send: %s", code)
		}
		m := e.Metrics()
		waitFor(t, "both payloads tried and refused by the receiver", func() bool {
			return testutil.ToFloat64(m.Attempts.WithLabelValues("ehr", "transient")) >= 1 &&
				testutil.ToFloat64(m.Attempts.WithLabelValues("registry", "transient")) >= 1
		})
		asOf = "?as_of=" + time.Now().UTC().Format(time.RFC3339)
		if st, _, body := postOptOuts(t, base, asOf, controlPatient+"\n"+deniedPatient+"\n"); st != http.StatusOK {
			t.Fatalf("second opt-out list: %d %s", st, body)
		}
		waitFor(t, "the research payload decided again and withheld", func() bool {
			for _, trail := range trails(t, e) {
				withheld, refused := false, false
				for _, r := range trail {
					withheld = withheld || r.Event == audit.Filtered && r.Destination == "registry" && r.Outcome == audit.OutcomeWithheld
					refused = refused || r.Event == audit.Consent && r.Destination == "registry" && r.Outcome == "deny"
				}
				if withheld && refused {
					return true
				}
			}
			return false
		})
		srv.mu.Lock()
		srv.statuses = nil
		srv.mu.Unlock()
		waitFor(t, "the direct-care delivery", func() bool {
			return testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "delivered")) >= 1
		})
		if v := testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "redecided")) + testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "withheld")); v != 0 {
			t.Errorf("direct-care payload decided again %v times, want 0: the opt-out does not apply to it", v)
		}
		if got := srv.accepted(); len(got) != 1 || !strings.Contains(got[0], "|care|ehr") {
			t.Errorf("the receiver accepted %q; want only the direct-care payload", got)
		}
	})
}
