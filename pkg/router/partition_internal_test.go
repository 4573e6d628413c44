package router

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/logtest"
)

// TestProcessReportsStuckBatch: a batch that keeps failing is retried,
// said once at ERROR when it has failed for stuckAfter, said again when it
// succeeds, and then acknowledged.
func TestProcessReportsStuckBatch(t *testing.T) {
	js := jstest.Start(t, "stuck")
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	failUntil := time.Now().Add(600 * time.Millisecond)
	attempts := 0
	p := &partitionConsumer{stream: "S", durable: "d", filter: "s.>", batch: 1, ackWait: time.Minute, deliver: jetstream.DeliverAllPolicy,
		log: slog.New(slog.NewJSONHandler(&logs, nil)), stuckAfter: 100 * time.Millisecond,
		handle: func(context.Context, []jetstream.Msg) error {
			attempts++
			if time.Now().Before(failUntil) {
				return errors.New("store away")
			}
			return nil
		}}
	c, msgs := fetchPartition(t, ctx, p, js)
	p.process(ctx, msgs)
	got := logs.String()
	if n := strings.Count(got, `"level":"ERROR"`); n != 1 || !strings.Contains(got, "batch failing for over a minute") {
		t.Errorf("%d ERROR lines, want one saying the batch is stuck; logs:\n%s", n, got)
	}
	if !strings.Contains(got, "batch succeeded again") || attempts < 3 {
		t.Errorf("%d attempts; want the recovery said after several; logs:\n%s", attempts, got)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.AckFloor.Stream != 1 {
		t.Errorf("after success: %d pending, acked to %d; want the message acknowledged", info.NumAckPending, info.AckFloor.Stream)
	}
}

// TestProcessCountsFailingBatch: while a batch is retried after failing,
// the consumer's failing gauge reads one, so an alert sees a partition
// stuck behind it (the store, or its audit stream, not taking writes)
// without reading the log; it reads zero again once the batch succeeds
// or is handed back at shutdown.
func TestProcessCountsFailingBatch(t *testing.T) {
	tests := []struct {
		name     string
		failures int  // attempts that fail before one succeeds
		shutdown bool // shutdown begins during the first failure
		seen     []float64
	}{
		{name: "succeeds at once", failures: 0, seen: []float64{0}},
		{name: "fails twice, then succeeds", failures: 2, seen: []float64{0, 1, 1}},
		{name: "handed back at shutdown", failures: 1, shutdown: true, seen: []float64{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := jstest.Start(t, "failing")
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(ctx, "s.1", []byte("x")); err != nil {
				t.Fatal(err)
			}
			gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "failing"})
			var seen []float64
			p := &partitionConsumer{stream: "S", durable: "d", filter: "s.>", batch: 1, ackWait: time.Minute, deliver: jetstream.DeliverAllPolicy,
				log: slog.New(slog.DiscardHandler), failing: gauge,
				handle: func(context.Context, []jetstream.Msg) error {
					seen = append(seen, testutil.ToFloat64(gauge))
					if len(seen) > tc.failures {
						return nil
					}
					if tc.shutdown {
						cancel()
					}
					return errors.New("audit stream not taking writes")
				}}
			_, msgs := fetchPartition(t, ctx, p, js)
			p.process(ctx, msgs)
			if !slices.Equal(seen, tc.seen) {
				t.Errorf("gauge read %v by each attempt, want %v", seen, tc.seen)
			}
			if got := testutil.ToFloat64(gauge); got != 0 {
				t.Errorf("gauge %v once the batch is done, want 0", got)
			}
		})
	}
}

// TestConsumerStage: each durable consumer's failing gauge is labelled
// with its stage and the route, destination or input it serves, suffixes
// and all, whatever dashes the name holds.
func TestConsumerStage(t *testing.T) {
	for _, tc := range []struct{ durable, stage, name string }{
		{"route-adt-to-ehr-p7", "route", "adt-to-ehr"},
		{"route-adt-to-ehr-b", "route", "adt-to-ehr"},
		{"route-x-p3-b", "route", "x-p3"},
		{"route-x-b-p12", "route", "x-b"},
		{"dest-fhir-store-p0", "delivery", "fhir-store"},
		{"dest-fhir-store-b", "delivery", "fhir-store"},
		{"index-pas-p15", "index", "pas"},
		{"index-pas-b", "index", "pas"},
		{"accept", "ingest", "accept"},
		{"ingest-splitter", "ingest", "ingest-splitter"},
		{"audit-receipts", "ingest", "audit-receipts"},
	} {
		t.Run(tc.durable, func(t *testing.T) {
			if stage, name := consumerStage(tc.durable); stage != tc.stage || name != tc.name {
				t.Errorf("consumerStage(%q) = %q, %q; want %q, %q", tc.durable, stage, name, tc.stage, tc.name)
			}
		})
	}
}

// fetchPartition returns p's consumer and the one message waiting for it.
func fetchPartition(t *testing.T, ctx context.Context, p *partitionConsumer, js jetstream.JetStream) (jetstream.Consumer, []jetstream.Msg) {
	t.Helper()
	c, err := p.consumer(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := jserr.ReadBatch(c.Fetch(1, jetstream.FetchMaxWait(time.Second)))
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %d messages, %v", len(msgs), err)
	}
	return c, msgs
}
