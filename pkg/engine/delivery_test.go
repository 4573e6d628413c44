package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/adapters/fhir"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/router"
	"github.com/junction-fhir/junction/pkg/store"
)

// fhirServer is a FHIR server double whose answers the test scripts: a
// queue of status codes, then 200.
type fhirServer struct {
	mu       sync.Mutex
	statuses []int
	got      []string // X-Request-Id of accepted requests
	calls    int
	// retryAfter, if set, is the Retry-After header of 429 and 503
	// answers.
	retryAfter string
	// at is when each request other than a search came.
	at []time.Time
}

func (f *fhirServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if answerSearch(w, r) {
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.calls++
	f.at = append(f.at, time.Now())
	status := 200
	if len(f.statuses) > 0 {
		status, f.statuses = f.statuses[0], f.statuses[1:]
	}
	if status < 300 {
		var b struct{ Type string }
		if json.Unmarshal(body, &b) != nil || b.Type != "transaction" {
			status = 422
		} else {
			f.got = append(f.got, r.Header.Get("X-Request-Id"))
		}
	}
	retryAfter := f.retryAfter
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/fhir+json")
	if retryAfter != "" && (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	if status >= 400 {
		_, _ = io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"scripted failure"}]}`)
		return
	}
	_, _ = io.WriteString(w, `{"resourceType":"Bundle","type":"transaction-response"}`)
}

// answerSearch answers the search a fhir destination makes before a
// merge (POST [base]/Type/_search) as a server holding nothing would, and
// reports whether r was one.
func answerSearch(w http.ResponseWriter, r *http.Request) bool {
	if !strings.HasSuffix(r.URL.Path, "/_search") {
		return false
	}
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/fhir+json")
	_, _ = io.WriteString(w, `{"resourceType":"Bundle","type":"searchset","total":0}`)
	return true
}

func (f *fhirServer) script(s ...int) {
	f.mu.Lock()
	f.statuses = append(f.statuses, s...)
	f.mu.Unlock()
}

func (f *fhirServer) accepted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func startWithEHR(t *testing.T, pipe string) (*engine.Engine, *fhirServer) {
	t.Helper()
	return startWithServer(t, &fhirServer{}, "100ms", pipe)
}

// startWithServer starts an engine whose destination ehr is srv, retried
// with backoff from 20 ms up to maxWait.
func startWithServer(t *testing.T, srv *fhirServer, maxWait, pipe string) (*engine.Engine, *fhirServer) {
	t.Helper()
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	routes, _ := filepath.Abs("testdata/routes")
	e, _ := startEngineWithRoutes(t, routes, `destinations:
  ehr:
    type: fhir
    url: `+hs.URL+`
    retry: {max_attempts: 4, initial: 20ms, max: `+maxWait+`, multiplier: 2, timeout: 5s}
`+pipe)
	return e, srv
}

// heldReceiver is a FHIR server that holds every request until release
// is called (or the request is cancelled), then accepts it. arrived
// receives once, when the first request comes in. release may be called
// more than once; the test's cleanup calls it too.
func heldReceiver(t *testing.T) (url string, arrived <-chan struct{}, release func()) {
	t.Helper()
	held := make(chan struct{})
	first := make(chan struct{}, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case first <- struct{}{}:
		default:
		}
		select {
		case <-held:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/fhir+json")
		_, _ = io.WriteString(w, `{"resourceType":"Bundle","type":"transaction-response"}`)
	}))
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	t.Cleanup(hs.Close)
	t.Cleanup(release) // runs before hs.Close, so held requests end
	return hs.URL, first, release
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deadLetters(t *testing.T, e *engine.Engine) []router.DeadLetter {
	var dls []router.DeadLetter
	if st := getJSON(t, "http://"+e.HTTPAddr().String()+"/api/deadletters", &dls); st != 200 {
		t.Fatalf("deadletters: %d", st)
	}
	return dls
}

// TestTransientFailuresRetried: a FHIR server answering 503, then 429,
// then 200 gets the message on the third attempt, and the trail shows the
// two failures and the delivery.
func TestTransientFailuresRetried(t *testing.T) { forPipelines(t, testTransientFailuresRetried) }

func testTransientFailuresRetried(t *testing.T, pipe string) {
	e, srv := startWithEHR(t, pipe)
	srv.script(503, 429)
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "RT0001", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	m := e.Metrics()
	// The server counts the request before Junction has its answer; wait
	// for Junction to have recorded the delivery too.
	waitFor(t, "delivery", func() bool {
		return len(srv.accepted()) == 1 && testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "delivered")) >= 1
	})
	if v := testutil.ToFloat64(m.Attempts.WithLabelValues("ehr", "transient")); v != 2 {
		t.Errorf("transient attempts = %v, want 2", v)
	}
	if v := testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "delivered")); v != 1 {
		t.Errorf("delivered = %v, want 1", v)
	}
	if n := len(deadLetters(t, e)); n != 0 {
		t.Errorf("%d dead letters, want 0", n)
	}
}

// TestRetryAfterHonoured: a FHIR server answering 503 with Retry-After
// gets its next request no sooner than it asked, though the backoff is
// shorter; in the batch pipeline that is the first retry, made from the
// partition's lane.
func TestRetryAfterHonoured(t *testing.T) { forPipelines(t, testRetryAfterHonoured) }

func testRetryAfterHonoured(t *testing.T, pipe string) {
	e, srv := startWithServer(t, &fhirServer{retryAfter: "1"}, "5s", pipe)
	srv.script(503)
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "RA0001", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFor(t, "delivery", func() bool { return len(srv.accepted()) == 1 })
	srv.mu.Lock()
	at := slices.Clone(srv.at)
	srv.mu.Unlock()
	if len(at) != 2 {
		t.Fatalf("%d requests, want 2 (a 503, then the delivery)", len(at))
	}
	// The server asked for 1 s; the backoff alone would wait 20 ms.
	if gap := at[1].Sub(at[0]); gap < 900*time.Millisecond {
		t.Errorf("second request %v after the 503 with Retry-After: 1, want 1 s or more", gap)
	}
}

// TestPermanentFailureDeadLetteredAndReplayed: a 400 dead-letters the
// delivery at once with the reason; after the receiver is fixed, replay by
// destination delivers it, and the dead letter is gone.
func TestPermanentFailureDeadLetteredAndReplayed(t *testing.T) {
	forPipelines(t, testPermanentFailureDeadLetteredAndReplayed)
}

func testPermanentFailureDeadLetteredAndReplayed(t *testing.T, pipe string) {
	e, srv := startWithEHR(t, pipe)
	srv.script(400)
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "PF0001", "9990000026^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	var dls []router.DeadLetter
	waitFor(t, "dead letter", func() bool { dls = deadLetters(t, e); return len(dls) == 1 })
	d := dls[0]
	if d.Stage != "delivery" || d.Destination != "ehr" || d.Code != "destination.rejected" {
		t.Errorf("dead letter = %+v", d)
	}
	if strings.Contains(d.Reason, "scripted failure") || d.Detail != "" {
		t.Errorf("dead letter's reason %q or detail %q carries the receiver's answer unasked (it may hold patient data)", d.Reason, d.Detail)
	}
	// Asked for, the receiver's answer is kept with the dead letter.
	var detailed []router.DeadLetter
	if st := getJSON(t, "http://"+e.HTTPAddr().String()+"/api/deadletters?detail=true", &detailed); st != 200 || len(detailed) != 1 || !strings.Contains(detailed[0].Detail, "scripted failure") {
		t.Errorf("deadletters?detail=true: %d %+v, want the receiver's OperationOutcome text", st, detailed)
	}
	// A window's ends may be durations before now, as the CLI takes them.
	var recent []router.DeadLetter
	if st := getJSON(t, "http://"+e.HTTPAddr().String()+"/api/deadletters?since=1h", &recent); st != 200 || len(recent) != 1 {
		t.Errorf("deadletters?since=1h: %d %+v, want the dead letter", st, recent)
	}
	// A bad limit is answered plainly, not with a parser's error.
	var bad map[string]string
	if st := getJSON(t, "http://"+e.HTTPAddr().String()+"/api/deadletters?limit=abc", &bad); st != http.StatusBadRequest || bad["error"] != "limit must be a positive whole number" {
		t.Errorf("deadletters?limit=abc: %d %v", st, bad)
	}
	if len(srv.accepted()) != 0 {
		t.Fatal("delivered despite 400")
	}
	// A window that ends before it starts is refused, not an empty replay.
	now := time.Now()
	if status, _ := postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{Since: now.Add(-time.Hour), Until: now.Add(-2 * time.Hour)}}); status != http.StatusBadRequest {
		t.Errorf("replay of a backwards window: status %d, want 400", status)
	}
	// The window's ends may be durations before now, as for the CLI; one
	// that is neither is answered plainly, not with a parser's error.
	for _, tc := range []struct {
		body, err string
		status    int
	}{
		{`{"filter":{"since":"2h","until":"1h"}}`, "", http.StatusOK},
		{`{"filter":{"since":"yesterday"}}`, "filter.since and filter.until must be RFC 3339 times or durations before now, such as 2h", http.StatusBadRequest},
	} {
		resp, err := http.Post("http://"+e.HTTPAddr().String()+"/api/replay", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != tc.status || tc.err != "" && out["error"] != tc.err {
			t.Errorf("replay %s: %d %v, want %d %q", tc.body, resp.StatusCode, out, tc.status, tc.err)
		}
	}
	if len(srv.accepted()) != 0 {
		t.Fatal("a window that ended an hour ago replayed the dead letter")
	}
	// So is a destination that is not configured (a typo would otherwise
	// replay nothing and say so quietly).
	if status, _ := postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{Destination: "ehr-typo"}}); status != http.StatusBadRequest {
		t.Errorf("replay of an unknown destination: status %d, want 400", status)
	}
	if status, _ := postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{Route: "adt-typo"}}); status != http.StatusBadRequest {
		t.Errorf("replay of an unknown route: status %d, want 400", status)
	}
	status, res := postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{Destination: "ehr"}})
	if status != 200 || len(res.Replayed) != 1 {
		t.Fatalf("replay: %d %+v", status, res)
	}
	waitFor(t, "replayed delivery", func() bool { return len(srv.accepted()) == 1 })
	if n := len(deadLetters(t, e)); n != 0 {
		t.Errorf("%d dead letters after replay, want 0", n)
	}
	var view engine.MessageView
	getJSON(t, "http://"+e.HTTPAddr().String()+"/api/messages/"+d.MessageID, &view)
	events := map[audit.Event]int{}
	for _, r := range view.Trail {
		events[r.Event]++
	}
	for _, ev := range []audit.Event{audit.Failed, audit.DeadLettered, audit.Replayed, audit.Delivered} {
		if events[ev] == 0 {
			t.Errorf("trail lacks %s: %v", ev, events)
		}
	}
	// The replayed record names who asked for the replay (here the
	// machine's own tokenless caller).
	for _, r := range view.Trail {
		if r.Event == audit.Replayed && r.Principal != engine.LocalPrincipal {
			t.Errorf("replayed record's principal %q, want %q", r.Principal, engine.LocalPrincipal)
		}
	}
	// Every record of the message that concerns the patient carries the
	// translation's patient hash: the delivery stage's failure and dead
	// letter, the replay and the replayed delivery too.
	var patient string
	for _, r := range view.Trail {
		if r.Event == audit.Translated {
			patient = r.Patient
		}
	}
	if patient == "" {
		t.Fatalf("no patient hash on the translation record: %+v", view.Trail)
	}
	for _, r := range view.Trail {
		switch r.Event {
		case audit.Consent, audit.Queued, audit.Failed, audit.DeadLettered, audit.Replayed, audit.Delivered:
			if r.Patient != patient || r.NoPatient {
				t.Errorf("%s record carries patient hash %q (none: %v), want the translation's", r.Event, r.Patient, r.NoPatient)
			}
		}
	}
}

// TestReplayDecidesConsentAgain: a delivery dead-lettered before the
// patient refused the destination is not sent when it is replayed: the
// replay routes the stored input again, so the refusal decides, and the
// trail says so.
func TestReplayDecidesConsentAgain(t *testing.T) {
	forPipelines(t, func(t *testing.T, pipe string) {
		e, srv := startWithEHR(t, pipe+"consent:\n  destinations:\n    ehr: {ods: RX2}\n")
		srv.script(400)
		if code, _ := send(t, mllpAddr(t, e), adt("A01", "RC0001", deniedPatient+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
		var dls []router.DeadLetter
		waitFor(t, "dead letter", func() bool { dls = deadLetters(t, e); return len(dls) == 1 })
		base := "http://" + e.HTTPAddr().String()
		if st, body := postConsent(t, base, denyTo("c-deny-rx2", deniedPatient, "RX2", "active")); st != http.StatusCreated {
			t.Fatalf("POST Consent: %d %s", st, body)
		}
		status, res := postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{Destination: "ehr"}})
		if status != 200 || len(res.Replayed) != 1 {
			t.Fatalf("replay: %d %+v", status, res)
		}
		id := dls[0].MessageID
		waitFor(t, "the replay's consent decision", func() bool {
			for _, r := range trails(t, e)[id] {
				if r.Event == audit.Consent && r.Destination == "ehr" && r.Outcome == "deny" && r.Rule == "consent:c-deny-rx2:Consent.provision" {
					return true
				}
			}
			return false
		})
		for _, r := range trails(t, e)[id] {
			if r.Event == audit.Delivered || r.Event == audit.Queued && r.Time.After(dls[0].Time) {
				t.Errorf("replayed message %s after the refusal: %+v", r.Event, r)
			}
		}
		if n := len(srv.accepted()); n != 0 {
			t.Errorf("the receiver accepted %d requests after the patient refused it", n)
		}
	})
}

// TestReplayTwoDestinationsOfOneMessage: a message dead-lettered at two
// destinations of one route, both replayed at once, is routed again for
// each, and each routing's records (its consent decision, its queued
// payload) are kept: they are not taken for one another's.
func TestReplayTwoDestinationsOfOneMessage(t *testing.T) {
	forPipelines(t, func(t *testing.T, pipe string) {
		srv1, srv2 := &fhirServer{}, &fhirServer{}
		h1, h2 := httptest.NewServer(srv1), httptest.NewServer(srv2)
		t.Cleanup(h1.Close)
		t.Cleanup(h2.Close)
		routes := writeRoutes(t, map[string]string{"two.yaml": "name: to-two\nsource:\n  adapter: pas\nmatch: msg.type == \"ADT^A01\"\n" +
			"consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\ndestinations:\n  - name: ehr\n  - name: ehr2\n"})
		retry := "    retry: {max_attempts: 1, initial: 20ms, max: 100ms, multiplier: 2, timeout: 5s}\n"
		e, _ := startEngineWithRoutes(t, routes, "destinations:\n  ehr:\n    type: fhir\n    url: "+h1.URL+"\n"+retry+
			"  ehr2:\n    type: fhir\n    url: "+h2.URL+"\n"+retry+pipe)
		srv1.script(400)
		srv2.script(400)
		if code, _ := send(t, mllpAddr(t, e), adt("A01", "RV0001", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
		var dls []router.DeadLetter
		waitFor(t, "two dead letters", func() bool { dls = deadLetters(t, e); return len(dls) == 2 })
		if status, res := postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{Route: "to-two"}}); status != 200 || len(res.Replayed) != 2 {
			t.Fatalf("replay: %d %+v", status, res)
		}
		waitFor(t, "both receivers", func() bool { return len(srv1.accepted()) == 1 && len(srv2.accepted()) == 1 })
		count := func() map[string]int {
			n := map[string]int{}
			recs, err := router.Trail(t.Context(), e.Store().JS, dls[0].MessageID)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				switch r.Event {
				case audit.Queued, audit.Consent, audit.Delivered:
					n[string(r.Event)+" "+r.Destination]++
				}
			}
			return n
		}
		// Each replay routes the message again for its dead letter's
		// destination alone and records a decision for that one only (one
		// for the other would read as a disclosure never made): two
		// consent records each, the original's and its own replay's.
		want := map[string]int{"queued ehr": 2, "queued ehr2": 2, "consent ehr": 2, "consent ehr2": 2, "delivered ehr": 1, "delivered ehr2": 1}
		var got map[string]int
		deadline := time.Now().Add(15 * time.Second)
		for got = count(); !maps.Equal(got, want) && time.Now().Before(deadline); got = count() {
			time.Sleep(200 * time.Millisecond)
		}
		if !maps.Equal(got, want) {
			t.Errorf("records per destination %v, want %v", got, want)
		}
	})
}

// TestConcurrentReplaysResendOnce: replays run at the same time (two
// operators, a retried request) queue each dead letter once, so the
// receiver gets each message once; the replays that lost the race say so.
func TestConcurrentReplaysResendOnce(t *testing.T) {
	e, srv := startWithEHR(t, "")
	srv.script(400, 400, 400)
	for i, nhs := range []string{"9990000026", "9990000034", "9990000042"} {
		if code, _ := send(t, mllpAddr(t, e), adt("A01", fmt.Sprintf("CR%04d", i), nhs+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
	}
	waitFor(t, "dead letters", func() bool { return len(deadLetters(t, e)) == 3 })
	const replays = 6
	results := make([]router.ReplayResult, replays)
	statuses := make([]int, replays)
	var wg sync.WaitGroup
	for i := range replays {
		wg.Go(func() {
			statuses[i], results[i] = postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{Destination: "ehr"}})
		})
	}
	wg.Wait()
	replayed, lost := 0, 0
	for i, res := range results {
		if statuses[i] != http.StatusOK {
			t.Errorf("replay %d: status %d (%+v)", i, statuses[i], res)
		}
		replayed += len(res.Replayed)
		lost += len(res.AlreadyReplayed)
		if len(res.Skipped) > 0 {
			t.Errorf("replay %d left dead letters in place: %+v", i, res.Skipped)
		}
	}
	if replayed != 3 {
		t.Errorf("%d dead letters reported replayed across %d replays, want 3", replayed, replays)
	}
	waitFor(t, "replayed deliveries", func() bool { return len(srv.accepted()) >= 3 })
	time.Sleep(time.Second) // long enough for a second copy to arrive
	if n := len(srv.accepted()); n != 3 {
		t.Errorf("receiver accepted %d deliveries, want 3 (each dead letter once); %d replays reported losing the race", n, lost)
	}
	if n := len(deadLetters(t, e)); n != 0 {
		t.Errorf("%d dead letters left, want 0", n)
	}
	// One replayed record for each, whichever replay wrote it.
	for _, res := range results {
		for _, d := range res.Replayed {
			var view engine.MessageView
			getJSON(t, "http://"+e.HTTPAddr().String()+"/api/messages/"+d.MessageID+"?payloads=false", &view)
			n := 0
			for _, r := range view.Trail {
				if r.Event == audit.Replayed {
					n++
				}
			}
			if n != 1 {
				t.Errorf("message %s has %d replayed records, want 1", d.MessageID, n)
			}
		}
	}
}

// TestRetryBudgetHoldsAcrossRestart: each failed attempt is on the
// message's trail while it is still being retried (so a process that dies
// loses none), and a restarted engine carries on counting from there, so
// max_attempts is the number of attempts in all, not per process.
func TestRetryBudgetHoldsAcrossRestart(t *testing.T) {
	forPipelines(t, testRetryBudgetHoldsAcrossRestart)
}

func testRetryBudgetHoldsAcrossRestart(t *testing.T, pipe string) {
	srv := &fhirServer{}
	srv.script(503, 503, 503, 503, 503, 503, 503, 503, 503, 503)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	routes, _ := filepath.Abs("testdata/routes")
	dir := t.TempDir()
	start := func() *engine.Engine {
		body := fmt.Sprintf("data_dir: %s\nhttp:\n  listen: 127.0.0.1:0\nroutes: [%s]\nrouter:\n  ack_wait: 2s\n%s"+
			"inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n"+
			"destinations:\n  ehr:\n    type: fhir\n    url: %s\n    retry: {max_attempts: 4, initial: 1s, max: 1s, multiplier: 1, timeout: 5s}\n",
			dir, routes, pipelineOf(pipe), hs.URL)
		return startFromConfig(t, dir, body)
	}
	stop := func(e *engine.Engine) { stopEngine(t, e) }
	// The attempt numbers of the failed attempts on the (one) message's
	// trail, in the order recorded.
	failed := func(e *engine.Engine) []int {
		var attempts []int
		for _, recs := range trails(t, e) {
			for _, r := range recs {
				if r.Event == audit.Failed && r.Destination == "ehr" {
					attempts = append(attempts, r.Attempt)
				}
			}
		}
		return attempts
	}
	e := start()
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "RB0001", "9990000026^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	// Recorded as they happen, not when the message's fate is decided.
	waitFor(t, "two failed attempts on the trail", func() bool { return len(failed(e)) >= 2 })
	if n := len(deadLetters(t, e)); n != 0 {
		t.Fatalf("failed attempts reached the trail only with the dead letter, not as they happened")
	}
	stop(e)

	e = start()
	defer stop(e)
	var dls []router.DeadLetter
	waitFor(t, "dead letter after the restart", func() bool { dls = deadLetters(t, e); return len(dls) == 1 })
	if dls[0].Code != "destination.retries-exhausted" || dls[0].Attempts != 4 {
		t.Errorf("dead letter = %+v, want retries-exhausted after 4 attempts", dls[0])
	}
	srv.mu.Lock()
	calls := srv.calls
	srv.mu.Unlock()
	if calls != 4 {
		t.Errorf("receiver was tried %d times in all, want max_attempts (4)", calls)
	}
	if got := failed(e); !slices.Equal(got, []int{1, 2, 3, 4}) {
		t.Errorf("failed attempts on the trail: %v, want [1 2 3 4]", got)
	}
}

// TestRetriesExhausted: a receiver that keeps failing transiently is
// dead-lettered after max_attempts, not parked for ever.
func TestRetriesExhausted(t *testing.T) { forPipelines(t, testRetriesExhausted) }

func testRetriesExhausted(t *testing.T, pipe string) {
	e, srv := startWithEHR(t, pipe)
	srv.script(503, 503, 503, 503, 503)
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "EX0001", "9990000034^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	var dls []router.DeadLetter
	waitFor(t, "dead letter", func() bool { dls = deadLetters(t, e); return len(dls) == 1 })
	if dls[0].Code != "destination.retries-exhausted" || dls[0].Attempts != 4 {
		t.Errorf("dead letter = %+v, want retries-exhausted after 4 attempts", dls[0])
	}
	// The reason says what kept failing, in safe words.
	if want := "gave up after 4 attempts; the last: fhir: server answered 503"; dls[0].Reason != want {
		t.Errorf("dead letter's reason %q, want %q", dls[0].Reason, want)
	}
}

// TestRuleErrorDeadLettersAndEngineContinues: a CEL run-time error
// dead-letters that message at the route stage; later messages still flow.
// TestDeadLettersOfUnknownNames: a dead-letter listing naming a
// destination not configured, or a route not loaded, that matches nothing
// is refused, saying so, rather than answered with an empty list that
// reads as "nothing stuck" when the name was mistyped; a known name with
// nothing matched is an empty list.
func TestDeadLettersOfUnknownNames(t *testing.T) {
	e, srv := startWithEHR(t, "")
	srv.script(400)
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "UN0001", "9990000026^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFor(t, "dead letter", func() bool { return len(deadLetters(t, e)) == 1 })
	tests := []struct {
		name   string
		query  string
		status int
		want   int    // dead letters listed
		err    string // the refusal's error
	}{
		{"configured destination", "destination=ehr", http.StatusOK, 1, ""},
		{"loaded route", "route=to-ehr", http.StatusOK, 1, ""},
		{"configured destination, none in the window", "destination=ehr&until=1h", http.StatusOK, 0, ""},
		{"mistyped destination", "destination=ehr-typo", http.StatusBadRequest, 0, `unknown destination "ehr-typo": not configured, and no dead letter matched names it`},
		{"mistyped route", "route=to-ehr-typo", http.StatusBadRequest, 0, `unknown route "to-ehr-typo": not loaded, and no dead letter matched names it`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw json.RawMessage
			st := getJSON(t, "http://"+e.HTTPAddr().String()+"/api/deadletters?"+tt.query, &raw)
			if st != tt.status {
				t.Fatalf("status %d (%s), want %d", st, raw, tt.status)
			}
			if tt.err != "" {
				var refusal map[string]string
				if err := json.Unmarshal(raw, &refusal); err != nil || refusal["error"] != tt.err {
					t.Errorf("answer %s, want the error %q", raw, tt.err)
				}
				return
			}
			var dls []router.DeadLetter
			if err := json.Unmarshal(raw, &dls); err != nil || dls == nil || len(dls) != tt.want {
				t.Errorf("answer %s, want a list of %d dead letters", raw, tt.want)
			}
		})
	}
}

func TestRuleErrorDeadLettersAndEngineContinues(t *testing.T) {
	forPipelines(t, testRuleErrorDeadLettersAndEngineContinues)
}

func testRuleErrorDeadLettersAndEngineContinues(t *testing.T, pipe string) {
	e, srv := startWithEHR(t, pipe)
	addr := mllpAddr(t, e)
	if code, _ := send(t, addr, adt("A04", "CE0001", "9990000042^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	var dls []router.DeadLetter
	waitFor(t, "dead letter", func() bool { dls = deadLetters(t, e); return len(dls) == 1 })
	if dls[0].Stage != "route" || dls[0].Route != "broken-rule" || dls[0].Code != "rule.eval" {
		t.Errorf("dead letter = %+v", dls[0])
	}
	// The reason names the expression that failed and where it is
	// written, as junction test does.
	if want := filepath.Join("testdata", "routes", "broken-rule.yaml") + ":7:8): evaluation failed"; !strings.HasPrefix(dls[0].Reason, "match (") || !strings.HasSuffix(dls[0].Reason, want) {
		t.Errorf("dead letter's reason %q, want \"match (<path>%s\"", dls[0].Reason, want)
	}
	if code, _ := send(t, addr, adt("A01", "CE0002", "9990000050^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFor(t, "later delivery", func() bool { return len(srv.accepted()) == 1 })
}

// TestFHIRIngressEndToEnd posts a Patient and finds it at the file
// destination; a resend with the same Idempotency-Key, serialised again
// with other white space as a retrying client may, is not routed twice.
func TestFHIRIngressEndToEnd(t *testing.T) { forPipelines(t, testFHIRIngressEndToEnd) }

func testFHIRIngressEndToEnd(t *testing.T, pipe string) {
	e, dir := startEngine(t, pipe)
	url := "http://" + e.HTTPAddr().String() + "/fhir/Patient"
	post := func(body, key string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("post: status %d", resp.StatusCode)
		}
		id := resp.Header.Get(fhir.HeaderMessageID)
		if id == "" {
			t.Fatalf("post: no %s", fhir.HeaderMessageID)
		}
		return id
	}
	// Two messages, each sent twice, serialised again and, the second,
	// stamped again (meta.lastUpdated) as a supplier's retry is.
	bodies := []string{
		`{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000042"}]}`,
		`{"resourceType":"Patient","meta":{"lastUpdated":"2026-12-07T09:00:00Z"},"identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}]}`,
	}
	again := func(body string) string {
		return strings.ReplaceAll(strings.ReplaceAll(body, "09:00:00Z", "09:05:00Z"), `,"`, ",\n  \"") + "\n"
	}
	var ids [2][2]string
	for k, body := range bodies {
		ids[k][0] = post(body, fmt.Sprintf("test-key-%d", k))
		ids[k][1] = post(again(body), fmt.Sprintf("test-key-%d", k))
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 2)
	time.Sleep(300 * time.Millisecond)
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 2)
	// The id each resend was answered with leads to an answer: the
	// original's, or a trail of its own saying whose resend it was, with
	// what was received.
	for k, body := range bodies {
		orig, resend := ids[k][0], ids[k][1]
		if resend == orig {
			continue
		}
		api := "http://" + e.HTTPAddr().String() + "/api/messages/" + resend
		var v engine.MessageView
		waitFor(t, "the resend's trail", func() bool {
			v = engine.MessageView{}
			return getJSON(t, api, &v) == http.StatusOK && len(v.Trail) > 0
		})
		var hops []audit.Record // leaving out this test's own reads
		for _, r := range v.Trail {
			if r.Event != audit.Accessed {
				hops = append(hops, r)
			}
		}
		if len(hops) != 1 || hops[0].Event != audit.Duplicate || hops[0].MessageID != resend || !strings.Contains(hops[0].Reason, orig) {
			t.Errorf("resend %s: trail %+v, want one duplicate record naming %s", resend, hops, orig)
		}
		if v.Input == nil || v.Input.Body != again(body) {
			t.Errorf("resend %s: input %+v, want the body posted", resend, v.Input)
		}
	}
	// Routing again by id: the original is, the resend and an unknown id
	// are left with why.
	const unknown = "01M8ZHX11F3P599TJCGK1VTY0Z"
	orig, resend := ids[0][0], ids[0][1]
	// Delivered already, the original is left unless asked again: a
	// command repeated from history must not quietly send it twice.
	waitFor(t, "the original's delivery on its trail", func() bool {
		var v engine.MessageView
		if getJSON(t, "http://"+e.HTTPAddr().String()+"/api/messages/"+orig, &v) != http.StatusOK {
			return false
		}
		return slices.ContainsFunc(v.Trail, func(r audit.Record) bool { return r.Event == audit.Delivered })
	})
	status, res := postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{IDs: []string{orig}}})
	if status != http.StatusOK || len(res.Rerouted) != 0 || len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0].Why, "delivered already") {
		t.Errorf("replay by id of a delivered message: %d %+v, want it left as delivered already", status, res)
	}
	status, res = postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{IDs: []string{orig, resend, unknown}}, Again: true})
	why := map[string]string{}
	for _, sk := range res.Skipped {
		why[sk.MessageID] = sk.Why
	}
	if status != http.StatusOK || len(res.Rerouted) != 1 || res.Rerouted[0] != orig {
		t.Errorf("replay by id again: %d %+v, want %s rerouted", status, res, orig)
	}
	if !strings.Contains(why[unknown], "no message") {
		t.Errorf("replay of an unknown id: %q, want it left as no message", why[unknown])
	}
	if resend != orig && !strings.Contains(why[resend], orig) {
		t.Errorf("replay of the resend %s: %q, want it left naming %s", resend, why[resend], orig)
	}
	// A message whose stored input is gone (past retention) is left too.
	var ov engine.MessageView
	if getJSON(t, "http://"+e.HTTPAddr().String()+"/api/messages/"+orig, &ov) != http.StatusOK || ov.Input == nil {
		t.Fatalf("original %s: no stored input found", orig)
	}
	st, err := e.Store().JS.Stream(context.Background(), ov.Input.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(context.Background(), ov.Input.Seq); err != nil {
		t.Fatal(err)
	}
	status, res = postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{IDs: []string{orig}}, Again: true})
	if status != http.StatusOK || len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0].Why, "past the ingress retention") {
		t.Errorf("replay of a message whose input is gone: %d %+v, want it left as past retention", status, res)
	}
	resp, err := http.Post(url, "application/fhir+json", strings.NewReader(`{"resourceType":`))
	if err != nil {
		t.Fatal(err)
	}
	oo, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(oo), "OperationOutcome") {
		t.Errorf("invalid JSON: %d %s", resp.StatusCode, oo)
	}
}

