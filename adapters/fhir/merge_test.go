package fhir

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// Two ADT messages about one patient and one visit, as a PAS sends them:
// the admission carries the registered GP (PD1), a phone number and the
// attending doctor; the transfer carries none of them (an A02 needs no
// PD1, and a PAS need not repeat PID-13 or PV1-7), and a corrected name.
const (
	mergeA01 = "MSH|^~\\&|PAS|RX1|EPR|RX1|20240716101500||ADT^A01^ADT_A01|CTRLM01|P|2.5.1\r" +
		"EVN|A01|20240716101400\r" +
		"PID|1||9990000018^^^NHS^NH~H300001^^^RX1^MR||TESTPATIENT^JORDAN||19820304|9|||2 SAMPLE ROAD^^TESTTOWN^^ZZ99 1ZZ^GBR^H||01234 000001^PRN^PH\r" +
		"PD1|||TEST SURGERY^^^^^^^^^Y99999|G9999991^TESTGP^MORGAN^^^DR\r" +
		"PV1|1|I|WARD7^ROOM1^BED4^RX1||||C1234567^TESTCONSULTANT^ALEX^^^DR||||||||||||V0101|||||||||||||||||||||||||20240716100000\r"
	mergeA02 = "MSH|^~\\&|PAS|RX1|EPR|RX1|20240716121500||ADT^A02^ADT_A02|CTRLM02|P|2.5.1\r" +
		"EVN|A02|20240716121400\r" +
		"PID|1||9990000018^^^NHS^NH~H300001^^^RX1^MR||TESTPATIENT^JORDAN^LEE||19820304|9\r" +
		"PV1|1|I|WARD9^ROOM2^BED1^RX1|||WARD7^ROOM1^BED4^RX1|||||||||||||V0101|||||||||||||||||||||||||20240716100000\r"
)

// pasDelivery translates raw with the shipped PAS translator and returns
// the delivery of its bundle.
func pasDelivery(t testing.TB, id, raw string) *adapter.Delivery {
	t.Helper()
	tr, err := pas.NewTranslator(pas.DefaultDialect())
	if err != nil {
		t.Fatal(err)
	}
	return v2Delivery(t, tr, id, "adt", raw)
}

// v2Delivery translates raw, received from an input of route's source,
// with tr and returns the delivery of its bundle to "ehr".
func v2Delivery(t testing.TB, tr adapter.Translator, id, route, raw string) *adapter.Delivery {
	t.Helper()
	out, err := tr.Translate(&envelope.Envelope{ID: id, Source: route, ContentType: envelope.ContentTypeHL7v2,
		ReceivedAt: time.Date(2024, 7, 16, 12, 0, 0, 0, time.UTC), Raw: []byte(raw)})
	if err != nil {
		t.Fatalf("translate: %v", err)
	}
	return &adapter.Delivery{MessageID: id, Route: route, Destination: "ehr", ContentType: envelope.ContentTypeFHIR,
		Body: out.Bundle, IdempotencyKey: id + "/" + route + "/ehr", Attempt: 1}
}

// only returns the one resource of typ the server holds.
func only(t *testing.T, srv *memServer, typ string) map[string]any {
	t.Helper()
	rs := srv.all(typ)
	if len(rs) != 1 {
		t.Fatalf("server holds %d %s resources, want 1", len(rs), typ)
	}
	return rs[0]
}

func identifierSet(r map[string]any) []string {
	var out []string
	for _, x := range r["identifier"].([]any) {
		m := x.(map[string]any)
		out = append(out, m["system"].(string)+"|"+m["value"].(string))
	}
	return out
}

// TestOutboundMergeKeepsWhatAMessageLeavesOut: with the default merge
// types, a transfer that carries no GP, phone or attending doctor leaves
// those at the server as the admission set them, and an identifier
// another system added stays, while what the transfer does carry (the
// corrected name, the new ward) replaces the old. With merge: [] the
// transfer replaces the Patient and Encounter whole, as before, and they
// are lost: the case the merge exists for.
func TestOutboundMergeKeepsWhatAMessageLeavesOut(t *testing.T) {
	tests := []struct {
		name  string
		merge []string
		kept  bool
	}{
		{"default merge types", DefaultMergeTypes(), true},
		{"merge none", []string{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newMemServer(t)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: tt.merge})
			ctx := context.Background()
			if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000001", mergeA01)); err != nil {
				t.Fatalf("admission: %v", err)
			}
			p := only(t, srv, "Patient")
			if p["generalPractitioner"] == nil || p["telecom"] == nil {
				t.Fatalf("the admission did not set GP and telecom: %v", p)
			}
			other := map[string]any{"system": "https://other-trust.example/mrn", "value": "OT-77"}
			p["identifier"] = append(p["identifier"].([]any), other)
			srv.put("Patient", p["id"].(string), p)
			if e := only(t, srv, "Encounter"); e["participant"] == nil {
				t.Fatalf("the admission did not set the attending doctor: %v", e)
			}

			rcpt, err := o.Send(ctx, pasDelivery(t, "01MERGE0000002", mergeA02))
			if err != nil {
				t.Fatalf("transfer: %v", err)
			}
			if rcpt.Status != "200" {
				t.Errorf("status %q", rcpt.Status)
			}
			p = only(t, srv, "Patient")
			e := only(t, srv, "Encounter")
			given := p["name"].([]any)[0].(map[string]any)["given"].([]any)
			if !cmp.Equal(given, []any{"JORDAN", "LEE"}) {
				t.Errorf("given names %v: the transfer's name should replace the admission's", given)
			}
			got := map[string]bool{
				"generalPractitioner": p["generalPractitioner"] != nil,
				"telecom":             p["telecom"] != nil,
				"other identifier":    strings.Contains(strings.Join(identifierSet(p), " "), "OT-77"),
				"participant":         e["participant"] != nil,
			}
			for what, ok := range got {
				if ok != tt.kept {
					t.Errorf("%s kept = %v, want %v", what, ok, tt.kept)
				}
			}
			loc := e["location"].([]any)
			if len(loc) == 0 {
				t.Fatal("Encounter has no location")
			}
			ref := loc[0].(map[string]any)["location"].(map[string]any)["reference"].(string)
			ward := only2(srv, "Location", ref)
			if !strings.Contains(ward, "WARD9") {
				t.Errorf("Encounter location %q is not the transfer's ward", ward)
			}
		})
	}
}

// only2 returns the JSON of the resource ref ("Type/id") names, or "".
func only2(srv *memServer, typ, ref string) string {
	for _, r := range srv.all(typ) {
		if typ+"/"+r["id"].(string) == ref {
			b, _ := json.Marshal(r)
			return string(b)
		}
	}
	return ""
}

// TestOutboundMergeConflictIsRetried: when the server's Patient changes
// between Junction's read and its write, If-Match fails the transaction;
// that attempt is a transient fault, and the next reads again and keeps
// the other system's change.
func TestOutboundMergeConflictIsRetried(t *testing.T) {
	srv := newMemServer(t)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	ctx := context.Background()
	if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000001", mergeA01)); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	srv.afterSearch = func(typ string) {
		if typ != "Patient" {
			return
		}
		once.Do(func() {
			p := only(t, srv, "Patient")
			p["multipleBirthBoolean"] = true
			srv.put("Patient", p["id"].(string), p)
		})
	}
	d := pasDelivery(t, "01MERGE0000002", mergeA02)
	_, err := o.Send(ctx, d)
	if err == nil || !fault.IsTransient(err) {
		t.Fatalf("Send after a concurrent change = %v, want a transient fault", err)
	}
	if strings.Contains(err.Error(), "9990000018") {
		t.Errorf("fault quotes the NHS number: %v", err)
	}
	d.Attempt++
	if _, err := o.Send(ctx, d); err != nil {
		t.Fatalf("second attempt: %v", err)
	}
	p := only(t, srv, "Patient")
	if p["multipleBirthBoolean"] != true || p["generalPractitioner"] == nil {
		t.Errorf("after the retry the Patient lost the other change or the GP: %v", p)
	}
}

// TestOutboundMergeSearchFaults: a search the server cannot answer now is
// retried, one it refuses dead-letters with a hint, and neither fault
// quotes the identifier searched for.
func TestOutboundMergeSearchFaults(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		transient bool
		says      string
	}{
		{"unavailable", http.StatusServiceUnavailable, true, "server answered 503 to a search of Patient before a merge"},
		{"too many requests", http.StatusTooManyRequests, true, "answered 429"},
		{"forbidden", http.StatusForbidden, false, "set merge: []"},
		{"not implemented", http.StatusNotImplemented, false, "answered 501"},
		{"html", http.StatusOK, false, "HTML page"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := reply(tt.status, `{"resourceType":"OperationOutcome"}`)
			if tt.name == "html" {
				h = func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/html")
					_, _ = w.Write([]byte("<html></html>"))
				}
			}
			srv := newFHIRServer(t, h)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
			_, err := o.Send(context.Background(), pasDelivery(t, "01MERGE0000002", mergeA02))
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if fault.IsTransient(err) != tt.transient || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("fault %v (transient %v), want transient %v saying %q", err, fault.IsTransient(err), tt.transient, tt.says)
			}
			if strings.Contains(err.Error(), "9990000018") {
				t.Errorf("fault quotes the NHS number: %v", err)
			}
			for _, r := range srv.requests() {
				if r.Method != http.MethodPost || !strings.HasSuffix(r.Path, "/_search") {
					t.Errorf("wrote after a failed search: %s %s", r.Method, r.Path)
				}
				if strings.Contains(r.Path, "9990000018") || strings.HasSuffix(r.Path, "/Patient/_search") && !strings.Contains(string(r.Body), "9990000018") {
					t.Errorf("search %s with body %q: the identifier belongs in the body, not the URL", r.Path, r.Body)
				}
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		srv := newFHIRServer(t, reply(200, "{}"))
		url := srv.URL
		srv.Close()
		o := newTestOutbound(t, OutboundConfig{URL: url + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
		_, err := o.Send(context.Background(), pasDelivery(t, "01MERGE0000002", mergeA02))
		if err == nil || !fault.IsTransient(err) {
			t.Fatalf("Send = %v, want a transient fault", err)
		}
		if strings.Contains(err.Error(), "9990000018") || strings.Contains(err.Error(), "identifier=") {
			t.Errorf("fault quotes the search: %v", err)
		}
	})
}

