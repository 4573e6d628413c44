package router

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestAcceptRecordsBatchesItCannotRead: ingest log batches of
// acknowledged messages that the accept stage had not taken when the
// store lost them are recorded as lost when the stage moves past them:
// a record overwritten in the middle of the log's last block (counted,
// not produced, and passed over by the stage's consumer without a
// stall), read ahead over or not, with one process or two sharing the
// consumer; or a block the server dropped at start (deleted sequences,
// said at start, and not said or counted again). Each lost batch is
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
		ahead     int // batches read ahead (acceptAhead)
	}{
		{"overwritten, one process", false, 1, acceptAhead.batches},
		{"overwritten, one process not reading ahead", false, 1, 1},
		{"overwritten, two processes sharing the consumer", false, 2, acceptAhead.batches},
		{"overwritten, two processes not reading ahead", false, 2, 1},
		{"dropped at start, one process", true, 1, acceptAhead.batches},
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
			js, runs, readable := damagedRouterStore(t, store.StreamIngestLog, jetstream.NoCompression, func(js jetstream.JetStream) {
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
			var procs []*acceptor
			var cs []jetstream.Consumer
			for range tc.processes {
				a, c := testAcceptor(t, js, time.Hour)
				a.r.o.Logger = slog.New(slog.NewJSONHandler(&logged, nil))
				// As the engine starts.
				a.r.reportIngestLoss(t.Context(), acceptDurable, startAt{policy: jetstream.DeliverAllPolicy})
				procs, cs = append(procs, a), append(cs, c)
			}
			for turn := 0; ; turn++ {
				p := turn % len(procs)
				b, err := cs[p].Fetch(1, jetstream.FetchMaxWait(time.Second))
				if err != nil {
					t.Fatal(err)
				}
				m, ok := <-b.Messages()
				if !ok {
					break
				}
				if err := procs[p].handle(t.Context(), []jetstream.Msg{m}); err != nil {
					t.Fatal(err)
				}
				if err := m.DoubleAck(t.Context()); err != nil {
					t.Fatal(err)
				}
			}

			var counted float64
			for _, a := range procs {
				counted += testutil.ToFloat64(a.r.o.Metrics.IngestLogLost)
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
			got := acceptedIDs(t, procs[0].ingress)
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("accepted %d messages, want the %d of the batches the store can read", len(got), len(want))
			}
		})
	}
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