// TestOversizedPayloadDeadLettered: a posted resource whose FHIR form is
// bigger than the store accepts (JSON escaping of '<' grows it sixfold) is
// dead-lettered at the route, and the same patient's next message still
// flows instead of queueing behind it for ever.
func TestOversizedPayloadDeadLettered(t *testing.T) {
	forPipelines(t, testOversizedPayloadDeadLettered)
}

func testOversizedPayloadDeadLettered(t *testing.T, pipe string) {
	e, dir := startEngine(t, pipe)
	url := "http://" + e.HTTPAddr().String() + "/fhir/Patient"
	post := func(family string) {
		t.Helper()
		body := `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000042"}],"name":[{"family":"` + family + `"}]}`
		resp, err := http.Post(url, "application/fhir+json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("post: %d", resp.StatusCode)
		}
	}
	post(strings.Repeat("<", 3<<20))
	post("TESTPATIENT")
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	var dls []router.DeadLetter
	waitFor(t, "dead letter", func() bool { dls = deadLetters(t, e); return len(dls) == 1 })
	if dls[0].Stage != "route" || dls[0].Code != "store.payload-too-large" {
		t.Errorf("dead letter = %+v", dls[0])
	}
}

// TestUnroutedSourceGetsAFate: input from a source no route reads is
// stored and acknowledged, and its trail ends in a filtered record rather
// than nothing.
func TestUnroutedSourceGetsAFate(t *testing.T) { forPipelines(t, testUnroutedSourceGetsAFate) }

