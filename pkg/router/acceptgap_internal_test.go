package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestAcceptRecordsBatchesItCannotRead: ingest log batches of
// acknowledged messages that the accept stage had not taken when the
// store lost them are recorded as lost when the stage moves past them:
// a record overwritten in the middle of the log's last block (counted,
// not produced, and passed over by the stage's consumer without a
// stall), read ahead over or not, with one process or two sharing the
// consumer; or a block the server dropped at start (deleted sequences,
// said at start, and not said or counted again); the same for the
// per-message pipeline's splitter, whose consumer passes over them the
// same way. Each lost batch is
// counted once and logged at ERROR without message content, and audit
// reconcile and find name the runs, with when they were acknowledged,
// after the stage has taken the batches after them; every batch the
// store can read is accepted. Before, the consumer passed over an
// overwritten batch, the stage accepted the next, and nothing said the
// messages were lost: no log, no count, and reconcile, whose floor was
// then past them, took them as routed.
func TestAcceptRecordsBatchesItCannotRead(t *testing.T) {
	tests := []struct {
		name      string
		dropped   bool // a block cut short (deleted sequences), not a record overwritten
		processes int
		ahead     int  // batches read ahead (acceptAhead)
		splitter  bool // the per-message pipeline's splitter, not the accept stage
	}{
		{"overwritten, one process", false, 1, acceptAhead.batches, false},
		{"overwritten, one process not reading ahead", false, 1, 1, false},
		{"overwritten, two processes sharing the consumer", false, 2, acceptAhead.batches, false},
		{"overwritten, two processes not reading ahead", false, 2, 1, false},
		{"dropped at start, one process", true, 1, acceptAhead.batches, false},
		{"splitter, overwritten, one process", false, 1, 1, true},
		{"splitter, overwritten, two processes", false, 2, 1, true},
		{"splitter, dropped at start, one process", true, 1, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func(old int) { acceptAhead.batches = old }(acceptAhead.batches)
			acceptAhead.batches = tc.ahead
			const batches = 220
			var ids IDGen
			id := make([]string, batches)
			now := time.Now().UTC()
			// Records larger than an overwrite, so that one is overwritten
			// whole; smaller ones where a block is cut, so that the block
			// is not the last.
			pad, blocks := 2000, []int(nil)
			if tc.dropped {
				pad, blocks = 300, []int{1}
			}
			js, runs, readable := damagedRouterStore(t, store.StreamIngestLog, jetstream.NoCompression, nil, func(js jetstream.JetStream) {
				for i := range id {
					id[i] = ids.New()
					data, err := encodeBatch([]*envelope.Envelope{{ID: id[i], Source: "pas", ControlID: "C" + id[i], ReceivedAt: now,
						Raw: []byte("MSH|^~\\&|" + padding(id[i], pad))}})
					if err != nil {
						t.Fatal(err)
					}
					if _, err := js.Publish(t.Context(), store.SubjIngestLog+".pas", data); err != nil {
						t.Fatal(err)
					}
				}
			}, blocks...)
			lost := 0
			for _, r := range runs {
				lost += int(r.Last - r.First + 1)
			}
			var logged bytes.Buffer
			type process struct {
				r      *Router
				c      jetstream.Consumer
				handle func(context.Context, []jetstream.Msg) error
			}
			var procs []process
			for range tc.processes {
				a, c := testAcceptor(t, js, time.Hour)
				a.r.o.Logger = slog.New(slog.NewJSONHandler(&logged, nil))
				p := process{r: a.r, c: c, handle: a.handle}
				durable := acceptDurable
				if tc.splitter {
					durable = splitterDurable
					sp := &splitter{r: a.r, js: js, audit: a.r.audit, ingress: a.ingress, log: a.log, onDup: func(string) {}}
					p.handle = sp.handle
					pc := &partitionConsumer{stream: store.StreamIngestLog, durable: durable, filter: ingestLogBatches, batch: 1,
						ackWait: time.Minute, deliver: jetstream.DeliverAllPolicy}
					var err error
					if p.c, err = pc.consumer(t.Context(), js); err != nil {
						t.Fatal(err)
					}
				}
				// As the engine starts.
				a.r.reportIngestLoss(t.Context(), durable, startAt{policy: jetstream.DeliverAllPolicy})
				procs = append(procs, p)
			}
			if tc.splitter {
				// Only the splitter takes the log.
				if err := js.DeleteConsumer(t.Context(), store.StreamIngestLog, acceptDurable); err != nil {
					t.Fatal(err)
				}
			}
			for turn := 0; ; turn++ {
				p := procs[turn%len(procs)]
				b, err := p.c.Fetch(1, jetstream.FetchMaxWait(time.Second))
				if err != nil {
					t.Fatal(err)
				}
				m, ok := <-b.Messages()
				if !ok {
					break
				}
				if err := p.handle(t.Context(), []jetstream.Msg{m}); err != nil {
					t.Fatal(err)
				}
				if err := m.DoubleAck(t.Context()); err != nil {
					t.Fatal(err)
				}
			}

			var counted float64
			for _, p := range procs {
				counted += testutil.ToFloat64(p.r.o.Metrics.IngestLogLost)
			}
			if counted != float64(lost) {
				t.Errorf("counted %v lost batches, want %d", counted, lost)
			}
			if strings.Contains(logged.String(), padding(id[0], 20)) || strings.Contains(logged.String(), "MSH|") {
				t.Error("the log holds stored message content")
			}
			var said []jserr.Run
			for line := range strings.Lines(logged.String()) {
				var rec struct {
					Level   string
					First   uint64 `json:"first_seq"`
					LastSeq uint64 `json:"last_seq"`
				}
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if rec.Level == "ERROR" && rec.First != 0 {
					said = append(said, jserr.Run{First: rec.First, Last: rec.LastSeq})
				}
			}
			if !slices.EqualFunc(said, runs, func(a, b jserr.Run) bool { return a.First == b.First && a.Last == b.Last }) {
				t.Errorf("logged lost runs %v, want %v, each once", said, runs)
			}

			rep, err := Reconcile(t.Context(), js, map[string][]string{"pas": {"adt"}}, time.Time{})
			if err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			if !sameRuns(rep.IngestLogLost, runs) {
				t.Errorf("reconcile: lost ingest log batches %v, want %v", rep.IngestLogLost, runs)
			}
			res, err := Find(t.Context(), js, FindQuery{Since: now.Add(-time.Hour), Until: now.Add(time.Minute)}, nil)
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if !sameRuns(res.Lost, runs) {
				t.Errorf("find: lost %v, want %v", res.Lost, runs)
			}

			// Every batch the store can read is accepted, once.
			var want []string
			for i, mid := range id {
				if readable[uint64(i+1)] {
					want = append(want, mid)
				}
			}
			ingress, err := js.Stream(t.Context(), store.StreamIngress)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			if tc.splitter {
				got = splitIDs(t, ingress)
			} else {
				got = acceptedIDs(t, ingress)
			}
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("accepted %d messages, want the %d of the batches the store can read", len(got), len(want))
			}
		})
	}
}

