package engine_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/pds/pdstest"
)

// TestPDSFillsGPPractice admits a patient without PD1 whom the PDS double
// knows as registered at Y12345: the admission is routed at once without
// the practice (the lookup is off the message path), the background
// lookup then writes the practice to the index, and the patient's next
// admission reaches the practice's destination through
// patient.gpPractice.
func TestPDSFillsGPPractice(t *testing.T) {
	const token = "synthetic-pds-token"
	t.Setenv("JUNCTION_TEST_PDS_TOKEN", token)
	srv := pdstest.NewServer(pdstest.Seed()...)
	defer srv.Close()
	srv.Token = token
	registered := nhs.TestNumber(0) // Y12345 in the double's seed
	routes := writeRoutes(t, map[string]string{"by-gp.yaml": gpRoute})
	e, dir := startEngineWithRoutes(t, routes, fileDests("gp", "merged", "all")+
		"patient_index:\n  pds:\n    url: "+srv.URL()+"\n    token: env:JUNCTION_TEST_PDS_TOKEN\n    refresh_after: 1h\n")
	addr := mllpAddr(t, e)
	if code, _ := send(t, addr, adtPatient("A01", "PDS0001", registered, "")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFor(t, "the practice from PDS in the index", func() bool {
		rec, err := e.PatientIndex().Get(context.Background(), registered)
		return err == nil && rec.GPPractice == "Y12345" && rec.PDS.Outcome == "found"
	})
	if code, _ := send(t, addr, adtPatient("A01", "PDS0002", registered, "")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	gp := readAll(t, waitFiles(t, filepath.Join(dir, "out", "gp"), 1))
	if !strings.Contains(gp[0], "PDS0002") {
		t.Errorf("the practice received the wrong admission")
	}
	waitFiles(t, filepath.Join(dir, "out", "all"), 2)
	if v := testutil.ToFloat64(e.Metrics().PDSLookups.WithLabelValues("found")); v != 1 {
		t.Errorf("lookups found = %v, want 1 (the second admission is not due)", v)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 || reqs[0].Authorization != "Bearer "+token || reqs[0].Status != 200 {
		t.Errorf("PDS requests = %+v, want one authorised 200", reqs)
	}
}