func testUnroutedSourceGetsAFate(t *testing.T, pipe string) {
	e, _ := startWithEHR(t, pipe) // its routes read only pas
	resp, err := http.Post("http://"+e.HTTPAddr().String()+"/fhir/Patient", "application/fhir+json",
		strings.NewReader(`{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000042"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Junction-Message-Id")
	if resp.StatusCode != http.StatusAccepted || id == "" {
		t.Fatalf("post: %d id %q", resp.StatusCode, id)
	}
	waitFor(t, "no-route record", func() bool {
		var view engine.MessageView
		getJSON(t, "http://"+e.HTTPAddr().String()+"/api/messages/"+id, &view)
		for _, r := range view.Trail {
			if r.Event == audit.Filtered && r.Outcome == "no-route" {
				return true
			}
		}
		return false
	})
}

// TestDeliveryCatchesUpInSpans: while the FHIR server holds its first
// request unanswered, the batch pipeline queues one outbound batch per
// message behind it; once it answers, the destination takes the waiting
// batches as one span. Every message is delivered once, in order, with a
// full trail, and every message reaches a terminal state. (A receiver
// that refuses moves the refused message to its lane instead: see
// TestFailingPatientHoldsUpNoOther.)
func TestDeliveryCatchesUpInSpans(t *testing.T) {
	srv := &fhirServer{}
	held := make(chan struct{})
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(held) }) })
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-held
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	routes, _ := filepath.Abs("testdata/routes")
	e, _ := startEngineWithRoutes(t, routes, `destinations:
  ehr:
    type: fhir
    url: `+hs.URL+`
    timeout: 60s
    retry: {max_attempts: 100000, initial: 20ms, max: 50ms, multiplier: 2, timeout: 60s}
`+batchPipeline)
	addr := mllpAddr(t, e)
	const n = 30
	for i := range n {
		if code, _ := send(t, addr, adt("A01", fmt.Sprintf("SP%04d", i), "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("message %d: ack %s, want AA", i, code)
		}
	}
	m := e.Metrics()
	waitFor(t, "every message routed", func() bool {
		return testutil.ToFloat64(m.Routed.WithLabelValues("to-ehr", "matched")) == n
	})
	release.Do(func() { close(held) })
	waitFor(t, "every delivery", func() bool {
		return testutil.ToFloat64(m.Delivered.WithLabelValues("ehr", "delivered")) == n
	})
	got := srv.accepted()
	if len(got) != n {
		t.Fatalf("server accepted %d requests, want %d", len(got), n)
	}
	// One patient: the server must see the messages in the order sent.
	var trailIDs []string
	for i, rid := range got {
		id, _, _ := strings.Cut(rid, "|")
		trailIDs = append(trailIDs, id)
		if i > 0 && id <= trailIDs[i-1] {
			t.Errorf("delivery %d (%s) not after %s: order inverted or repeated", i, id, trailIDs[i-1])
		}
	}
	spans, batches := testutil.ToFloat64(m.Spans.WithLabelValues("deliver", "ehr")), testutil.ToFloat64(m.SpanBatches.WithLabelValues("deliver", "ehr"))
	if batches <= spans {
		t.Errorf("delivery took %v batches in %v spans; the waiting batches were taken one by one", batches, spans)
	}
	// The last message's trail reaches its delivery through its span.
	last := trailIDs[len(trailIDs)-1]
	var view engine.MessageView
	if st := getJSON(t, "http://"+e.HTTPAddr().String()+"/api/messages/"+last, &view); st != 200 {
		t.Fatalf("GET /api/messages/%s: %d", last, st)
	}
	events := map[audit.Event]bool{}
	for _, r := range view.Trail {
		events[r.Event] = true
	}
	for _, ev := range []audit.Event{audit.Received, audit.Queued, audit.Delivered} {
		if !events[ev] {
			t.Errorf("trail of the last message lacks %s: %v", ev, events)
		}
	}
	waitFor(t, "every message to reach a terminal state", func() bool {
		rep := reconcile(t, e)
		return len(rep.Pending) == 0 && rep.Terminal[audit.OutcomeDelivered] == n
	})
}

// postReplay asks the admin API for a replay.
func postReplay(t *testing.T, e *engine.Engine, req engine.ReplayRequest) (int, router.ReplayResult) {
	t.Helper()
	body, _ := json.Marshal(req)
	resp, err := http.Post("http://"+e.HTTPAddr().String()+"/api/replay", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res router.ReplayResult
	_ = json.NewDecoder(resp.Body).Decode(&res)
	return resp.StatusCode, res
}

// TestReadyzFalseWhileDraining: after Shutdown begins, and while a
// delivery is still in flight, the HTTP listener still answers: /readyz
// says 503 (not a refused connection, which a probe cannot tell from a
// crash), /metrics can be scraped and a FHIR post gets 503. Once the
// drain is over the listener is closed.
func TestReadyzFalseWhileDraining(t *testing.T) {
	url, arrived, release := heldReceiver(t)
	routes, _ := filepath.Abs("testdata/routes")
	e, _ := startEngineWithRoutes(t, routes, `destinations:
  ehr:
    type: fhir
    url: `+url+`
    retry: {max_attempts: 2, initial: 20ms, max: 100ms, multiplier: 2, timeout: 20s}
`)
	base := "http://" + e.HTTPAddr().String()
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "DRAIN001", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	select {
	case <-arrived:
	case <-time.After(15 * time.Second):
		t.Fatal("the delivery never reached the receiver")
	}
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stopped <- e.Shutdown(ctx)
	}()
	waitFor(t, "readiness to fall", func() bool { return !e.Ready() })
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (int, error) {
		resp, err := client.Get(base + path)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if st, err := get("/readyz"); err != nil || st != http.StatusServiceUnavailable {
		t.Errorf("readyz while draining: %d %v, want 503", st, err)
	}
	// It says why, for whoever reads the probe's answer.
	var why map[string]string
	if st := getJSON(t, base+"/readyz", &why); st != http.StatusServiceUnavailable || why["reason"] != "shutting down: draining in-flight work" {
		t.Errorf("readyz while draining: %d %v, want the reason", st, why)
	}
	if st, err := get("/metrics"); err != nil || st != http.StatusOK {
		t.Errorf("metrics while draining: %d %v, want 200", st, err)
	}
	resp, err := client.Post(base+"/fhir", "application/fhir+json", strings.NewReader(`{"resourceType":"Bundle","type":"collection"}`))
	if err != nil {
		t.Errorf("FHIR post while draining: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("FHIR post while draining: %d, want 503", resp.StatusCode)
		}
	}
	// Reads still work; what would change state is refused.
	resp, err = client.Post(base+"/api/replay", "application/json", strings.NewReader(`{"filter": {"destination": "ehr"}}`))
	if err != nil {
		t.Errorf("replay while draining: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("replay while draining: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if st, err := get("/api/deadletters"); err != nil || st != http.StatusOK {
		t.Errorf("dead letters while draining: %d %v, want 200", st, err)
	}
	select {
	case err := <-stopped:
		t.Fatalf("shutdown finished (%v) with a delivery in flight", err)
	default:
	}
	release()
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("shutdown did not finish")
	}
	if _, err := get("/readyz"); err == nil {
		t.Error("the HTTP listener still answers after shutdown")
	}
}

// TestPipelineChangeDeliversOnce changes router.pipeline from batch to
// message and back, twice, on one data directory, sending admissions
// under each: each is delivered once. A pipeline's ingest-log consumer,
// left behind at a change, must not take again on its return what the
// other pipeline took meanwhile.
func TestPipelineChangeDeliversOnce(t *testing.T) {
	srv := &fhirServer{}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	routes, _ := filepath.Abs("testdata/routes")
	dir := t.TempDir()
	sent := 0
	run := func(pipe string, n int) {
		t.Helper()
		body := fmt.Sprintf("data_dir: %s\nhttp:\n  listen: 127.0.0.1:0\nroutes: [%s]\nrouter:\n  ack_wait: 2s\n%s"+
			"inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n"+
			"destinations:\n  ehr:\n    type: fhir\n    url: %s\n    retry: {max_attempts: 4, initial: 1s, max: 1s, multiplier: 1, timeout: 5s}\n",
			dir, routes, pipelineOf(pipe), hs.URL)
		e := startFromConfig(t, dir, body)
		for range n {
			sent++
			ctrl := fmt.Sprintf("PC%04d", sent)
			if code, _ := send(t, mllpAddr(t, e), adt("A01", ctrl, "9990000026^^^NHS^NH")); code != hl7v2.AckAA {
				t.Fatalf("%s: ack %s", ctrl, code)
			}
		}
		want := sent
		waitFor(t, fmt.Sprintf("%d deliveries", want), func() bool { return len(srv.accepted()) >= want })
		// Time for a stale consumer to take old batches again.
		time.Sleep(3 * time.Second)
		stopEngine(t, e)
	}
	run(batchPipeline, 3)
	run(messagePipeline, 3)
	run(batchPipeline, 2)
	run(messagePipeline, 2)
	got := srv.accepted()
	seen := map[string]int{}
	for _, id := range got {
		seen[id]++
	}
	if len(got) != sent || len(seen) != sent {
		t.Errorf("receiver accepted %d requests for %d messages (%d sent): %v", len(got), len(seen), sent, seen)
	}
}

// TestFailingPatientHoldsUpNoOther sends an admission for a patient whose
// deliveries the receiver refuses for a while (503), then admissions for
// patients in other partitions, then the failing patient's next one.
// The others are delivered while the first is still being retried, and
// the failing patient's two arrive in order once the receiver takes
// them. The batch pipeline sends a destination one span at a time, so
// there the retried delivery must move out of the way (its lane).
func TestFailingPatientHoldsUpNoOther(t *testing.T) {
	forPipelines(t, testFailingPatientHoldsUpNoOther)
}

func testFailingPatientHoldsUpNoOther(t *testing.T, pipe string) {
	const failing = "9990000018"
	var mu sync.Mutex
	refusing := true
	var order []string // the control id of each accepted delivery, in order
	tries := 0
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if answerSearch(w, r) {
			return
		}
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/fhir+json")
		if strings.Contains(string(body), failing) && refusing {
			tries++
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient"}]}`)
			return
		}
		for _, v := range regexp.MustCompile(`"V(FP[0-9]+)"`).FindAllStringSubmatch(string(body), -1) {
			order = append(order, v[1])
		}
		_, _ = io.WriteString(w, `{"resourceType":"Bundle","type":"transaction-response"}`)
	}))
	t.Cleanup(hs.Close)
	routes, _ := filepath.Abs("testdata/routes")
	dir := t.TempDir()
	body := fmt.Sprintf("data_dir: %s\nhttp:\n  listen: 127.0.0.1:0\nroutes: [%s]\nrouter:\n  ack_wait: 5s\n%s"+
		"inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n"+
		"destinations:\n  ehr:\n    type: fhir\n    url: %s\n    retry: {max_attempts: 100, initial: 500ms, max: 500ms, multiplier: 1, timeout: 5s}\n",
		dir, routes, pipelineOf(pipe), hs.URL)
	e := startFromConfig(t, dir, body)
	defer stopEngine(t, e)
	addr := mllpAddr(t, e)
	accepted := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), order...)
	}
	sendAdmission := func(ctrl, nhsNumber string) {
		t.Helper()
		if code, _ := send(t, addr, adt("A01", ctrl, nhsNumber+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("%s: ack %s", ctrl, code)
		}
	}
	sendAdmission("FP01", failing)
	waitFor(t, "the receiver to refuse the first admission", func() bool { mu.Lock(); defer mu.Unlock(); return tries >= 1 })
	var others []string
	for _, n := range []string{"9990000026", "9990000034", "9990000042", "9990000050", "9990000085", "9990000093"} {
		if router.PartitionOf(n, 16) != router.PartitionOf(failing, 16) {
			ctrl := fmt.Sprintf("FP%02d", 10+len(others))
			others = append(others, ctrl)
			sendAdmission(ctrl, n)
		}
	}
	waitFor(t, "the other patients' admissions", func() bool {
		got := accepted()
		for _, c := range others {
			if !slices.Contains(got, c) {
				return false
			}
		}
		return true
	})
	sendAdmission("FP02", failing)
	time.Sleep(time.Second)
	if got := accepted(); slices.Contains(got, "FP01") || slices.Contains(got, "FP02") {
		t.Fatalf("the failing patient's admissions were delivered while refused: %v", got)
	}
	mu.Lock()
	refusing = false
	mu.Unlock()
	waitFor(t, "the failing patient's admissions", func() bool { got := accepted(); return slices.Contains(got, "FP02") })
	got := accepted()
	if i, j := slices.Index(got, "FP01"), slices.Index(got, "FP02"); i < 0 || j < i {
		t.Errorf("the failing patient's admissions arrived as %v, want FP01 before FP02", got)
	}
	if n := len(deadLetters(t, e)); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
	// Its lane drained, the batch pipeline marks it closed again, and
	// the patient's next admission goes as any other.
	waitFor(t, "no lane open", func() bool {
		st, err := e.Store().JS.Stream(t.Context(), store.StreamOutbound)
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetLastMsgForSubject(t.Context(), store.SubjOutbound+"._lanes.ehr")
		return errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && len(m.Data) == 0
	})
	sendAdmission("FP03", failing)
	waitFor(t, "the failing patient's next admission", func() bool { return slices.Contains(accepted(), "FP03") })
}

