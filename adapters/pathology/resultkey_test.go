package pathology

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"

	jfhir "github.com/junction-fhir/junction/adapters/fhir"
	"github.com/junction-fhir/junction/pkg/fhir"
)

// resultKeys translates raw and returns, for each resource type, the
// values of its resources' result keys in bundle order, with each
// Observation's status beside its key ("key=status").
func resultKeys(t *testing.T, name string, raw []byte) map[string][]string {
	t.Helper()
	got, err := newTestTranslator(t).Translate(testEnvelope(name, raw))
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	checkBundle(t, got.Bundle)
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(got.Bundle, &b); err != nil {
		t.Fatalf("bundle: %v", err)
	}
	out := map[string][]string{}
	for _, e := range b.Entry {
		rt, err := fhir.ResourceType(e.Resource)
		if err != nil {
			t.Fatalf("entry: %v", err)
		}
		var res struct {
			Identifier []struct{ System, Value string } `json:"identifier"`
			Status     string                           `json:"status"`
		}
		if err := json.Unmarshal(e.Resource, &res); err != nil {
			t.Fatalf("%s: %v", rt, err)
		}
		for _, id := range res.Identifier {
			if id.System == DefaultResultKeySystem {
				v := id.Value
				if rt == "Observation" {
					v += "=" + res.Status
				}
				out[rt] = append(out[rt], v)
			}
		}
	}
	return out
}

// TestCorrectionKeepsResultKeys checks that a corrected report names its
// ServiceRequest, DiagnosticReport, Specimen and Observations as the
// original did, so that a FHIR server updates them rather than keeping
// the erroneous result beside the correction.
func TestCorrectionKeepsResultKeys(t *testing.T) {
	msh := `MSH|^~\&|WINPATH|RX1LAB|JUNCTION|RX1|20261201120000||ORU^R01^ORU_R01|T04-0001|P|2.5.1`
	pid := `PID|1||9990000069^^^NHS^NH~M100002^^^RX1^MR||PATHTEST^BLAIR||19700202|M`
	orc := `ORC|RE|PL4001^EPR|FL4001^WINPATH||CM`
	spm := `SPM|1|SP4001||119364003^Serum specimen^SCT|||||||||||||20261201081500|20261201090000`
	original := hl7(msh, pid, orc,
		`OBR|1|PL4001^EPR|FL4001^WINPATH|UE^Urea and electrolytes^L|||20261201081500|||||||20261201090000||||||||20261201101000||CH|F`,
		`OBX|1|NM|K^Potassium^L^2823-3^Potassium^LN||6.8|mmol/L^^UCUM|3.5-5.3|HH|||F`,
		`OBX|2|NM|NA^Sodium^L||139|mmol/L|133-146|N|||F`, spm)
	corrected := hl7(strings.Replace(msh, "T04-0001", "T04-0002", 1), pid, orc,
		`OBR|1|PL4001^EPR|FL4001^WINPATH|UE^Urea and electrolytes^L|||20261201081500|||||||20261201090000||||||||20261201135000||CH|C`,
		`NTE|1||Potassium corrected: haemolysed sample.`,
		`OBX|1|NM|K^Potassium^L^2823-3^Potassium^LN||4.1|mmol/L^^UCUM|3.5-5.3|N|||C`,
		`OBX|2|NM|NA^Sodium^L||139|mmol/L|133-146|N|||F`, spm)

	before := resultKeys(t, "original", original)
	after := resultKeys(t, "corrected", corrected)
	for rt, n := range map[string]int{"ServiceRequest": 1, "DiagnosticReport": 1, "Specimen": 1, "Observation": 2} {
		if len(before[rt]) != n || !distinct(before[rt]) {
			t.Errorf("original: %d %s keys %q, want %d distinct", len(before[rt]), rt, before[rt], n)
		}
	}
	keysOnly := func(obs []string) []string {
		var out []string
		for _, o := range obs {
			k, _, _ := strings.Cut(o, "=")
			out = append(out, k)
		}
		return out
	}
	for _, rt := range []string{"ServiceRequest", "DiagnosticReport", "Specimen"} {
		if !slices.Equal(before[rt], after[rt]) {
			t.Errorf("%s keys %q in the original, %q in the correction", rt, before[rt], after[rt])
		}
	}
	if !slices.Equal(keysOnly(before["Observation"]), keysOnly(after["Observation"])) {
		t.Errorf("Observation keys %q in the original, %q in the correction", before["Observation"], after["Observation"])
	}
	if got := after["Observation"]; len(got) != 2 || !strings.HasSuffix(got[0], "=corrected") || !strings.HasSuffix(got[1], "=final") {
		t.Errorf("corrected Observations %q, want the potassium corrected and the sodium final", got)
	}
	// The ServiceRequest and the DiagnosticReport of an order share its key.
	if !slices.Equal(before["ServiceRequest"], before["DiagnosticReport"]) {
		t.Errorf("ServiceRequest keys %q, DiagnosticReport keys %q", before["ServiceRequest"], before["DiagnosticReport"])
	}

	// A fhir destination writes both messages to the same resources.
	first, second := transactionURLs(t, "original", original), transactionURLs(t, "corrected", corrected)
	if !slices.Equal(first, second) {
		t.Errorf("the correction updates\n%q\nbut the original wrote\n%q", second, first)
	}
	for _, u := range first {
		if !strings.Contains(u, "?identifier="+url.QueryEscape(DefaultResultKeySystem)+"|") {
			t.Errorf("transaction request %q is not an update by result key", u)
		}
	}
}

