package engine_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/patient"
)

// gpRoute sends admissions of patients the index knows to "all", those
// registered at practice Y12345 also to "gp", and those the index found
// through a merge also to "merged". It takes only A01: the A08 and A40
// that teach the index are not routed, yet must still reach the index.
const gpRoute = `name: by-gp
source:
  adapter: pas
  events: [ADT^A01]
match: has(patient.nhsNumber)
consent:
  purpose: direct-care
  legal_basis: direct-care
  default: permit
destinations:
  - name: gp
    when: patient.gpPractice == "Y12345"
  - name: merged
    when: patient.merged
  - name: all
`

// adtPatient is an ADT message for an NHS number with PD1 (the registered
// GP practice) when practice is not empty.
func adtPatient(event, ctrl, nhsNumber, practice string) string {
	m := "MSH|^~\\&|PAS|RX1|JUNCTION|RX1|20261123093000||ADT^" + event + "|" + ctrl + "|P|2.4\r" +
		"EVN|" + event + "|20261123093000\r" +
		"PID|1||" + nhsNumber + "^^^NHS^NH||TESTPATIENT^ALEX||19800101|F|||1 TEST STREET^^LEEDS^^LS1 1AA\r"
	if practice != "" {
		m += "PD1|||" + practice + "\r"
	}
	return m + "PV1|1|I|WARD1^BED2^1^RX1||||||||||||||||V" + ctrl + "|||||||||||||||||||||||||20261123092500\r"
}

// a40 merges the record of old into survivor.
func a40(ctrl, survivor, old string) string {
	return "MSH|^~\\&|PAS|RX1|JUNCTION|RX1|20261123094000||ADT^A40^ADT_A39|" + ctrl + "|P|2.4\r" +
		"EVN|A40|20261123094000\r" +
		"PID|1||" + survivor + "^^^NHS^NH||TESTPATIENT^SAM||19700101|M\r" +
		"MRG|" + old + "^^^NHS^NH\r"
}

