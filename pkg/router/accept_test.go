package router

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestNoteCovered checks what an accepted batch's subject says was
// accepted: its source's entries up to the ingest-log sequence it names,
// or every source's for an earlier version's batch.
func TestNoteCovered(t *testing.T) {
	tests := []struct {
		name     string
		subjects []string
		want     map[string]uint64
		wantAll  uint64
	}{
		{"one source", []string{AcceptedSubject("pas", 7)}, map[string]uint64{"pas": 7}, 0},
		{"only forward", []string{AcceptedSubject("pas", 7), AcceptedSubject("pas", 5)}, map[string]uint64{"pas": 7}, 0},
		{"per source", []string{AcceptedSubject("pas", 7), AcceptedSubject("lab", 9)}, map[string]uint64{"pas": 7, "lab": 9}, 0},
		{"earlier version's batch", []string{SubjAccepted + ".4"}, map[string]uint64{}, 4},
		{"not an accepted batch", []string{store.SubjIngress + ".pas.0", SubjAccepted + ".pas.x"}, map[string]uint64{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &acceptor{coveredTo: map[string]uint64{}}
			for _, s := range tt.subjects {
				a.noteCovered(s)
			}
			if len(a.coveredTo) != len(tt.want) || a.coveredAll != tt.wantAll {
				t.Fatalf("covered %v and all to %d, want %v and %d", a.coveredTo, a.coveredAll, tt.want, tt.wantAll)
			}
			for src, seq := range tt.want {
				if a.coveredTo[src] != seq {
					t.Errorf("covered %v, want %v", a.coveredTo, tt.want)
				}
			}
		})
	}
}

// TestAcceptReadsAhead checks that the accept stage writes one accepted
// batch per source for the delivered ingest-log batch and those stored
// after it, passes over those batches when they are delivered, and, given
// a batch again after a process stopped part way (between one source's
// write and the next), writes only what was not stored.
func TestAcceptReadsAhead(t *testing.T) {
	// Three ingest-log batches: 1 holds pas A and lab B, 2 pas C, 3 lab D.
	logged := [][]*envelope.Envelope{
		{testEnv("A", "pas"), testEnv("B", "lab")},
		{testEnv("C", "pas")},
		{testEnv("D", "lab")},
	}
	tests := []struct {
		name string
		// stored are accepted batches already stored, by subject, with
		// the ids of their entries.
		stored map[string][]string
		// redeliver hands batch 1 out a second time, as after a stop.
		redeliver bool
		want      map[string][]string
		// accepted is how many messages the stage counts as accepted.
		accepted float64
	}{
		{"first delivery", nil, false,
			map[string][]string{AcceptedSubject("pas", 3): {"A", "C"}, AcceptedSubject("lab", 3): {"B", "D"}}, 4},
		{"stopped after one source", map[string][]string{AcceptedSubject("pas", 3): {"A", "C"}}, true,
			map[string][]string{AcceptedSubject("pas", 3): {"A", "C"}, AcceptedSubject("lab", 3): {"B", "D"}}, 2},
		{"stopped after the first batch alone", map[string][]string{AcceptedSubject("pas", 1): {"A"}, AcceptedSubject("lab", 1): {"B"}}, true,
			map[string][]string{AcceptedSubject("pas", 1): {"A"}, AcceptedSubject("lab", 1): {"B"}, AcceptedSubject("pas", 3): {"C"}, AcceptedSubject("lab", 3): {"D"}}, 2},
		{"earlier version accepted the first batch", map[string][]string{SubjAccepted + ".1": {"A", "B"}}, true,
			map[string][]string{SubjAccepted + ".1": {"A", "B"}, AcceptedSubject("pas", 3): {"C"}, AcceptedSubject("lab", 3): {"D"}}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			js := testStore(t)
			for _, envs := range logged {
				logBatch(t, js, envs)
			}
			for subject, ids := range tt.stored {
				storeAccepted(t, js, subject, ids)
			}
			// A dedupe window that has passed: a new process finds what was
			// stored by asking for it, not by reading the window back.
			window := time.Millisecond
			time.Sleep(5 * window)
			acc, c := testAcceptor(t, js, window)
			if tt.redeliver {
				m := fetchOne(t, c)
				if err := m.Nak(); err != nil {
					t.Fatal(err)
				}
			}
			for range logged {
				handleNext(t, acc, c)
			}
			got := map[string][]string{}
			err := scan(ctx, js, store.StreamIngress, SubjAccepted+".>", false, time.Time{}, func(m jetstream.Msg) error {
				envs, err := decodeBatch(m.Data())
				if err != nil {
					t.Fatalf("accepted batch %s: %v", m.Subject(), err)
				}
				if _, dup := got[m.Subject()]; dup {
					t.Errorf("accepted batch %s stored twice", m.Subject())
				}
				got[m.Subject()] = nil
				for _, e := range envs {
					got[m.Subject()] = append(got[m.Subject()], e.ID)
				}
				return nil
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("accepted batches %v, want %v", got, tt.want)
			}
			for subject, ids := range tt.want {
				if !slices.Equal(got[subject], ids) {
					t.Errorf("accepted batches %v, want %v", got, tt.want)
				}
			}
			m := acc.r.o.Metrics.Accepted
			if n := testutil.ToFloat64(m.WithLabelValues("pas")) + testutil.ToFloat64(m.WithLabelValues("lab")); n != tt.accepted {
				t.Errorf("accepted_total %v, want %v", n, tt.accepted)
			}
		})
	}
}

