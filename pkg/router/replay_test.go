package router

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestReplayLeavesDeadLettersOfGoneDestinations: a delivery dead letter
// whose destination is no longer configured is left in place, with why,
// rather than queued where nothing takes it; one whose destination is
// configured but whose stored input is missing is left too, since its
// consent cannot be decided again (pkg/engine's replay tests route one
// that has its input). Neither payload is queued as stored.
func TestReplayLeavesDeadLettersOfGoneDestinations(t *testing.T) {
	r, js := deliveryRouter(t)
	for _, dest := range []string{"gone", "ehr"} {
		deadLetterDelivery(t, r, "01DDDDDDDDDDDDDDDDDDDDDD"+map[string]string{"gone": "GG", "ehr": "EE"}[dest], dest)
	}
	res, err := Replay(t.Context(), js, audit.NewWriter(js), Filter{Route: "adt"}, ReplayOptions{Routes: map[string][]string{"adt": {"ehr", "gone"}}, Dests: map[string]bool{"ehr": true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replayed) != 0 {
		t.Errorf("replayed %+v, want none", res.Replayed)
	}
	// Reported in the order received: ehr's message id sorts first.
	if len(res.Skipped) != 2 || res.Skipped[1].Destination != "gone" || res.Skipped[1].Why != "destination gone is not configured" ||
		res.Skipped[0].Destination != "ehr" || !strings.Contains(res.Skipped[0].Why, "; its consent cannot be decided again, so it is not resent") {
		t.Errorf("left %+v, want the dead letters of ehr (no stored input) and of destination gone, with why", res.Skipped)
	}
	st, err := js.Stream(t.Context(), store.StreamOutbound)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 0 {
		t.Errorf("%d payloads queued, want none", n)
	}
}

// TestReplayLeavesDeadLettersOfDroppedDestinations: a delivery dead
// letter whose route no longer lists its destination is left in place,
// with why, rather than removed and reported replayed while routing the
// message again would send it nowhere.
func TestReplayLeavesDeadLettersOfDroppedDestinations(t *testing.T) {
	r, js := deliveryRouter(t)
	deadLetterDelivery(t, r, "01DDDDDDDDDDDDDDDDDDDDDDRR", "ehr")
	res, err := Replay(t.Context(), js, audit.NewWriter(js), Filter{Route: "adt"}, ReplayOptions{Routes: map[string][]string{"adt": {"other"}}, Dests: map[string]bool{"ehr": true, "other": true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replayed) != 0 || len(res.Skipped) != 1 || res.Skipped[0].Why != "route adt no longer delivers to ehr" {
		t.Errorf("replayed %+v, left %+v; want the dead letter left, with why", res.Replayed, res.Skipped)
	}
	st, err := js.Stream(t.Context(), store.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("%d dead letters left, want 1", n)
	}
}

// TestReplayAsStored: asked to, a replay resends a delivery dead letter
// whose input is gone as it was stored, and the replayed record says
// consent was not decided again.
func TestReplayAsStored(t *testing.T) {
	r, js := deliveryRouter(t)
	deadLetterDelivery(t, r, "01DDDDDDDDDDDDDDDDDDDDDDAS", "ehr")
	res, err := Replay(t.Context(), js, audit.NewWriter(js), Filter{Route: "adt"}, ReplayOptions{Routes: map[string][]string{"adt": {"ehr"}}, Dests: map[string]bool{"ehr": true}, AsStored: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replayed) != 1 || len(res.Skipped) != 0 {
		t.Fatalf("replayed %+v, left %+v; want the dead letter resent", res.Replayed, res.Skipped)
	}
	st, err := js.Stream(t.Context(), store.StreamOutbound)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("%d payloads queued, want the stored one", n)
	}
	trail, err := Trail(t.Context(), js, "01DDDDDDDDDDDDDDDDDDDDDDAS")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rec := range trail {
		if rec.Event == audit.Replayed && rec.Outcome == audit.OutcomeResentAsStored && strings.Contains(rec.Reason, "consent was not decided again") {
			found = true
		}
	}
	if !found {
		t.Errorf("no replayed record saying consent was not decided again: %+v", trail)
	}
}

// TestReplayResendsInOrderReceived: dead letters are resent in the order
// their messages were received (message ids sort by receipt), whatever
// order they were dead-lettered in, so a patient's admission dead-lettered
// after the discharge is not resent after it.
func TestReplayResendsInOrderReceived(t *testing.T) {
	const admit, transfer, discharge = "01DDDDDDDDDDDDDDDDDDDDDD01", "01DDDDDDDDDDDDDDDDDDDDDD02", "01DDDDDDDDDDDDDDDDDDDDDD03"
	tests := []struct {
		name         string
		deadLettered []string
	}{
		{"in order", []string{admit, transfer, discharge}},
		{"the first last", []string{transfer, discharge, admit}},
		{"newest first", []string{discharge, transfer, admit}},
	}
	want := []string{admit, transfer, discharge}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, js := deliveryRouter(t)
			for _, id := range tt.deadLettered {
				deadLetterDelivery(t, r, id, "ehr")
			}
			res, err := Replay(t.Context(), js, audit.NewWriter(js), Filter{Destination: "ehr"}, ReplayOptions{Routes: map[string][]string{"adt": {"ehr"}}, Dests: map[string]bool{"ehr": true}, AsStored: true})
			if err != nil {
				t.Fatal(err)
			}
			var replayed []string
			for _, d := range res.Replayed {
				replayed = append(replayed, d.MessageID)
			}
			if !slices.Equal(replayed, want) {
				t.Errorf("reported replayed %v, want %v", replayed, want)
			}
			st, err := js.Stream(t.Context(), store.StreamOutbound)
			if err != nil {
				t.Fatal(err)
			}
			var queued []string
			for seq := uint64(1); seq <= uint64(len(want)); seq++ {
				m, err := st.GetMsg(t.Context(), seq)
				if err != nil {
					t.Fatalf("queued payload %d: %v", seq, err)
				}
				queued = append(queued, m.Header.Get(envelope.HeaderID))
			}
			if !slices.Equal(queued, want) {
				t.Errorf("queued %v, want %v", queued, want)
			}
		})
	}
}

// deadLetterDelivery dead-letters a payload of message id at destination
// dest as the delivery stage does when the receiver refuses it.
func deadLetterDelivery(t *testing.T, r *Router, id, dest string) {
	t.Helper()
	h := outboundHeader(id)
	h.Set(envelope.HeaderDestination, dest)
	if _, err := r.deadLetter(t.Context(), "delivery", dest, h, []byte("payload"), fault.New(fault.CodeDestRejected, "fhir: server answered 400")); err != nil {
		t.Fatal(err)
	}
}

// TestListDeadLettersNewest checks that a limited listing gives the
// oldest that many, or with newest the newest, oldest first either way.
func TestListDeadLettersNewest(t *testing.T) {
	r, js := deliveryRouter(t)
	var ids []string
	for i := range 7 {
		id := fmt.Sprintf("01DDDDDDDDDDDDDDDDDDDDDD%02d", i)
		ids = append(ids, id)
		deadLetterDelivery(t, r, id, "ehr")
	}
	tests := []struct {
		name   string
		limit  int
		newest bool
		want   []string
	}{
		{"all", 0, false, ids},
		{"oldest", 3, false, ids[:3]},
		{"newest", 3, true, ids[4:]},
		{"newest, fewer than the limit", 10, true, ids},
		{"newest without a limit", 0, true, ids},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dls, err := ListDeadLetters(t.Context(), js, Filter{Limit: tt.limit}, tt.newest)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range dls {
				got = append(got, d.MessageID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("listed %v, want %v", got, tt.want)
			}
		})
	}
}