// TestOutboundMergeAmbiguous: with two resources at the server carrying
// the identifier, the destination cannot tell which the message is about:
// a permanent fault before anything is written, whether or not another
// entry (the Encounter) would have merged.
func TestOutboundMergeAmbiguous(t *testing.T) {
	for _, withEncounter := range []bool{false, true} {
		srv := newMemServer(t)
		o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
		if withEncounter {
			if _, err := o.Send(context.Background(), pasDelivery(t, "01MERGE0000001", mergeA01)); err != nil {
				t.Fatal(err)
			}
		}
		nhsID := map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}
		srv.put("Patient", "a", map[string]any{"resourceType": "Patient", "identifier": []any{nhsID}})
		srv.put("Patient", "b", map[string]any{"resourceType": "Patient", "identifier": []any{nhsID}})
		posts := srv.posts
		_, err := o.Send(context.Background(), pasDelivery(t, "01MERGE0000002", mergeA02))
		if err == nil || fault.IsTransient(err) || !strings.Contains(err.Error(), "more than one Patient") {
			t.Errorf("encounter merged %v: Send = %v, want a permanent fault naming the duplicate", withEncounter, err)
		}
		if srv.posts != posts {
			t.Errorf("encounter merged %v: a transaction was sent", withEncounter)
		}
	}
}

// TestOutboundMergeTakesOnlyTrueMatches: a server that ignores the
// identifier parameter answers every Patient; the one it answers is
// another patient's, so nothing is merged into it: the entry stays a
// conditional update (which the server resolves itself).
func TestOutboundMergeTakesOnlyTrueMatches(t *testing.T) {
	srv := newMemServer(t)
	other := map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}
	srv.put("Patient", "someone-else", map[string]any{"resourceType": "Patient", "identifier": []any{other},
		"name": []any{map[string]any{"family": "OTHERPATIENT"}}})
	lenient := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/Patient/_search") {
			var entries []any
			for _, p := range srv.all("Patient") {
				entries = append(entries, map[string]any{"resource": p, "search": map[string]any{"mode": "match"}})
			}
			writeJSON(w, http.StatusOK, map[string]any{"resourceType": "Bundle", "type": "searchset", "entry": entries})
			return
		}
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/fhir")
		srv.serve(w, r)
	}))
	t.Cleanup(lenient.Close)
	o := newTestOutbound(t, OutboundConfig{URL: lenient.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	if _, err := o.Send(context.Background(), pasDelivery(t, "01MERGE0000001", mergeA01)); err != nil {
		t.Fatal(err)
	}
	for _, p := range srv.all("Patient") {
		b, _ := json.Marshal(p)
		if p["id"] == "someone-else" && strings.Contains(string(b), "9990000018") {
			t.Errorf("the delivery was merged into another patient's record: %s", b)
		}
	}
	if n := len(srv.all("Patient")); n != 2 {
		t.Errorf("server holds %d Patients, want the other and the new one", n)
	}
}

// TestOutboundMergeChoiceElements: a death date replaces the
// deceasedBoolean the server held, rather than sitting beside it (FHIR
// allows one form of a choice element).
func TestOutboundMergeChoiceElements(t *testing.T) {
	srv := newMemServer(t)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	ctx := context.Background()
	alive := strings.Replace(mergeA01, "01234 000001^PRN^PH\r", "01234 000001^PRN^PH|||||||||||||||||N\r", 1)
	if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000001", alive)); err != nil {
		t.Fatal(err)
	}
	if p := only(t, srv, "Patient"); p["deceasedBoolean"] != false {
		t.Fatalf("the admission did not say alive: %v", p["deceasedBoolean"])
	}
	died := strings.Replace(mergeA02, "19820304|9\r", "19820304|9|||||||||||||||||||||20240720083000|Y\r", 1)
	if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000002", died)); err != nil {
		t.Fatal(err)
	}
	p := only(t, srv, "Patient")
	if p["deceasedDateTime"] == nil || p["deceasedBoolean"] != nil {
		t.Errorf("deceasedDateTime %v, deceasedBoolean %v: want the date alone", p["deceasedDateTime"], p["deceasedBoolean"])
	}
	if got := choiceElements("Patient"); got["deceasedBoolean"] != "deceased" || got["multipleBirthInteger"] != "multipleBirth" || len(got) != 4 {
		t.Errorf("Patient choice elements %v", got)
	}
	if got := choiceElements("Encounter"); len(got) != 0 {
		t.Errorf("Encounter choice elements %v, want none (reasonCode and reasonReference are two elements)", got)
	}
}

// TestOutboundMergeFoldsRetiredRecord: an A40 merging two hospital
// numbers of one patient (the retired record, from MRG, carries the
// survivor's NHS number) is one Patient at a server keyed by NHS number:
// the retired entry is folded into the survivor, whose record gains the
// retired hospital number as an old identifier and no link to itself.
// Two entries that are one resource otherwise are refused before
// anything is written.
func TestOutboundMergeFoldsRetiredRecord(t *testing.T) {
	for _, merge := range [][]string{DefaultMergeTypes(), {}} {
		t.Run(fmt.Sprintf("merge=%v", merge), func(t *testing.T) {
			srv := newMemServer(t)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: merge})
			ctx := context.Background()
			if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000001", mergeA01)); err != nil {
				t.Fatal(err)
			}
			a40 := "MSH|^~\\&|PAS|RX1|EPR|RX1|20240716101500||ADT^A40^ADT_A39|C40|P|2.5.1\r" +
				"EVN|A40|20240716101400\r" +
				"PID|1||9990000018^^^NHS^NH~H300001^^^RX1^MR||TESTPATIENT^JORDAN||19820304|9\r" +
				"MRG|H300009^^^RX1^MR~9990000018^^^NHS^NH\r"
			if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000040", a40)); err != nil {
				t.Fatalf("A40: %v", err)
			}
			p := only(t, srv, "Patient")
			b, _ := json.Marshal(p)
			if p["link"] != nil || p["active"] == false {
				t.Errorf("the survivor links to itself or is inactive: %s", b)
			}
			old := false
			for _, x := range p["identifier"].([]any) {
				id := x.(map[string]any)
				old = old || id["value"] == "H300009" && id["use"] == "old"
			}
			if !old {
				t.Errorf("the retired hospital number is not an old identifier of the survivor: %s", b)
			}
		})
	}
	t.Run("two entries for one resource", func(t *testing.T) {
		srv := newMemServer(t)
		o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
		nhsID := `{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}`
		body := `{"resourceType":"Bundle","type":"collection","entry":[` +
			`{"fullUrl":"urn:uuid:a","resource":{"resourceType":"Patient","identifier":[` + nhsID + `],"gender":"male"}},` +
			`{"fullUrl":"urn:uuid:b","resource":{"resourceType":"Patient","identifier":[` + nhsID + `],"gender":"female"}}]}`
		d := &adapter.Delivery{MessageID: "01MERGE0000050", Route: "r", Destination: "ehr", ContentType: envelope.ContentTypeFHIR, Body: []byte(body), IdempotencyKey: "k", Attempt: 1}
		_, err := o.Send(context.Background(), d)
		if err == nil || fault.IsTransient(err) || !strings.Contains(err.Error(), "update one Patient") {
			t.Fatalf("Send = %v, want a permanent fault", err)
		}
		if srv.posts != 0 || srv.searches != 0 {
			t.Errorf("%d searches and %d transactions sent", srv.searches, srv.posts)
		}
	})
}

// TestOutboundRedactedDeletesWithheld: a restricted patient's Patient,
// redacted by consent for this destination (an A02 that carries no
// contact details at all), deletes the address, telecom and GP the server
// held from before, and keeps what is not withheld (another system's
// identifier, the birth date).
func TestOutboundRedactedDeletesWithheld(t *testing.T) {
	srv := newMemServer(t)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	ctx := context.Background()
	if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000001", mergeA01)); err != nil {
		t.Fatal(err)
	}
	p := only(t, srv, "Patient")
	p["identifier"] = append(p["identifier"].([]any), map[string]any{"system": "https://other-trust.example/mrn", "value": "OT-77"})
	srv.put("Patient", p["id"].(string), p)

	d := pasDelivery(t, "01MERGE0000003", mergeA02)
	redactPatient(t, d, "address", "telecom", "contact", "generalPractitioner")
	if _, err := o.Send(ctx, d); err != nil {
		t.Fatal(err)
	}
	p = only(t, srv, "Patient")
	for _, k := range []string{"address", "telecom", "generalPractitioner"} {
		if p[k] != nil {
			t.Errorf("the server kept the withheld %s", k)
		}
	}
	if p["birthDate"] != "1982-03-04" || !strings.Contains(strings.Join(identifierSet(p), " "), "OT-77") {
		t.Errorf("the redacted Patient replaced what was not withheld: %v", p)
	}
	if e := only(t, srv, "Encounter"); e["participant"] == nil {
		t.Error("the Encounter, not redacted, lost its participant")
	}
}

