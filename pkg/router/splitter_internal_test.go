package router

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/store"
)

// splitOnce has s split every ingest-log batch not yet fetched by
// consumer c, acknowledges them, and returns them for a second split
// (a retry).
func splitOnce(t *testing.T, s *splitter, c jetstream.Consumer, n int) []jetstream.Msg {
	t.Helper()
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d ingest-log batches, want %d", len(msgs), n)
	}
	if err := s.handle(t.Context(), msgs); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	return msgs
}

// TestSplitterResends: the message pipeline's splitter tells a sender's
// resend from its own retry of a batch it had split, and a resend of a
// message that reused a control id from that message again. Splitting a
// batch again (its acknowledgement lost) records no resend and counts
// none; a resend of the reused-id message is counted as a resend, once,
// and not as a second reuse.
func TestSplitterResends(t *testing.T) {
	r, js := deliveryRouter(t)
	ctx := t.Context()
	ingress, err := js.Stream(ctx, store.StreamIngress)
	if err != nil {
		t.Fatal(err)
	}
	log, err := js.Stream(ctx, store.StreamIngestLog)
	if err != nil {
		t.Fatal(err)
	}
	dups := 0
	s := &splitter{r: r, js: js, audit: r.audit, ingress: ingress, log: log, onDup: func(string) { dups++ }}
	pc := &partitionConsumer{stream: store.StreamIngestLog, durable: "test-splitter", filter: ingestLogBatches, batch: 1,
		ackWait: time.Minute, deliver: jetstream.DeliverAllPolicy}
	c, err := pc.consumer(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(id, pid string) *envelope.Envelope {
		return &envelope.Envelope{ID: id, Source: "pas", ContentType: envelope.ContentTypeHL7v2, ReceivedAt: time.Now().UTC(),
			DedupeKey: "PAS|RX1|C1", Raw: []byte("MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|C1|P|2.4\rPID|1||" + pid + "\r")}
	}
	reused := func() float64 {
		return testutil.ToFloat64(r.o.Metrics.DataQuality.WithLabelValues("pas", DQControlIDReused))
	}

	logBatch(t, js, []*envelope.Envelope{msg("01AAAAAAAAAAAAAAAAAAAAAAAA", "9990000018")})
	first := splitOnce(t, s, c, 1)
	if err := s.handle(ctx, first); err != nil {
		t.Fatal(err)
	}
	if dups != 0 {
		t.Errorf("splitting a batch again counted %d resends, want 0", dups)
	}
	trail, err := audit.Trail(ctx, js, "01AAAAAAAAAAAAAAAAAAAAAAAA")
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range trail {
		if rec.Event == audit.Duplicate {
			t.Errorf("splitting a batch again recorded %s %q on the message's trail", rec.Event, rec.Reason)
		}
	}

	// The control id reused for another patient's message, then that
	// message resent.
	logBatch(t, js, []*envelope.Envelope{msg("01BBBBBBBBBBBBBBBBBBBBBBBB", "9990000026")})
	splitOnce(t, s, c, 1)
	if got := reused(); got != 1 {
		t.Fatalf("control id reuse counted %v times, want 1", got)
	}
	logBatch(t, js, []*envelope.Envelope{msg("01CCCCCCCCCCCCCCCCCCCCCCCC", "9990000026")})
	splitOnce(t, s, c, 1)
	if got := reused(); got != 1 {
		t.Errorf("after a resend of the reused-id message, reuse counted %v times, want 1", got)
	}
	if dups != 1 {
		t.Errorf("resends counted %d, want 1", dups)
	}
}
