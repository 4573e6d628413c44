package router

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jstest"
)

// writeCounter counts the requests that create or update a consumer.
type writeCounter struct {
	jetstream.JetStream
	writes int
}

func (w *writeCounter) CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	w.writes++
	return w.JetStream.CreateOrUpdateConsumer(ctx, stream, cfg)
}

func (w *writeCounter) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	w.writes++
	return w.JetStream.CreateConsumer(ctx, stream, cfg)
}

func (w *writeCounter) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	w.writes++
	return w.JetStream.UpdateConsumer(ctx, stream, cfg)
}

// TestConsumerWrittenOnlyWhenItDiffers: a start takes a stage's consumer
// the server already holds with the settings the stage asks for without
// writing it again (an update rewrites and, with every write fsynced,
// syncs its file even when nothing changes, for each of a start's 120 or
// so consumers); a missing consumer is made, and one whose settings
// differ is updated to them.
func TestConsumerWrittenOnlyWhenItDiffers(t *testing.T) {
	base := partitionConsumer{stream: "S", durable: "d", filter: "s.1", batch: 1, ackWait: time.Minute, deliver: jetstream.DeliverNewPolicy}
	tests := []struct {
		name       string
		before     *partitionConsumer // the consumer as a previous start left it; nil: none
		now        partitionConsumer
		wantWrites int
	}{
		{name: "missing", now: base, wantWrites: 1},
		{name: "unchanged", before: &base, now: base, wantWrites: 0},
		{name: "ack wait changed", before: &base, now: func() partitionConsumer { p := base; p.ackWait = 2 * time.Minute; return p }(), wantWrites: 1},
		{name: "filters changed", before: &base, now: func() partitionConsumer { p := base; p.filter, p.filters = "", []string{"s.1", "s.2"}; return p }(), wantWrites: 1},
		{name: "unchanged filters", before: func() *partitionConsumer { p := base; p.filter, p.filters = "", []string{"s.1", "s.2"}; return &p }(),
			now: func() partitionConsumer { p := base; p.filter, p.filters = "", []string{"s.1", "s.2"}; return p }(), wantWrites: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := jstest.Start(t, "consumerwrite")
			ctx := t.Context()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
				t.Fatal(err)
			}
			if tt.before != nil {
				if _, err := tt.before.consumer(ctx, js); err != nil {
					t.Fatal(err)
				}
			}
			w := &writeCounter{JetStream: js}
			c, err := tt.now.consumer(ctx, w)
			if err != nil {
				t.Fatal(err)
			}
			if w.writes != tt.wantWrites {
				t.Errorf("%d consumer writes, want %d", w.writes, tt.wantWrites)
			}
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := info.Config.AckWait, tt.now.ackWait; got != want {
				t.Errorf("server holds ack wait %v, want %v", got, want)
			}
			want := tt.now.filters
			if len(want) == 0 {
				want = []string{tt.now.filter}
			}
			if diff := cmp.Diff(want, filtersOf(info.Config)); diff != "" {
				t.Errorf("server's filters (-want +got):\n%s", diff)
			}
		})
	}
}
