package engine_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/disclosure"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// disclosureRoutes are five routes from the PAS: four that release an
// admission to three organisations (the trust's EHR, the GP twice, a
// public-health registry) and a research route the national data
// opt-out gate refuses (no opt-out list was ever loaded, so it is stale).
var disclosureRoutes = map[string]string{
	"care-ehr.yaml": `name: care-ehr
source: {adapter: pas, events: [ADT^A01]}
match: nhsNumberValid(nhsNumber(bundle))
consent: {purpose: direct-care, legal_basis: direct-care, default: permit}
transform:
  - keep: resource.resourceType != "MessageHeader"
destinations:
  - name: ehr
`,
	"care-gp.yaml": `name: care-gp
source: {adapter: pas, events: [ADT^A01]}
match: nhsNumberValid(nhsNumber(bundle))
consent: {purpose: direct-care, legal_basis: direct-care, default: permit}
destinations:
  - name: gp
    payload: raw
`,
	"safeguarding.yaml": `name: safeguarding
source: {adapter: pas, events: [ADT^A01]}
match: nhsNumberValid(nhsNumber(bundle))
consent: {purpose: safeguarding, legal_basis: safeguarding, default: permit}
transform:
  - keep: resource.resourceType == "Patient"
destinations:
  - name: gp
`,
	"public-health.yaml": `name: public-health
source: {adapter: pas, events: [ADT^A01]}
match: nhsNumberValid(nhsNumber(bundle))
consent: {purpose: public-health, legal_basis: statutory, default: permit}
transform:
  - keep: resource.resourceType == "Patient" || resource.resourceType == "Encounter"
destinations:
  - name: registry
`,
	"research.yaml": `name: research
source: {adapter: pas, events: [ADT^A01]}
match: nhsNumberValid(nhsNumber(bundle))
consent: {purpose: research, legal_basis: s251, default: permit}
destinations:
  - name: registry
`,
}

const disclosureConfig = `consent:
  sources:
    pas: {ods: RX1}
  destinations:
    ehr: {ods: RX1}
    gp: {ods: A81001}
    registry: {ods: X26}
destinations:
  ehr: {type: file, dir: out/ehr}
  gp: {type: file, dir: out/gp}
  registry: {type: file, dir: out/registry}
`

// Synthetic patient whose disclosures are reported (999 range).
const reportedPatient = "9990000018"

// TestDisclosureReport routes two patients' admissions through the five
// routes and checks the first patient's report entry by entry: four
// releases to three organisations with purposes, legal bases and data
// classes, the research refusal with the opt-out gate marked, nothing of
// the other patient; then the proxy view, withholding and formats.
func TestDisclosureReport(t *testing.T) { forPipelines(t, testDisclosureReport) }