func TestMergeResource(t *testing.T) {
	tests := []struct {
		name, in, have string
		cl             clearing
		want           string
		id, version    string
	}{
		{
			name: "carried elements replace, others stay, identifiers join",
			in:   `{"resourceType":"Patient","id":"x","identifier":[{"system":"s","value":"1"}],"name":[{"family":"NEW"}],"meta":{"profile":["p"]}}`,
			have: `{"resourceType":"Patient","id":"srv1","meta":{"versionId":"4"},"text":{"status":"generated"},"identifier":[{"system":"o","value":"9"},{"system":"s","value":"1"}],"name":[{"family":"OLD"}],"telecom":[{"value":"1"}]}`,
			want: `{"resourceType":"Patient","id":"srv1","identifier":[{"system":"s","value":"1"},{"system":"o","value":"9"}],"name":[{"family":"NEW"}],"meta":{"profile":["p"]},"telecom":[{"value":"1"}]}`,
			id:   "srv1", version: "4",
		},
		{
			name: "the server's meta stays when the entry has none",
			in:   `{"resourceType":"Encounter","status":"finished"}`,
			have: `{"resourceType":"Encounter","id":"e","meta":{"versionId":"2"},"status":"in-progress","participant":[{}]}`,
			want: `{"resourceType":"Encounter","id":"e","status":"finished","meta":{"versionId":"2"},"participant":[{}]}`,
			id:   "e", version: "2",
		},
		{
			name: "cleared elements and extensions dropped, extensions joined by url",
			in:   `{"resourceType":"Patient","extension":[{"url":"a","valueCode":"new"}],"name":[{"family":"N"}]}`,
			have: `{"resourceType":"Patient","id":"p","meta":{"versionId":"7"},"extension":[{"url":"a","valueCode":"old"},{"url":"b","valueCode":"kept"},{"url":"c","valueCode":"gone"}],"deceasedDateTime":"2020-01-01","address":[{}],"telecom":[{}]}`,
			cl:   clearing{elements: []string{"deceased", "address"}, extensions: []string{"c"}},
			want: `{"resourceType":"Patient","id":"p","extension":[{"url":"a","valueCode":"new"},{"url":"b","valueCode":"kept"}],"name":[{"family":"N"}],"meta":{"versionId":"7"},"telecom":[{}]}`,
			id:   "p", version: "7",
		},
		{
			name: "the server's extensions filtered when the entry has none",
			in:   `{"resourceType":"Encounter","status":"in-progress"}`,
			have: `{"resourceType":"Encounter","id":"e","extension":[{"url":"c"}],"hospitalization":{"dischargeDisposition":{}}}`,
			cl:   clearing{elements: []string{"hospitalization"}, extensions: []string{"c"}},
			want: `{"resourceType":"Encounter","id":"e","status":"in-progress"}`,
			id:   "e",
		},
		{
			name: "the server's security labels stay beside the entry's meta",
			in:   `{"resourceType":"Patient","meta":{"profile":["p"],"security":[{"system":"a","code":"X"}]}}`,
			have: `{"resourceType":"Patient","id":"p","meta":{"versionId":"3","security":[{"system":"c","code":"R"},{"system":"a","code":"X"}],"tag":[{"system":"t","code":"T"}]}}`,
			want: `{"resourceType":"Patient","id":"p","meta":{"profile":["p"],"security":[{"system":"a","code":"X"},{"system":"c","code":"R"}],"tag":[{"system":"t","code":"T"}]}}`,
			id:   "p", version: "3",
		},
		{
			name: "one NHS number, value-less identifiers not repeated",
			in:   `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"},{"system":"x","extension":[{"url":"u"}]}]}`,
			have: `{"resourceType":"Patient","id":"p","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000026"},{"system":"x", "extension":[{"url":"u"}]},{"system":"o","value":"9"}]}`,
			want: `{"resourceType":"Patient","id":"p","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"},{"system":"x","extension":[{"url":"u"}]},{"system":"o","value":"9"}]}`,
			id:   "p",
		},
		{
			name: "an Encounter's doctors replaced by kind, untyped ones kept",
			in:   `{"resourceType":"Encounter","participant":[{"type":[{"coding":[{"system":"s","code":"ATND"}]}],"individual":{"display":"B"}}]}`,
			have: `{"resourceType":"Encounter","id":"e","participant":[{"type":[{"coding":[{"system":"s","code":"ATND"}]}],"individual":{"display":"A"}},{"type":[{"coding":[{"system":"s","code":"ADM"}]}]},{"individual":{"display":"other"}}]}`,
			want: `{"resourceType":"Encounter","id":"e","participant":[{"type":[{"coding":[{"system":"s","code":"ATND"}]}],"individual":{"display":"B"}},{"type":[{"coding":[{"system":"s","code":"ADM"}]}]},{"individual":{"display":"other"}}]}`,
			id:   "e",
		},
		{
			name: "an Encounter's past locations kept, its current ones replaced",
			in:   `{"resourceType":"Encounter","location":[{"location":{"display":"W2"},"status":"active"}]}`,
			have: `{"resourceType":"Encounter","id":"e","location":[{"location":{"display":"W1"},"status":"active"},{"location":{},"status":"completed"},{"location":{"display":"W0"},"status":"planned"}]}`,
			want: `{"resourceType":"Encounter","id":"e","location":[{"location":{"display":"W2"},"status":"active"},{"location":{},"status":"completed"}]}`,
			id:   "e",
		},
		{
			name: "a cancelled move leaves no location",
			in:   `{"resourceType":"Encounter","location":[{"location":{"display":"W1"},"extension":[{"url":"https://junction-fhir.github.io/fhir/StructureDefinition/encounter-location-cancelled","valueBoolean":true}]}],"extension":[]}`,
			have: `{"resourceType":"Encounter","id":"e","location":[{"location":{"display":"W1"},"status":"active"}]}`,
			want: `{"resourceType":"Encounter","id":"e"}`,
			id:   "e",
		},
		{
			name: "numbers and text kept as written",
			in:   `{"resourceType":"Patient","identifier":[{"system":"s","value":"1"}],"multipleBirthInteger":2}`,
			have: `{"resourceType":"Patient","id":"p","extension":[{"url":"u","valueDecimal":1.50}]}`,
			want: `{"resourceType":"Patient","id":"p","identifier":[{"system":"s","value":"1"}],"multipleBirthInteger":2,"extension":[{"url":"u","valueDecimal":1.50}]}`,
			id:   "p",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, id, version, err := mergeResource([]byte(tt.in), []byte(tt.have), tt.cl, choiceElements("Patient"))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want || id != tt.id || version != tt.version {
				t.Errorf("mergeResource =\n %s %q %q\nwant\n %s %q %q", got, id, version, tt.want, tt.id, tt.version)
			}
		})
	}
	if _, _, _, err := mergeResource([]byte(`{"resourceType":"Patient"}`), []byte(`{"resourceType":"Patient","id":"p","meta":{"tag":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED"}]}}`), clearing{}, nil); err == nil {
		t.Error("merged into a SUBSETTED copy")
	}
	for _, bad := range []struct{ in, have string }{
		{`[]`, `{}`},
		{`{"resourceType":"Patient"}`, `{"id":5}`},
		{`{"identifier":{}}`, `{"resourceType":"Patient","id":"p"}`},
		{`{"resourceType":"Patient","identifier":[]}`, `{"id":"p","identifier":"x"}`},
	} {
		if _, _, _, err := mergeResource([]byte(bad.in), []byte(bad.have), clearing{}, nil); err == nil {
			t.Errorf("mergeResource(%s, %s) succeeded", bad.in, bad.have)
		}
	}
}

// TestOutboundMergeConfigFromYAML: the factory's defaults merge Patient
// and Encounter, and merge: [] in a config turns merging off.
func TestOutboundMergeConfigFromYAML(t *testing.T) {
	tests := []struct {
		yaml string
		want []string
	}{
		{"url: https://ehr.example/fhir\n", DefaultMergeTypes()},
		{"url: https://ehr.example/fhir\nmerge: []\n", []string{}},
		{"url: https://ehr.example/fhir\nmerge: [Patient, RelatedPerson]\n", []string{"Patient", "RelatedPerson"}},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			cfg := OutboundFactory{}.NewConfig().(*OutboundConfig)
			if err := yamlx.Decode("dest.yaml", []byte(tt.yaml), cfg); err != nil {
				t.Fatalf("%q: %v", tt.yaml, err)
			}
			if !cmp.Equal(cfg.Merge, tt.want) {
				t.Errorf("%q: merge %v, want %v", tt.yaml, cfg.Merge, tt.want)
			}
		})
	}
}

