package jserr_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/jstest"
)

// idleFetches is how many empty fetches a read makes, 100 ms apart,
// before it takes the store for not answering (5 s).
const idleFetches = 50

// TestScanLearnsDamageWithoutWaiting: a reader meeting messages the store
// counts but cannot produce (a compressed block cut short) learns so
// from the store at its first empty fetch, instead of fetching again for
// 5 s as it would from a store not answering. Scan's error still says
// no progress, and where the files are damaged.
func TestScanLearnsDamageWithoutWaiting(t *testing.T) {
	js := jstest.DamagedBlocks(t, jetstream.StreamConfig{Name: "DMG", Subjects: []string{"d.>"}, Compression: jetstream.S2Compression},
		jstest.CutInHalf, func(js jetstream.JetStream) {
			for i := range 220 {
				if _, err := js.Publish(t.Context(), fmt.Sprintf("d.%d", i), []byte(strings.Repeat("x", 400))); err != nil {
					t.Fatal(err)
				}
			}
		}, 1, 3)
	st, err := js.Stream(t.Context(), "DMG")
	if err != nil {
		t.Fatal(err)
	}
	// The first readable message after the first damaged block.
	var readable uint64
	for seq := uint64(1); readable == 0 && seq <= 220; seq++ {
		if _, err := st.GetMsg(t.Context(), seq); err == nil {
			readable = seq
		}
	}
	if readable <= 1 {
		t.Fatalf("first readable message %d: want one after the damaged first block", readable)
	}
	tests := []struct {
		name string
		cfg  jetstream.OrderedConsumerConfig
		want string // the message the error names as unreadable
		read bool   // whether messages come before the damage
	}{
		{"from the first message", jetstream.OrderedConsumerConfig{}, "message 1 of", false},
		{"filtered, from the first message", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"d.>"}}, "", false},
		{"from after the first damaged block, to the second", jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: readable}, "cannot read it", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fc := &jstest.FetchCounter{Stream: st}
			n := 0
			err := jserr.Scan(t.Context(), fc, tc.cfg, 1000, func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error) {
				n++
				return false, nil
			})
			if !errors.Is(err, jserr.ErrNoProgress) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Scan = %v, want no progress, naming %q", err, tc.want)
			}
			if (n > 0) != tc.read {
				t.Errorf("read %d messages before the damage, want some: %v", n, tc.read)
			}
			if f := fc.Fetches.Load(); f >= idleFetches {
				t.Errorf("%d fetches: the read waited for messages the store said it cannot produce", f)
			}
		})
	}
}

// TestScanWaitsForASlowStore: a reader whose first fetches come back
// empty from a store that holds the messages (a slow store, not a
// damaged one) keeps reading and reads them all.
func TestScanWaitsForASlowStore(t *testing.T) {
	js := jstest.Start(t, "slow")
	st, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SLOW", Subjects: []string{"s.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := js.Publish(t.Context(), fmt.Sprintf("s.%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, cfg := range []jetstream.OrderedConsumerConfig{{}, {FilterSubjects: []string{"s.>"}}} {
		t.Run(fmt.Sprintf("filters %v", cfg.FilterSubjects), func(t *testing.T) {
			n := 0
			err := jserr.Scan(t.Context(), &jstest.FetchCounter{Stream: st, Slow: 3}, cfg, 1000, func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error) {
				n++
				return false, nil
			})
			if err != nil || n != 20 {
				t.Errorf("Scan read %d of 20: %v", n, err)
			}
		})
	}
}
