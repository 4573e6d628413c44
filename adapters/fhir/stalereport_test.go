package fhir

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/adapters/pathology"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
)

// TestOutboundOlderReportLeavesNewerResults: a report older than the one
// the server holds (issued earlier, or at the same time but earlier in
// its life) writes its results only where the server has none, so a
// preliminary replayed from the dead letters after the final never takes
// the final's place; newer reports update as before.
func TestOutboundOlderReportLeavesNewerResults(t *testing.T) {
	tr, err := pathology.NewTranslator(pas.DefaultDialect(), pathology.DefaultLabDialect())
	if err != nil {
		t.Fatal(err)
	}
	// report is potassium for order FL8101, issued at issued, with
	// status (OBR-25 and OBX-11) and value.
	report := func(id, issued, status, value string) *adapter.Delivery {
		raw := strings.Join([]string{
			"MSH|^~\\&|WINPATH|RX1LAB|EPR|RX1|20240716101500||ORU^R01^ORU_R01|" + id + "|P|2.5.1",
			"PID|1||9990000018^^^NHS^NH||TESTPATIENT^JORDAN||19820304|F",
			"OBR|1|PL8101^EPR|FL8101^WINPATH|UE^U and E^L|||20240716081500|||||||||||||||" + issued + "|||" + status,
			"OBX|1|NM|K^Potassium^L||" + value + "|mmol/L|3.5-5.3||||" + status,
		}, "\r") + "\r"
		return v2Delivery(t, tr, id, "results", raw)
	}
	prelim := report("SR01", "20240716090000", "P", "6.8")
	final := report("SR02", "20240716101000", "F", "4.2")
	tests := []struct {
		name        string
		merge       []string
		sends       []*adapter.Delivery
		status, val string // the server's potassium at the end
	}{
		{"preliminary, then final", nil, []*adapter.Delivery{prelim, final}, "final", "4.2"},
		{"final, then the preliminary replayed", nil, []*adapter.Delivery{final, prelim}, "final", "4.2"},
		{"final, then a preliminary of the same time", nil, []*adapter.Delivery{final, report("SR03", "20240716101000", "P", "6.8")}, "final", "4.2"},
		{"final, then a correction", nil, []*adapter.Delivery{final, report("SR03", "20240716113000", "C", "4.4")}, "corrected", "4.4"},
		{"final, then a correction issued at the same time", nil, []*adapter.Delivery{final, report("SR03", "20240716101000", "C", "4.4")}, "corrected", "4.4"},
		{"no merge: written whole, unread", []string{}, []*adapter.Delivery{final, prelim}, "preliminary", "6.8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newMemServer(t)
			merge := tt.merge
			if merge == nil {
				merge = DefaultMergeTypes()
			}
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: merge})
			for i, d := range tt.sends {
				if _, err := o.Send(context.Background(), d); err != nil {
					t.Fatalf("delivery %d: %v", i+1, err)
				}
			}
			obs, reports := srv.all("Observation"), srv.all("DiagnosticReport")
			if len(obs) != 1 || len(reports) != 1 {
				t.Fatalf("server holds %d Observations and %d DiagnosticReports, want 1 of each", len(obs), len(reports))
			}
			q, _ := obs[0]["valueQuantity"].(map[string]any)
			if got := obs[0]["status"]; got != tt.status || q == nil || fmt.Sprint(q["value"]) != tt.val {
				t.Errorf("potassium %v %v, want %s %s", got, q, tt.status, tt.val)
			}
			if got := reports[0]["status"]; got != tt.status {
				t.Errorf("report %v, want %s", got, tt.status)
			}
		})
	}
}

