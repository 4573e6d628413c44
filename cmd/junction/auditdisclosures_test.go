package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/disclosure"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestCLIAuditDisclosures writes two patients' routing records into a
// store, hashed under the configured key as the engine would, and runs
// "audit disclosures" for one of them.
func TestCLIAuditDisclosures(t *testing.T) {
	const (
		patient = "9990000018"
		other   = "9990000026"
		msgA    = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
		msgB    = "01JQ4Z9A7B8C9D0E1F2G3H4J5M"
	)
	dir := t.TempDir()
	keyPath := writeFile(t, dir, "patient.key", "0123456789abcdef0123456789abcdef")
	cfgPath, cfg := writeConfig(t, dir, fmt.Sprintf("data_dir: %q\nconsent:\n  hash_key: %q\n  sources:\n    pas: {ods: RX1}\n  destinations:\n    fhir-store: {ods: RX2}\n", filepath.Join(dir, "data"), "file:"+keyPath))
	withStore(t, cfg, func(st *store.Store) {
		key, _, err := engine.PatientHashKey(t.Context(), st.JS, config.Secrets{}, cfg.Consent, bucket.Policy{})
		if err != nil {
			t.Fatal(err)
		}
		w := audit.NewWriter(st.JS)
		now := time.Now().UTC()
		for _, m := range []struct{ id, nhs string }{{msgA, patient}, {msgB, other}} {
			recs := []audit.Record{
				{Time: now, MessageID: m.id, Event: audit.Translated, Source: "pas", Route: "adt", Outcome: "ok", Patient: engine.PatientHash(key, m.nhs)},
				{Time: now, MessageID: m.id, Event: audit.Consent, Source: "pas", Route: "adt", Destination: "fhir-store", Outcome: "permit", Rule: "consent:none:route-default-permit", Purpose: "direct-care", LegalBasis: "direct-care"},
				{Time: now, MessageID: m.id, Event: audit.Queued, Source: "pas", Route: "adt", Destination: "fhir-store", Outcome: "queued", Classes: []string{"Encounter", "Patient"}},
				{Time: now, MessageID: m.id, Event: audit.Delivered, Route: "adt", Destination: "fhir-store", Outcome: "delivered"},
			}
			if err := w.Write(t.Context(), m.id, "", recs...); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
	})

	code, out, errOut := cliRun(t, "audit", "disclosures", "-c", cfgPath, "--nhs-number", "999 000 0018")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep disclosure.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not a JSON report: %v\n%s", err, out)
	}
	if len(rep.Entries) != 1 {
		t.Fatalf("%d entries, want 1: %+v", len(rep.Entries), rep.Entries)
	}
	e := rep.Entries[0]
	if e.MessageID != msgA || e.Recipient != (disclosure.Org{Name: "fhir-store", ODS: "RX2"}) || e.Source != (disclosure.Org{Name: "pas", ODS: "RX1"}) || e.Purpose != "direct-care" {
		t.Errorf("entry %+v", e)
	}
	if !rep.To.After(rep.From.Add(89 * 24 * time.Hour)) {
		t.Errorf("default window %v to %v, want 90 days", rep.From, rep.To)
	}

	code, out, _ = cliRun(t, "audit", "disclosures", "-c", cfgPath, "--nhs-number", patient, "--format", "csv")
	if code != 0 || !strings.Contains(out, msgA) || strings.Contains(out, msgB) {
		t.Errorf("csv: exit %d\n%s", code, out)
	}
	code, _, errOut = cliRun(t, "audit", "disclosures", "-c", cfgPath, "--nhs-number", "9990000019")
	if code == 0 || strings.Contains(errOut, "9990000019") {
		t.Errorf("invalid number: exit %d, stderr %q; want a failure that does not repeat it", code, errOut)
	}
	if code, _, _ := cliRun(t, "audit", "disclosures", "-c", cfgPath); code == 0 {
		t.Error("no --nhs-number succeeded")
	}
}