// resend is message id with the same dedupe key and content as every
// other resend: the first is the original, the rest its resends.
func resend(id string) *envelope.Envelope {
	e := testEnv(id, "pas")
	e.DedupeKey, e.Raw = "pas|A", []byte("MSH|^~\\&|A")
	return e
}

// TestAcceptCountsResendOnce checks that resends read ahead are judged
// once: a batch holding only resends leaves no accepted batch, and is
// passed over when delivered all the same.
func TestAcceptCountsResendOnce(t *testing.T) {
	js := testStore(t)
	acc, c := testAcceptor(t, js, time.Hour)
	logBatch(t, js, []*envelope.Envelope{resend("A")})
	handleNext(t, acc, c)
	// Two resends, the second read ahead of the first.
	logBatch(t, js, []*envelope.Envelope{resend("A2")})
	logBatch(t, js, []*envelope.Envelope{resend("A3")})
	handleNext(t, acc, c)
	handleNext(t, acc, c)
	if got := testutil.ToFloat64(acc.r.o.Metrics.Duplicates.WithLabelValues("pas")); got != 2 {
		t.Errorf("resends counted %v times, want 2", got)
	}
}

// TestAcceptCountsResendOnceAcrossProcesses checks that a batch of
// resends judged by two processes (the shared consumer handed it to the
// second after the first judged it) is counted once between them: it
// leaves no accepted batch for the second to learn it from, but its
// records are stored once and only the first store counts.
func TestAcceptCountsResendOnceAcrossProcesses(t *testing.T) {
	js := testStore(t)
	first, c := testAcceptor(t, js, time.Hour)
	second, _ := testAcceptor(t, js, time.Hour)
	logBatch(t, js, []*envelope.Envelope{resend("A")})
	handleNext(t, first, c)
	logBatch(t, js, []*envelope.Envelope{resend("A2")})
	m := fetchOne(t, c)
	if err := second.handle(t.Context(), []jetstream.Msg{m}); err != nil {
		t.Fatal(err)
	}
	// The second process stops before acknowledging it: the batch goes
	// to the first.
	if err := m.Nak(); err != nil {
		t.Fatal(err)
	}
	handleNext(t, first, c)
	n := testutil.ToFloat64(first.r.o.Metrics.Duplicates.WithLabelValues("pas")) +
		testutil.ToFloat64(second.r.o.Metrics.Duplicates.WithLabelValues("pas"))
	if n != 1 {
		t.Errorf("one resend counted %v times by the two processes, want 1", n)
	}
}

// testStore opens an embedded store with Junction's streams.
func testStore(t testing.TB) jetstream.JetStream {
	t.Helper()
	st, err := store.Open(t.Context(), store.DefaultConfig(), t.TempDir(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st.JS
}

// testAcceptor returns an accept stage on js, with the dedupe window
// given, and its consumer on the ingest log.
func testAcceptor(t testing.TB, js jetstream.JetStream, window time.Duration) (*acceptor, jetstream.Consumer) {
	t.Helper()
	ctx := t.Context()
	ingress, err := js.Stream(ctx, store.StreamIngress)
	if err != nil {
		t.Fatal(err)
	}
	log, err := js.Stream(ctx, store.StreamIngestLog)
	if err != nil {
		t.Fatal(err)
	}
	r := &Router{o: Options{Metrics: telemetry.NewMetrics(prometheus.NewRegistry()), Logger: slog.New(slog.DiscardHandler)},
		js: js, audit: audit.NewWriter(js), sourceRouted: map[string]bool{"pas": true, "lab": true}}
	pc := &partitionConsumer{stream: store.StreamIngestLog, durable: acceptDurable, filter: ingestLogBatches, batch: 1,
		ackWait: time.Minute, deliver: jetstream.DeliverAllPolicy}
	c, err := pc.consumer(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	return newAcceptor(r, ingress, log, window), c
}

// logBatch stores envs as one ingest-log batch.
func logBatch(t *testing.T, js jetstream.JetStream, envs []*envelope.Envelope) {
	t.Helper()
	data, err := encodeBatch(envs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), store.SubjIngestLog+".0", data); err != nil {
		t.Fatal(err)
	}
}

// testEnv is a message with id from source.
func testEnv(id, source string) *envelope.Envelope {
	return &envelope.Envelope{ID: id, Source: source, ContentType: envelope.ContentTypeHL7v2, ReceivedAt: time.Now().UTC(),
		DedupeKey: source + "|" + id, Raw: []byte("MSH|^~\\&|" + id)}
}

// storeAccepted stores an accepted batch on subject holding the messages
// ids (their sources taken from the id: A and C are pas, B and D lab).
func storeAccepted(t *testing.T, js jetstream.JetStream, subject string, ids []string) {
	t.Helper()
	var envs []*envelope.Envelope
	for _, id := range ids {
		src := "pas"
		if id == "B" || id == "D" {
			src = "lab"
		}
		envs = append(envs, testEnv(id, src))
	}
	data, err := encodeBatch(envs)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, "test|"+subject+"|"+strconv.Itoa(len(ids)))
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// handleNext has acc handle the next batch of its consumer c, and
// acknowledges it.
func handleNext(t *testing.T, acc *acceptor, c jetstream.Consumer) {
	t.Helper()
	m := fetchOne(t, c)
	if err := acc.handle(t.Context(), []jetstream.Msg{m}); err != nil {
		t.Fatal(err)
	}
	if err := m.DoubleAck(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// fetchOne takes the consumer's next message.
func fetchOne(t testing.TB, c jetstream.Consumer) jetstream.Msg {
	t.Helper()
	b, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := <-b.Messages()
	if !ok {
		t.Fatalf("no message to fetch (%v)", b.Error())
	}
	return m
}
