package engine_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/adapters/pathology"
	"github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// TestResultsLinkedToTheirOrders: with an order recorded in the
// correlation index (as the pathology destination does before it sends
// one), a result for that placer number arrives with its DiagnosticReport
// based on the original ServiceRequest.
func TestResultsLinkedToTheirOrders(t *testing.T) {
	routes, err := filepath.Abs("testdata/routes-pathology")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, placer string
		linked       bool
	}{
		{"known order", "PL20001", true},
		{"unknown order", "PL20002", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, dir := startEngineWithRoutes(t, routes, `inputs:
  pathology:
    type: pathology
    listen: 127.0.0.1:0
destinations:
  results:
    type: file
    dir: out/results
`)
			ctx := context.Background()
			kv, err := pathology.NewKVStore(ctx, e.Store().JS, "", 0, bucket.Policy{})
			if err != nil {
				t.Fatal(err)
			}
			const sr = "https://ehr.example.nhs.uk/fhir/ServiceRequest/sr-20001"
			if err := pathology.NewCorrelator(kv, "").RecordSent(ctx, []pathology.SentOrder{{ServiceRequest: sr, PlacerNumber: "PL20001", PlacerNamespace: "EPR"}}); err != nil {
				t.Fatal(err)
			}
			oru := strings.Join([]string{
				"MSH|^~\\&|WINPATH|RX1|EPR|RX1|20261123093512||ORU^R01|LABC" + tt.placer + "|P|2.4",
				"PID|1||9990000018^^^NHS||TESTPATIENT^ALEX^^^MR||19800101|M",
				"ORC|RE|" + tt.placer + "^EPR|FL30001",
				"OBR|1|" + tt.placer + "^EPR|FL30001|UE^Urea and electrolytes^L|||20261123081500||||||||SER&Serum&L|||||||20261123101500|||F",
				"OBX|1|NM|NA^Sodium^L||139|mmol/L|133-146|N|||F",
			}, "\r") + "\r"
			if code, _ := send(t, inputAddr(t, e, "pathology"), oru); code != hl7v2.AckAA {
				t.Fatalf("ack %s, want AA", code)
			}
			files := waitFiles(t, filepath.Join(dir, "out", "results"), 1)
			data, err := os.ReadFile(files[0])
			if err != nil {
				t.Fatal(err)
			}
			var b struct {
				Entry []struct {
					Resource struct {
						ResourceType string
						BasedOn      []struct{ Reference string }
					}
				}
			}
			if err := json.Unmarshal(data, &b); err != nil {
				t.Fatal(err)
			}
			var refs []string
			for _, en := range b.Entry {
				if en.Resource.ResourceType == "DiagnosticReport" {
					for _, r := range en.Resource.BasedOn {
						refs = append(refs, r.Reference)
					}
				}
			}
			if got := slices.Contains(refs, sr); got != tt.linked {
				t.Errorf("DiagnosticReport.basedOn %v: linked to the recorded order = %v, want %v", refs, got, tt.linked)
			}
		})
	}
}
