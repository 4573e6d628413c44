package router

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestRouteConsumerUpgrade checks the move to per-source accepted
// batches on a store an earlier version used: a route's durable consumer,
// made with the single filter of every accepted batch and part way
// through them, keeps its place when updated to its source's filters; it
// still gets the earlier version's batches it had not taken, then its own
// source's new batches, and never another source's.
func TestRouteConsumerUpgrade(t *testing.T) {
	ctx := t.Context()
	js := jstest.Start(t, "upgrade-test")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: store.StreamIngress, Subjects: []string{store.SubjIngress + ".>"}}); err != nil {
		t.Fatal(err)
	}
	publish := func(subject string) uint64 {
		t.Helper()
		ack, err := js.Publish(ctx, subject, []byte("batch"))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	taken := publish(SubjAccepted + ".1")
	pending := publish(SubjAccepted + ".2")
	old := &partitionConsumer{stream: store.StreamIngress, durable: "route-r-b", filter: SubjAccepted + ".>", batch: 1,
		ackWait: time.Minute, deliver: jetstream.DeliverAllPolicy}
	c, err := old.consumer(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	next := func(c jetstream.Consumer) (uint64, bool) {
		t.Helper()
		b, err := c.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			return meta.Sequence.Stream, true
		}
		return 0, false
	}
	if got, ok := next(c); !ok || got != taken {
		t.Fatalf("before the upgrade got batch %d (%v), want %d", got, ok, taken)
	}
	other := publish(AcceptedSubject("lab", 3))
	own := publish(AcceptedSubject("pas", 3))
	updated := &partitionConsumer{stream: store.StreamIngress, durable: "route-r-b", filters: acceptedFilters("pas"), batch: 1,
		ackWait: time.Minute, deliver: jetstream.DeliverAllPolicy}
	c, err = updated.consumer(ctx, js)
	if err != nil {
		t.Fatalf("updating the consumer: %v", err)
	}
	var got []uint64
	for {
		seq, ok := next(c)
		if !ok {
			break
		}
		got = append(got, seq)
	}
	if len(got) != 2 || got[0] != pending || got[1] != own {
		t.Errorf("after the upgrade got batches %v, want [%d %d] (not %d, another source's)", got, pending, own, other)
	}
}
