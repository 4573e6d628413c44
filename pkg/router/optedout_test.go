package router

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// testIndex opens a patient index on an embedded JetStream server of the
// test's own.
func testIndex(t testing.TB) *patient.Index {
	t.Helper()
	js := jstest.Start(t, "router-test")
	ix, err := patient.Open(t.Context(), js, patient.Config{Bucket: "PATIENTS_OPTEDOUT", HashKey: []byte("router-test-key-0123456789")})
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

// admission is a message bundle with one Patient, identified by NHS
// number when nhsNumber is set.
func admission(nhsNumber string) map[string]any {
	p := map[string]any{"resourceType": "Patient", "id": "p"}
	if nhsNumber != "" {
		p["identifier"] = []any{map[string]any{"system": nhs.SystemNHSNumber, "value": nhsNumber}}
	}
	return map[string]any{"resourceType": "Bundle", "type": "message", "entry": []any{
		map[string]any{"fullUrl": "urn:uuid:h", "resource": map[string]any{"resourceType": "MessageHeader", "eventCoding": map[string]any{"code": "A01"}}},
		map[string]any{"fullUrl": "urn:uuid:p", "resource": p},
	}}
}

// TestPatientOptedOutIsCurrent checks that the CEL variable
// patient.consent.optedOut is read from the opt-out list when the message
// is indexed: true for a listed patient, false for another, changing as
// soon as the list does (nothing is kept in the index); that a list that
// cannot be read holds the message back as a transient fault; and that an
// unknown patient, or a source none of whose routes uses the variable,
// costs no read.
func TestPatientOptedOutIsCurrent(t *testing.T) {
	ix := testIndex(t)
	const listed, other = "9990000026", "9990000034"
	list := map[string]bool{listed: true}
	var asked []string
	var down error
	r := &Router{o: Options{Metrics: telemetry.NewMetrics(prometheus.NewRegistry()), Patients: ix,
		OptedOut: func(_ context.Context, n string) (bool, error) {
			asked = append(asked, n)
			return list[n], down
		}}, patientRead: map[string]bool{"pas": true}}
	optedOut := func(pv patientView) any {
		c, _ := pv.cel["consent"].(map[string]any)
		return c["optedOut"]
	}
	tests := []struct {
		name      string
		nhsNumber string
		change    func()
		want      any
		wantAsked int
		transient bool
	}{
		{"listed patient", listed, nil, true, 1, false},
		{"another patient", other, nil, false, 1, false},
		{"listed patient, after the list dropped them", listed, func() { delete(list, listed) }, false, 1, false},
		{"another patient, after the list added them", other, func() { list[other] = true }, true, 1, false},
		{"list unreadable", other, func() { down = errors.New("nats: timeout") }, nil, 1, true},
		{"unknown patient", "", func() { down = nil }, nil, 0, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.change != nil {
				tt.change()
			}
			asked = nil
			env := &envelope.Envelope{ID: "01JTESTOPT" + string(rune('A'+i)), Source: "pas", ReceivedAt: time.Now().UTC()}
			pv, err := r.indexPatient(t.Context(), env, &adapter.Translation{Parsed: admission(tt.nhsNumber)})
			if tt.transient {
				if !retryable(err) || fault.CodeOf(err) != fault.CodeStoreUnavailable {
					t.Fatalf("err = %v, want a transient store fault", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := optedOut(pv); got != tt.want {
				t.Errorf("patient.consent.optedOut = %v, want %v", got, tt.want)
			}
			if len(asked) != tt.wantAsked {
				t.Errorf("opt-out list read %d times, want %d", len(asked), tt.wantAsked)
			}
		})
	}
	t.Run("source whose routes never use the variable", func(t *testing.T) {
		asked = nil
		env := &envelope.Envelope{ID: "01JTESTOPTLAB", Source: "lab", ReceivedAt: time.Now().UTC()}
		if _, err := r.indexPatient(t.Context(), env, &adapter.Translation{Parsed: admission(other)}); err != nil {
			t.Fatal(err)
		}
		if len(asked) != 0 {
			t.Errorf("opt-out list read %d times for a source that does not use it, want 0", len(asked))
		}
	})
	rec, err := ix.Get(t.Context(), listed)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Consent.OptedOut {
		t.Error("the index stored the opt-out; it must be read from the list each time")
	}
}