func testDisclosureReport(t *testing.T, pipe string) {
	routes := t.TempDir()
	for name, body := range disclosureRoutes {
		if err := os.WriteFile(filepath.Join(routes, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e, dir := startEngineWithRoutes(t, routes, pipe+disclosureConfig)
	base := "http://" + e.HTTPAddr().String()
	addr := mllpAddr(t, e)
	for _, m := range []struct{ ctrl, nhs string }{{"DISC0001", reportedPatient}, {"DISC0002", controlPatient}} {
		if code, _ := send(t, addr, adt("A01", m.ctrl, m.nhs+"^^^NHS^NH")); code != hl7v2.AckAA {
			t.Fatalf("send %s: %s", m.ctrl, code)
		}
	}
	waitFiles(t, filepath.Join(dir, "out", "ehr"), 2)
	waitFiles(t, filepath.Join(dir, "out", "gp"), 4)
	waitFiles(t, filepath.Join(dir, "out", "registry"), 2)

	report := func(t *testing.T, patient, query string, want int) disclosure.Report {
		t.Helper()
		var rep disclosure.Report
		deadline := time.Now().Add(20 * time.Second)
		for {
			rep = disclosure.Report{}
			if st := getJSON(t, base+"/api/patients/"+patient+"/disclosures"+query, &rep); st != http.StatusOK {
				t.Fatalf("GET disclosures%s: %d", query, st)
			}
			// The receivers' acknowledgements are audited just after the
			// files are written.
			if len(rep.Entries) >= want || time.Now().After(deadline) {
				return rep
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	rep := report(t, reportedPatient, "", 5)
	org := func(name, ods string) disclosure.Org { return disclosure.Org{Name: name, ODS: ods} }
	pas := org("pas", "RX1")
	release := func(rt string, to disclosure.Org, purpose, basis string, classes ...string) disclosure.Entry {
		return disclosure.Entry{Kind: disclosure.KindRelease, Source: pas, Recipient: to, Route: rt, Purpose: purpose,
			LegalBasis: basis, Classes: classes, Decision: "permit", Rule: "consent:none:route-default-permit"}
	}
	want := []disclosure.Entry{
		release("care-ehr", org("ehr", "RX1"), "direct-care", "direct-care", "Encounter", "Location", "Patient", "Provenance"),
		release("care-gp", org("gp", "A81001"), "direct-care", "direct-care", "ADT^A01"),
		release("public-health", org("registry", "X26"), "public-health", "statutory", "Encounter", "Patient"),
		{Kind: disclosure.KindRefused, Source: pas, Recipient: org("registry", "X26"), Route: "research", Purpose: "research",
			LegalBasis: "s251", Decision: "deny", Rule: "gate:opt-out:stale", Reason: "the national data opt-out list is stale", OptOutGate: true},
		release("safeguarding", org("gp", "A81001"), "safeguarding", "safeguarding", "Patient"),
	}
	byRoute := func(es []disclosure.Entry) []disclosure.Entry {
		out := append([]disclosure.Entry(nil), es...)
		sort.Slice(out, func(i, j int) bool { return out[i].Route < out[j].Route })
		return out
	}
	ignore := cmpopts.IgnoreFields(disclosure.Entry{}, "Time", "MessageID")
	if diff := cmp.Diff(want, byRoute(rep.Entries), ignore); diff != "" {
		t.Fatalf("report (-want +got):\n%s", diff)
	}
	msgID := rep.Entries[0].MessageID
	for _, en := range rep.Entries {
		if en.MessageID != msgID || en.MessageID == "" || en.Time.IsZero() {
			t.Errorf("entry %s: message %q at %v; want every entry for message %q, timed", en.Route, en.MessageID, en.Time, msgID)
		}
	}
	// The other patient's report is the same shape but none of it is in
	// the first patient's.
	other := report(t, controlPatient, "", 5)
	if len(other.Entries) != 5 || other.Entries[0].MessageID == msgID {
		t.Errorf("other patient's report: %d entries, message %v; want 5 of another message", len(other.Entries), other.Entries)
	}

	t.Run("audit records carry the patient hash", func(t *testing.T) {
		// The route stage's records (translation, consent, queued) and
		// the delivery stage's (delivered) of each patient's message
		// carry that patient's hash, the same on every record.
		hashes := map[string]string{}
		for id, trail := range trails(t, e) {
			var patient string
			translated := false
			for _, r := range trail {
				if r.Event == audit.Translated {
					patient, translated = r.Patient, true
				}
			}
			if !translated {
				continue // the report requests' access records
			}
			if patient == "" {
				t.Errorf("message %s: no patient hash on its translation", id)
				continue
			}
			hashes[id] = patient
			counts := map[audit.Event]int{}
			for _, r := range trail {
				if strings.Contains(r.Patient, reportedPatient) || strings.Contains(r.Patient, controlPatient) {
					t.Errorf("record holds an NHS number: %+v", r)
				}
				switch r.Event {
				case audit.Consent, audit.Queued, audit.Delivered:
					counts[r.Event]++
					if r.Patient != patient || r.NoPatient {
						t.Errorf("message %s: %s record for %s carries patient hash %q (none: %v), want the translation's", id, r.Event, r.Destination, r.Patient, r.NoPatient)
					}
				}
			}
			// Five routes decide; four release to a destination.
			if counts[audit.Consent] < 5 || counts[audit.Queued] != 4 || counts[audit.Delivered] != 4 {
				t.Errorf("message %s: %v records; want 5 or more consent, 4 queued, 4 delivered", id, counts)
			}
		}
		if len(hashes) != 2 || hashes[msgID] == "" || hashes[msgID] == hashes[other.Entries[0].MessageID] {
			t.Errorf("patient hashes by message %v; want two messages with different hashes", hashes)
		}
	})

	t.Run("proxy", func(t *testing.T) {
		got := report(t, reportedPatient, "?requester=proxy", 4)
		if len(got.Entries) != 4 || slicesHasRoute(got.Entries, "safeguarding") {
			t.Errorf("proxy report holds %d entries (safeguarding shown: %v); want 4 without it", len(got.Entries), slicesHasRoute(got.Entries, "safeguarding"))
		}
		got = report(t, reportedPatient, "?requester=proxy&include_safeguarding=true", 5)
		if !slicesHasRoute(got.Entries, "safeguarding") {
			t.Error("include_safeguarding=true did not show the safeguarding entry")
		}
	})

	t.Run("withhold what the report does not show", func(t *testing.T) {
		for _, tc := range []struct{ name, message, destination string }{
			{"unknown message", "01UNKNOWNMESSAGE0000000000", "gp"},
			{"another patient's message", other.Entries[0].MessageID, other.Entries[0].Recipient.Name},
			{"a destination the message did not go to", msgID, "no-such-destination"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body, _ := json.Marshal(map[string]string{"message_id": tc.message, "destination": tc.destination, "exemption": "DPA 2018 Sch 3 Part 2 para 5 (serious harm)", "reason": "test"})
				resp, err := http.Post(base+"/api/patients/"+reportedPatient+"/disclosures/withhold", "application/json", bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("withhold: %d, want 404", resp.StatusCode)
				}
			})
		}
	})

	t.Run("withhold", func(t *testing.T) {
		body, _ := json.Marshal(map[string]string{"message_id": msgID, "destination": "gp", "exemption": "DPA 2018 Sch 3 Part 2 para 5 (serious harm)", "reason": "decided by the responsible clinician"})
		resp, err := http.Post(base+"/api/patients/"+reportedPatient+"/disclosures/withhold", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("withhold: %d", resp.StatusCode)
		}
		// Both releases to the GP are withheld from the patient.
		got := report(t, reportedPatient, "", 3)
		if len(got.Entries) != 3 || slicesHasRoute(got.Entries, "care-gp") || slicesHasRoute(got.Entries, "safeguarding") {
			t.Errorf("patient view after withholding: %d entries; want 3 without the GP's", len(got.Entries))
		}
		got = report(t, reportedPatient, "?view=auditor", 5)
		marked := 0
		for _, en := range got.Entries {
			if en.Withheld != nil {
				marked++
				if en.Recipient.Name != "gp" || en.Withheld.Exemption == "" {
					t.Errorf("withheld entry %+v", en)
				}
			}
		}
		if len(got.Entries) != 5 || marked != 2 {
			t.Errorf("auditor view: %d entries, %d marked; want 5 and 2", len(got.Entries), marked)
		}
		// The withholding is on the message's audit trail, without its text.
		found := false
		for _, r := range trails(t, e)[msgID] {
			if r.Event == "withheld_from_report" {
				found = true
				if strings.Contains(r.Reason, "clinician") || r.Patient == "" {
					t.Errorf("withholding record %+v", r)
				}
			}
		}
		if !found {
			t.Error("no withheld_from_report record on the message's trail")
		}
	})

	t.Run("formats", func(t *testing.T) {
		for _, tc := range []struct{ format, contentType, has string }{
			{"csv", "text/csv", "kind,time,message_id"},
			{"html", "text/html", "<h1>Disclosure report</h1>"},
		} {
			resp, err := http.Get(base + "/api/patients/" + reportedPatient + "/disclosures?format=" + tc.format)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.contentType) || !strings.Contains(string(b), tc.has) {
				t.Errorf("format %s: %d %s", tc.format, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
		}
	})

	t.Run("AuditEvent search pages", func(t *testing.T) {
		type bundle struct {
			ResourceType, Type string
			Link               []struct{ Relation, URL string }
			Entry              []struct {
				Resource struct {
					ResourceType, ID string
					Type             struct{ Code string }
				}
			}
		}
		url := base + "/fhir/AuditEvent?patient=" + reportedPatient + "&date=ge2000-01-01&_count=2"
		seen := map[string]bool{}
		types := map[string]int{}
		pages := 0
		for url != "" && pages < 10 {
			var b bundle
			if st := getJSON(t, url, &b); st != http.StatusOK || b.ResourceType != "Bundle" || b.Type != "searchset" {
				t.Fatalf("GET %s: %d %+v", url, st, b)
			}
			pages++
			if len(b.Entry) > 2 {
				t.Errorf("page of %d entries, want at most 2", len(b.Entry))
			}
			for _, en := range b.Entry {
				if en.Resource.ResourceType != "AuditEvent" || seen[en.Resource.ID] {
					t.Errorf("entry %+v (seen before: %v)", en.Resource, seen[en.Resource.ID])
				}
				seen[en.Resource.ID] = true
				types[en.Resource.Type.Code]++
			}
			url = ""
			for _, l := range b.Link {
				if l.Relation == "next" {
					url = l.URL
				}
			}
		}
		// Four releases (DICOM Export) and one refusal (Security Alert),
		// on three pages; withholding does not hide audit events.
		if diff := cmp.Diff(map[string]int{"110106": 4, "110113": 1}, types); diff != "" || pages != 3 {
			t.Errorf("%d pages; event types (-want +got):\n%s", pages, diff)
		}
		for _, q := range []string{"", "?patient=9990000019", "?patient=" + reportedPatient + "&_count=x", "?patient=" + reportedPatient + "&date=ne2026", "?patient=" + reportedPatient + "&name=x"} {
			resp, err := http.Get(base + "/fhir/AuditEvent" + q)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "OperationOutcome") || strings.Contains(string(b), "9990000019") {
				t.Errorf("GET AuditEvent%s: %d %s; want a 400 OperationOutcome", q, resp.StatusCode, b)
			}
		}
	})

	t.Run("AuditEvent search by POST", func(t *testing.T) {
		// The same search with the NHS number in a form-encoded body gives
		// the same page, and both searches' access records name the
		// patient by keyed hash.
		params := "patient=" + reportedPatient + "&date=ge2000-01-01&_count=2"
		resp, err := http.Get(base + "/fhir/AuditEvent?" + params)
		if err != nil {
			t.Fatal(err)
		}
		viaGet, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, tc := range []struct {
			name, url, contentType, body string
			want                         int
		}{
			{"body", "/fhir/AuditEvent/_search", "application/x-www-form-urlencoded", params, http.StatusOK},
			{"body and URL", "/fhir/AuditEvent/_search?_count=2", "application/x-www-form-urlencoded; charset=utf-8", "patient=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C" + reportedPatient + "&date=ge2000-01-01", http.StatusOK},
			{"JSON body", "/fhir/AuditEvent/_search", "application/json", `{"patient":"` + reportedPatient + `"}`, http.StatusUnsupportedMediaType},
			{"check digit wrong", "/fhir/AuditEvent/_search", "application/x-www-form-urlencoded", "patient=9990000019", http.StatusBadRequest},
			{"not a form", "/fhir/AuditEvent/_search", "application/x-www-form-urlencoded", "patient=%zz", http.StatusBadRequest},
			{"body too large", "/fhir/AuditEvent/_search", "application/x-www-form-urlencoded", params + "&date=" + strings.Repeat("x", 20<<10), http.StatusRequestEntityTooLarge},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := http.Post(base+tc.url, tc.contentType, strings.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, b)
				}
				if tc.want == http.StatusOK && !bytes.Equal(b, viaGet) {
					t.Errorf("page by POST:\n%s\nby GET:\n%s", b, viaGet)
				}
				if tc.want != http.StatusOK && (!strings.Contains(string(b), "OperationOutcome") || strings.Contains(string(b), "999000001")) {
					t.Errorf("answer %s; want an OperationOutcome without the number", b)
				}
			})
		}
		recs, _ := auditStream(t, e)
		byEndpoint := map[string]map[string]bool{}
		for _, r := range recs {
			// Bad requests earlier name no patient: leave them out.
			if r.Event == audit.Accessed && r.Outcome == "allowed" && strings.Contains(r.Endpoint, "AuditEvent") && r.Patient != "" {
				if byEndpoint[r.Endpoint] == nil {
					byEndpoint[r.Endpoint] = map[string]bool{}
				}
				byEndpoint[r.Endpoint][r.Patient] = true
			}
		}
		get, post := byEndpoint["GET /fhir/AuditEvent"], byEndpoint["POST /fhir/AuditEvent/_search"]
		hash := ""
		for h := range get {
			hash = h
		}
		if len(get) != 1 || len(hash) != 64 || !post[hash] {
			t.Errorf("access records name patients %v by GET and %v by POST; want one keyed hash, the same", get, post)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, path := range []string{
			"/api/patients/9990000019/disclosures",
			"/api/patients/" + reportedPatient + "/disclosures?format=pdf",
			"/api/patients/" + reportedPatient + "/disclosures?from=yesterday",
			"/api/patients/" + reportedPatient + "/disclosures?view=everything",
		} {
			resp, err := http.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(b), "999000001") {
				t.Errorf("GET %s: %d %s; want 400 without the number", path, resp.StatusCode, b)
			}
		}
	})
}

// slicesHasRoute reports whether an entry came through route rt.
func slicesHasRoute(es []disclosure.Entry, rt string) bool {
	for _, e := range es {
		if e.Route == rt {
			return true
		}
	}
	return false
}

// TestMetadataListsAuditEventSearch checks that the CapabilityStatement
// the engine serves tells the truth about GET /fhir/AuditEvent.
func TestMetadataListsAuditEventSearch(t *testing.T) {
	e, _ := startEngine(t, "")
	resp, err := http.Get("http://" + e.HTTPAddr().String() + "/fhir/metadata")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var cs struct {
		Rest []struct {
			Resource []struct {
				Type        string `json:"type"`
				Interaction []struct {
					Code string `json:"code"`
				} `json:"interaction"`
			} `json:"resource"`
		} `json:"rest"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&cs); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range cs.Rest[0].Resource {
		if r.Type == "AuditEvent" && len(r.Interaction) == 1 && r.Interaction[0].Code == "search-type" {
			found = true
		}
	}
	if !found {
		t.Errorf("metadata does not list AuditEvent search-type: %+v", cs)
	}
}

// TestDisclosureReportEveryPatient merges one patient's record into
// another's (an A40 names both NHS numbers) and routes it to two
// destinations: one gets the whole bundle, the other the bundle without
// its Patients. Both releases are in both patients' reports: the keep
// step turns the MessageHeader's references to the dropped Patients into
// logical references by NHS number, so the second release still names
// the retired patient (before the consent engine read logical
// references, that release was left out of the retired patient's
// report although it carried their number).
func TestDisclosureReportEveryPatient(t *testing.T) {
	forPipelines(t, testDisclosureReportEveryPatient)
}

func testDisclosureReportEveryPatient(t *testing.T, pipe string) {
	routes := writeRoutes(t, map[string]string{
		"merges.yaml": `name: merges
source: {adapter: pas, events: [ADT^A40]}
consent: {purpose: direct-care, legal_basis: direct-care, default: permit}
destinations:
  - name: ehr
`,
		"merges-no-patient.yaml": `name: merges-no-patient
source: {adapter: pas, events: [ADT^A40]}
consent: {purpose: direct-care, legal_basis: direct-care, default: permit}
transform:
  - keep: resource.resourceType != "Patient"
destinations:
  - name: gp
`,
	})
	e, dir := startEngineWithRoutes(t, routes, pipe+disclosureConfig)
	base := "http://" + e.HTTPAddr().String()
	const survivor, retired = reportedPatient, controlPatient
	if code, _ := send(t, mllpAddr(t, e), a40("MERGE001", survivor, retired)); code != hl7v2.AckAA {
		t.Fatalf("send: %s", code)
	}
	waitFiles(t, filepath.Join(dir, "out", "ehr"), 1)
	gpFiles := waitFiles(t, filepath.Join(dir, "out", "gp"), 1)
	// What the gp got: no Patient, but the retired patient's NHS number
	// in a logical reference.
	gpBody, err := os.ReadFile(gpFiles[0])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(gpBody), `"resourceType":"Patient"`) || !strings.Contains(string(gpBody), retired) {
		t.Fatalf("the gp release holds a Patient, or not the retired patient's NHS number: %s", gpBody)
	}

	// Both deliveries are audited just after the files are written.
	deadline := time.Now().Add(20 * time.Second)
	for delivered := 0; delivered < 2; {
		delivered = 0
		for _, trail := range trails(t, e) {
			for _, r := range trail {
				if r.Event == audit.Delivered {
					delivered++
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries audited, want 2", delivered)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, tc := range []struct {
		name, patient string
		want          []string
	}{
		{"surviving patient", survivor, []string{"release merges -> ehr", "release merges-no-patient -> gp"}},
		{"retired patient", retired, []string{"release merges -> ehr", "release merges-no-patient -> gp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, reportLines(t, base, tc.patient)); diff != "" {
				t.Errorf("releases (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("records hold no NHS number", func(t *testing.T) {
		for _, trail := range trails(t, e) {
			for _, r := range trail {
				b, _ := json.Marshal(r)
				if strings.Contains(string(b), survivor) || strings.Contains(string(b), retired) {
					t.Errorf("record holds an NHS number: %s", b)
				}
			}
		}
	})
}

// TestDisclosureReportOtherNumber routes a patient's message that does
// not name them by the NHS number the patient index knows them by, after
// one that taught the index: an update naming them by hospital number
// alone, and an admission sent with an NHS number a merge retired in
// favour of an opted-out patient's. Consent decides by the index's NHS
// number (the research route is refused by the survivor's opt-out), and
// that number's report holds the releases, whether the payload is
// transformed (even to drop the Patient) or sent raw.
func TestDisclosureReportOtherNumber(t *testing.T) {
	const hospitalNumber = "K123456^^^RX1^MR"
	// numericHospitalNumber is a hospital number that reads as a valid
	// NHS number (synthetic, 999 range).
	const numericHospitalNumber = "9990000042"
	const survivor, retired = reportedPatient, controlPatient
	const directCare = "consent: {purpose: direct-care, legal_basis: direct-care, default: permit}\n"
	for _, tc := range []struct {
		name   string
		routes map[string]string
		// optedOut is the opt-out list, if any; first teaches the index,
		// and is delivered to firstDest before then is sent.
		optedOut, first, firstDest, then string
		want                             []string
		// notReported is an NHS number whose report must stay empty.
		notReported string
	}{
		{
			name: "hospital number alone",
			routes: map[string]string{"ward.yaml": "name: ward\nsource: {adapter: pas, events: [ADT^A01, ADT^A08]}\n" + directCare +
				"transform: [{keep: resource.resourceType != \"MessageHeader\"}]\ndestinations: [{name: ehr}, {name: gp, payload: raw}]\n"},
			first:     adt("A01", "LOCAL001", reportedPatient+"^^^NHS^NH~"+hospitalNumber),
			firstDest: "gp",
			then:      adt("A08", "LOCAL002", hospitalNumber),
			want:      []string{"release ward -> ehr", "release ward -> ehr", "release ward -> gp", "release ward -> gp"},
		},
		{
			name: "merged number",
			routes: map[string]string{
				"care.yaml": "name: care\nsource: {adapter: pas, events: [ADT^A01, ADT^A40]}\n" + directCare +
					"transform: [{keep: resource.resourceType != \"Patient\"}]\ndestinations: [{name: ehr}]\n",
				"research.yaml": "name: research\nsource: {adapter: pas, events: [ADT^A01]}\n" +
					"consent: {purpose: research, legal_basis: s251, default: permit}\ndestinations: [{name: registry}]\n",
			},
			optedOut:  survivor,
			first:     a40("MERGED01", survivor, retired),
			firstDest: "ehr",
			then:      adt("A01", "MERGED02", retired+"^^^NHS^NH"),
			want:      []string{"refused research -> registry", "release care -> ehr", "release care -> ehr"},
		},
		{
			// A ten-digit hospital number that passes the check digit is
			// still a hospital number, not that NHS number's patient.
			name: "hospital number reading as an NHS number",
			routes: map[string]string{
				"ward.yaml": "name: ward\nsource: {adapter: pas, events: [ADT^A01, ADT^A08]}\n" + directCare + "destinations: [{name: ehr}]\n",
				"research.yaml": "name: research\nsource: {adapter: pas, events: [ADT^A01, ADT^A08]}\n" +
					"consent: {purpose: research, legal_basis: s251, default: permit}\ndestinations: [{name: registry}]\n",
			},
			optedOut:    reportedPatient,
			first:       adt("A01", "DIGITS01", reportedPatient+"^^^NHS^NH~"+numericHospitalNumber+"^^^RX1^MR"),
			firstDest:   "ehr",
			then:        adt("A08", "DIGITS02", numericHospitalNumber+"^^^RX1^MR"),
			want:        []string{"refused research -> registry", "refused research -> registry", "release ward -> ehr", "release ward -> ehr"},
			notReported: numericHospitalNumber,
		},
	} {
		for _, p := range pipelines {
			t.Run(tc.name+"/"+p.name, func(t *testing.T) {
				e, dir := startEngineWithRoutes(t, writeRoutes(t, tc.routes), p.extra+disclosureConfig)
				base := "http://" + e.HTTPAddr().String()
				if tc.optedOut != "" {
					if st, _, raw := postOptOuts(t, base, "?as_of="+time.Now().UTC().Format("2006-01-02"), tc.optedOut+"\n"); st != http.StatusOK {
						t.Fatalf("opt-out list: %d %s", st, raw)
					}
				}
				if code, _ := send(t, mllpAddr(t, e), tc.first); code != hl7v2.AckAA {
					t.Fatalf("send first: %s", code)
				}
				waitFiles(t, filepath.Join(dir, "out", tc.firstDest), 1)
				if code, _ := send(t, mllpAddr(t, e), tc.then); code != hl7v2.AckAA {
					t.Fatalf("send then: %s", code)
				}
				waitReport(t, base, reportedPatient, tc.want)
				if files := waitFiles(t, filepath.Join(dir, "out", "registry"), 0); len(files) != 0 {
					t.Errorf("the research registry got %d files, want none", len(files))
				}
				// Consent records name the organisations as configured.
				for _, trail := range trails(t, e) {
					for _, r := range trail {
						if r.Event == audit.Consent && r.Destination == "ehr" && (r.RecipientODS != "RX1" || r.SourceODS != "RX1") {
							t.Errorf("consent record for ehr names recipient %q and source %q, want RX1 and RX1", r.RecipientODS, r.SourceODS)
						}
					}
				}
				if tc.notReported != "" {
					if got := reportLines(t, base, tc.notReported); len(got) != 0 {
						t.Errorf("the report of %s, whose number the hospital number reads as, lists %q", tc.notReported, got)
					}
				}
			})
		}
	}
}

// waitReport waits until patient's disclosure report from the engine at
// base lists want (see reportLines).
func waitReport(t *testing.T, base, patient string, want []string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		diff := cmp.Diff(want, reportLines(t, base, patient))
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("report of %s (-want +got):\n%s", patient, diff)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// reportLines returns the entries of patient's disclosure report from the
// engine at base, each as "KIND ROUTE -> RECIPIENT", sorted.
func reportLines(t *testing.T, base, patient string) []string {
	t.Helper()
	var rep disclosure.Report
	if st := getJSON(t, base+"/api/patients/"+patient+"/disclosures", &rep); st != http.StatusOK {
		t.Fatalf("GET disclosures: %d", st)
	}
	var got []string
	for _, en := range rep.Entries {
		got = append(got, string(en.Kind)+" "+en.Route+" -> "+en.Recipient.Name)
	}
	sort.Strings(got)
	return got
}

// TestBundlePatientByLocalIdentifier posts a Bundle about two patients,
// the second named by a hospital number alone, to a care route and a
// research route: consent is asked of the second patient too, by the NHS
// number the patient index knows for the hospital number (that patient
// has opted out), or, when nobody knows it, as a patient unknown, whose
// opt-out cannot be checked. Either way the research route is refused,
// and a known second patient's report holds the Bundle's release and
// refusal.
func TestBundlePatientByLocalIdentifier(t *testing.T) {
	const first, second = reportedPatient, "9990000034"
	const mrn = `{"system":"https://fhir.example-trust.nhs.uk/Id/mrn","value":"M0034"}`
	patient := func(ids string) string { return `{"resource":{"resourceType":"Patient","identifier":[` + ids + `]}}` }
	nhsID := func(n string) string { return `{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + n + `"}` }
	bundle := `{"resourceType":"Bundle","type":"collection","entry":[` + patient(nhsID(first)) + `,` + patient(mrn) + `]}`
	routes := map[string]string{
		"care.yaml":     "name: care\nsource: {adapter: fhir}\nconsent: {purpose: direct-care, legal_basis: direct-care, default: permit}\ndestinations: [{name: ehr}]\n",
		"research.yaml": "name: research\nsource: {adapter: fhir}\nconsent: {purpose: research, legal_basis: s251, default: permit}\ndestinations: [{name: registry}]\n",
	}
	both := []string{"refused research -> registry", "release care -> ehr"}
	for _, tc := range []struct {
		name string
		// known posts the second patient with NHS and hospital numbers
		// first.
		known      bool
		wantSecond []string
	}{
		{"known to the index", true, []string{both[0], both[0], both[1], both[1]}},
		{"known to nobody", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, dir := startEngineWithRoutes(t, writeRoutes(t, routes), disclosureConfig)
			base := "http://" + e.HTTPAddr().String()
			if st, _, raw := postOptOuts(t, base, "?as_of="+time.Now().UTC().Format("2006-01-02"), second+"\n"); st != http.StatusOK {
				t.Fatalf("opt-out list: %d %s", st, raw)
			}
			if tc.known {
				postAccepted(t, base+"/fhir", `{"resourceType":"Bundle","type":"collection","entry":[`+patient(nhsID(second)+`,`+mrn)+`]}`)
				waitFiles(t, filepath.Join(dir, "out", "ehr"), 1)
			}
			postAccepted(t, base+"/fhir", bundle)
			waitReport(t, base, first, both)
			if tc.wantSecond != nil {
				waitReport(t, base, second, tc.wantSecond)
			}
			if files := waitFiles(t, filepath.Join(dir, "out", "registry"), 0); len(files) != 0 {
				t.Errorf("the research registry got %d files, want none", len(files))
			}
		})
	}
}
