package fhir

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/adapters/pathology"
	"github.com/junction-fhir/junction/pkg/adapter"
)

// labDelivery translates an ORU^R01 for order FL8001 with the shipped
// pathology translator, OBR-25 status and the given OBX segments, and
// returns the delivery of its bundle.
func labDelivery(t testing.TB, id, status string, obx ...string) *adapter.Delivery {
	t.Helper()
	tr, err := pathology.NewTranslator(pas.DefaultDialect(), pathology.DefaultLabDialect())
	if err != nil {
		t.Fatal(err)
	}
	raw := strings.Join(append([]string{
		"MSH|^~\\&|WINPATH|RX1LAB|EPR|RX1|20240716101500||ORU^R01^ORU_R01|" + id + "|P|2.5.1",
		"PID|1||9990000018^^^NHS^NH||TESTPATIENT^JORDAN||19820304|F",
		"OBR|1|PL8001^EPR|FL8001^WINPATH|FBC^Full blood count^L|||20240716081500|||||||||||||||20240716101000|||" + status,
	}, obx...), "\r") + "\r"
	return v2Delivery(t, tr, id, "results", raw)
}

// TestOutboundWithdrawnReportWithdrawsItsResults: a laboratory withdraws
// a final report (OBR-25 X, no OBX), which becomes entered-in-error
// (cancelled when nothing was released). Its Observations at the server,
// which the report written whole no longer lists, become entered-in-error
// with their values kept, whether the server includes them in the search
// or they are read one by one; a correction that resends fewer lines
// leaves the others alone.
func TestOutboundWithdrawnReportWithdrawsItsResults(t *testing.T) {
	hb := "OBX|1|NM|HB^Haemoglobin^L||135|g/L|130-170|N|||"
	wbc := "OBX|2|NM|WBC^White cells^L||7.2|10*9/L|4-11|N|||F"
	final := labDelivery(t, "WD01", "F", hb+"F", wbc)
	allWithdrawn := map[string]string{"HB": "entered-in-error", "WBC": "entered-in-error"}
	tests := []struct {
		name      string
		noInclude bool
		merge     []string
		sends     []*adapter.Delivery
		want      map[string]string // Observation code: status
		reads     int
		report    string // the report's status
	}{
		{"withdrawn, results included", false, nil, []*adapter.Delivery{final, labDelivery(t, "WD02", "X")}, allWithdrawn, 0, "entered-in-error"},
		{"withdrawn, results read one by one", true, nil, []*adapter.Delivery{final, labDelivery(t, "WD02", "X")}, allWithdrawn, 2, "entered-in-error"},
		{"withdrawn with one line sent cancelled", false, nil, []*adapter.Delivery{final, labDelivery(t, "WD02", "X", "OBX|1|NM|HB^Haemoglobin^L||||||||X")},
			map[string]string{"HB": "cancelled", "WBC": "entered-in-error"}, 0, "entered-in-error"},
		{"withdrawn with one line cancelled, reports and results merged", false, []string{"Patient", "DiagnosticReport", "Observation"},
			[]*adapter.Delivery{final, labDelivery(t, "WD02", "X", "OBX|1|NM|HB^Haemoglobin^L||||||||X")},
			map[string]string{"HB": "cancelled", "WBC": "entered-in-error"}, 0, "entered-in-error"},
		{"withdrawn after a status-only final", false, nil, []*adapter.Delivery{
			labDelivery(t, "WD01", "P", hb+"P", wbc),
			labDelivery(t, "WD02", "F", "OBX|1|NM|HB^Haemoglobin^L||||||||U", wbc),
			labDelivery(t, "WD03", "X"),
		}, allWithdrawn, 0, "entered-in-error"},
		// Cancelled before any result was released: R4's cancelled.
		{"cancelled while in process", false, nil, []*adapter.Delivery{
			labDelivery(t, "WD01", "I", hb+"I", "OBX|2|NM|WBC^White cells^L||7.2|10*9/L|4-11|N|||I"),
			labDelivery(t, "WD02", "X"),
		}, map[string]string{"HB": "entered-in-error", "WBC": "entered-in-error"}, 0, "cancelled"},
		{"corrected with one line", false, nil, []*adapter.Delivery{final, labDelivery(t, "WD02", "C", "OBX|1|NM|HB^Haemoglobin^L||128|g/L|130-170|L|||C")},
			map[string]string{"HB": "corrected", "WBC": "final"}, 0, "corrected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newMemServer(t)
			srv.noInclude = tt.noInclude
			merge := tt.merge
			if merge == nil {
				merge = DefaultMergeTypes()
			}
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: merge})
			ctx := context.Background()
			for i, d := range tt.sends {
				if _, err := o.Send(ctx, d); err != nil {
					t.Fatalf("delivery %d: %v", i+1, err)
				}
			}
			if reports := srv.all("DiagnosticReport"); len(reports) != 1 || reports[0]["status"] != tt.report {
				t.Errorf("reports %v, want one %s", reports, tt.report)
			}
			obs := srv.all("Observation")
			if len(obs) != 2 {
				t.Fatalf("server holds %d Observations, want 2", len(obs))
			}
			for _, ob := range obs {
				code := ob["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"].(string)
				if got := ob["status"]; got != tt.want[code] {
					t.Errorf("%s: status %v, want %s", code, got, tt.want[code])
				}
				if ob["status"] == "entered-in-error" && ob["valueQuantity"] == nil {
					t.Errorf("%s: withdrawn without its value: %v", code, ob)
				}
			}
			if srv.reads != tt.reads {
				t.Errorf("%d reads of single resources, want %d", srv.reads, tt.reads)
			}
		})
	}
}
