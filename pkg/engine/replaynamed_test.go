package engine_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/router"
)

// TestReplayToOneDestinationDecidesForItAlone sends an admission through
// a route with two destinations, then sends it again to one of them: the
// replay's trail holds a consent decision for that one and, for the
// other, only that it was not replayed, not a permit for a payload never
// sent, which would read as a disclosure.
func TestReplayToOneDestinationDecidesForItAlone(t *testing.T) {
	forPipelines(t, testReplayToOneDestinationDecidesForItAlone)
}

func testReplayToOneDestinationDecidesForItAlone(t *testing.T, pipe string) {
	dir := t.TempDir()
	route := `name: both
source: {adapter: pas, events: [ADT^A01]}
consent: {purpose: direct-care, legal_basis: direct-care, default: permit}
destinations:
  - name: fhir-store
  - name: data-quality
`
	if err := os.WriteFile(filepath.Join(dir, "both.yaml"), []byte(route), 0o600); err != nil {
		t.Fatal(err)
	}
	e, data := startEngineWithRoutes(t, dir, pipe)
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "RPN001", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFiles(t, filepath.Join(data, "out", "fhir-store"), 1)
	waitFiles(t, filepath.Join(data, "out", "data-quality"), 1)
	var id string
	for msg := range trails(t, e) {
		id = msg
	}
	status, res := postReplay(t, e, engine.ReplayRequest{Filter: router.Filter{IDs: []string{id}}, Again: true, Destinations: []string{"fhir-store"}})
	if status != http.StatusOK || len(res.Rerouted) != 1 {
		t.Fatalf("replay: %d %+v", status, res)
	}
	var permits, delivered map[string]int
	notReplayed := 0
	waitFor(t, "the replay's records", func() bool {
		permits, delivered, notReplayed = map[string]int{}, map[string]int{}, 0
		for _, r := range trails(t, e)[id] {
			switch {
			case r.Event == audit.Delivered:
				delivered[r.Destination]++
			case r.Event == audit.Consent && r.Outcome == "permit":
				permits[r.Destination]++
			case r.Event == audit.Filtered && r.Outcome == "not-replayed":
				notReplayed++
			}
		}
		return delivered["fhir-store"] == 2 && permits["fhir-store"] == 2 && notReplayed == 1
	})
	if permits["data-quality"] != 1 || delivered["data-quality"] != 1 {
		t.Errorf("data-quality: %d consent permits and %d deliveries, want 1 of each (the first routing's alone)", permits["data-quality"], delivered["data-quality"])
	}
}
