package router

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	c, err := p.consumer(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := jserr.ReadBatch(c.Fetch(1, jetstream.FetchMaxWait(time.Second)))
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %d messages, %v", len(msgs), err)
	}
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
