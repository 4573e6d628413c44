package jserr

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jstest"
)

// TestExpiryAtTheHeadIsNotDamage: messages that leave a stream's head by
// its limits (max_msgs, max_bytes) after a reader read its state, and
// before it asked for them, are not damage: damageFrom, placeByTime and
// skipped, given the state read before they left, name no run. Before,
// each took them for messages the store counts but cannot produce, and
// reconcile, find and trails said so and exited 1.
func TestExpiryAtTheHeadIsNotDamage(t *testing.T) {
	const kept, more = 10, 4
	limits := []struct {
		name  string
		limit func(cfg *jetstream.StreamConfig, s jetstream.StreamState)
	}{
		{"max_msgs", func(cfg *jetstream.StreamConfig, s jetstream.StreamState) { cfg.MaxMsgs = int64(s.Msgs) }},
		{"max_bytes", func(cfg *jetstream.StreamConfig, s jetstream.StreamState) { cfg.MaxBytes = int64(s.Bytes) }},
	}
	readers := []struct {
		name string
		// read reads st from its head with the stale state, giving runs
		// it takes for damage to unreadable.
		read func(t *testing.T, st jetstream.Stream, stale jetstream.StreamState, unreadable func(Run) error)
	}{
		{"skipped", func(t *testing.T, st jetstream.Stream, stale jetstream.StreamState, unreadable func(Run) error) {
			if err := skipped(t.Context(), st, stale, stale.FirstSeq, stale.LastSeq, time.Time{}, time.Time{}, unreadable); err != nil {
				t.Fatalf("skipped: %v", err)
			}
		}},
		{"damageFrom", func(t *testing.T, st jetstream.Stream, stale jetstream.StreamState, unreadable func(Run) error) {
			// No damage: an error saying so, and no run.
			if run, _, err := damageFrom(t.Context(), st, stale, nil, stale.FirstSeq, time.Time{}); err == nil {
				_ = unreadable(run)
			}
		}},
		{"placeByTime", func(t *testing.T, st jetstream.Stream, stale jetstream.StreamState, unreadable func(Run) error) {
			start := stale.FirstTime.Add(-time.Hour)
			cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start}
			at, err := placeByTime(t.Context(), st, stale, cfg, unreadable)
			if err != nil {
				t.Fatalf("placeByTime: %v", err)
			}
			if at != more+1 {
				t.Errorf("placed at %d, want %d, the first message kept", at, more+1)
			}
		}},
	}
	for _, lim := range limits {
		for _, rd := range readers {
			t.Run(lim.name+"/"+rd.name, func(t *testing.T) {
				js := jstest.Start(t, "expiry")
				cfg := jetstream.StreamConfig{Name: "EXP", Subjects: []string{"e.>"}}
				st, err := js.CreateStream(t.Context(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				publish := func(n int) {
					for i := range n {
						if _, err := js.Publish(t.Context(), fmt.Sprintf("e.%d", i%2), []byte(strings.Repeat("x", 200))); err != nil {
							t.Fatal(err)
						}
					}
				}
				publish(kept)
				stale, err := streamState(t.Context(), st)
				if err != nil {
					t.Fatal(err)
				}
				// The stream keeps what it holds now: each message more
				// takes one from its head.
				lim.limit(&cfg, stale)
				if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
					t.Fatal(err)
				}
				publish(more)
				info, err := st.Info(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if info.State.FirstSeq != more+1 || stale.FirstSeq != 1 {
					t.Fatalf("the set-up's stream starts at %d, its stale state at %d: want %d and 1", info.State.FirstSeq, stale.FirstSeq, more+1)
				}
				var runs []Run
				rd.read(t, st, stale, func(r Run) error { runs = append(runs, r); return nil })
				if len(runs) != 0 {
					t.Errorf("runs %v taken for damage: they expired", runs)
				}
			})
		}
	}
}
