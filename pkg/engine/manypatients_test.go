package engine_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/route"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMessageAboutTooManyPatients: a Bundle about more patients than a
// payload can carry the hashes of through the store is refused at the
// FHIR input (422, saying to send one message per patient), kept in the
// quarantine and not stored, and holds up nothing: a message posted after
// it is delivered. (Before, it was accepted, 202, and then certain to be
// dead-lettered by its route; the route's own limit, for input that
// reaches it, is TestProcessTooManyPatients.)
func TestMessageAboutTooManyPatients(t *testing.T) { forPipelines(t, testMessageAboutTooManyPatients) }

func testMessageAboutTooManyPatients(t *testing.T, pipe string) {
	e, dir := startEngine(t, pipe)
	url := "http://" + e.HTTPAddr().String() + "/fhir"
	var b strings.Builder
	b.WriteString(`{"resourceType":"Bundle","type":"collection","entry":[`)
	for i := range route.MaxPatients + 1 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":%q}]}}`, nhs.TestNumber(i))
	}
	b.WriteString("]}")
	resp, body := request(t, http.MethodPost, url, "", "application/fhir+json", b.String())
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), "send one message per patient") || !strings.Contains(string(body), `"too-costly"`) {
		t.Errorf("POST of a Bundle about %d patients: %d %s, want 422 saying to send one message per patient", route.MaxPatients+1, resp.StatusCode, body)
	}
	if strings.Contains(string(body), "999000") {
		t.Errorf("the refusal quotes an NHS number: %s", body)
	}
	if resp.Header.Get("X-Junction-Quarantine-Id") == "" {
		t.Error("the refused Bundle was not kept in the quarantine")
	}
	postAccepted(t, url, `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000042"}]}}]}`)
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	if dls := deadLetters(t, e); len(dls) != 0 {
		t.Errorf("dead letters %+v, want none: the refused Bundle was not stored", dls)
	}
	if n := testutil.ToFloat64(e.Metrics().Rejected.WithLabelValues("fhir", string(fault.CodeTooLarge))); n != 1 {
		t.Errorf("refusals counted %v under %s, want 1", n, fault.CodeTooLarge)
	}
}

// postAccepted posts body to url as FHIR JSON and fails the test unless
// it is accepted (202).
func postAccepted(t *testing.T, url, body string) {
	t.Helper()
	resp, err := http.Post(url, "application/fhir+json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST %s: status %d, want 202", url, resp.StatusCode)
	}
}
