package engine_test

import (
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// optOutFeedRoute sends every posted Binary to the optout-list
// destination.
const optOutFeedRoute = `name: optout-feed
source:
  adapter: fhir
match: bundle.entry.exists(e, e.resource.resourceType == "Binary")
consent:
  purpose: direct-care
  legal_basis: direct-care
  default: permit
destinations:
  - name: optouts
`

// optedOutFlagRoute copies admissions of patients on the opt-out list
// (patient.consent.optedOut) to a file, for direct care, which the opt-out
// does not restrict.
const optedOutFlagRoute = `name: opted-out-flag
source:
  adapter: pas
  events: [ADT^A01]
match: has(patient.consent) && patient.consent.optedOut
consent:
  purpose: direct-care
  legal_basis: direct-care
  default: permit
destinations:
  - name: flagged
`

// binaryList is a FHIR Binary holding list as text/csv, dated asOf.
func binaryList(list string, asOf time.Time) string {
	return `{"resourceType":"Binary","meta":{"lastUpdated":"` + asOf.UTC().Format(time.RFC3339) + `"},` +
		`"contentType":"text/csv","data":"` + base64.StdEncoding.EncodeToString([]byte(list)) + `"}`
}

// TestOptOutListThroughARoute posts the opt-out extract as a Binary to
// POST /fhir/Binary; a route delivers it to an optout-list destination,
// after which the opted-out patient's admission is denied on the research
// route and another patient's is not, and rules read
// patient.consent.optedOut from it. An older list does not replace it,
// and an extract without a valid NHS number is dead-lettered with a
// reason that holds line numbers, never a number.
func TestOptOutListThroughARoute(t *testing.T) { forPipelines(t, testOptOutListThroughARoute) }

func testOptOutListThroughARoute(t *testing.T, pipe string) {
	routes := writeRoutes(t, map[string]string{"research.yaml": researchRoute, "feed.yaml": optOutFeedRoute, "flag.yaml": optedOutFlagRoute})
	e, dir := startEngineWithRoutes(t, routes, pipe+
		"inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n  fhir:\n    type: fhir\n    resource_types: [Binary, Patient]\n"+
		fileDests("research", "flagged")+"  optouts:\n    type: optout-list\n")
	base := "http://" + e.HTTPAddr().String()
	post := func(body string) { postAccepted(t, base+"/fhir/Binary", body) }
	delivered := func(outcome string) float64 {
		return testutil.ToFloat64(e.Metrics().Delivered.WithLabelValues("optouts", outcome))
	}
	denials := func() float64 {
		return testutil.ToFloat64(e.Metrics().Consent.WithLabelValues("research-extract", "research", "deny"))
	}
	now := time.Now().UTC().Truncate(time.Second)
	post(binaryList("NHS_NUMBER\n"+deniedPatient+"\n9990000019\n", now))
	waitFor(t, "the list to be loaded", func() bool { return delivered("delivered") == 1 })

	addr := mllpAddr(t, e)
	for _, m := range []struct{ ctrl, nhs string }{{"OPTR0001", deniedPatient}, {"OPTR0002", controlPatient}} {
		if code, _ := send(t, addr, adtPatient("A01", m.ctrl, m.nhs, "")); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
	}
	files := readAll(t, waitFiles(t, filepath.Join(dir, "out", "research"), 1))
	if !strings.Contains(files[0], controlPatient) || strings.Contains(files[0], deniedPatient) {
		t.Fatal("the research extract received the wrong patient")
	}
	waitFor(t, "the opt-out denial", func() bool { return denials() == 1 })
	// Rules see the list too: only the opted-out patient's admission has
	// patient.consent.optedOut.
	flagged := readAll(t, waitFiles(t, filepath.Join(dir, "out", "flagged"), 1))
	if !strings.Contains(flagged[0], deniedPatient) || strings.Contains(flagged[0], controlPatient) {
		t.Fatal("patient.consent.optedOut picked the wrong patient")
	}
	if got := recordedRules(t, e, "research-extract", "research", 2); len(got) != 2 || !strings.Contains(strings.Join(got, ","), "deny gate:opt-out") {
		t.Fatalf("decisions: %v, want one opt-out denial and one permit", got)
	}

	// An older list (which would lift the opt-out) is delivered but not
	// loaded.
	post(binaryList(controlPatient+"\n", now.Add(-48*time.Hour)))
	waitFor(t, "the older list to be delivered", func() bool { return delivered("delivered") == 2 })
	if code, _ := send(t, addr, adtPatient("A01", "OPTR0003", deniedPatient, "")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFor(t, "the second opt-out denial", func() bool { return denials() == 2 })

	for _, f := range readAll(t, waitFiles(t, filepath.Join(dir, "out", "flagged"), 2)) {
		if !strings.Contains(f, deniedPatient) || strings.Contains(f, controlPatient) {
			t.Fatal("patient.consent.optedOut picked the wrong patient")
		}
	}

	// An extract without a valid NHS number is dead-lettered.
	post(binaryList("NHS_NUMBER\n9990000019\n1234\n", now.Add(time.Hour)))
	waitFor(t, "the bad list to be dead-lettered", func() bool { return delivered("dead_lettered") == 1 })
	var reason string
	for _, dl := range deadLetters(t, e) {
		if dl.Destination == "optouts" {
			reason = dl.Reason
		}
	}
	if !strings.Contains(reason, "no valid NHS number") || !strings.Contains(reason, "lines 2, 3") || strings.Contains(reason, "999000") {
		t.Errorf("dead-letter reason %q: want the refusal with line numbers and no NHS number", reason)
	}
}
