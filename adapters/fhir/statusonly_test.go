package fhir

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
)

// TestOutboundStatusOnlyFinalMakesResultsFinal: a final report whose
// line says only "now final" (OBX-11 U, no value) makes the Observation
// the preliminary report wrote final, its value kept, and refers to it;
// a result already final, or written by the delivery, is left to it.
func TestOutboundStatusOnlyFinalMakesResultsFinal(t *testing.T) {
	hb := "OBX|1|NM|HB^Haemoglobin^L||135|g/L|130-170|N|||"
	wbc := "OBX|2|NM|WBC^White cells^L||7.2|10*9/L|4-11|N|||"
	srv := newMemServer(t)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir", Timeout: 5 * time.Second, Mode: ModeTransaction, Merge: DefaultMergeTypes()})
	for i, d := range []*adapter.Delivery{
		labDelivery(t, "SO01", "P", hb+"P", wbc+"P"),
		labDelivery(t, "SO02", "F", "OBX|1|NM|HB^Haemoglobin^L||||||||U", wbc+"F"),
	} {
		if _, err := o.Send(context.Background(), d); err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
	}
	obs := srv.all("Observation")
	if len(obs) != 2 {
		t.Fatalf("server holds %d Observations, want 2", len(obs))
	}
	ids := map[string]string{}
	for _, ob := range obs {
		code := ob["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"].(string)
		q, _ := ob["valueQuantity"].(map[string]any)
		if ob["status"] != "final" || q == nil {
			t.Errorf("%s: %v with value %v, want final with its value kept", code, ob["status"], q)
		}
		ids[code] = ob["id"].(string)
	}
	reports := srv.all("DiagnosticReport")
	if len(reports) != 1 || reports[0]["status"] != "final" {
		t.Fatalf("reports %v, want one final", reports)
	}
	var refs []string
	for _, r := range reports[0]["result"].([]any) {
		ref, _ := r.(map[string]any)["reference"].(string)
		refs = append(refs, ref)
	}
	if got := strings.Join(refs, " "); !strings.Contains(got, "Observation/"+ids["HB"]) || !strings.Contains(got, "Observation/"+ids["WBC"]) {
		t.Errorf("report results %q, want both Observations (%v) referred to", refs, ids)
	}
}
