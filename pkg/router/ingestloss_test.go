package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestIngestLogLossReported: batches of acknowledged messages that the
// ingest log no longer holds, though the accept stage had not taken
// them (a damaged block the server dropped at start), are counted and
// logged at ERROR with their sequences and the times they were
// acknowledged between, and nothing else is: batches lost after the
// stage took them lost nothing.
func TestIngestLogLossReported(t *testing.T) {
	const batches = 150
	payload := strings.Repeat("y", 400)
	fill := func(taken int) func(jetstream.JetStream) {
		return func(js jetstream.JetStream) {
			for i := range batches {
				if _, err := js.Publish(t.Context(), store.SubjIngestLog+".pas", fmt.Appendf(nil, "%d %s", i, payload)); err != nil {
					t.Fatal(err)
				}
			}
			c, err := js.CreateOrUpdateConsumer(t.Context(), store.StreamIngestLog, jetstream.ConsumerConfig{Durable: acceptDurable, AckPolicy: jetstream.AckExplicitPolicy})
			if err != nil {
				t.Fatal(err)
			}
			b, err := c.Fetch(taken)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for m := range b.Messages() {
				if err := m.DoubleAck(t.Context()); err != nil {
					t.Fatal(err)
				}
				n++
			}
			if n != taken {
				t.Fatalf("took %d batches, want %d", n, taken)
			}
		}
	}
	cfg := jetstream.StreamConfig{Name: store.StreamIngestLog, Subjects: []string{store.SubjIngestLog + ".>"}}
	tests := []struct {
		name  string
		taken int
		open  func(t *testing.T, taken int) jetstream.JetStream
	}{
		{"block cut short after the stage's position", 5, func(t *testing.T, taken int) jetstream.JetStream {
			return jstest.DamagedStreamWith(t, cfg, jstest.CutInHalf, fill(taken))
		}},
		{"block zeroed after the stage's position", 5, func(t *testing.T, taken int) jetstream.JetStream {
			return jstest.DamagedStreamWith(t, cfg, jstest.ZeroFill, fill(taken))
		}},
		{"block cut short before the stage's position", 120, func(t *testing.T, taken int) jetstream.JetStream {
			return jstest.DamagedStreamWith(t, cfg, jstest.CutInHalf, fill(taken))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := tc.open(t, tc.taken)
			st, err := js.Stream(t.Context(), store.StreamIngestLog)
			if err != nil {
				t.Fatal(err)
			}
			// What the store cannot produce, asked message by message.
			var want []uint64
			for seq := uint64(1); seq <= batches; seq++ {
				if _, err := st.GetMsg(t.Context(), seq); errors.Is(err, jetstream.ErrMsgNotFound) {
					want = append(want, seq)
				} else if err != nil {
					t.Fatal(err)
				}
			}
			if len(want) == 0 {
				t.Fatal("the set-up lost nothing")
			}
			lost := 0
			for _, seq := range want {
				if seq > uint64(tc.taken) {
					lost++
				}
			}

			var logged bytes.Buffer
			m := telemetry.NewMetrics(prometheus.NewRegistry())
			r := &Router{js: js, o: Options{Metrics: m, Logger: slog.New(slog.NewJSONHandler(&logged, nil))}}
			r.reportIngestLoss(t.Context(), acceptDurable, startAt{policy: jetstream.DeliverAllPolicy})

			if got := testutil.ToFloat64(m.IngestLogLost); got != float64(lost) {
				t.Errorf("counted %v lost batches, want %d", got, lost)
			}
			if strings.Contains(logged.String(), payload[:20]) {
				t.Error("the log holds stored message content")
			}
			var seen uint64
			for line := range strings.Lines(logged.String()) {
				var rec struct {
					Level     string
					First     uint64 `json:"first_seq"`
					LastSeq   uint64 `json:"last_seq"`
					Batches   uint64
					AckAfter  string `json:"acknowledged_after"`
					AckBefore string `json:"acknowledged_before"`
				}
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if rec.Level != "ERROR" {
					t.Errorf("logged at %s: %s", rec.Level, line)
					continue
				}
				seen += rec.Batches
				if rec.LastSeq-rec.First+1 != rec.Batches || rec.First <= uint64(tc.taken) {
					t.Errorf("run %d-%d of %d batches: want a run after the stage's position %d", rec.First, rec.LastSeq, rec.Batches, tc.taken)
				}
				// The times either side are those of the batches stored there.
				for _, side := range []struct {
					seq uint64
					at  string
				}{{rec.First - 1, rec.AckAfter}, {rec.LastSeq + 1, rec.AckBefore}} {
					m, err := st.GetMsg(t.Context(), side.seq)
					switch {
					case errors.Is(err, jetstream.ErrMsgNotFound) || side.seq == 0:
						if side.at != "" {
							t.Errorf("time %q given for batch %d, which the store does not hold", side.at, side.seq)
						}
					case err != nil:
						t.Fatal(err)
					case side.at != m.Time.UTC().Format(time.RFC3339Nano):
						t.Errorf("time %q for batch %d, stored at %s", side.at, side.seq, m.Time.UTC().Format(time.RFC3339Nano))
					}
				}
			}
			if seen != uint64(lost) {
				t.Errorf("logged %d lost batches, want %d", seen, lost)
			}
		})
	}
}