// splitIDs returns the ids of the messages the splitter stored on
// ingress.
func splitIDs(t *testing.T, ingress jetstream.Stream) []string {
	t.Helper()
	var out []string
	err := scanStream(t.Context(), ingress, jetstream.OrderedConsumerConfig{FilterSubjects: []string{store.SubjIngress + ".pas.>"}, HeadersOnly: true}, scanBatch,
		func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
			out = append(out, m.Headers().Get(envelope.HeaderID))
			return meta.NumPending == 0, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// acceptedIDs returns the ids of the messages of the accepted batches
// stored on ingress.
func acceptedIDs(t *testing.T, ingress jetstream.Stream) []string {
	t.Helper()
	var out []string
	last, err := ingress.GetLastMsgForSubject(t.Context(), SubjAccepted+".>")
	if err != nil {
		t.Fatal(err)
	}
	err = scanStream(t.Context(), ingress, jetstream.OrderedConsumerConfig{FilterSubjects: []string{SubjAccepted + ".>"}}, scanPayloadBatch,
		func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
			envs, err := decodeBatch(m.Data())
			if err != nil {
				t.Fatalf("accepted batch %d: %v", meta.Sequence.Stream, err)
			}
			for _, e := range envs {
				out = append(out, e.ID)
			}
			return meta.Sequence.Stream >= last.Sequence, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEngineRecordsOverwrittenIngestBatch: the same through the engine's
// own parts. Messages acknowledged by the ingester (group commit, one
// batch each, sent one after another) wait in the ingest log of a store
// stopped before routing took them; a record in the middle of the log's
// one block is overwritten; the engine starts on the store and its
// accept stage takes every batch it can. The lost batch is logged at
// ERROR, counted, and named by reconcile, and every other message is
// accepted. Before, it was passed over without a word.
func TestEngineRecordsOverwrittenIngestBatch(t *testing.T) {
	const msgs = 120
	dir := t.TempDir()
	st, err := store.Open(t.Context(), store.DefaultConfig(), dir, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ing := NewIngester(st, slog.New(slog.DiscardHandler), nil, nil)
	var ids IDGen
	for i := range msgs {
		ctl := "CTL" + strconv.Itoa(i)
		env := &envelope.Envelope{ID: ids.New(), Source: "pas", MessageType: "ADT^A01", ControlID: ctl, DedupeKey: "PAS|RX1|" + ctl,
			ContentType: envelope.ContentTypeHL7v2, ReceivedAt: time.Now().UTC(),
			Raw: []byte("MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|" + ctl + "|P|2.4\rPID|1||" + nhs.TestNumber(i) + "\rNTE|1||" + padding(ctl, 2000) + "\r")}
		if _, err := ing.Ingest(t.Context(), env); err != nil {
			t.Fatal(err)
		}
	}
	if err := ing.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	blocks, err := filepath.Glob(filepath.Join(dir, "jetstream", "*", "$G", "streams", store.StreamIngestLog, "msgs", "*.blk"))
	if err != nil || len(blocks) != 1 {
		t.Fatalf("the ingest log's block files: %v %v, want one", blocks, err)
	}
	fi, err := os.Stat(blocks[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := jstest.OverwriteMiddle(blocks[0], fi.Size()); err != nil {
		t.Fatal(err)
	}

	st, err = store.Open(t.Context(), store.DefaultConfig(), dir, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	log, err := st.JS.Stream(t.Context(), store.StreamIngestLog)
	if err != nil {
		t.Fatal(err)
	}
	var gone []uint64
	for seq := uint64(1); seq <= log.CachedInfo().State.LastSeq; seq++ {
		if _, err := log.GetMsg(t.Context(), seq); errors.Is(err, jetstream.ErrMsgNotFound) {
			gone = append(gone, seq)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if n := log.CachedInfo().State.LastSeq; n != msgs || len(gone) == 0 {
		t.Fatalf("the set-up: %d batches, %v unreadable; want %d, some unreadable", n, gone, msgs)
	}
	runs, err := runsOf(t.Context(), log, gone, 1)
	if err != nil {
		t.Fatal(err)
	}

	var logged bytes.Buffer
	m := telemetry.NewMetrics(prometheus.NewRegistry())
	r := New(Options{Store: st, Pipeline: PipelineBatch, Metrics: m, Logger: slog.New(slog.NewJSONHandler(&logged, nil))})
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Until the accept stage has taken the last batch; a stage stalled
	// at the damage never does, and the bound says so.
	c, err := st.JS.Consumer(t.Context(), store.StreamIngestLog, acceptDurable)
	if err != nil {
		t.Fatal(err)
	}
	for give := time.Now().Add(time.Minute); ; {
		ci, err := c.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if ci.AckFloor.Stream == msgs {
			break
		}
		if time.Now().After(give) {
			t.Fatalf("the accept stage stalled: ack floor %d of %d batches after a minute", ci.AckFloor.Stream, msgs)
		}
		sleep(t.Context(), 50*time.Millisecond)
	}
	if err := r.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}

	if got := testutil.ToFloat64(m.IngestLogLost); got != float64(len(gone)) {
		t.Errorf("counted %v lost batches, want %d", got, len(gone))
	}
	if !strings.Contains(logged.String(), `"level":"ERROR","msg":"the ingest log lost batches`) || strings.Contains(logged.String(), "NTE|") {
		t.Errorf("want an ERROR naming the lost batches, without content; logged:\n%s", logged.String())
	}
	rep, err := Reconcile(t.Context(), st.JS, map[string][]string{"pas": nil}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if !sameRuns(rep.IngestLogLost, runs) {
		t.Errorf("reconcile: lost ingest log batches %v, want %v", rep.IngestLogLost, runs)
	}
	ingress, err := st.JS.Stream(t.Context(), store.StreamIngress)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(acceptedIDs(t, ingress)); got != msgs-len(gone) {
		t.Errorf("accepted %d messages, want %d", got, msgs-len(gone))
	}
}

// TestPassedOverRecordedOnceAcrossRetries: a stage that records the
// ingest log batches its consumer passed over, and then fails to take
// the batch after them (the store refusing its writes), tries that batch
// again, maybe after the ingress stream's dedupe window: the lost
// batches are recorded, logged and counted once all the same. Before,
// the retry found no record through the dedupe window and recorded and
// counted them again.
func TestPassedOverRecordedOnceAcrossRetries(t *testing.T) {
	for _, tc := range gapStages {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			js := testStore(t)
			a, handle, c := gapStage(t, js, tc.splitter)
			// The shortest dedupe window the server takes, so that a
			// retry can come after it.
			ingressCfg := a.ingress.CachedInfo().Config
			ingressCfg.Duplicates = 100 * time.Millisecond
			if _, err := js.UpdateStream(ctx, ingressCfg); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"A", "B", "C"} {
				logBatch(t, js, []*envelope.Envelope{testEnv(id, "pas")})
			}
			// Batch 2 is gone: the consumer passes over it.
			if err := a.log.DeleteMsg(ctx, 2); err != nil {
				t.Fatal(err)
			}
			m := fetchOne(t, c)
			if err := handle(ctx, []jetstream.Msg{m}); err != nil {
				t.Fatal(err)
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}

			// The ingress stream takes one more message, the record, and
			// refuses the batch's own writes.
			info, err := a.ingress.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			full := ingressCfg
			full.Discard, full.MaxMsgs = jetstream.DiscardNew, int64(info.State.Msgs)+1
			if _, err := js.UpdateStream(ctx, full); err != nil {
				t.Fatal(err)
			}
			m = fetchOne(t, c)
			if err := handle(ctx, []jetstream.Msg{m}); err == nil {
				t.Fatal("the batch was taken with the ingress stream full")
			}
			if _, err := js.UpdateStream(ctx, ingressCfg); err != nil {
				t.Fatal(err)
			}
			// Wait until the dedupe window has let go of what was
			// written before a probe written now.
			probe := nats.NewMsg(store.SubjIngress + "._probe")
			probe.Header.Set(jetstream.MsgIDHeader, "probe")
			for first := true; ; first = false {
				ack, err := js.PublishMsg(ctx, probe)
				if err != nil {
					t.Fatal(err)
				}
				if !first && !ack.Duplicate {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}

			if err := handle(ctx, []jetstream.Msg{m}); err != nil {
				t.Fatalf("the retry: %v", err)
			}
			lostTwoOnce(t, a)
		})
	}
}

// TestPassedOverRecordNotTakenForAMessage: the record of lost batches
// shares the ingress stream's dedupe window with the messages stored
// there, whose keys senders choose (an HL7 v2 message's is its sending
// application, facility and control id joined by '|'). A message stored
// just before, from application "lost", facility "2", control id "2",
// does not stop the record of lost batch 2 being written, logged and
// counted. Before, the record took the message's key, the stream took
// it for a resend of the message, and the loss went unrecorded.
func TestPassedOverRecordNotTakenForAMessage(t *testing.T) {
	for _, tc := range gapStages {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			js := testStore(t)
			a, handle, c := gapStage(t, js, tc.splitter)
			keyed := testEnv("A", "pas")
			keyed.DedupeKey = "lost|2|2"
			logBatch(t, js, []*envelope.Envelope{keyed})
			logBatch(t, js, []*envelope.Envelope{testEnv("B", "pas")})
			logBatch(t, js, []*envelope.Envelope{testEnv("C", "pas")})
			// Batch 2 is gone: the consumer passes over it.
			if err := a.log.DeleteMsg(ctx, 2); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				m := fetchOne(t, c)
				if err := handle(ctx, []jetstream.Msg{m}); err != nil {
					t.Fatal(err)
				}
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
			}
			lostTwoOnce(t, a)
		})
	}
}

// gapStages are the stages that take the ingest log: the batch
// pipeline's accept stage and the per-message pipeline's splitter.
var gapStages = []struct {
	name     string
	splitter bool
}{
	{"accept", false},
	{"splitter", true},
}

// gapStage returns the accept stage on js, or with split the
// per-message pipeline's splitter (the accept stage's consumer then
// deleted), with its handler and consumer on the ingest log.
func gapStage(t *testing.T, js jetstream.JetStream, split bool) (*acceptor, func(context.Context, []jetstream.Msg) error, jetstream.Consumer) {
	t.Helper()
	a, c := testAcceptor(t, js, time.Hour)
	if !split {
		return a, a.handle, c
	}
	sp := &splitter{r: a.r, js: js, audit: a.r.audit, ingress: a.ingress, log: a.log, onDup: func(string) {}}
	if err := js.DeleteConsumer(t.Context(), store.StreamIngestLog, acceptDurable); err != nil {
		t.Fatal(err)
	}
	pc := &partitionConsumer{stream: store.StreamIngestLog, durable: splitterDurable, filter: ingestLogBatches, batch: 1,
		ackWait: time.Minute, deliver: jetstream.DeliverAllPolicy}
	c, err := pc.consumer(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	return a, sp.handle, c
}

// lostTwoOnce checks that a's stage counted one lost batch, and that
// ingest log batch 2 is recorded lost once on the ingress stream.
func lostTwoOnce(t *testing.T, a *acceptor) {
	t.Helper()
	if got := testutil.ToFloat64(a.r.o.Metrics.IngestLogLost); got != 1 {
		t.Errorf("counted %v lost batches, want 1", got)
	}
	st, err := a.ingress.Info(t.Context(), jetstream.WithSubjectFilter(SubjIngestLost+".>"))
	if err != nil {
		t.Fatal(err)
	}
	if n := st.State.Subjects[ingestLostSubject(LostRun{First: 2, Last: 2})]; n != 1 {
		t.Errorf("the lost batch is recorded %d times, want 1", n)
	}
}

// TestPassedOverAfterOneSourceAccepted: a process read ahead over ingest
// log batches 1-4 (A and C of pas, B and D of lab), stored pas's
// accepted batch (junction.in._acc.pas.4) and stopped before lab's; the
// store then lost batch 2, B's. The accept stage, taking the log again,
// passes over A and C (pas's batch covers them) and accepts D, and B is
// lost: it is recorded, logged and counted once, whether the batch the
// consumer delivers after the gap is one pas's batch covers (C) or one
// of lab's (D). Before, an accepted batch of any source counted as every
// batch up to it taken: the stage asked nothing at C (covered, passed
// over at once) nor at D (pas's batch reaching past it), and B was lost
// without a word.
func TestPassedOverAfterOneSourceAccepted(t *testing.T) {
	for _, tc := range []struct {
		name string
		ids  []string // the log's batches, in order; the second is lost
	}{
		{"a covered batch after the gap", []string{"A", "B", "C", "D"}},
		{"a batch of the other source after the gap", []string{"A", "B", "D", "C"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			js := testStore(t)
			a, c := testAcceptor(t, js, time.Hour)
			for _, id := range tc.ids {
				src := "pas"
				if id == "B" || id == "D" {
					src = "lab"
				}
				logBatch(t, js, []*envelope.Envelope{testEnv(id, src)})
			}
			storeAccepted(t, js, AcceptedSubject("pas", 4), []string{"A", "C"})
			if err := a.log.DeleteMsg(ctx, 2); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				handleNext(t, a, c)
			}
			lostTwoOnce(t, a)
			if got := acceptedIDs(t, a.ingress); !slices.Contains(got, "D") {
				t.Errorf("accepted %v, want D among them", got)
			}
		})
	}
}

// readCounter is a stream whose message gets are counted.
type readCounter struct {
	jetstream.Stream
	gets atomic.Int64
}

// GetMsg counts the get and passes it on.
func (s *readCounter) GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	s.gets.Add(1)
	return s.Stream.GetMsg(ctx, seq, opts...)
}

// TestPassedOverReadsADroppedRunAtOnce: a stage whose consumer passed
// over a run of batches the server dropped (deleted sequences, as a
// damaged block rebuilt at start leaves them) finds the run from the
// stream's deleted sequences, with when the batches either side were
// written, reading no batch of the run: three message gets (the batch
// before the one held, and the two either side of the run) however long
// the run. Before, it read every sequence between the consumer's ack
// floor and the batch it held, one get each (3,001 for a run of 2,998).
func TestPassedOverReadsADroppedRunAtOnce(t *testing.T) {
	tests := []struct {
		name        string
		first, last uint64 // the run deleted
	}{
		{"one batch", 2, 2},
		{"2,998 batches", 2, 2999},
		{"2,000 batches after a thousand taken", 1001, 3000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js, log, want := droppedRun(t, tc.first, tc.last)
			counted := &readCounter{Stream: log}
			runs, err := passedOver(t.Context(), js, counted, acceptDurable, tc.last+1, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(runs, []LostRun{want}) {
				t.Errorf("runs %v, want %v", runs, want)
			}
			if got := counted.gets.Load(); got > 3 {
				t.Errorf("%d message gets for a run of %d, want at most 3", got, tc.last-tc.first+1)
			}
		})
	}
}

// BenchmarkPassedOverDroppedRun: how long the stage takes to find a run
// of 2,998 batches its consumer passed over (deleted sequences), on a
// store of the test's own.
func BenchmarkPassedOverDroppedRun(b *testing.B) {
	js, log, _ := droppedRun(b, 2, 2999)
	for b.Loop() {
		if _, err := passedOver(b.Context(), js, log, acceptDurable, 3000, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// droppedRun returns a store whose ingest log holds batches 1 to last+1
// with first to last deleted (as the server leaves a block it dropped at
// start), the accept stage's consumer having taken those before first
// and holding last+1, with the ingest log and the run as passedOver
// should find it.
func droppedRun(tb testing.TB, first, last uint64) (jetstream.JetStream, jetstream.Stream, LostRun) {
	tb.Helper()
	ctx := tb.Context()
	js := testStore(tb)
	_, c := testAcceptor(tb, js, time.Hour)
	held := last + 1
	var acks []jetstream.PubAckFuture
	for i := range held {
		ack, err := js.PublishAsync(store.SubjIngestLog+".0", []byte("batch "+strconv.FormatUint(i+1, 10)))
		if err != nil {
			tb.Fatal(err)
		}
		acks = append(acks, ack)
	}
	for _, ack := range acks {
		select {
		case <-ack.Ok():
		case err := <-ack.Err():
			tb.Fatal(err)
		}
	}
	log, err := js.Stream(ctx, store.StreamIngestLog)
	if err != nil {
		tb.Fatal(err)
	}
	// The batches before the run are taken.
	for range first - 1 {
		if err := fetchOne(tb, c).DoubleAck(ctx); err != nil {
			tb.Fatal(err)
		}
	}
	for seq := first; seq <= last; seq++ {
		if err := log.DeleteMsg(ctx, seq); err != nil {
			tb.Fatal(err)
		}
	}
	after, err := log.GetMsg(ctx, first-1)
	if err != nil {
		tb.Fatal(err)
	}
	before, err := log.GetMsg(ctx, held)
	if err != nil {
		tb.Fatal(err)
	}
	md, err := fetchOne(tb, c).Metadata()
	if err != nil {
		tb.Fatal(err)
	}
	if md.Sequence.Stream != held {
		tb.Fatalf("the consumer delivered batch %d, want %d", md.Sequence.Stream, held)
	}
	return js, log, LostRun{First: first, Last: last, After: after.Time, Before: before.Time}
}

// TestLostRunCountPerProcess pins down what
// junction_ingress_ingest_log_lost_batches_total counts when processes
// share one store: it is per process, and a run of dropped batches (as
// deleted sequences) is counted by the start of each process that finds
// it ahead of the stage's position (its consumer's ack floor), whether
// or not another process counted or recorded it, until a stage has
// taken and acknowledged the batch after it; the stage that records the
// run counts only what its own start did not. The record on the ingress
// stream cannot make the count once per run across processes: the count
// lives in each process's memory, and a process can end between writing
// the record and counting, or between counting and being scraped, which
// only another start finding the run ahead of the stage makes up for.
func TestLostRunCountPerProcess(t *testing.T) {
	tests := []struct {
		name string
		// stage is how far the first process's stage got when the
		// second process starts: 0 not at the batch after the run, 1
		// recorded the run and holds the batch after it, 2 took it.
		stage  int
		second float64 // what the second process's start counts
	}{
		{"second start before the run is recorded", 0, 1},
		{"second start after the record, before the batch after it is taken", 1, 1},
		{"second start after the batch after it is taken", 2, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := testStore(t)
			a, handle, c := gapStage(t, js, false)
			ctx := t.Context()
			for _, id := range []string{"A", "B", "C"} {
				logBatch(t, js, []*envelope.Envelope{testEnv(id, "pas")})
			}
			// Batch 2 dropped.
			if err := a.log.DeleteMsg(ctx, 2); err != nil {
				t.Fatal(err)
			}
			a.r.reportIngestLoss(ctx, acceptDurable, startAt{policy: jetstream.DeliverAllPolicy})
			take := func(ack bool) {
				m := fetchOne(t, c)
				if err := handle(ctx, []jetstream.Msg{m}); err != nil {
					t.Fatal(err)
				}
				if ack {
					if err := m.DoubleAck(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			take(true)
			if tc.stage > 0 {
				take(tc.stage > 1)
			}
			b, _ := testAcceptor(t, js, time.Hour)
			b.r.reportIngestLoss(ctx, acceptDurable, startAt{policy: jetstream.DeliverAllPolicy})
			if got := testutil.ToFloat64(a.r.o.Metrics.IngestLogLost); got != 1 {
				t.Errorf("the first process counted %v, want 1: its start", got)
			}
			if got := testutil.ToFloat64(b.r.o.Metrics.IngestLogLost); got != tc.second {
				t.Errorf("the second process counted %v, want %v", got, tc.second)
			}
			if tc.stage > 0 {
				st, err := a.ingress.Info(ctx, jetstream.WithSubjectFilter(SubjIngestLost+".>"))
				if err != nil {
					t.Fatal(err)
				}
				if n := st.State.Subjects[ingestLostSubject(LostRun{First: 2, Last: 2})]; n != 1 {
					t.Errorf("the run is recorded %d times, want 1", n)
				}
			}
		})
	}
}