// TestReplayLeavesUnreadableBatches: a stored batch a stage could not
// read is dead-lettered whole, named batch-<sequence>, with no source or
// partition of a message: nothing takes it if queued as a message. A
// replay of every dead letter (such as --since, after a rollback left an
// older version's dead letters of batches it could not read) leaves it,
// with why, whatever its stage, and still resends the others.
func TestReplayLeavesUnreadableBatches(t *testing.T) {
	for _, stage := range []string{"route", "delivery", "ingest"} {
		t.Run(stage, func(t *testing.T) {
			r, js := deliveryRouter(t)
			name := map[string]string{"route": "adt", "delivery": "ehr", "ingest": "accept"}[stage]
			if _, err := r.deadLetter(t.Context(), stage, name, batchHeader(nats.Header{}, 7), []byte("not a batch this version reads"),
				fault.Wrap(fault.Permanent, fault.CodeInternal, "unreadable "+stage+" batch", errBadBatch)); err != nil {
				t.Fatal(err)
			}
			h := nats.Header{}
			h.Set(envelope.HeaderID, "01DDDDDDDDDDDDDDDDDDDDDDRT")
			h.Set(envelope.HeaderSource, "pas")
			h.Set(envelope.HeaderPartition, "0")
			if _, err := r.deadLetter(t.Context(), "route", "adt", h, []byte("MSH|"), fault.New(fault.CodeTranslate, "translation failed")); err != nil {
				t.Fatal(err)
			}
			res, err := Replay(t.Context(), js, audit.NewWriter(js), Filter{}, ReplayOptions{Routes: map[string][]string{"adt": {"ehr"}}, Dests: map[string]bool{"ehr": true}})
			if err != nil {
				t.Fatalf("replay: %v", err)
			}
			if len(res.Replayed) != 1 || res.Replayed[0].MessageID != "01DDDDDDDDDDDDDDDDDDDDDDRT" {
				t.Errorf("replayed %+v, want the message's dead letter", res.Replayed)
			}
			if len(res.Skipped) != 1 || res.Skipped[0].MessageID != "batch-7" || !strings.Contains(res.Skipped[0].Why, "stored batch") {
				t.Errorf("left %+v, want batch-7, with why", res.Skipped)
			}
			st, err := js.Stream(t.Context(), store.StreamDeadLetter)
			if err != nil {
				t.Fatal(err)
			}
			if n := st.CachedInfo().State.Msgs; n != 1 {
				t.Errorf("%d dead letters left, want the batch's", n)
			}
		})
	}
}

