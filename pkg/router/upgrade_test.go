package router

import (
	"slices"
	"strconv"
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
	if got, ok := nextBatch(t, c); !ok || got != taken {
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
		seq, ok := nextBatch(t, c)
		if !ok {
			break
		}
		got = append(got, seq)
	}
	if len(got) != 2 || got[0] != pending || got[1] != own {
		t.Errorf("after the upgrade got batches %v, want [%d %d] (not %d, another source's)", got, pending, own, other)
	}
}

// TestAcceptedInputOf checks when a stage still takes earlier versions'
// mixed accepted batches: only while some wait for its consumer.
func TestAcceptedInputOf(t *testing.T) {
	ctx := t.Context()
	tests := []struct {
		name   string
		legacy bool // an earlier version's batch is stored
		// consumer is made before the batches (false: no consumer), and
		// takes this many of them.
		consumer bool
		takes    int
		want     bool
	}{
		{"no earlier batches", false, true, 0, false},
		{"earlier batches, no consumer yet", true, false, 0, false},
		{"earlier batch waiting", true, true, 0, true},
		{"earlier batch taken, later own batch waiting", true, true, 1, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := jstest.Start(t, "accepted-input-"+strconv.Itoa(i))
			ingress, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: store.StreamIngress, Subjects: []string{store.SubjIngress + ".>"}})
			if err != nil {
				t.Fatal(err)
			}
			var c jetstream.Consumer
			if tt.consumer {
				pc := &partitionConsumer{stream: store.StreamIngress, durable: "route-r-b", filters: acceptedFilters("pas"), batch: 1,
					ackWait: time.Minute, deliver: jetstream.DeliverAllPolicy}
				if c, err = pc.consumer(ctx, js); err != nil {
					t.Fatal(err)
				}
			}
			if tt.legacy {
				if _, err := js.Publish(ctx, SubjAccepted+".1", []byte("batch")); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := js.Publish(ctx, AcceptedSubject("pas", 2), []byte("batch")); err != nil {
				t.Fatal(err)
			}
			for range tt.takes {
				b, err := c.Fetch(1, jetstream.FetchMaxWait(time.Second))
				if err != nil {
					t.Fatal(err)
				}
				for m := range b.Messages() {
					if err := m.DoubleAck(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			in, err := acceptedInputOf(ctx, js, ingress, "route-r-b", "pas")
			if err != nil {
				t.Fatal(err)
			}
			own := []string{ownAccepted("pas")}
			switch got := in.takes != nil; {
			case got != tt.want:
				t.Errorf("takes earlier versions' batches: %v, want %v (filters %v)", got, tt.want, in.filters)
			case tt.want && (in.input != SubjAccepted+".>" || !slices.Equal(in.filters, acceptedFilters("pas"))):
				t.Errorf("input %q filters %v, want every accepted batch and %v", in.input, in.filters, acceptedFilters("pas"))
			case !tt.want && (in.input != own[0] || !slices.Equal(in.filters, own)):
				t.Errorf("input %q filters %v, want only %v", in.input, in.filters, own)
			}
		})
	}
}

// TestRouteConsumerUpgradeAcrossRestart checks the move to per-source
// accepted batches as an upgrade makes it: the earlier version's consumer
// was made by a server that has since restarted on the same store, and
// the first answer such a server gives to an update of a consumer it
// recovered is the consumer as recovered, with the earlier version's one
// filter. The update must still be taken, whether the route still has
// earlier batches to read (two filters) or not (its source's alone), and
// the consumer keep its place.
func TestRouteConsumerUpgradeAcrossRestart(t *testing.T) {
	tests := []struct {
		name    string
		filters []string
		// pending is whether the earlier version's second batch is still
		// to be taken after the upgrade.
		pending bool
	}{
		{"earlier batches waiting", acceptedFilters("pas"), true},
		{"earlier batches all taken", []string{ownAccepted("pas")}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			name := "restart-upgrade-" + strconv.Itoa(i)
			js, stop := jstest.StartIn(t, name, dir)
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: store.StreamIngress, Subjects: []string{store.SubjIngress + ".>"}}); err != nil {
				t.Fatal(err)
			}
			old := &partitionConsumer{stream: store.StreamIngress, durable: "route-r-b", filter: SubjAccepted + ".>", batch: 1,
				ackWait: time.Minute, deliver: jetstream.DeliverNewPolicy}
			c, err := old.consumer(ctx, js)
			if err != nil {
				t.Fatal(err)
			}
			var legacy []uint64
			for _, subject := range []string{SubjAccepted + ".1", SubjAccepted + ".2"} {
				ack, err := js.Publish(ctx, subject, []byte("batch"))
				if err != nil {
					t.Fatal(err)
				}
				legacy = append(legacy, ack.Sequence)
			}
			takes := 1
			if !tt.pending {
				takes = 2
			}
			for range takes {
				if _, ok := nextBatch(t, c); !ok {
					t.Fatal("before the upgrade: no batch")
				}
			}
			stop()

			js, _ = jstest.StartIn(t, name, dir)
			other, err := js.Publish(ctx, AcceptedSubject("lab", 3), []byte("batch"))
			if err != nil {
				t.Fatal(err)
			}
			own, err := js.Publish(ctx, AcceptedSubject("pas", 4), []byte("batch"))
			if err != nil {
				t.Fatal(err)
			}
			updated := &partitionConsumer{stream: store.StreamIngress, durable: "route-r-b", filters: tt.filters, batch: 1,
				ackWait: time.Minute, deliver: jetstream.DeliverNewPolicy}
			c, err = updated.consumer(ctx, js)
			if err != nil {
				t.Fatalf("updating the consumer after a restart: %v", err)
			}
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(info.Config.FilterSubjects, tt.filters) {
				t.Errorf("consumer filters %v, want %v", info.Config.FilterSubjects, tt.filters)
			}
			var want []uint64
			if tt.pending {
				want = append(want, legacy[1])
			}
			want = append(want, own.Sequence)
			var got []uint64
			for {
				seq, ok := nextBatch(t, c)
				if !ok {
					break
				}
				got = append(got, seq)
			}
			if !slices.Equal(got, want) {
				t.Errorf("after the upgrade got batches %v, want %v (not %d, another source's)", got, want, other.Sequence)
			}
		})
	}
}

// nextBatch fetches and acknowledges c's next message, returning its
// stream sequence, or false when none comes.
func nextBatch(t *testing.T, c jetstream.Consumer) (uint64, bool) {
	t.Helper()
	b, err := c.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := <-b.Messages()
	if !ok {
		return 0, false
	}
	meta, err := m.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.DoubleAck(t.Context()); err != nil {
		t.Fatal(err)
	}
	return meta.Sequence.Stream, true
}