// writeRoutes writes route files into a new directory and returns it.
func writeRoutes(t *testing.T, routes map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range routes {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// fileDests is config for file destinations of the given names.
func fileDests(names ...string) string {
	s := "destinations:\n"
	for _, n := range names {
		s += "  " + n + ":\n    type: file\n    dir: out/" + n + "\n"
	}
	return s
}

// readAll returns the contents of the files.
func readAll(t *testing.T, files []string) []string {
	t.Helper()
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// TestRoutesReadThePatientIndex sends an update registering one patient at
// practice Y12345 (not routed: the route takes admissions only), then
// admissions without PD1 for that patient and for another: only the first
// patient's reaches the practice's destination, because the index
// remembers the registration. A merge then makes an admission under the
// old NHS number read the survivor's record.
func TestRoutesReadThePatientIndex(t *testing.T) { forPipelines(t, testRoutesReadThePatientIndex) }

func testRoutesReadThePatientIndex(t *testing.T, pipe string) {
	const registered, other, survivor = "9990000018", "9990000026", "9990000042"
	const old = "9990000034"
	routes := writeRoutes(t, map[string]string{"by-gp.yaml": gpRoute})
	e, dir := startEngineWithRoutes(t, routes, pipe+fileDests("gp", "merged", "all"))
	addr := mllpAddr(t, e)
	msgs := []string{
		adtPatient("A08", "PIX0001", registered, "Y12345"),
		adtPatient("A01", "PIX0002", registered, ""),
		adtPatient("A01", "PIX0003", other, ""),
	}
	for _, m := range msgs {
		if code, _ := send(t, addr, m); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
	}
	all := waitFiles(t, filepath.Join(dir, "out", "all"), 2)
	gp := readAll(t, waitFiles(t, filepath.Join(dir, "out", "gp"), 1))
	if !strings.Contains(gp[0], registered) || strings.Contains(gp[0], other) {
		t.Errorf("the practice received the wrong patient's admission")
	}
	for _, b := range readAll(t, all) {
		if strings.Contains(b, "PIX0001") {
			t.Errorf("the A08 was routed; the route takes admissions only")
		}
	}
	if v := testutil.ToFloat64(e.Metrics().PatientIndex.WithLabelValues("pas", "updated")); v < 3 {
		t.Errorf("patients updated in the index = %v, want at least 3", v)
	}
	rec, err := e.PatientIndex().Get(context.Background(), registered)
	if err != nil || rec.GPPractice != "Y12345" {
		t.Fatalf("index record: %v, %v", rec, err)
	}

	// A merge, not routed either, then an admission under the old number.
	// The old and the surviving number may fall in different partitions,
	// which are not ordered with each other: the admission is sent once
	// the merge is in the index.
	for _, m := range []string{adtPatient("A08", "PIX0004", survivor, ""), a40("PIX0005", survivor, old)} {
		if code, _ := send(t, addr, m); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
	}
	waitFor(t, "the merge in the index", func() bool {
		rec, err := e.PatientIndex().Get(context.Background(), old)
		return err == nil && rec.NHSNumber == survivor
	})
	if code, _ := send(t, addr, adtPatient("A01", "PIX0006", old, "")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFiles(t, filepath.Join(dir, "out", "merged"), 1)
	waitFiles(t, filepath.Join(dir, "out", "all"), 3)
	waitFiles(t, filepath.Join(dir, "out", "gp"), 1)
}

// TestRestrictedPatientInIndex marks one patient restricted (S-flag) in
// the patient index and sends admissions, with an address, for that
// patient and another: the FHIR store, not allow-listed for S-FLAG, gets
// the restricted patient's Patient without the address, and the other's
// with it, although neither message carries the R label.
func TestRestrictedPatientInIndex(t *testing.T) { forPipelines(t, testRestrictedPatientInIndex) }

func testRestrictedPatientInIndex(t *testing.T, pipe string) {
	const restricted, other = "9990000018", "9990000026"
	e, dir := startEngine(t, pipe)
	if _, err := e.PatientIndex().SetRestricted(context.Background(), restricted, true, patient.Source{MessageID: "test", Received: time.Now()}); err != nil {
		t.Fatal(err)
	}
	addr := mllpAddr(t, e)
	for _, m := range []string{adtPatient("A01", "RST0001", restricted, ""), adtPatient("A01", "RST0002", other, "")} {
		if code, _ := send(t, addr, m); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
	}
	var sawRestricted, sawOther bool
	for _, b := range readAll(t, waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 2)) {
		switch {
		case strings.Contains(b, restricted):
			sawRestricted = true
			if strings.Contains(b, "LS1 1AA") || strings.Contains(b, "TEST STREET") {
				t.Errorf("the restricted patient's address reached the FHIR store")
			}
		case strings.Contains(b, other):
			sawOther = true
			if !strings.Contains(b, "LS1 1AA") {
				t.Errorf("the other patient's address was withheld")
			}
		}
	}
	if !sawRestricted || !sawOther {
		t.Fatalf("store received restricted %v, other %v; want both", sawRestricted, sawOther)
	}
	if v := testutil.ToFloat64(e.Metrics().Consent.WithLabelValues("adt-to-fhir-store", "fhir-store", "permit")); v != 2 {
		t.Errorf("permitted deliveries = %v, want 2", v)
	}
}

// flagStoreRoute keeps the Flags social care posts in the FHIR store;
// routing them is what applies them to the patient index.
const flagStoreRoute = `name: flags-to-store
source:
  adapter: fhir
match: bundle.entry.exists(e, e.resource.resourceType == "Flag")
consent:
  purpose: direct-care
  legal_basis: direct-care
  default: permit
destinations:
  - name: fhir-store
`

// safeguardingRoute copies admissions of patients with an active child
// protection plan flag to the safeguarding team.
const safeguardingRoute = `name: cpp-admissions
source:
  adapter: pas
  events: [ADT^A01]
match: '"CPP" in patient.activeFlags'
consent:
  purpose: safeguarding
  legal_basis: safeguarding
  skip_consent_gate: true
  default: permit
destinations:
  - name: safeguarding
`

// TestSocialCareFlagReachesRoutes posts a Flag (an active child
// protection plan, as a council's case system would) for one patient to
// the FHIR endpoint, then admits that patient and another: only the
// flagged patient's admission goes to safeguarding. A later Flag marked
// inactive ends it.
func TestSocialCareFlagReachesRoutes(t *testing.T) { forPipelines(t, testSocialCareFlagReachesRoutes) }

func testSocialCareFlagReachesRoutes(t *testing.T, pipe string) {
	const flagged, other = "9990000018", "9990000026"
	routes := writeRoutes(t, map[string]string{"cpp.yaml": safeguardingRoute, "flags.yaml": flagStoreRoute})
	e, dir := startEngineWithRoutes(t, routes, pipe+fileDests("safeguarding", "fhir-store"))
	url := "http://" + e.HTTPAddr().String() + "/fhir/Flag"
	flag := func(status string) {
		body := `{"resourceType": "Flag", "status": "` + status + `",
  "code": {"coding": [{"system": "https://example.org/CodeSystem/socialcare-flag", "code": "CPP", "display": "Child protection plan"}]},
  "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "` + flagged + `"}},
  "author": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "E09000033"}}}`
		resp, err := http.Post(url, "application/fhir+json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("POST Flag: status %d: %s", resp.StatusCode, b)
		}
	}
	active := func() bool {
		rec, err := e.PatientIndex().Get(context.Background(), flagged)
		if err != nil {
			return false
		}
		for _, f := range rec.Flags {
			if f.Code == "CPP" && f.ActiveAt(time.Now()) {
				return true
			}
		}
		return false
	}
	flag("active")
	waitFor(t, "the flag to reach the index", active)
	addr := mllpAddr(t, e)
	for _, m := range []string{adtPatient("A01", "CPP0001", flagged, ""), adtPatient("A01", "CPP0002", other, "")} {
		if code, _ := send(t, addr, m); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
	}
	waitFiles(t, filepath.Join(dir, "out", "safeguarding"), 1)
	time.Sleep(300 * time.Millisecond) // room for a wrong second delivery
	got := readAll(t, waitFiles(t, filepath.Join(dir, "out", "safeguarding"), 1))
	if len(got) != 1 || !strings.Contains(got[0], flagged) {
		t.Errorf("safeguarding received %d admissions, want only the flagged patient's", len(got))
	}
	flag("inactive")
	waitFor(t, "the flag to end", func() bool { return !active() })
}

// TestUnroutedInputFeedsTheIndex runs with one route, on the FHIR input:
// no route reads the PAS input, yet its messages (a registration at a
// practice, then a merge) reach the patient index, and nothing is
// delivered from them.
func TestUnroutedInputFeedsTheIndex(t *testing.T) { forPipelines(t, testUnroutedInputFeedsTheIndex) }

func testUnroutedInputFeedsTheIndex(t *testing.T, pipe string) {
	const registered, survivor, old = "9990000018", "9990000042", "9990000034"
	const fhirOnly = `name: fhir-only
source:
  adapter: fhir
match: "true"
consent:
  purpose: direct-care
  legal_basis: direct-care
  default: permit
destinations:
  - name: all
`
	routes := writeRoutes(t, map[string]string{"fhir-only.yaml": fhirOnly})
	e, dir := startEngineWithRoutes(t, routes, pipe+fileDests("all"))
	addr := mllpAddr(t, e)
	for _, m := range []string{
		adtPatient("A08", "UNR0001", registered, "Y12345"),
		adtPatient("A08", "UNR0002", survivor, ""),
	} {
		if code, _ := send(t, addr, m); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
	}
	waitFor(t, "the registration in the index", func() bool {
		rec, err := e.PatientIndex().Get(context.Background(), registered)
		return err == nil && rec.GPPractice == "Y12345"
	})
	waitFor(t, "the survivor in the index", func() bool {
		_, err := e.PatientIndex().Get(context.Background(), survivor)
		return err == nil
	})
	if code, _ := send(t, addr, a40("UNR0003", survivor, old)); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFor(t, "the merge in the index", func() bool {
		rec, err := e.PatientIndex().Get(context.Background(), old)
		return err == nil && rec.NHSNumber == survivor
	})
	if v := testutil.ToFloat64(e.Metrics().PatientIndex.WithLabelValues("pas", "updated")); v < 2 {
		t.Errorf("patients updated in the index from pas = %v, want at least 2", v)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "out", "all", "*", "*")); len(files) != 0 {
		t.Errorf("%d files delivered from an input no route reads", len(files))
	}
}
