package router

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// windowStore is a store holding four messages of source pas, read by
// route adt: received a minute after start, one delivered to ehr; two
// minutes after, one queued for ehr and not delivered; three minutes
// after, one no route decided; and at end, one delivered.
func windowStore(t *testing.T, start, end time.Time) jetstream.JetStream {
	t.Helper()
	js := jstest.Start(t, "window")
	for _, c := range []jetstream.StreamConfig{
		{Name: store.StreamIngress, Subjects: []string{store.SubjIngress + ".>"}},
		{Name: store.StreamIngestLog, Subjects: []string{store.SubjIngestLog + ".>"}},
		{Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, DenyDelete: true, DenyPurge: true},
	} {
		if _, err := js.CreateStream(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	var ids IDGen
	w := audit.NewWriter(js)
	stored := func(received time.Time, recs ...audit.Record) {
		t.Helper()
		id := ids.New()
		m := nats.NewMsg(store.SubjIngress + ".pas.0")
		m.Header.Set(envelope.HeaderID, id)
		m.Header.Set(envelope.HeaderSource, "pas")
		m.Header.Set(envelope.HeaderReceived, received.Format(time.RFC3339Nano))
		m.Data = []byte("MSH|^~\\&|")
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			r.Time, r.MessageID = received, id
			if err := w.Write(t.Context(), id, "", r); err != nil {
				t.Fatal(err)
			}
		}
	}
	matched := audit.Record{Event: audit.Matched, Route: "adt", Outcome: "matched"}
	queued := audit.Record{Event: audit.Queued, Route: "adt", Destination: "ehr", Outcome: "queued"}
	delivered := audit.Record{Event: audit.Delivered, Route: "adt", Destination: "ehr", Outcome: "delivered"}
	stored(start.Add(time.Minute), matched, queued, delivered)
	stored(start.Add(2*time.Minute), matched, queued)
	stored(start.Add(3 * time.Minute))
	stored(end, matched, queued, delivered)
	if err := w.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	return js
}

// TestReconcileWindowUntil: a window closed at until counts the messages
// received at or after since and before until, so that windows laid end
// to end count each message once; without until, every message from
// since on.
func TestReconcileWindowUntil(t *testing.T) {
	now := time.Now().UTC()
	start, end := now.Add(-time.Hour), now.Add(-time.Minute)
	js := windowStore(t, start, end)
	routes := map[string][]string{"pas": {"adt"}}
	type counts struct{ Accepted, Delivered, Pending int }
	for _, tt := range []struct {
		name         string
		since, until time.Time
		want         counts
	}{
		{"open", start, time.Time{}, counts{4, 2, 2}},
		{"closed before the last", start, end, counts{3, 1, 2}},
		{"the next window", end, now, counts{1, 1, 0}},
		{"before the first", start.Add(-time.Hour), start, counts{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := ReconcileWindow(t.Context(), js, routes, tt.since, tt.until)
			if err != nil {
				t.Fatal(err)
			}
			got := counts{rep.Accepted, rep.Terminal[audit.OutcomeDelivered], len(rep.Pending)}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if !rep.Until.Equal(tt.until) {
				t.Errorf("Until = %v, want %v", rep.Until, tt.until)
			}
		})
	}
}
