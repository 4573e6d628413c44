package jserr_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/jstest"
)

// TestScanPastDamagedRuns: a read past damage (the first and third of
// four blocks cut short) gives each run of messages the store counts but
// cannot produce, with when the messages around it were stored, and
// reads every other message on its filter once, in order: unfiltered,
// filtered on one of two subjects written in turn, and from a start
// time just after the first run. Each run is learnt from the store, not by
// waiting 5 s for messages that never come.
func TestScanPastDamagedRuns(t *testing.T) {
	const msgs = 220
	js := jstest.DamagedBlocks(t, jetstream.StreamConfig{Name: "DMG", Subjects: []string{"d.>"}, Compression: jetstream.S2Compression},
		jstest.CutInHalf, func(js jetstream.JetStream) {
			for i := range msgs {
				if _, err := js.Publish(t.Context(), fmt.Sprintf("d.%d", i%2), []byte(strings.Repeat("x", 400))); err != nil {
					t.Fatal(err)
				}
			}
		}, 1, 3)
	st, err := js.Stream(t.Context(), "DMG")
	if err != nil {
		t.Fatal(err)
	}
	// What the store can produce, by sequence, and the runs it cannot.
	stored := map[uint64]*jetstream.RawStreamMsg{}
	var runs []jserr.Run
	for seq := uint64(1); seq <= msgs; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		switch {
		case err == nil:
			stored[seq] = m
			if n := len(runs); n > 0 && runs[n-1].Last == seq-1 {
				runs[n-1].Before = m.Time
			}
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			t.Fatal(err)
		case len(runs) > 0 && runs[len(runs)-1].Last == seq-1:
			runs[len(runs)-1].Last = seq
		default:
			r := jserr.Run{First: seq, Last: seq}
			if p := stored[seq-1]; p != nil {
				r.After = p.Time
			}
			runs = append(runs, r)
		}
	}
	if len(runs) != 2 || runs[0].First != 1 || runs[1].Last >= msgs {
		t.Fatalf("the set-up's unreadable runs %v: want two, the first from 1, the second before %d", runs, msgs)
	}
	startTime := stored[runs[0].Last+1].Time
	tests := []struct {
		name string
		cfg  jetstream.OrderedConsumerConfig
		from uint64 // the first sequence the read is to give
		runs []jserr.Run
	}{
		{"unfiltered", jetstream.OrderedConsumerConfig{}, 1, runs},
		{"filtered", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"d.1"}}, 1, runs},
		// The store places a reader by time past the run just before the
		// start, whose times it cannot know: it is given too.
		{"by start time", jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &startTime},
			runs[0].Last + 1, runs},
		{"filtered, by start time", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"d.0"},
			DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &startTime}, runs[0].Last + 1, runs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want []uint64
			for seq := tc.from; seq <= msgs; seq++ {
				if m := stored[seq]; m != nil && jserr.SubjectMatches(tc.cfg.FilterSubjects, m.Subject) {
					want = append(want, seq)
				}
			}
			fc := &jstest.FetchCounter{Stream: st}
			got, gotRuns := scanPast(t, fc, tc.cfg)
			if !slices.EqualFunc(gotRuns, tc.runs, sameRun) {
				t.Errorf("runs %v, want %v", gotRuns, tc.runs)
			}
			if !slices.Equal(got, want) {
				t.Errorf("read %v, want %v", got, want)
			}
			if f := fc.Fetches.Load(); f >= idleFetches {
				t.Errorf("%d fetches: the read waited for messages the store said it cannot produce", f)
			}
		})
	}
}

// scanPast reads st with jserr.ScanPast and cfg, and returns the
// sequences it read and the runs it was given, failing the test on an
// error.
func scanPast(t *testing.T, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig) ([]uint64, []jserr.Run) {
	t.Helper()
	var got []uint64
	var runs []jserr.Run
	err := jserr.ScanPast(t.Context(), st, cfg, 1000, func(_ jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		got = append(got, md.Sequence.Stream)
		return false, nil
	}, func(r jserr.Run) error {
		runs = append(runs, r)
		return nil
	})
	if err != nil {
		t.Fatalf("ScanPast: %v", err)
	}
	return got, runs
}

func sameRun(a, b jserr.Run) bool {
	return a.First == b.First && a.Last == b.Last && a.After.Equal(b.After) && a.Before.Equal(b.Before)
}

// TestScanPastStopsOnUnreadableError: an error from unreadable ends the
// read, returned as it is.
func TestScanPastStopsOnUnreadableError(t *testing.T) {
	js := jstest.DamagedStream(t, jetstream.StreamConfig{Name: "DMG", Subjects: []string{"d.>"}}, func(js jetstream.JetStream) {
		for range 150 {
			if _, err := js.Publish(t.Context(), "d.x", []byte(strings.Repeat("x", 400))); err != nil {
				t.Fatal(err)
			}
		}
	})
	st, err := js.Stream(t.Context(), "DMG")
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	read := 0
	err = jserr.ScanPast(t.Context(), st, jetstream.OrderedConsumerConfig{}, 1000, func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error) {
		read++
		return false, nil
	}, func(jserr.Run) error { return stop })
	if err != stop || read != 0 {
		t.Errorf("ScanPast = %v after %d read, want the unreadable callback's error before any", err, read)
	}
}