// transactionURLs returns the request URLs of the transaction a fhir
// destination makes of raw's translation.
func transactionURLs(t *testing.T, name string, raw []byte) []string {
	t.Helper()
	got, err := newTestTranslator(t).Translate(testEnvelope(name, raw))
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	tx, err := jfhir.TransactionBundle(got.Bundle, "delivery-"+name)
	if err != nil {
		t.Fatalf("TransactionBundle: %v", err)
	}
	var b struct {
		Entry []struct {
			Request struct{ URL string } `json:"request"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(tx, &b); err != nil {
		t.Fatalf("transaction: %v", err)
	}
	var urls []string
	for _, e := range b.Entry {
		if !strings.HasPrefix(e.Request.URL, "Patient") {
			urls = append(urls, e.Request.URL)
		}
	}
	return urls
}

// TestResultKeysTellResultsApart checks the keys of results that share a
// number: an order split by the laboratory into accessions under one
// placer number, tests of one sample under one accession, a report sent
// as lines of one code, sub-ids, and an order known only by its placer
// number.
func TestResultKeysTellResultsApart(t *testing.T) {
	tests := []struct {
		name     string
		segments []string
		reports  int // distinct report keys
		obs      int // distinct observation keys
	}{
		{
			name: "one placer number, two accessions",
			segments: []string{
				`OBR|1|ICE5002^ICE|LAB5002A^WINPATH|FBC^Full blood count^L|||20261201081500||||||||||||||||||F`,
				`OBX|1|NM|PLT^Platelets^L||9|10*9/L|150-400|LL|||F`,
				`OBR|2|ICE5002^ICE|LAB5002B^WINPATH|UE^U and E^L|||20261201081500||||||||||||||||||F`,
				`OBX|1|NM|NA^Sodium^L||140|mmol/L|133-146|N|||F`,
			},
			reports: 2, obs: 2,
		},
		{
			name: "one accession, two tests, one repeated",
			segments: []string{
				`OBR|1|ICE5003^ICE|LAB5003^WINPATH|FBC^Full blood count^L|||20261201081500||||||||||||||||||F`,
				`OBX|1|NM|HB^Haemoglobin^L||131|g/L|130-170|N|||F`,
				`OBR|2|ICE5003^ICE|LAB5003^WINPATH|UE^U and E^L|||20261201081500||||||||||||||||||F`,
				`OBX|1|NM|NA^Sodium^L||140|mmol/L|133-146|N|||F`,
				`OBR|3|ICE5003^ICE|LAB5003^WINPATH|UE^U and E^L|||20261201081500||||||||||||||||||P`,
				`OBX|1|NM|NA^Sodium^L||141|mmol/L|133-146|N|||P`,
			},
			reports: 3, obs: 3,
		},
		{
			name: "report lines, sub-ids and a placer number alone",
			segments: []string{
				`OBR|1|ICE5004^ICE||MCS^Culture^L|||20261201081500||||||||||||||||||F`,
				`OBX|1|TX|REP^Report^L||Heavy growth||||||F`,
				`OBX|2|TX|REP^Report^L||of two organisms||||||F`,
				`OBX|3|CE|ORG^Organism^L|1|3092008^Staphylococcus aureus^SCT||||||F`,
				`OBX|4|CE|ORG^Organism^L|2|112283007^Escherichia coli^SCT||||||F`,
			},
			reports: 1, obs: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := resultKeys(t, "keys", hl7(append([]string{testMSH, testPID}, tt.segments...)...))
			if n := len(got["DiagnosticReport"]); n != tt.reports || !distinct(got["DiagnosticReport"]) {
				t.Errorf("DiagnosticReport keys %q, want %d distinct", got["DiagnosticReport"], tt.reports)
			}
			if !slices.Equal(got["ServiceRequest"], got["DiagnosticReport"]) {
				t.Errorf("ServiceRequest keys %q, want the reports' %q", got["ServiceRequest"], got["DiagnosticReport"])
			}
			if n := len(got["Observation"]); n != tt.obs || !distinct(got["Observation"]) {
				t.Errorf("Observation keys %q, want %d distinct", got["Observation"], tt.obs)
			}
		})
	}
	// A placer number and a filler number that happen to be equal, on two
	// patients' orders of one test, are different orders.
	a := resultKeys(t, "placer", hl7(testMSH, testPID, `OBR|1|123456^ICE||FBC^Full blood count^L|||20261201081500||||||||||||||||||F`,
		`OBX|1|NM|HB^Haemoglobin^L||131|g/L|130-170|N|||F`))
	b := resultKeys(t, "filler", hl7(testMSH, `PID|1||9990000026^^^NHS^NH||OTHER^PAT||19800101|F`, `OBR|1||123456^WINPATH|FBC^Full blood count^L|||20261201081500||||||||||||||||||F`,
		`OBX|1|NM|HB^Haemoglobin^L||95|g/L|130-170|L|||F`))
	if slices.Equal(a["DiagnosticReport"], b["DiagnosticReport"]) || slices.Equal(a["Observation"], b["Observation"]) {
		t.Errorf("a placer-numbered and a filler-numbered order share keys: %q and %q", a, b)
	}
}

// TestResultKeysTellLaboratoriesApart checks that two laboratories on one
// input numbering an accession alike, each for another patient, make
// different result keys, whether the authority is in the order number
// (EI-2) or only in the header (MSH-4, MSH-3); and that a correction sent
// with a new control id and time keeps its keys.
func TestResultKeysTellLaboratoriesApart(t *testing.T) {
	msg := func(sender, facility, control, filler, patient, value string) []byte {
		return hl7(`MSH|^~\&|`+sender+`|`+facility+`|JUNCTION|RX1|20261201120000||ORU^R01^ORU_R01|`+control+`|P|2.5.1`,
			`PID|1||`+patient+`^^^NHS^NH||PATHTEST^ALEX||19700202|M`,
			`OBR|1||`+filler+`|K^Potassium^L|||20261201081500||||||||||||||||||F`,
			`OBX|1|NM|K^Potassium^L||`+value+`|mmol/L|3.5-5.3|N|||F`)
	}
	tests := []struct {
		name string
		a, b []byte
		same bool
	}{
		{"namespaces in the order number", msg("WINPATH", "RX1LAB", "C1", "LAB9600^WINPATH", "9990010048", "4.1"), msg("WINPATH", "RX1LAB", "C2", "LAB9600^REFLAB", "9990010056", "6.6"), false},
		{"universal ids in the order number", msg("LIMS", "LAB", "C1", "LAB9600^^1.2.826.0.1.1^ISO", "9990010048", "4.1"), msg("LIMS", "LAB", "C2", "LAB9600^^1.2.826.0.1.2^ISO", "9990010056", "6.6"), false},
		{"sending facilities", msg("WINPATH", "RX1LAB", "C1", "LAB9600", "9990010048", "4.1"), msg("WINPATH", "RX2LAB", "C2", "LAB9600", "9990010056", "6.6"), false},
		{"sending applications", msg("WINPATH", "", "C1", "LAB9600", "9990010048", "4.1"), msg("REFLAB", "", "C2", "LAB9600", "9990010056", "6.6"), false},
		{"a correction from the same laboratory", msg("WINPATH", "RX1LAB", "C1", "LAB9600^WINPATH", "9990010048", "4.1"), msg("WINPATH", "RX1LAB", "C9", "LAB9600^winpath", "9990010048", "4.4"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := resultKeys(t, "a", tt.a), resultKeys(t, "b", tt.b)
			for _, rt := range []string{"DiagnosticReport", "Observation"} {
				ka, kb := a[rt], b[rt]
				if len(ka) != 1 || len(kb) != 1 {
					t.Fatalf("%s keys %q and %q, want one each", rt, ka, kb)
				}
				ka[0], _, _ = strings.Cut(ka[0], "=")
				kb[0], _, _ = strings.Cut(kb[0], "=")
				if same := ka[0] == kb[0]; same != tt.same {
					t.Errorf("%s keys %s and %s: same = %t, want %t", rt, ka[0], kb[0], same, tt.same)
				}
			}
		})
	}
}

// distinct reports whether no value is in keys twice.
func distinct(keys []string) bool {
	seen := map[string]bool{}
	for _, k := range keys {
		k, _, _ = strings.Cut(k, "=")
		if seen[k] {
			return false
		}
		seen[k] = true
	}
	return true
}

// TestObservationInstanceIdentifier checks that OBX-21 is kept as an
// identifier after the result key, with its universal id as system.
func TestObservationInstanceIdentifier(t *testing.T) {
	obx := `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L|||||F||||||||||OBS-77^LAB^1.2.826.0.1.999^ISO`
	ob, _ := translateOBX(t, obx)
	if len(ob.Identifier) != 2 {
		t.Fatalf("identifiers %d, want the result key and OBX-21", len(ob.Identifier))
	}
	if k := ob.Identifier[0]; *k.System != DefaultResultKeySystem || len(*k.Value) != 32 {
		t.Errorf("first identifier %s|%s, want a result key", *k.System, *k.Value)
	}
	if id := ob.Identifier[1]; id.System == nil || *id.System != "urn:oid:1.2.826.0.1.999" || *id.Value != "OBS-77" {
		t.Errorf("OBX-21 identifier %+v, want urn:oid:1.2.826.0.1.999|OBS-77", id)
	}
}

// TestStatusOnlyFinalKeepsTheValue checks that a final report whose OBX
// says only that the preliminary result is now final (OBX-11 U, no
// value) refers to the earlier Observation by its result key and writes
// no Observation: one written whole would replace the preliminary value
// at the server with none.
func TestStatusOnlyFinalKeepsTheValue(t *testing.T) {
	msh := `MSH|^~\&|WINPATH|RX1LAB|JUNCTION|RX1|20261201120000||ORU^R01^ORU_R01|T05-0001|P|2.5.1`
	pid := `PID|1||9990000069^^^NHS^NH||PATHTEST^BLAIR||19700202|M`
	obr := func(status string) string {
		return `OBR|1|PL5001^EPR|FL5001^WINPATH|FBC^Full blood count^L|||20261201081500|||||||20261201090000||||||||20261201101000||HM|` + status
	}
	preliminary := hl7(msh, pid, obr("P"), `OBX|1|NM|HB^Haemoglobin^L||135|g/L|130-170|N|||P`)
	final := hl7(strings.Replace(msh, "T05-0001", "T05-0002", 1), pid, obr("F"),
		`OBX|1|NM|HB^Haemoglobin^L||||130-170||||U`, `NTE|1||Verified by consultant`, `OBX|2|NM|WBC^White cell count^L||7.2|10*9/L|4.0-11.0|N|||F`)

	before := resultKeys(t, "preliminary", preliminary)
	after := resultKeys(t, "final", final)
	if len(before["Observation"]) != 1 || len(after["Observation"]) != 1 || after["Observation"][0] == before["Observation"][0] {
		t.Fatalf("Observations %q then %q, want the haemoglobin then only the white cell count", before["Observation"], after["Observation"])
	}
	hb, _, _ := strings.Cut(before["Observation"][0], "=")

	got, err := newTestTranslator(t).Translate(testEnvelope("final", final))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got.DataQuality, DQResultStatusOnly) {
		t.Errorf("data quality %q, want %s", got.DataQuality, DQResultStatusOnly)
	}
	var b struct {
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				Status       string `json:"status"`
				Extension    []struct {
					ValueAnnotation struct{ Text string } `json:"valueAnnotation"`
				} `json:"extension"`
				Result []struct {
					Reference  string `json:"reference"`
					Identifier *struct{ System, Value string }
				} `json:"result"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(got.Bundle, &b); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range b.Entry {
		r := e.Resource
		if r.ResourceType != "DiagnosticReport" {
			continue
		}
		found = true
		if r.Status != "final" || len(r.Result) != 2 {
			t.Fatalf("report %s with %d results, want final with 2", r.Status, len(r.Result))
		}
		if id := r.Result[0].Identifier; r.Result[0].Reference != "" || id == nil || id.System != DefaultResultKeySystem || id.Value != hb {
			t.Errorf("first result %+v, want a reference by the preliminary haemoglobin's key %s", r.Result[0], hb)
		}
		if !strings.HasPrefix(r.Result[1].Reference, "urn:uuid:") {
			t.Errorf("second result %+v, want the white cell count in the bundle", r.Result[1])
		}
		if len(r.Extension) != 1 || r.Extension[0].ValueAnnotation.Text != "Verified by consultant" {
			t.Errorf("report notes %+v, want the status-only line's note", r.Extension)
		}
	}
	if !found {
		t.Fatal("no DiagnosticReport")
	}
	// A fhir destination takes it, and updates no Observation by the
	// haemoglobin's key.
	for _, u := range transactionURLs(t, "final", final) {
		if strings.Contains(u, hb) {
			t.Errorf("transaction writes %q, the preliminary haemoglobin", u)
		}
	}
}

// TestOrderWithoutNumbersIsFlagged checks that an order with neither a
// placer nor a filler number, whose results cannot be updated in place,
// is flagged, and one with either number is not.
func TestOrderWithoutNumbersIsFlagged(t *testing.T) {
	tests := []struct {
		name string
		orc  string
		obr  string
		want bool
	}{
		{"filler number", "", `OBR|1||F9|GLU^Glucose^L|||20240715081500`, false},
		{"placer number on the ORC", `ORC|RE|P9`, `OBR|1|||GLU^Glucose^L|||20240715081500`, false},
		{"neither", "", `OBR|1|||GLU^Glucose^L|||20240715081500`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			segs := []string{testMSH, testPID}
			if tt.orc != "" {
				segs = append(segs, tt.orc)
			}
			segs = append(segs, tt.obr, `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L|||||F`)
			got, err := newTestTranslator(t).Translate(testEnvelope("numbers", hl7(segs...)))
			if err != nil {
				t.Fatal(err)
			}
			if flagged := slices.Contains(got.DataQuality, DQOrderNumberMissing); flagged != tt.want {
				t.Errorf("data quality %q: %s flagged %v, want %v", got.DataQuality, DQOrderNumberMissing, flagged, tt.want)
			}
		})
	}
}