// TestReplayOnlyWhatWasAsked: a replay to named destinations resends the
// dead letters of those alone and leaves the others' in place, and a
// replay with a limit resends that many, the oldest, no more.
func TestReplayOnlyWhatWasAsked(t *testing.T) {
	ids := map[string][]string{
		"ehr": {"01DDDDDDDDDDDDDDDDDDDDDDE1", "01DDDDDDDDDDDDDDDDDDDDDDE2", "01DDDDDDDDDDDDDDDDDDDDDDE3"},
		"gp":  {"01DDDDDDDDDDDDDDDDDDDDDDG1"},
	}
	opts := ReplayOptions{Routes: map[string][]string{"adt": {"ehr", "gp"}}, Dests: map[string]bool{"ehr": true, "gp": true}, AsStored: true}
	tests := []struct {
		name     string
		f        Filter
		only     []string
		replayed []string
	}{
		{"to named destinations", Filter{}, []string{"ehr"}, ids["ehr"]},
		{"with a limit", Filter{Limit: 2}, nil, ids["ehr"][:2]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, js := deliveryRouter(t)
			for _, dest := range []string{"ehr", "gp"} {
				for _, id := range ids[dest] {
					deadLetterDelivery(t, r, id, dest)
				}
			}
			o := opts
			o.OnlyDests = tt.only
			res, err := Replay(t.Context(), js, audit.NewWriter(js), tt.f, o)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range res.Replayed {
				got = append(got, d.MessageID)
			}
			if !slices.Equal(got, tt.replayed) {
				t.Errorf("replayed %v, want %v", got, tt.replayed)
			}
			st, err := js.Stream(t.Context(), store.StreamOutbound)
			if err != nil {
				t.Fatal(err)
			}
			if n := st.CachedInfo().State.Msgs; n != uint64(len(tt.replayed)) {
				t.Errorf("%d payloads queued, want %d", n, len(tt.replayed))
			}
			dlq, err := js.Stream(t.Context(), store.StreamDeadLetter)
			if err != nil {
				t.Fatal(err)
			}
			if n, want := dlq.CachedInfo().State.Msgs, uint64(len(ids["ehr"])+len(ids["gp"])-len(tt.replayed)); n != want {
				t.Errorf("%d dead letters left, want %d", n, want)
			}
		})
	}
}