// TestTwoRoutesDeadLetterAtOneDestination: one message's payloads from
// two routes, both refused by one destination, are two dead letters, not
// one taken for the other.
func TestTwoRoutesDeadLetterAtOneDestination(t *testing.T) {
	forPipelines(t, func(t *testing.T, pipe string) {
		srv := &fhirServer{}
		srv.script(400, 400)
		hs := httptest.NewServer(srv)
		t.Cleanup(hs.Close)
		routes := t.TempDir()
		for _, name := range []string{"first", "second"} {
			body := "name: " + name + "\nsource:\n  adapter: pas\nmatch: msg.type == \"ADT^A01\"\nconsent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\ndestinations:\n  - name: ehr\n"
			if err := os.WriteFile(filepath.Join(routes, name+".yaml"), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		e, _ := startEngineWithRoutes(t, routes, "destinations:\n  ehr:\n    type: fhir\n    url: "+hs.URL+"\n"+pipe)
		if code, _ := send(t, mllpAddr(t, e), adt("A01", "TR0001", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
		waitFor(t, "both payloads dead-lettered", func() bool {
			return testutil.ToFloat64(e.Metrics().Delivered.WithLabelValues("ehr", "dead_lettered")) >= 2
		})
		var dls []router.DeadLetter
		waitFor(t, "two dead letters", func() bool { dls = deadLetters(t, e); return len(dls) >= 2 })
		got := []string{dls[0].Route, dls[1].Route}
		slices.Sort(got)
		if len(dls) != 2 || !slices.Equal(got, []string{"first", "second"}) {
			t.Errorf("dead letters %+v: want one from each route", dls)
		}
	})
}
