package engine_test

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

// TestMetricsAtStart checks series an engine shows before any message:
// its one embedded copy of the store as current (a cluster's counts are
// tested in pkg/store), and every answer code of each input at zero,
// enhanced mode's too, its refusal reasons and its data-quality issues,
// for alerts on their rate.
func TestMetricsAtStart(t *testing.T) {
	e, _ := startEngine(t, "")
	want := map[string]string{
		`junction_engine_store_servers{state="current"}`:     "1",
		`junction_engine_store_servers{state="catching_up"}`: "0",
		`junction_engine_store_servers{state="unreachable"}`: "0",
		// The embedded store probes the ingress stream alone.
		`junction_engine_store_stream_writable{name="JUNCTION_INGRESS"}`: "1",
	}
	for _, code := range []string{"AA", "AE", "AR", "CA", "CE", "CR"} {
		want[`junction_ingress_acks_total{adapter="pas",code="`+code+`"}`] = "0"
	}
	want[`junction_ingress_acks_total{adapter="fhir",code="202"}`] = "0"
	// So are the reasons each input refuses input for, so that the first
	// refusal is an increase, not a series appearing at 1.
	for _, reason := range []string{"hl7.parse", "hl7.unsupported-message", "mllp.frame-too-large", "store.unavailable", "too_many_connections"} {
		want[`junction_ingress_rejected_total{adapter="pas",reason="`+reason+`"}`] = "0"
	}
	for _, reason := range []string{"fhir.invalid-json", "fhir.invalid-resource", "unauthorized", "ingress.backlog"} {
		want[`junction_ingress_rejected_total{adapter="fhir",reason="`+reason+`"}`] = "0"
	}
	// And the data-quality issues each input's messages may be counted
	// for, its translator's and the reuse of a dedupe id.
	for _, issue := range []string{"control_id_reused", "nhs_number_invalid", "text_looks_utf8", "visit_number_missing"} {
		want[`junction_ingress_data_quality_issues_total{adapter="pas",issue="`+issue+`"}`] = "0"
	}
	for _, issue := range []string{"unit_not_ucum", "order_patient_mismatch", "nhs_number_invalid"} {
		want[`junction_ingress_data_quality_issues_total{adapter="pathology",issue="`+issue+`"}`] = "0"
	}
	for _, issue := range []string{"control_id_reused", "nhs_number_missing", "patient_unidentified"} {
		want[`junction_ingress_data_quality_issues_total{adapter="fhir",issue="`+issue+`"}`] = "0"
	}
	for series, v := range want {
		if got := scrape(t, e.HTTPAddr().String(), series); got != v {
			t.Errorf("%s = %q, want %s", series, got, v)
		}
	}
}

// scrape returns the value /metrics gives series, or "" when absent.
func scrape(t *testing.T, addr, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return v
		}
	}
	return ""
}