// TestOutboundMergeHonoursExplicitNulls: an A08 whose PID-11, PID-13/14 and
// PD1-3/4 are the explicit null deletes the address, telecom and GP the
// server held (the translator marks them; the destination drops them from
// the server's copy and never sends the marker); an A13 after an A03
// withdraws the discharge end, destination and method.
func TestOutboundMergeHonoursExplicitNulls(t *testing.T) {
	srv := newMemServer(t)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	ctx := context.Background()
	if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000001", mergeA01)); err != nil {
		t.Fatal(err)
	}
	a08 := "MSH|^~\\&|PAS|RX1|EPR|RX1|20240716131500||ADT^A08^ADT_A01|CTRLM08|P|2.5.1\r" +
		"EVN|A08|20240716131400\r" +
		"PID|1||9990000018^^^NHS^NH||TESTPATIENT^JORDAN||19820304|9|||\"\"||\"\"|\"\"\r" +
		"PD1|||\"\"|\"\"\r" +
		"PV1|1|I|WARD7^ROOM1^BED4^RX1||||||||||||||||V0101|||||||||||||||||||||||||20240716100000\r"
	if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000004", a08)); err != nil {
		t.Fatal(err)
	}
	p := only(t, srv, "Patient")
	for _, k := range []string{"address", "telecom", "generalPractitioner"} {
		if p[k] != nil {
			t.Errorf("the server kept the %s the A08 deleted", k)
		}
	}
	if p["birthDate"] != "1982-03-04" || !strings.Contains(strings.Join(identifierSet(p), " "), "H300001") {
		t.Errorf("the A08 lost what it did not delete: %v", p)
	}
	if e := only(t, srv, "Encounter"); e["participant"] == nil {
		t.Error("the Encounter lost its participant, which the A08 left out")
	}

	a03 := "MSH|^~\\&|PAS|RX1|EPR|RX1|20240717101500||ADT^A03^ADT_A03|CTRLM03|P|2.5.1\r" +
		"EVN|A03|20240717101400\r" +
		"PID|1||9990000018^^^NHS^NH||TESTPATIENT^JORDAN||19820304|9\r" +
		"PV1|1|I|WARD7^ROOM1^BED4^RX1|11||||||||||19|||||V0101|||||||||||||||||1|19|||||||20240716100000|20240717100000\r"
	a13 := "MSH|^~\\&|PAS|RX1|EPR|RX1|20240717111500||ADT^A13^ADT_A01|CTRLM13|P|2.5.1\r" +
		"EVN|A13|20240717111400\r" +
		"PID|1||9990000018^^^NHS^NH||TESTPATIENT^JORDAN||19820304|9\r" +
		"PV1|1|I|WARD7^ROOM1^BED4^RX1||||||||||||||||V0101\r"
	if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000005", a03)); err != nil {
		t.Fatal(err)
	}
	e := only(t, srv, "Encounter")
	if e["hospitalization"] == nil || e["extension"] == nil || e["period"].(map[string]any)["end"] == nil {
		t.Fatalf("the A03 did not record the discharge: %v", e)
	}
	if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000006", a13)); err != nil {
		t.Fatal(err)
	}
	e = only(t, srv, "Encounter")
	eb, _ := json.Marshal(e)
	period, _ := e["period"].(map[string]any)
	hosp, _ := e["hospitalization"].(map[string]any)
	switch {
	case period == nil || period["start"] == nil || period["end"] != nil:
		t.Errorf("after the A13 the period is %v: want the admission's start and no end", period)
	case hosp == nil || hosp["admitSource"] == nil || hosp["extension"] == nil || hosp["dischargeDisposition"] != nil:
		t.Errorf("after the A13 hospitalization is %v: want the admit source and method, no discharge destination", hosp)
	case strings.Contains(string(eb), "DischargeMethod"):
		t.Errorf("after the A13 the discharge method stays: %s", eb)
	}
	if e["status"] != "in-progress" || e["participant"] == nil {
		t.Errorf("after the A13: status %v, participant %v", e["status"], e["participant"])
	}
	b, _ := json.Marshal(srv.all("Patient"))
	for _, r := range srv.all("Encounter") {
		eb, _ := json.Marshal(r)
		b = append(b, eb...)
	}
	if strings.Contains(string(b), "cleared-element") {
		t.Error("the server was sent Junction's cleared-element marker")
	}
}