// TestMergeRunsKeepsTheTimesAround: merged runs keep when the messages
// before the first and after the furthest were stored.
func TestMergeRunsKeepsTheTimesAround(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(s), 0) }
	r := func(first, last uint64) jserr.Run {
		return jserr.Run{First: first, Last: last, After: at(int(first) - 1), Before: at(int(last) + 1)}
	}
	tests := []struct {
		name string
		in   []jserr.Run
		want []jserr.Run
	}{
		{"apart, out of order", []jserr.Run{r(10, 12), r(1, 4)}, []jserr.Run{r(1, 4), r(10, 12)}},
		{"touching", []jserr.Run{r(5, 9), r(1, 4)}, []jserr.Run{r(1, 9)}},
		{"one within another", []jserr.Run{r(1, 72), r(10, 20)}, []jserr.Run{r(1, 72)}},
		{"the same twice", []jserr.Run{r(1, 72), r(1, 72)}, []jserr.Run{r(1, 72)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := jserr.MergeRuns(tc.in); !slices.EqualFunc(got, tc.want, sameRun) {
				t.Errorf("MergeRuns(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// TestScanPastOverwrittenRecord: a reader of the whole stream passes
// over a record overwritten in an uncompressed last block without
// stalling: the store counts the message but cannot produce it, and has
// not deleted it. ScanPast gives it as a run all the same, with the times
// around it, read unfiltered or filtered on all of the stream's
// subjects, whether the record is in the middle of the stream or is its
// last message (the one being written when a disk fails), which the
// reader passes over at the end of its read: that run was stored by the
// time the stream's state gives for its last message. Before, the read
// passed over it without a word.
func TestScanPastOverwrittenRecord(t *testing.T) {
	const msgs = 13
	for _, damage := range []struct {
		name string
		fn   jstest.Damage
		last bool // the stream's last message is the one overwritten
	}{
		{"in the middle", jstest.OverwriteMiddle, false},
		{"the last message", jstest.OverwriteEnd, true},
	} {
		t.Run(damage.name, func(t *testing.T) {
			js := jstest.DamagedLastBlock(t, jetstream.StreamConfig{Name: "DMG", Subjects: []string{"d.>"}}, damage.fn, func(js jetstream.JetStream) {
				for i := range msgs {
					if _, err := js.Publish(t.Context(), fmt.Sprintf("d.%d", i%2), []byte(strings.Repeat("x", 8000))); err != nil {
						t.Fatal(err)
					}
				}
			})
			st, err := js.Stream(t.Context(), "DMG")
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(t.Context(), jetstream.WithDeletedDetails(true))
			if err != nil {
				t.Fatal(err)
			}
			var want []uint64
			var runs []jserr.Run
			var prev time.Time
			for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
				m, err := st.GetMsg(t.Context(), seq)
				n := len(runs)
				switch {
				case err == nil:
					want = append(want, seq)
					if n > 0 && runs[n-1].Last == seq-1 {
						runs[n-1].Before = m.Time
					}
					prev = m.Time
				case !errors.Is(err, jetstream.ErrMsgNotFound) || slices.Contains(info.State.Deleted, seq):
					t.Fatalf("message %d: %v (deleted %v): want each read or counted but unreadable", seq, err, info.State.Deleted)
				case n > 0 && runs[n-1].Last == seq-1:
					runs[n-1].Last = seq
				default:
					runs = append(runs, jserr.Run{First: seq, Last: seq, After: prev})
				}
			}
			if len(runs) == 0 {
				t.Fatalf("the set-up left every message readable: %+v", info.State)
			}
			if isLast := runs[len(runs)-1].Last == info.State.LastSeq; isLast != damage.last {
				t.Fatalf("the set-up's unreadable runs %v of %d messages: the last among them %v, want %v", runs, info.State.LastSeq, isLast, damage.last)
			}
			if damage.last {
				// Stored when the state says the last message was.
				runs[len(runs)-1].Before = info.State.LastTime
			}
			for _, filters := range [][]string{nil, {"d.>"}} {
				t.Run(fmt.Sprint("filters ", filters), func(t *testing.T) {
					got, gotRuns := scanPast(t, st, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
					if !slices.EqualFunc(jserr.MergeRuns(gotRuns), runs, sameRun) {
						t.Errorf("runs %v, want %v", gotRuns, runs)
					}
					if !slices.Equal(got, want) {
						t.Errorf("read %v, want %v", got, want)
					}
				})
			}
		})
	}
}