// TestOutboundReportOfAnotherPatient: a report whose result key the
// server already holds for another patient (an accession number given
// again to another patient's sample) is refused, permanently, and the
// server's report stays as it was; one of the same patient, known by the
// same NHS number or, without one, the same local number, is written.
func TestOutboundReportOfAnotherPatient(t *testing.T) {
	tr, err := pathology.NewTranslator(pas.DefaultDialect(), pathology.DefaultLabDialect())
	if err != nil {
		t.Fatal(err)
	}
	// report is potassium for order FL8201 of the patient pid3 names.
	report := func(id, pid3, issued, value string) *adapter.Delivery {
		raw := strings.Join([]string{
			"MSH|^~\\&|WINPATH|RX1LAB|EPR|RX1|20240716101500||ORU^R01^ORU_R01|" + id + "|P|2.5.1",
			"PID|1||" + pid3 + "||TESTPATIENT^JORDAN||19820304|F",
			"OBR|1|PL8201^EPR|FL8201^WINPATH|UE^U and E^L|||20240716081500|||||||||||||||" + issued + "|||F",
			"OBX|1|NM|K^Potassium^L||" + value + "|mmol/L|3.5-5.3||||F",
		}, "\r") + "\r"
		return v2Delivery(t, tr, id, "results", raw)
	}
	const (
		patientA    = "9990000018^^^NHS^NH~H200001^^^RX1^MR"
		patientB    = "9990000026^^^NHS^NH~H200002^^^RX1^MR"
		localA      = "H200001^^^RX1^MR"
		localB      = "H200002^^^RX1^MR"
		patientANHS = "9990000018^^^NHS^NH"
	)
	tests := []struct {
		name        string
		first, then string
		refused     bool
	}{
		{"another patient", patientA, patientB, true},
		{"another patient, local numbers only", localA, localB, true},
		{"another patient's NHS number, the same local number", patientA, "9990000026^^^NHS^NH~H200001^^^RX1^MR", true},
		{"the same patient", patientA, patientA, false},
		{"the same patient by NHS number alone", patientA, patientANHS, false},
		{"the same patient by local number alone", localA, localA, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newMemServer(t)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
			if _, err := o.Send(context.Background(), report("AP01", tt.first, "20240716090000", "4.2")); err != nil {
				t.Fatalf("first delivery: %v", err)
			}
			before := only(t, srv, "DiagnosticReport")
			_, err := o.Send(context.Background(), report("AP02", tt.then, "20240716100000", "6.1"))
			if !tt.refused {
				if err != nil {
					t.Fatalf("second delivery: %v", err)
				}
				if q, _ := only(t, srv, "Observation")["valueQuantity"].(map[string]any); q == nil || fmt.Sprint(q["value"]) != "6.1" {
					t.Errorf("potassium %v, want the second report's 6.1", q)
				}
				return
			}
			if fault.CodeOf(err) != fault.CodeDestRejected || fault.IsTransient(err) {
				t.Fatalf("second delivery: %v, want a permanent %s", err, fault.CodeDestRejected)
			}
			if strings.Contains(err.Error(), "9990000026") || strings.Contains(err.Error(), "H20000") {
				t.Errorf("fault quotes an identifier: %v", err)
			}
			after := only(t, srv, "DiagnosticReport")
			if fmt.Sprint(after["subject"]) != fmt.Sprint(before["subject"]) {
				t.Errorf("report subject %v, want it left at %v", after["subject"], before["subject"])
			}
			if q, _ := only(t, srv, "Observation")["valueQuantity"].(map[string]any); q == nil || fmt.Sprint(q["value"]) != "4.2" {
				t.Errorf("potassium %v, want the first report's 4.2 left", q)
			}
			if n := len(srv.all("Patient")); n != 1 {
				t.Errorf("server holds %d Patients, want the first alone", n)
			}
		})
	}
}

// TestOutboundReportsAcrossClockChange: a laboratory that sends local
// times without an offset issues a preliminary at 01:50 in the first pass
// of the hour Europe/London repeats (00:50 UTC) and the final at 01:10 in
// the second (01:10 UTC), each sent at once. The final is the newer and
// replaces the preliminary at a merging destination; read with the
// second pass's offset, the preliminary seemed issued 40 minutes after the
// final, which was then written only where the server had nothing.
func TestOutboundReportsAcrossClockChange(t *testing.T) {
	tr, err := pathology.NewTranslator(pas.DefaultDialect(), pathology.DefaultLabDialect())
	if err != nil {
		t.Fatal(err)
	}
	report := func(id, issued, status, value string, received time.Time) *adapter.Delivery {
		raw := strings.Join([]string{
			"MSH|^~\\&|WINPATH|RX1LAB|EPR|RX1|" + issued + "||ORU^R01^ORU_R01|" + id + "|P|2.5.1",
			"PID|1||9990000018^^^NHS^NH||TESTPATIENT^JORDAN||19820304|F",
			"OBR|1|PL8301^EPR|FL8301^WINPATH|UE^U and E^L|||20241027001500|||||||||||||||" + issued + "|||" + status,
			"OBX|1|NM|K^Potassium^L||" + value + "|mmol/L|3.5-5.3||||" + status,
		}, "\r") + "\r"
		out, err := tr.Translate(&envelope.Envelope{ID: id, Source: "results", ContentType: envelope.ContentTypeHL7v2,
			ReceivedAt: received, Raw: []byte(raw)})
		if err != nil {
			t.Fatalf("translate: %v", err)
		}
		return &adapter.Delivery{MessageID: id, Route: "results", Destination: "ehr", ContentType: envelope.ContentTypeFHIR,
			Body: out.Bundle, IdempotencyKey: id + "/results/ehr", Attempt: 1}
	}
	prelim := report("DST1", "20241027015000", "P", "6.8", time.Date(2024, 10, 27, 0, 51, 0, 0, time.UTC))
	final := report("DST2", "20241027011000", "F", "4.2", time.Date(2024, 10, 27, 1, 11, 0, 0, time.UTC))
	tests := []struct {
		name        string
		sends       []*adapter.Delivery
		status, val string
	}{
		{"preliminary, then final", []*adapter.Delivery{prelim, final}, "final", "4.2"},
		{"final, then the preliminary replayed", []*adapter.Delivery{final, prelim}, "final", "4.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newMemServer(t)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
			for i, d := range tt.sends {
				if _, err := o.Send(context.Background(), d); err != nil {
					t.Fatalf("delivery %d: %v", i+1, err)
				}
			}
			obs := only(t, srv, "Observation")
			q, _ := obs["valueQuantity"].(map[string]any)
			if got := obs["status"]; got != tt.status || q == nil || fmt.Sprint(q["value"]) != tt.val {
				t.Errorf("potassium %v %v, want %s %s", got, q, tt.status, tt.val)
			}
			if got := only(t, srv, "DiagnosticReport")["status"]; got != tt.status {
				t.Errorf("report %v, want %s", got, tt.status)
			}
		})
	}
}