// BenchmarkOutboundSendMerge measures one delivery of the transfer to an
// in-memory server on loopback that holds its Patient and Encounter, with
// the default merge (two searches, then the transaction) and without.
func BenchmarkOutboundSendMerge(b *testing.B) {
	for _, merge := range [][]string{DefaultMergeTypes(), {}} {
		b.Run(fmt.Sprintf("merge=%v", merge), func(b *testing.B) {
			srv := newMemServer(b)
			o, err := NewOutbound(adapter.Settings{Name: "ehr"}, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: merge})
			if err != nil {
				b.Fatal(err)
			}
			defer o.Shutdown(context.Background())
			ctx := context.Background()
			if _, err := o.Send(ctx, pasDelivery(b, "01MERGE0000001", mergeA01)); err != nil {
				b.Fatal(err)
			}
			d := pasDelivery(b, "01MERGE0000002", mergeA02)
			for b.Loop() {
				if _, err := o.Send(ctx, d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestOutboundMergeSecondReview holds the cases a second review found.
func TestOutboundMergeSecondReview(t *testing.T) {
	ctx := context.Background()
	newPair := func(t *testing.T) (*memServer, *Outbound) {
		srv := newMemServer(t)
		return srv, newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	}
	send := func(t *testing.T, o *Outbound, id, raw string) {
		t.Helper()
		if _, err := o.Send(ctx, pasDelivery(t, id, raw)); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	t.Run("a corrected birth date takes its time of birth with it", func(t *testing.T) {
		srv, o := newPair(t)
		send(t, o, "01MERGE0000001", strings.Replace(mergeA01, "||19820304|9|", "||198203041030|9|", 1))
		if only(t, srv, "Patient")["_birthDate"] == nil {
			t.Fatal("the admission gave no time of birth")
		}
		send(t, o, "01MERGE0000002", strings.Replace(mergeA02, "||19820304|9", "||19820305|9", 1))
		if p := only(t, srv, "Patient"); p["birthDate"] != "1982-03-05" || p["_birthDate"] != nil {
			t.Errorf("birthDate %v with _birthDate %v: the old time of birth stays beside the corrected date", p["birthDate"], p["_birthDate"])
		}
	})
	t.Run("REDACTED is not kept once a delivery withholds nothing", func(t *testing.T) {
		srv, o := newPair(t)
		d := pasDelivery(t, "01MERGE0000001", mergeA01)
		redactPatient(t, d, "address", "telecom")
		if _, err := o.Send(ctx, d); err != nil {
			t.Fatal(err)
		}
		pb, _ := json.Marshal(only(t, srv, "Patient"))
		if !strings.Contains(string(pb), "REDACTED") {
			t.Fatalf("the redacted delivery is not labelled: %s", pb)
		}
		send(t, o, "01MERGE0000003", mergeA01)
		p := only(t, srv, "Patient")
		pb, _ = json.Marshal(p)
		if strings.Contains(string(pb), "REDACTED") || p["address"] == nil {
			t.Errorf("after a full delivery: %s", pb)
		}
	})
	t.Run("an A40 after a message on the retired number was merged in", func(t *testing.T) {
		srv, o := newPair(t)
		send(t, o, "01MERGE0000001", mergeA01)
		send(t, o, "01MERGE0000002", strings.Replace(mergeA02, "H300001^^^RX1^MR", "H300009^^^RX1^MR", 1))
		a40 := "MSH|^~\\&|PAS|RX1|EPR|RX1|20240716101500||ADT^A40^ADT_A39|C40|P|2.5.1\r" +
			"EVN|A40|20240716101400\r" +
			"PID|1||9990000018^^^NHS^NH~H300001^^^RX1^MR||TESTPATIENT^JORDAN||19820304|9\r" +
			"MRG|H300009^^^RX1^MR\r"
		send(t, o, "01MERGE0000040", a40)
		p := only(t, srv, "Patient")
		pb, _ := json.Marshal(p)
		old := false
		for _, x := range p["identifier"].([]any) {
			id := x.(map[string]any)
			old = old || id["value"] == "H300009" && id["use"] == "old"
		}
		if !old || p["link"] != nil || p["active"] == false {
			t.Errorf("the survivor after the A40: %s", pb)
		}
	})
	t.Run("a refused search's detail is bounded", func(t *testing.T) {
		big := `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"` + strings.Repeat("x", 2<<20) + `"}]}`
		srv := newFHIRServer(t, reply(http.StatusServiceUnavailable, big))
		o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
		_, err := o.Send(ctx, pasDelivery(t, "01MERGE0000002", mergeA02))
		f := fault.As(err)
		if f == nil || len(f.Detail) > maxReply {
			t.Errorf("detail of %d bytes (fault %v), want at most %d", len(f.Detail), f, maxReply)
		}
	})
}

// redactPatient makes d's bundle what consent sends a destination not
// cleared for a restricted patient: its Patient without strip.
func redactPatient(t *testing.T, d *adapter.Delivery, strip ...string) {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(d.Body, &b); err != nil {
		t.Fatal(err)
	}
	dec := consent.Decision{Outcome: consent.Redact}
	for i, x := range b["entry"].([]any) {
		rt := x.(map[string]any)["resource"].(map[string]any)["resourceType"].(string)
		v := consent.Verdict{Outcome: consent.Permit}
		if rt == "Patient" {
			v = consent.Verdict{Outcome: consent.Redact, Strip: strip}
		}
		dec.Resources = append(dec.Resources, consent.ResourceDecision{Index: i, ResourceType: rt, Verdict: v})
	}
	red, err := consent.Apply(b, dec)
	if err != nil {
		t.Fatal(err)
	}
	d.Body, _ = json.Marshal(red)
}

// TestOutboundSupplierResourcesReplace: a delivery not translated from
// HL7 v2 (a supplier's FHIR Bundle) says what each resource is in full,
// so it replaces the server's copy without a search, as FHIR's update
// means: its Patient without generalPractitioner removes the GP.
func TestOutboundSupplierResourcesReplace(t *testing.T) {
	srv := newMemServer(t)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	ctx := context.Background()
	if _, err := o.Send(ctx, pasDelivery(t, "01MERGE0000001", mergeA01)); err != nil {
		t.Fatal(err)
	}
	searches := srv.searches
	body := `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:p","resource":{"resourceType":"Patient",` +
		`"identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}],"name":[{"family":"TESTPATIENT"}]}}]}`
	d := &adapter.Delivery{MessageID: "01MERGE0000060", Route: "r", Destination: "ehr", ContentType: envelope.ContentTypeFHIR, Body: []byte(body), IdempotencyKey: "k60", Attempt: 1}
	if _, err := o.Send(ctx, d); err != nil {
		t.Fatal(err)
	}
	if srv.searches != searches {
		t.Errorf("%d searches for a supplier's delivery", srv.searches-searches)
	}
	if p := only(t, srv, "Patient"); p["generalPractitioner"] != nil {
		t.Errorf("the supplier's Patient was merged: %v", p)
	}
}

// TestOutboundUpdateKeepsVisitState: an A08 asserts no change of state, so
// the status Junction infers for it (in progress) does not reopen a visit
// an A11 cancelled at the server; with no visit at the server it stands.
func TestOutboundUpdateKeepsVisitState(t *testing.T) {
	a11 := strings.Replace(strings.Replace(mergeA01, "ADT^A01^ADT_A01", "ADT^A11^ADT_A09", 1), "EVN|A01", "EVN|A11", 1)
	a08 := strings.Replace(strings.Replace(mergeA01, "ADT^A01^ADT_A01", "ADT^A08^ADT_A01", 1), "EVN|A01", "EVN|A08", 1)
	tests := []struct {
		name   string
		before []string
		want   string
	}{
		{"after a cancel", []string{mergeA01, a11}, "entered-in-error"},
		{"no visit at the server", nil, "in-progress"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newMemServer(t)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
			for i, raw := range append(tt.before, a08) {
				if _, err := o.Send(context.Background(), pasDelivery(t, fmt.Sprintf("01MERGE000010%d", i), raw)); err != nil {
					t.Fatal(err)
				}
			}
			e := only(t, srv, "Encounter")
			eb, _ := json.Marshal(e)
			if e["status"] != tt.want || strings.Contains(string(eb), "derived-element") {
				t.Errorf("Encounter after the A08: %s; want status %s and no Junction mark", eb, tt.want)
			}
		})
	}
}

// Messages about the visit of mergeA01, for the visit-state tests.
var (
	visitA03 = "MSH|^~\\&|PAS|RX1|EPR|RX1|20240717101500||ADT^A03^ADT_A03|CTRLV03|P|2.5.1\r" +
		"EVN|A03|20240717101400\r" +
		"PID|1||9990000018^^^NHS^NH~H300001^^^RX1^MR||TESTPATIENT^JORDAN||19820304|9\r" +
		"PV1|1|I|WARD7^ROOM1^BED4^RX1||||C1234567^TESTCONSULTANT^ALEX^^^DR||||||||||||V0101|||||||||||||||||1|19|||||||20240716100000|20240717100000\r"
	visitA08 = "MSH|^~\\&|PAS|RX1|EPR|RX1|20240717101500||ADT^A08^ADT_A01|CTRLV08|P|2.5.1\r" +
		"EVN|A08|20240717101400\r" +
		"PID|1||9990000018^^^NHS^NH~H300001^^^RX1^MR||TESTPATIENT^JORDAN||19820304|9\r" +
		"PV1|1|I|WARD7^ROOM1^BED4^RX1||||C1234567^TESTCONSULTANT^ALEX^^^DR||||||||||||V0101|||||||||||||||||||||||||20240716100000\r"
	visitA08Closed = "MSH|^~\\&|PAS|RX1|EPR|RX1|20240717101500||ADT^A08^ADT_A01|CTRLV8D|P|2.5.1\r" +
		"EVN|A08|20240717101400\r" +
		"PID|1||9990000018^^^NHS^NH~H300001^^^RX1^MR||TESTPATIENT^JORDAN||19820304|9\r" +
		"PV1|1|I|WARD7^ROOM1^BED4^RX1||||C1234567^TESTCONSULTANT^ALEX^^^DR||||||||||||V0101|||||||||||||||||1|19|||||||20240716100000|20240717100000\r"
	visitA12 = "MSH|^~\\&|PAS|RX1|EPR|RX1|20240717101500||ADT^A12^ADT_A12|CTRLV12|P|2.5.1\r" +
		"EVN|A12|20240717101400\r" +
		"PID|1||9990000018^^^NHS^NH~H300001^^^RX1^MR||TESTPATIENT^JORDAN||19820304|9\r" +
		"PV1|1|I|WARD7^ROOM1^BED4^RX1|||WARD9^ROOM2^BED1^RX1|C1234567^TESTCONSULTANT^ALEX^^^DR||||||||||||V0101|||||||||||||||||||||||||20240716100000\r"
)

// TestOutboundVisitState: what an update or a cancelled transfer infers
// does not reopen or unsettle a visit the server holds, while a discharge
// time an A08 carries does close it.
func TestOutboundVisitState(t *testing.T) {
	tests := []struct {
		name         string
		msgs         []string
		status       string
		end          bool
		locationDone bool
	}{
		{"A08 after a discharge keeps it", []string{mergeA01, visitA03, visitA08}, "finished", true, true},
		{"A12 after a discharge keeps it", []string{mergeA01, visitA03, visitA12}, "finished", true, false},
		{"A08 with a discharge time closes the visit", []string{mergeA01, visitA08Closed}, "finished", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newMemServer(t)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
			for i, raw := range tt.msgs {
				if _, err := o.Send(context.Background(), pasDelivery(t, fmt.Sprintf("01VISIT0000%03d", i), raw)); err != nil {
					t.Fatal(err)
				}
			}
			e := only(t, srv, "Encounter")
			eb, _ := json.Marshal(e)
			period, _ := e["period"].(map[string]any)
			if e["status"] != tt.status || (period["end"] != nil) != tt.end {
				t.Errorf("status %v, period %v; want %s with end %v: %s", e["status"], period, tt.status, tt.end, eb)
			}
			if tt.locationDone {
				loc := e["location"].([]any)[0].(map[string]any)
				if loc["status"] != "completed" {
					t.Errorf("location %v: want completed", loc)
				}
			}
		})
	}
}

// TestOutboundMergeThroughShippedRoute: the shipped routes' keep step
// drops the MessageHeader; the translator's Bundle tag stays, so the
// delivery is still merged (the transfer keeps the GP).
func TestOutboundMergeThroughShippedRoute(t *testing.T) {
	dropHeader := func(d *adapter.Delivery) *adapter.Delivery {
		var b map[string]any
		if err := json.Unmarshal(d.Body, &b); err != nil {
			t.Fatal(err)
		}
		var kept []any
		for _, x := range b["entry"].([]any) {
			if x.(map[string]any)["resource"].(map[string]any)["resourceType"] != "MessageHeader" {
				kept = append(kept, x)
			}
		}
		b["entry"], b["type"] = kept, "collection"
		d.Body, _ = json.Marshal(b)
		return d
	}
	srv := newMemServer(t)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	for i, raw := range []string{mergeA01, mergeA02} {
		if _, err := o.Send(context.Background(), dropHeader(pasDelivery(t, fmt.Sprintf("01ROUTE000000%d", i), raw))); err != nil {
			t.Fatal(err)
		}
	}
	if p := only(t, srv, "Patient"); p["generalPractitioner"] == nil || p["telecom"] == nil {
		t.Errorf("the transfer through the shipped route deleted the GP or telecom: %v", p)
	}
}

// adt builds an ADT message about the patient and visit of mergeA01:
// event (A01, "A02^ADT_A02"), the time recorded (EVN-2) and the PV1
// fields given, by number.
func adt(event, at string, pv1 map[int]string) string {
	trigger, structure, _ := strings.Cut(event, "^")
	if structure == "" {
		structure = "ADT_A01"
	}
	fields := make([]string, 46)
	fields[0], fields[1], fields[2], fields[19], fields[44] = "PV1", "1", "I", "V0101", "20240716100000"
	for n, v := range pv1 {
		fields[n] = v
	}
	return "MSH|^~\\&|PAS|RX1|EPR|RX1|" + at + "||ADT^" + trigger + "^" + structure + "|CTRL" + trigger + at[8:] + "|P|2.5.1\r" +
		"EVN|" + trigger + "|" + at + "\r" +
		"PID|1||9990000018^^^NHS^NH~H300001^^^RX1^MR||TESTPATIENT^JORDAN||19820304|9\r" +
		strings.TrimRight(strings.Join(fields, "|"), "|") + "\r"
}

// TestOutboundEncounterHistory: with the default merge types, a
// message's doctors replace the server's of the same kind only, and the
// wards a patient stayed on stay in the Encounter's location history
// through transfers, a cancelled transfer and the discharge.
func TestOutboundEncounterHistory(t *testing.T) {
	const (
		ward7   = "WARD7^ROOM1^BED4^RX1"
		ward9   = "WARD9^ROOM2^BED1^RX1"
		ward3   = "WARD3^ROOM5^BED2^RX1"
		t2, t3  = "2024-07-16T12:14:00+01:00", "2024-07-16T15:00:00+01:00"
		admitBy = "C7654321^TESTADMITTER^SAM^^^DR"
	)
	type loc struct{ display, status, start, end string }
	steps := []struct {
		name    string
		msg     string
		doctors map[string]string // participant type code: display
		locs    []loc
	}{
		{"admission", adt("A01", "20240716101400", map[int]string{3: ward7, 7: "C1234567^TESTCONSULTANT^ALEX^^^DR", 17: admitBy}),
			map[string]string{"ATND": "DR ALEX TESTCONSULTANT", "ADM": "DR SAM TESTADMITTER"},
			[]loc{{"WARD7, ROOM1, BED4", "active", "", ""}}},
		{"transfer with a new attending doctor", adt("A02^ADT_A02", "20240716121400", map[int]string{3: ward9, 6: ward7, 7: "C2222222^TESTCONSULTANT^BLAKE^^^DR"}),
			map[string]string{"ATND": "DR BLAKE TESTCONSULTANT", "ADM": "DR SAM TESTADMITTER"},
			[]loc{{"WARD9, ROOM2, BED1", "active", t2, ""}, {"WARD7, ROOM1, BED4", "completed", "", t2}}},
		{"second transfer, no doctors", adt("A02^ADT_A02", "20240716150000", map[int]string{3: ward3, 6: ward9}),
			map[string]string{"ATND": "DR BLAKE TESTCONSULTANT", "ADM": "DR SAM TESTADMITTER"},
			[]loc{{"WARD3, ROOM5, BED2", "active", t3, ""}, {"WARD9, ROOM2, BED1", "completed", t2, t3}, {"WARD7, ROOM1, BED4", "completed", "", t2}}},
		{"second transfer cancelled", adt("A12^ADT_A12", "20240716160000", map[int]string{3: ward9, 6: ward3}),
			map[string]string{"ATND": "DR BLAKE TESTCONSULTANT", "ADM": "DR SAM TESTADMITTER"},
			[]loc{{"WARD9, ROOM2, BED1", "active", t2, ""}, {"WARD7, ROOM1, BED4", "completed", "", t2}}},
		{"discharge", adt("A03^ADT_A03", "20240717101400", map[int]string{3: ward9, 45: "20240717100000"}),
			map[string]string{"ATND": "DR BLAKE TESTCONSULTANT", "ADM": "DR SAM TESTADMITTER"},
			[]loc{{"WARD9, ROOM2, BED1", "completed", t2, ""}, {"WARD7, ROOM1, BED4", "completed", "", t2}}},
	}
	srv := newMemServer(t)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	for i, st := range steps {
		if _, err := o.Send(context.Background(), pasDelivery(t, fmt.Sprintf("01HIST0000000%d", i), st.msg)); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		e := only(t, srv, "Encounter")
		doctors := map[string]string{}
		for _, x := range e["participant"].([]any) {
			p := x.(map[string]any)
			code := p["type"].([]any)[0].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"].(string)
			if _, twice := doctors[code]; twice {
				t.Errorf("%s: two %s participants", st.name, code)
			}
			doctors[code] = p["individual"].(map[string]any)["display"].(string)
		}
		if !cmp.Equal(doctors, st.doctors) {
			t.Errorf("%s: participants %v, want %v", st.name, doctors, st.doctors)
		}
		var locs []loc
		for _, x := range e["location"].([]any) {
			l := x.(map[string]any)
			p, _ := l["period"].(map[string]any)
			start, _ := p["start"].(string)
			end, _ := p["end"].(string)
			status, _ := l["status"].(string)
			locs = append(locs, loc{l["location"].(map[string]any)["display"].(string), status, start, end})
		}
		if !cmp.Equal(locs, st.locs, cmp.AllowUnexported(loc{})) {
			t.Errorf("%s: locations\n %v\nwant\n %v", st.name, locs, st.locs)
		}
	}
}

// TestOutboundLocationHistoryCases: the stays a patient had are kept when
// a ward is visited twice, when a transfer does not name the ward left
// (PV1-6 is optional), and when a move is to where the patient is.
func TestOutboundLocationHistoryCases(t *testing.T) {
	const w7, w9 = "WARD7^ROOM1^BED4^RX1", "WARD9^ROOM2^BED1^RX1"
	const d7, d9 = "WARD7, ROOM1, BED4", "WARD9, ROOM2, BED1"
	const t2, t3 = "2024-07-16T12:14:00+01:00", "2024-07-16T15:00:00+01:00"
	tests := []struct {
		name string
		msgs []string
		want []string // display|status|start|end
	}{
		{"a ward visited twice", []string{
			adt("A01", "20240716101400", map[int]string{3: w7}),
			adt("A02^ADT_A02", "20240716121400", map[int]string{3: w9, 6: w7}),
			adt("A02^ADT_A02", "20240716150000", map[int]string{3: w7, 6: w9}),
		}, []string{d7 + "|active|" + t3 + "|", d9 + "|completed|" + t2 + "|" + t3, d7 + "|completed||" + t2}},
		{"a transfer without PV1-6", []string{
			adt("A01", "20240716101400", map[int]string{3: w7}),
			adt("A02^ADT_A02", "20240716121400", map[int]string{3: w9}),
		}, []string{d9 + "|active|" + t2 + "|", d7 + "|completed||" + t2}},
		{"a move to the same bed", []string{
			adt("A01", "20240716101400", map[int]string{3: w7}),
			adt("A02^ADT_A02", "20240716121400", map[int]string{3: w9, 6: w7}),
			adt("A02^ADT_A02", "20240716150000", map[int]string{3: w9, 6: w9}),
		}, []string{d9 + "|active|" + t2 + "|", d7 + "|completed||" + t2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newMemServer(t)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
			for i, m := range tt.msgs {
				if _, err := o.Send(context.Background(), pasDelivery(t, fmt.Sprintf("01LOCS%08d", i), m)); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			var got []string
			for _, x := range only(t, srv, "Encounter")["location"].([]any) {
				l := x.(map[string]any)
				p, _ := l["period"].(map[string]any)
				start, _ := p["start"].(string)
				end, _ := p["end"].(string)
				got = append(got, fmt.Sprintf("%s|%s|%s|%s", l["location"].(map[string]any)["display"], l["status"], start, end))
			}
			if !cmp.Equal(got, tt.want) {
				t.Errorf("locations\n %q\nwant\n %q", got, tt.want)
			}
		})
	}
}

// TestOutboundStaleA40: an A40 replayed after a newer message wrote the
// survivor, whose retired hospital number an earlier message had already
// put on the survivor's record, is delivered (both entries are one
// Patient at the server, folded into one), and the survivor's own
// number does not become an old one.
func TestOutboundStaleA40(t *testing.T) {
	for _, stale := range []bool{false, true} {
		t.Run(fmt.Sprintf("stale=%v", stale), func(t *testing.T) {
			srv := newMemServer(t)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
			t0 := time.Date(2024, 7, 16, 9, 0, 0, 0, time.UTC)
			send := func(id, raw string, at time.Time) { t.Helper(); sendReceived(t, o, id, raw, at) }
			// Registered twice under one NHS number: H300001 and H300009
			// on one record at the server.
			send("01A40000000001", mergeA01, t0)
			dup := strings.Replace(strings.Replace(mergeA01, "H300001^^^RX1^MR", "H300009^^^RX1^MR", 1), "V0101", "V0202", 1)
			send("01A40000000002", dup, t0.Add(time.Minute))
			a08 := strings.Replace(strings.Replace(mergeA01, "ADT^A01^ADT_A01", "ADT^A08^ADT_A01", 1), "EVN|A01", "EVN|A08", 1)
			send("01A40000000003", a08, t0.Add(2*time.Hour))
			a40 := "MSH|^~\\&|PAS|RX1|EPR|RX1|20240716101500||ADT^A40^ADT_A39|C40|P|2.5.1\r" +
				"EVN|A40|20240716101400\r" +
				"PID|1||9990000018^^^NHS^NH~H300001^^^RX1^MR||TESTPATIENT^JORDAN||19820304|9\r" +
				"MRG|H300009^^^RX1^MR\r"
			at := t0.Add(3 * time.Hour)
			if stale {
				at = t0.Add(time.Hour)
			}
			send("01A40000000040", a40, at)
			uses := map[string]string{}
			for _, x := range only(t, srv, "Patient")["identifier"].([]any) {
				id := x.(map[string]any)
				use, _ := id["use"].(string)
				uses[id["value"].(string)] = use
			}
			if uses["H300001"] == "old" || uses["H300009"] != "old" {
				t.Errorf("identifier uses %v: want H300001 current and H300009 old", uses)
			}
		})
	}
}

// TestOutboundDoctorDeletedByKind: a doctor field sent as "" deletes the
// server's doctor of that kind only, whether or not the message names
// other doctors, and never another system's untyped participant.
func TestOutboundDoctorDeletedByKind(t *testing.T) {
	const w7 = "WARD7^ROOM1^BED4^RX1"
	admission := adt("A01", "20240716101400", map[int]string{3: w7, 7: "C1234567^TESTCONSULTANT^ALEX^^^DR", 17: "C7654321^TESTADMITTER^SAM^^^DR"})
	tests := []struct {
		name string
		pv1  map[int]string
		want []string // participant type codes, or "other" for the untyped one
	}{
		{"attending deleted, a new admitting doctor", map[int]string{3: w7, 7: `""`, 17: "C7777777^TESTADMITTER^KIM^^^DR"}, []string{"ADM", "other"}},
		{"attending deleted, no doctor named", map[int]string{3: w7, 7: `""`}, []string{"ADM", "other"}},
		{"every doctor deleted", map[int]string{3: w7, 7: `""`, 8: `""`, 9: `""`, 17: `""`}, []string{"other"}},
		{"no doctor field sent", map[int]string{3: w7}, []string{"ATND", "ADM", "other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newMemServer(t)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
			if _, err := o.Send(context.Background(), pasDelivery(t, "01DOCS00000001", admission)); err != nil {
				t.Fatal(err)
			}
			e := only(t, srv, "Encounter")
			e["participant"] = append(e["participant"].([]any), map[string]any{"individual": map[string]any{"display": "EHR nurse"}})
			srv.put("Encounter", e["id"].(string), e)
			if _, err := o.Send(context.Background(), pasDelivery(t, "01DOCS00000002", adt("A08", "20240716121400", tt.pv1))); err != nil {
				t.Fatal(err)
			}
			var got []string
			ps, _ := only(t, srv, "Encounter")["participant"].([]any)
			for _, x := range ps {
				p := x.(map[string]any)
				if p["type"] == nil {
					got = append(got, "other")
					continue
				}
				got = append(got, p["type"].([]any)[0].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"].(string))
			}
			if !cmp.Equal(got, tt.want) {
				t.Errorf("participants %v, want %v", got, tt.want)
			}
		})
	}
}

// TestOutboundOlderMessageKeepsNewer: a merging destination records when
// the message that wrote each element was received, and a message
// received earlier than what wrote an element (a dead letter replayed
// after the discharge, a message late on another route) leaves that
// element as the server has it, while what it changed that nothing newer
// wrote is merged, and the hospital numbers it names are added.
func TestOutboundOlderMessageKeepsNewer(t *testing.T) {
	t0 := time.Date(2024, 7, 16, 9, 15, 0, 0, time.UTC)
	t1 := t0.Add(24 * time.Hour)
	a01 := adt("A01", "20240716101400", map[int]string{3: "WARD7^ROOM1^BED4^RX1"})
	a01Changed := strings.Replace(strings.Replace(a01, "H300001^^^RX1^MR", "H300001^^^RX1^MR~B55501^^^RX2^MR", 1),
		"19820304|9", "19820304|9|||9 NEW STREET^^NEWTOWN^^ZZ99 9ZZ^GBR^H", 1)
	a03 := strings.Replace(adt("A03^ADT_A03", "20240717101400", map[int]string{3: "WARD7^ROOM1^BED4^RX1", 45: "20240717100000"}),
		"TESTPATIENT^JORDAN", "TESTPATIENT^JORDAN^LEE", 1)
	tests := []struct {
		name      string
		at        time.Time
		status    string
		given     []any
		nameStamp time.Time
	}{
		{"the admission replayed after the discharge", t0, "finished", []any{"JORDAN", "LEE"}, t1},
		{"within the clock allowance", t1.Add(-clockAllowance), "in-progress", []any{"JORDAN"}, t1},
		{"newer", t1.Add(time.Minute), "in-progress", []any{"JORDAN"}, t1.Add(time.Minute)},
		{"receipt unknown", time.Time{}, "in-progress", []any{"JORDAN"}, t1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newMemServer(t)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
			send := func(id, raw string, at time.Time) { t.Helper(); sendReceived(t, o, id, raw, at) }
			send("01STALE0000001", a01, t0)
			send("01STALE0000002", a03, t1)
			send("01STALE0000001", a01Changed, tt.at)
			p, e := only(t, srv, "Patient"), only(t, srv, "Encounter")
			if e["status"] != tt.status {
				t.Errorf("Encounter status %v, want %s", e["status"], tt.status)
			}
			if given := p["name"].([]any)[0].(map[string]any)["given"].([]any); !cmp.Equal(given, tt.given) {
				t.Errorf("given names %v, want %v", given, tt.given)
			}
			// Nothing newer wrote the address or this hospital number.
			if !strings.Contains(strings.Join(identifierSet(p), " "), "B55501") {
				t.Error("the message's new hospital number was not added")
			}
			if b, _ := json.Marshal(p["address"]); !strings.Contains(string(b), "NEW STREET") {
				t.Errorf("the message's new address was not written: %s", b)
			}
			pb, _ := json.Marshal(p)
			if got := stampsOf(pb)["name"]; !got.Equal(tt.nameStamp) {
				t.Errorf("name stamped %v, want %v", got, tt.nameStamp)
			}
		})
	}
}

// TestOutboundLateMessageKeepsItsOwnChanges: a message received before
// another but delivered after it (late on another route) writes what the
// other did not carry.
func TestOutboundLateMessageKeepsItsOwnChanges(t *testing.T) {
	srv := newMemServer(t)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	t0 := time.Date(2024, 7, 16, 9, 0, 0, 0, time.UTC)
	send := func(id, raw string, at time.Time) { t.Helper(); sendReceived(t, o, id, raw, at) }
	send("01LATE00000001", mergeA01, t0)
	pid := "PID|1||9990000018^^^NHS^NH~H300001^^^RX1^MR||TESTPATIENT^JORDAN||19820304|9"
	a31 := "MSH|^~\\&|PAS|RX1|EPR|RX1|20240716101500||ADT^A31^ADT_A05|C31|P|2.5.1\rEVN|A31|20240716101400\r" +
		pid + "|||9 NEW STREET^^NEWTOWN^^ZZ99 9ZZ^GBR^H\r"
	a08 := "MSH|^~\\&|PAS|RX1|EPR|RX1|20240716101500||ADT^A08^ADT_A01|C08|P|2.5.1\rEVN|A08|20240716101400\r" +
		strings.Replace(pid, "JORDAN", "JORDAN^LEE", 1) + "\r"
	send("01LATE00000003", a08, t0.Add(2*time.Hour+time.Minute))
	send("01LATE00000002", a31, t0.Add(2*time.Hour))
	p := only(t, srv, "Patient")
	if b, _ := json.Marshal(p["address"]); !strings.Contains(string(b), "NEW STREET") {
		t.Errorf("the late message's address change was dropped: %s", b)
	}
	if given := p["name"].([]any)[0].(map[string]any)["given"].([]any); !cmp.Equal(given, []any{"JORDAN", "LEE"}) {
		t.Errorf("given names %v: the newer message's name should stand", given)
	}
}

func TestElementStamps(t *testing.T) {
	t1 := time.Date(2024, 7, 16, 9, 15, 0, 123000000, time.UTC)
	t2 := t1.Add(time.Hour)
	choice := choiceElements("Patient")
	res := []byte(`{"resourceType":"Patient","id":"p","extension":[{"url":"u1"}],"name":[{}],"deceasedBoolean":false,"_birthDate":{},"birthDate":"2000-01-01","identifier":[]}`)
	keys, err := written(res, clearing{elements: []string{"address"}, extensions: []string{"u2"}, derived: []string{"name"}}, choice)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"address", "birthDate", "deceased", "extension:u1", "extension:u2"}; !cmp.Equal(keys, want) {
		t.Errorf("written = %v, want %v", keys, want)
	}
	s := elementStamps{"name": t2}
	s.mark(keys, t1)
	s.mark([]string{"name"}, t1) // a stamp does not go back
	out, err := withStamps(res, s)
	if err != nil {
		t.Fatal(err)
	}
	got := stampsOf(out)
	if len(got) != 6 || !got["name"].Equal(t2) || !got["address"].Equal(t1) || !got["extension:u1"].Equal(t1) {
		t.Errorf("stamps read back %v from %s", got, out)
	}
	// Written again, the stamps replace the earlier ones.
	again, err := withStamps(out, elementStamps{"name": t1})
	if err != nil {
		t.Fatal(err)
	}
	if got := stampsOf(again); len(got) != 1 || !got["name"].Equal(t1) {
		t.Errorf("stamps after rewriting %v: %s", got, again)
	}
	kept, cl, dropped, err := withoutNewer(res, clearing{elements: []string{"name", "period.end"}, extensions: []string{"u1"}}, choice,
		elementStamps{"deceased": t2, "extension:u1": t2, "name": t2, "period": t1}, t1)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"resourceType":"Patient","id":"p","_birthDate":{},"birthDate":"2000-01-01","identifier":[]}`; string(kept) != want || dropped != 5 ||
		!cmp.Equal(cl.elements, []string{"period.end"}) || cl.extensions != nil {
		t.Errorf("withoutNewer = %s, %+v, %d", kept, cl, dropped)
	}
	for _, bad := range []string{`[]`, `{"meta":[]}`, `{"meta":{"extension":{}}}`} {
		if _, err := withStamps([]byte(bad), s); err == nil {
			t.Errorf("withStamps(%s) succeeded", bad)
		}
	}
}

// sendReceived sends the PAS translation of raw to o as received at at.
func sendReceived(t *testing.T, o *Outbound, id, raw string, at time.Time) {
	t.Helper()
	d := pasDelivery(t, id, raw)
	d.ReceivedAt = at
	if _, err := o.Send(context.Background(), d); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
}

// TestOutboundCancelDischargeWithAdmissionDetails: an A13 that sends the
// admission's start and source again withdraws the discharge at the
// server all the same, and keeps the start and source.
func TestOutboundCancelDischargeWithAdmissionDetails(t *testing.T) {
	srv := newMemServer(t)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	const w7 = "WARD7^ROOM1^BED4^RX1"
	for i, m := range []string{
		adt("A01", "20240716101400", map[int]string{3: w7, 14: "19"}),
		adt("A03^ADT_A03", "20240717101400", map[int]string{3: w7, 14: "19", 37: "19", 45: "20240717100000"}),
		adt("A13", "20240717111400", map[int]string{3: w7, 14: "19"}),
	} {
		if _, err := o.Send(context.Background(), pasDelivery(t, fmt.Sprintf("01CANCEL%06d", i), m)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	e := only(t, srv, "Encounter")
	period, _ := e["period"].(map[string]any)
	h, _ := e["hospitalization"].(map[string]any)
	if e["status"] != "in-progress" || period["end"] != nil || period["start"] == nil || h["dischargeDisposition"] != nil || h["admitSource"] == nil {
		b, _ := json.Marshal(e)
		t.Errorf("after the A13: %s; want in progress, with start and admit source, without end or discharge destination", b)
	}
}

// TestOutboundOlderMessageCreatesOnly: a message older than what the
// server holds makes the Practitioners it names when they are missing
// and leaves those there, which a newer message may have corrected.
func TestOutboundOlderMessageCreatesOnly(t *testing.T) {
	srv := newMemServer(t)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	t0 := time.Date(2024, 7, 16, 9, 0, 0, 0, time.UTC)
	old := adt("A01", "20240716101400", map[int]string{3: "WARD7", 7: "1234567^TESTCONSULTANT^ALEX^^^DR^^^GMC"})
	corrected := adt("A08", "20240716121400", map[int]string{3: "WARD7", 7: "1234567^TESTCONSULTANT-SMITH^ALEX^^^DR^^^GMC"})
	sendReceived(t, o, "01PRAC00000001", old, t0)
	sendReceived(t, o, "01PRAC00000002", corrected, t0.Add(time.Hour))
	// The admission replayed after the correction, naming a second doctor
	// the server does not hold yet.
	replayed := adt("A01", "20240716101400", map[int]string{3: "WARD7", 7: "1234567^TESTCONSULTANT^ALEX^^^DR^^^GMC", 17: "7654321^TESTADMITTER^SAM^^^DR^^^GMC"})
	sendReceived(t, o, "01PRAC00000001", replayed, t0)
	names := map[string]bool{}
	for _, p := range srv.all("Practitioner") {
		names[p["name"].([]any)[0].(map[string]any)["family"].(string)] = true
	}
	if !names["TESTCONSULTANT-SMITH"] || names["TESTCONSULTANT"] || !names["TESTADMITTER"] {
		t.Errorf("Practitioners %v: want the corrected name kept and the new doctor made", names)
	}
}

// TestOutboundMergeFollowsReplacedBy: at the server, a duplicate record
// (hospital number H300009 alone) was merged into the patient's record
// and now links to it "replaced-by", as FHIR marks a record that must no
// longer be used. A later message naming only the retired number updates
// the record it was merged into, which gains the number, and leaves the
// retired one as it was; a chain of merges is followed to its end, and a
// link that leads nowhere leaves the retired record the message's, as
// before.
func TestOutboundMergeFollowsReplacedBy(t *testing.T) {
	retiredA08 := "MSH|^~\\&|PAS|RX1|EPR|RX1|20240716131500||ADT^A08^ADT_A01|CTRLM08|P|2.5.1\r" +
		"EVN|A08|20240716131400\r" +
		"PID|1||H300009^^^RX1^MR||TESTPATIENT^JORDAN^NEWNAME||19820304|9\r" +
		"PV1|1|N\r"
	mrn := func(v string) map[string]any {
		return map[string]any{"system": "https://fhir.example-trust.nhs.uk/Id/local-patient-identifier", "value": v}
	}
	retired := func(id, to string, ident string) map[string]any {
		return map[string]any{"resourceType": "Patient", "active": false, "identifier": []any{mrn(ident)},
			"name": []any{map[string]any{"family": "TESTPATIENT", "given": []any{"DUPLICATE"}}},
			"link": []any{map[string]any{"type": "replaced-by", "other": map[string]any{"reference": "Patient/" + to}}}}
	}
	survivor := map[string]any{"resourceType": "Patient", "active": true,
		"identifier": []any{map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}, mrn("H300001")},
		"name":       []any{map[string]any{"family": "TESTPATIENT", "given": []any{"JORDAN"}}}}
	tests := []struct {
		name    string
		records map[string]map[string]any
		updated string // the Patient id the A08 must update
	}{
		{"one merge", map[string]map[string]any{"s": survivor, "r": retired("r", "s", "H300009")}, "s"},
		{"a chain of merges", map[string]map[string]any{"s": survivor, "m": retired("m", "s", "H300005"), "r": retired("r", "m", "H300009")}, "s"},
		{"a link to a record gone", map[string]map[string]any{"s": survivor, "r": retired("r", "gone", "H300009")}, "r"},
		{"a loop", map[string]map[string]any{"s": survivor, "a": retired("a", "r", "H300005"), "r": retired("r", "a", "H300009")}, "r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newMemServer(t)
			for id, r := range tt.records {
				srv.put("Patient", id, r)
			}
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
			if _, err := o.Send(context.Background(), pasDelivery(t, "01MERGE0000008", retiredA08)); err != nil {
				t.Fatal(err)
			}
			for _, p := range srv.all("Patient") {
				id := p["id"].(string)
				given := p["name"].([]any)[0].(map[string]any)["given"].([]any)
				renamed := slices.Contains(given, any("NEWNAME"))
				if renamed != (id == tt.updated) {
					b, _ := json.Marshal(p)
					t.Errorf("Patient/%s renamed %v, want only Patient/%s renamed: %s", id, renamed, tt.updated, b)
				}
				if id == tt.updated && id == "s" && !slices.Contains(identifierSet(p), "https://fhir.example-trust.nhs.uk/Id/local-patient-identifier|H300009") {
					t.Errorf("the survivor did not gain the retired number: %v", identifierSet(p))
				}
			}
			if n := len(srv.all("Patient")); n != len(tt.records) {
				t.Errorf("server holds %d Patients, want %d (none created)", n, len(tt.records))
			}
		})
	}
}

// TestOutboundMergeSurvivorDeleted: the record a retired one links to
// replaced-by was deleted at the server, which answers its read 410 Gone
// as FHIR servers do for a deleted resource. A message naming only the
// retired number then updates the retired record, as when the link leads
// to no record at all, rather than failing for good.
func TestOutboundMergeSurvivorDeleted(t *testing.T) {
	a08 := "MSH|^~\\&|PAS|RX1|EPR|RX1|20240716131500||ADT^A08^ADT_A01|CTRLM09|P|2.5.1\r" +
		"EVN|A08|20240716131400\r" +
		"PID|1||H300009^^^RX1^MR||TESTPATIENT^JORDAN^NEWNAME||19820304|9\r" +
		"PV1|1|N\r"
	srv := newMemServer(t)
	srv.put("Patient", "r", map[string]any{"resourceType": "Patient", "active": false,
		"identifier": []any{map[string]any{"system": "https://fhir.example-trust.nhs.uk/Id/local-patient-identifier", "value": "H300009"}},
		"name":       []any{map[string]any{"family": "TESTPATIENT", "given": []any{"DUPLICATE"}}},
		"link":       []any{map[string]any{"type": "replaced-by", "other": map[string]any{"reference": "Patient/deleted"}}}})
	mem := http.StripPrefix("/fhir", http.HandlerFunc(srv.serve))
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/fhir/Patient/deleted" {
			writeJSON(w, http.StatusGone, outcome("Patient/deleted was deleted"))
			return
		}
		mem.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	o := newTestOutbound(t, OutboundConfig{URL: front.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	if _, err := o.Send(context.Background(), pasDelivery(t, "01MERGE0000009", a08)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	ps := srv.all("Patient")
	if len(ps) != 1 {
		t.Fatalf("server holds %d Patients, want the retired one alone", len(ps))
	}
	if given := ps[0]["name"].([]any)[0].(map[string]any)["given"].([]any); !slices.Contains(given, any("NEWNAME")) {
		t.Errorf("the retired record was not updated: given %v", given)
	}
}
