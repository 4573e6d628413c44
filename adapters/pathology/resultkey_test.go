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
	want := map[string][]string{
		"ServiceRequest":   {"FL4001/UE"},
		"DiagnosticReport": {"FL4001/UE"},
		"Specimen":         {"FL4001/UE/specimen/1"},
		"Observation":      {"FL4001/UE/K=final", "FL4001/UE/NA=final"},
	}
	for rt, keys := range want {
		if !slices.Equal(before[rt], keys) {
			t.Errorf("original %s keys %q, want %q", rt, before[rt], keys)
		}
	}
	want["Observation"] = []string{"FL4001/UE/K=corrected", "FL4001/UE/NA=final"}
	for rt, keys := range want {
		if !slices.Equal(after[rt], keys) {
			t.Errorf("corrected %s keys %q, want %q", rt, after[rt], keys)
		}
	}

	// A fhir destination writes both messages to the same resources.
	first, second := transactionURLs(t, "original", original), transactionURLs(t, "corrected", corrected)
	if !slices.Equal(first, second) {
		t.Errorf("the correction updates\n%q\nbut the original wrote\n%q", second, first)
	}
	if want := "Observation?identifier=" + url.QueryEscape(DefaultResultKeySystem) + "|" + url.QueryEscape("FL4001/UE/K"); !slices.Contains(first, want) {
		t.Errorf("transaction requests %q, want %q among them", first, want)
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
		reports  []string
		obs      []string
	}{
		{
			name: "one placer number, two accessions",
			segments: []string{
				`OBR|1|ICE5002^ICE|LAB5002A^WINPATH|FBC^Full blood count^L|||20261201081500||||||||||||||||||F`,
				`OBX|1|NM|PLT^Platelets^L||9|10*9/L|150-400|LL|||F`,
				`OBR|2|ICE5002^ICE|LAB5002B^WINPATH|UE^U and E^L|||20261201081500||||||||||||||||||F`,
				`OBX|1|NM|NA^Sodium^L||140|mmol/L|133-146|N|||F`,
			},
			reports: []string{"LAB5002A/FBC", "LAB5002B/UE"},
			obs:     []string{"LAB5002A/FBC/PLT=final", "LAB5002B/UE/NA=final"},
		},
		{
			name: "one accession, two tests",
			segments: []string{
				`OBR|1|ICE5003^ICE|LAB5003^WINPATH|FBC^Full blood count^L|||20261201081500||||||||||||||||||F`,
				`OBX|1|NM|HB^Haemoglobin^L||131|g/L|130-170|N|||F`,
				`OBR|2|ICE5003^ICE|LAB5003^WINPATH|UE^U and E^L|||20261201081500||||||||||||||||||F`,
				`OBX|1|NM|NA^Sodium^L||140|mmol/L|133-146|N|||F`,
				`OBR|3|ICE5003^ICE|LAB5003^WINPATH|UE^U and E^L|||20261201081500||||||||||||||||||P`,
				`OBX|1|NM|NA^Sodium^L||141|mmol/L|133-146|N|||P`,
			},
			reports: []string{"LAB5003/FBC", "LAB5003/UE", "LAB5003/UE#2"},
			obs:     []string{"LAB5003/FBC/HB=final", "LAB5003/UE/NA=final", "LAB5003/UE#2/NA=preliminary"},
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
			reports: []string{"ICE5004/MCS"},
			obs:     []string{"ICE5004/MCS/REP=final", "ICE5004/MCS/REP#2=final", "ICE5004/MCS/ORG/1=final", "ICE5004/MCS/ORG/2=final"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := resultKeys(t, "keys", hl7(append([]string{testMSH, testPID}, tt.segments...)...))
			if !slices.Equal(got["DiagnosticReport"], tt.reports) {
				t.Errorf("DiagnosticReport keys %q, want %q", got["DiagnosticReport"], tt.reports)
			}
			if !slices.Equal(got["ServiceRequest"], tt.reports) {
				t.Errorf("ServiceRequest keys %q, want %q", got["ServiceRequest"], tt.reports)
			}
			if !slices.Equal(got["Observation"], tt.obs) {
				t.Errorf("Observation keys %q, want %q", got["Observation"], tt.obs)
			}
		})
	}
}

// TestObservationInstanceIdentifier checks that OBX-21 is kept as an
// identifier after the result key, with its universal id as system.
func TestObservationInstanceIdentifier(t *testing.T) {
	obx := `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L|||||F||||||||||OBS-77^LAB^1.2.826.0.1.999^ISO`
	ob, _ := translateOBX(t, obx)
	if len(ob.Identifier) != 2 {
		t.Fatalf("identifiers %d, want the result key and OBX-21", len(ob.Identifier))
	}
	if k := ob.Identifier[0]; *k.System != DefaultResultKeySystem || *k.Value != "F1/GLU/GLU" {
		t.Errorf("first identifier %s|%s, want the result key F1/GLU/GLU", *k.System, *k.Value)
	}
	if id := ob.Identifier[1]; id.System == nil || *id.System != "urn:oid:1.2.826.0.1.999" || *id.Value != "OBS-77" {
		t.Errorf("OBX-21 identifier %+v, want urn:oid:1.2.826.0.1.999|OBS-77", id)
	}
}
