package router

import (
	"testing"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestReplayLeavesDeadLettersOfGoneDestinations: a delivery dead letter
// whose destination is no longer configured is left in place, with why,
// rather than queued where nothing takes it; one whose destination is
// configured is replayed.
func TestReplayLeavesDeadLettersOfGoneDestinations(t *testing.T) {
	r, js := deliveryRouter(t)
	for _, dest := range []string{"gone", "ehr"} {
		h := outboundHeader("01DDDDDDDDDDDDDDDDDDDDDD" + map[string]string{"gone": "GG", "ehr": "EE"}[dest])
		h.Set(envelope.HeaderDestination, dest)
		if _, err := r.deadLetter(t.Context(), "delivery", dest, h, []byte("payload"), fault.New(fault.CodeDestRejected, "fhir: server answered 400")); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Replay(t.Context(), js, audit.NewWriter(js), Filter{Route: "adt"}, nil, map[string]bool{"adt": true}, map[string]bool{"ehr": true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replayed) != 1 || res.Replayed[0].Destination != "ehr" {
		t.Errorf("replayed %+v, want the ehr dead letter", res.Replayed)
	}
	if len(res.Skipped) != 1 || res.Skipped[0].Destination != "gone" || res.Skipped[0].Why != "destination gone is not configured" {
		t.Errorf("left %+v, want the dead letter of destination gone, with why", res.Skipped)
	}
	st, err := js.Stream(t.Context(), store.StreamOutbound)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("%d payloads queued, want 1 (for ehr)", n)
	}
}
