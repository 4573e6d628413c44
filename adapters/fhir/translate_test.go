package fhir

import (
	"bytes"
	"encoding/json"
	"flag"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/golden")

func TestTranslate(t *testing.T) {
	bundle := readTestdata(t, "message-bundle.json")
	coll := readTestdata(t, "collection-no-nhs.json")
	received := time.Date(2025, 1, 2, 10, 0, 1, 0, time.UTC)
	tests := []struct {
		name        string
		raw         []byte
		wantEvent   string
		wantKey     string
		wantQuality []string
		wantAsIs    []byte // when set, the Bundle must be exactly these bytes
	}{
		{"message bundle as is", bundle, "message", "9990000018", nil, bundle},
		{"byte order mark dropped", append([]byte{0xEF, 0xBB, 0xBF}, bundle...), "message", "9990000018", nil, bundle},
		{"single patient wrapped", readTestdata(t, "patient.json"), "Patient", "9990000026", nil, nil},
		{"observation keyed by subject", readTestdata(t, "observation.json"), "Observation", "9990000034", nil, nil},
		{"no NHS number: local id", coll, "collection", "MRN777", []string{IssueNHSNumberMissing}, coll},
		{"invalid NHS number: local id", []byte(`{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"999 000 0017"},{"system":"https://x.example/mrn","value":"M1"}]}`),
			"Patient", "M1", []string{IssueNHSNumberInvalid}, nil},
		{"invalid NHS number only", []byte(`{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000017"}]}`),
			"Patient", "9990000017", []string{IssueNHSNumberInvalid}, nil},
		{"spaced NHS number normalised", []byte(`{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"999 000 0018"}]}`),
			"Patient", "9990000018", nil, nil},
		{"no patient: no key, no issue", []byte(`{"resourceType":"Practitioner","identifier":[{"system":"https://fhir.hl7.org.uk/Id/gmc-number","value":"C1234567"}]}`),
			"Practitioner", "", nil, nil},
		// About a patient the body does not identify: consent cannot look
		// their choices up, which must not pass unremarked.
		{"patient only by reference", []byte(`{"resourceType":"Condition","subject":{"reference":"Patient/pat-1"},"code":{"text":"x"}}`),
			"Condition", "", []string{IssuePatientUnidentified}, nil},
		{"patient by reference and identifier", []byte(`{"resourceType":"Condition","subject":{"reference":"Patient/pat-1","identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}}}`),
			"Condition", "9990000018", nil, nil},
		{"patient by a conditional reference", []byte(`{"resourceType":"Condition","subject":{"reference":"Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000085"},"code":{"text":"x"}}`),
			"Condition", "9990000085", nil, nil},
		{"bundle whose entries name the patient only by reference", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/pat-1"}}}]}`),
			"collection", "", []string{IssuePatientUnidentified}, []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/pat-1"}}}]}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := &envelope.Envelope{ID: "01TESTID000009", Raw: tt.raw, ReceivedAt: received, ContentType: envelope.ContentTypeFHIR}
			tr, err := Translator{}.Translate(env)
			if err != nil {
				t.Fatal(err)
			}
			got := []any{tr.Event, tr.PatientKey, tr.DataQuality, tr.V2 == nil}
			want := []any{tt.wantEvent, tt.wantKey, tt.wantQuality, true}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("event, key, quality, v2 nil (-want +got):\n%s", diff)
			}
			if tt.wantAsIs != nil {
				if !bytes.Equal(tr.Bundle, tt.wantAsIs) {
					t.Errorf("bundle changed")
				}
				return
			}
			var b struct {
				ResourceType, ID, Type, Timestamp string
				Entry                             []struct {
					FullURL  string          `json:"fullUrl"`
					Resource json.RawMessage `json:"resource"`
				}
			}
			if err := json.Unmarshal(tr.Bundle, &b); err != nil {
				t.Fatal(err)
			}
			wantFull := "urn:uuid:" + jfhir.DeterministicUUID("01TESTID000009", "entry", "0")
			gotHead := []string{b.ResourceType, b.ID, b.Type, b.Timestamp}
			if diff := cmp.Diff([]string{"Bundle", "01TESTID000009", "collection", "2025-01-02T10:00:01Z"}, gotHead); diff != "" {
				t.Errorf("bundle head (-want +got):\n%s", diff)
			}
			if len(b.Entry) != 1 || b.Entry[0].FullURL != wantFull {
				t.Fatalf("entries = %+v", b.Entry)
			}
			var gotRes, wantRes any
			_ = json.Unmarshal(b.Entry[0].Resource, &gotRes)
			_ = json.Unmarshal(tt.raw, &wantRes)
			if diff := cmp.Diff(wantRes, gotRes); diff != "" {
				t.Errorf("wrapped resource (-want +got):\n%s", diff)
			}
			again, err := Translator{}.Translate(env)
			if err != nil || !bytes.Equal(again.Bundle, tr.Bundle) {
				t.Errorf("second translation differs (err %v)", err)
			}
		})
	}
}

func TestTranslateGolden(t *testing.T) {
	tests := []struct{ in, golden string }{
		{"patient.json", "patient.bundle.json"},
		{"observation.json", "observation.bundle.json"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			env := &envelope.Envelope{ID: "01GOLDEN0000000001", Raw: readTestdata(t, tt.in), ReceivedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
			tr, err := Translator{}.Translate(env)
			if err != nil {
				t.Fatal(err)
			}
			adaptertest.Golden(t, filepath.Join("testdata", "golden", tt.golden), tr.Bundle, *update)
		})
	}
}

func TestTranslateErrors(t *testing.T) {
	tests := []struct {
		name string
		env  *envelope.Envelope
	}{
		{"nil", nil},
		{"not json", &envelope.Envelope{ID: "x", Raw: []byte("MSH|^~\\&|")}},
		{"no resourceType", &envelope.Envelope{ID: "x", Raw: []byte(`{"a":1}`)}},
		{"bundle with bad type", &envelope.Envelope{ID: "x", Raw: []byte(`{"resourceType":"Bundle","type":7}`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Translator{}.Translate(tt.env)
			if err == nil {
				t.Fatal("no error")
			}
			if fault.CodeOf(err) != fault.CodeTranslate || fault.IsTransient(err) {
				t.Errorf("err = %v, want permanent %s", err, fault.CodeTranslate)
			}
		})
	}
}

func FuzzTranslate(f *testing.F) {
	for _, name := range []string{"message-bundle.json", "patient.json", "observation.json", "collection-no-nhs.json"} {
		f.Add(readTestdata(f, name))
	}
	f.Add([]byte(`{"resourceType":"Patient","identifier":{"value":1}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		tr, err := Translator{}.Translate(&envelope.Envelope{ID: "01FUZZ", Raw: raw})
		if err != nil {
			return
		}
		if !json.Valid(tr.Bundle) {
			t.Errorf("translation is not JSON: %q", tr.Bundle)
		}
	})
}
