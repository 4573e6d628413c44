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
)

// TestMessageAboutTooManyPatients: a Bundle about more patients than a
// payload can carry the hashes of through the store is accepted, then
// dead-lettered by the route with the reason, and holds up nothing: a
// message posted after it is delivered.
func TestMessageAboutTooManyPatients(t *testing.T) { forPipelines(t, testMessageAboutTooManyPatients) }

func testMessageAboutTooManyPatients(t *testing.T, pipe string) {
	e, dir := startEngine(t, pipe)
	post := func(body string) { postAccepted(t, "http://"+e.HTTPAddr().String()+"/fhir", body) }
	var b strings.Builder
	b.WriteString(`{"resourceType":"Bundle","type":"collection","entry":[`)
	for i := range route.MaxPatients + 1 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":%q}]}}`, nhs.TestNumber(i))
	}
	b.WriteString("]}")
	post(b.String())
	post(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000042"}]}}]}`)
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	waitFor(t, "the dead letter", func() bool { return len(deadLetters(t, e)) == 1 })
	dl := deadLetters(t, e)[0]
	if dl.Route != "fhir-inbound-to-store" || dl.Code != string(fault.CodeTooLarge) || !strings.Contains(dl.Reason, "send one message per patient") {
		t.Errorf("dead letter %+v, want the route's, %s, saying to send one message per patient", dl, fault.CodeTooLarge)
	}
	if strings.Contains(dl.Reason, "999000") {
		t.Errorf("dead letter reason quotes an NHS number: %q", dl.Reason)
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
