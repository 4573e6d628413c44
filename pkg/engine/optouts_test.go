package engine_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// researchRoute sends admissions to a research extract under s251
// support: the national data opt-out applies.
const researchRoute = `name: research-extract
source:
  adapter: pas
  events: [ADT^A01]
consent:
  purpose: research
  legal_basis: s251
  default: permit
destinations:
  - name: research
`

// postOptOuts posts an opt-out list and decodes the report.
func postOptOuts(t *testing.T, base, query, body string) (int, engine.OptOutReport, string) {
	t.Helper()
	resp, err := http.Post(base+"/api/optouts"+query, "text/csv", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	var rep engine.OptOutReport
	_ = json.Unmarshal(raw, &rep)
	return resp.StatusCode, rep, string(raw)
}

// consentRules returns the rules of the consent decisions recorded for
// route and destination, across every trail.
func consentRules(t *testing.T, e *engine.Engine, route, dest string) []string {
	t.Helper()
	var out []string
	for _, trail := range trails(t, e) {
		for _, r := range trail {
			if r.Event == audit.Consent && r.Route == route && r.Destination == dest && (r.Outcome == "deny" || r.Outcome == "permit") {
				out = append(out, r.Outcome+" "+r.Rule)
			}
		}
	}
	return out
}

// recordedRules waits until the trails hold at least n consent decisions
// for route and destination, and returns them: a decision is counted in
// the metrics before its audit record is stored.
func recordedRules(t *testing.T, e *engine.Engine, route, dest string, n int) []string {
	t.Helper()
	var got []string
	waitFor(t, fmt.Sprintf("%d recorded consent decisions", n), func() bool {
		got = consentRules(t, e, route, dest)
		return len(got) >= n
	})
	return got
}

// TestOptOutImport: before any opt-out list the research route is denied
// as stale; POST /api/optouts imports a list (reporting an invalid line by
// number, never echoing a number); then the opted-out patient is denied
// and another permitted.
func TestOptOutImport(t *testing.T) { forPipelines(t, testOptOutImport) }

func testOptOutImport(t *testing.T, pipe string) {
	routes := writeRoutes(t, map[string]string{"research.yaml": researchRoute})
	e, dir := startEngineWithRoutes(t, routes, pipe+fileDests("research"))
	base := "http://" + e.HTTPAddr().String()
	addr := mllpAddr(t, e)
	denials := func() float64 {
		return testutil.ToFloat64(e.Metrics().Consent.WithLabelValues("research-extract", "research", "deny"))
	}
	if code, _ := send(t, addr, adtPatient("A01", "OPT0001", controlPatient, "")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFor(t, "the stale-list denial", func() bool { return denials() == 1 })
	if got := recordedRules(t, e, "research-extract", "research", 1); len(got) != 1 || got[0] != "deny gate:opt-out:stale" {
		t.Fatalf("decisions before import: %v, want one stale-list denial", got)
	}

	// Both dates from one reading of the clock, so a run across midnight
	// keeps them a day apart.
	now := time.Now().UTC()
	today := now.Format(time.DateOnly)
	for _, tt := range []struct {
		name, query, body string
		status            int
	}{
		{"as_of missing", "", deniedPatient + "\n", http.StatusBadRequest},
		{"as_of not a date", "?as_of=yesterday", deniedPatient + "\n", http.StatusBadRequest},
		{"no valid number", "?as_of=" + today, "9990000019\n", http.StatusUnprocessableEntity},
	} {
		st, rep, raw := postOptOuts(t, base, tt.query, tt.body)
		if st != tt.status || rep.Imported {
			t.Errorf("%s: %d %s, want %d and nothing imported", tt.name, st, raw, tt.status)
		}
	}
	st, rep, raw := postOptOuts(t, base, "?as_of="+today, "NHS_NUMBER,REASON\n"+deniedPatient+",type-1\n9990000019,type-1\n")
	if st != http.StatusOK || !rep.Imported || rep.Accepted != 1 || rep.Invalid != 1 || len(rep.InvalidLines) != 1 || rep.InvalidLines[0] != 3 || !rep.HeaderSkipped {
		t.Fatalf("import: %d %s", st, raw)
	}
	if strings.Contains(raw, "999000") {
		t.Errorf("the report echoes an NHS number: %s", raw)
	}
	// An older list does not replace the newer one unless asked to: it
	// would lift today's opt-outs. (The stored list is left as today's.)
	yesterday := now.AddDate(0, 0, -1).Format(time.DateOnly)
	if st, rep, raw := postOptOuts(t, base, "?as_of="+yesterday, controlPatient+"\n"); st != http.StatusConflict || rep.Imported || !strings.Contains(rep.Error, "replace_newer=true") {
		t.Errorf("older list: %d %s, want 409 and nothing imported", st, raw)
	}
	if st, rep, raw := postOptOuts(t, base, "?as_of="+today, "NHS_NUMBER,REASON\n"+deniedPatient+",type-1\n9990000019,type-1\n"); st != http.StatusOK || !rep.Imported {
		t.Errorf("same date again: %d %s, want it imported", st, raw)
	}

	for _, m := range []struct{ ctrl, nhs string }{{"OPT0002", deniedPatient}, {"OPT0003", controlPatient}} {
		if code, _ := send(t, addr, adtPatient("A01", m.ctrl, m.nhs, "")); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
	}
	files := readAll(t, waitFiles(t, filepath.Join(dir, "out", "research"), 1))
	if !strings.Contains(files[0], controlPatient) || strings.Contains(files[0], deniedPatient) {
		t.Errorf("the research extract received the wrong patient")
	}
	waitFor(t, "the opt-out denial", func() bool { return denials() == 2 })
	var optedOut int
	// The stale-list denial, the opt-out denial and the other patient's
	// permit.
	for _, r := range recordedRules(t, e, "research-extract", "research", 3) {
		if r == "deny gate:opt-out" {
			optedOut++
		}
	}
	if optedOut != 1 {
		t.Errorf("opt-out denials = %d, want 1", optedOut)
	}
	// Rolling back to an older list is possible when asked for.
	if st, rep, raw := postOptOuts(t, base, "?replace_newer=true&as_of="+yesterday, controlPatient+"\n"); st != http.StatusOK || !rep.Imported {
		t.Errorf("older list with replace_newer: %d %s, want it imported", st, raw)
	}
}

// TestOptOutFileLoadedAtStart: with consent.opt_out_file the list is
// loaded at start, so the research route is not stale: the opted-out
// patient is denied and another permitted.
func TestOptOutFileLoadedAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "optouts.txt")
	if err := os.WriteFile(path, []byte(deniedPatient+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	routes := writeRoutes(t, map[string]string{"research.yaml": researchRoute})
	e, dir := startEngineWithRoutes(t, routes, fileDests("research")+"consent:\n  opt_out_file: "+path+"\n")
	addr := mllpAddr(t, e)
	for _, m := range []struct{ ctrl, nhs string }{{"OPTF0001", deniedPatient}, {"OPTF0002", controlPatient}} {
		if code, _ := send(t, addr, adtPatient("A01", m.ctrl, m.nhs, "")); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
	}
	files := readAll(t, waitFiles(t, filepath.Join(dir, "out", "research"), 1))
	if !strings.Contains(files[0], controlPatient) {
		t.Errorf("the research extract received the wrong patient")
	}
	waitFor(t, "the opt-out denial", func() bool {
		return testutil.ToFloat64(e.Metrics().Consent.WithLabelValues("research-extract", "research", "deny")) == 1
	})
	if got := recordedRules(t, e, "research-extract", "research", 2); len(got) != 2 {
		t.Errorf("decisions %v, want a denial and a permit", got)
	}
}
