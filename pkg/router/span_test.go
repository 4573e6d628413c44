package router

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jstest"
)

// spanStream runs an embedded JetStream server with one stream holding
// inputs on t.in.<n> and markers on t._span.<stage>._m, and stores n
// inputs of one entry each (sequences 1..n).
func spanStream(t *testing.T, n int) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	js := jstest.Start(t, "span-test")
	st, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Duplicates: time.Minute})
	if err != nil {
		t.Fatalf("creating stream: %v", err)
	}
	addInputs(t, js, n)
	return js, st
}

func addInputs(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	for i := range n {
		if _, err := js.Publish(t.Context(), "t.in."+strconv.Itoa(i), []byte("x")); err != nil {
			t.Fatalf("storing input: %v", err)
		}
	}
}

func newTestSpanner(js jetstream.JetStream, st jetstream.Stream, l spanLimits) *spanner {
	return &spanner{js: js, st: st, marker: spanMarkerSubject("t", "stage"), input: "t.in.>", limits: l,
		count: func([]byte) int { return 1 }}
}

func claimSpan(t *testing.T, s *spanner, seq uint64) (span, []uint64, bool) {
	t.Helper()
	sp, in, covered, err := s.claim(t.Context(), seq, nil, []byte("x"))
	if err != nil {
		t.Fatalf("claim(%d): %v", seq, err)
	}
	var seqs []uint64
	for _, i := range in {
		seqs = append(seqs, i.seq)
	}
	return sp, seqs, covered
}

func TestSpanClaim(t *testing.T) {
	big := spanLimits{batches: 64, entries: 256, bytes: 1 << 20}
	tests := []struct {
		name   string
		limits spanLimits
		inputs int
		want   span
	}{
		{"takes every stored batch", big, 5, span{1, 5}},
		{"one batch alone", big, 1, span{1, 1}},
		{"batch limit", spanLimits{batches: 3, entries: 256, bytes: 1 << 20}, 5, span{1, 3}},
		{"entry limit", spanLimits{batches: 64, entries: 2, bytes: 1 << 20}, 5, span{1, 2}},
		{"byte limit", spanLimits{batches: 64, entries: 256, bytes: 3}, 5, span{1, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, st := spanStream(t, tt.inputs)
			s := newTestSpanner(js, st, tt.limits)
			sp, seqs, covered := claimSpan(t, s, 1)
			if covered || sp != tt.want {
				t.Fatalf("claim(1) = %v covered %v, want %v", sp, covered, tt.want)
			}
			if len(seqs) != int(tt.want.end-tt.want.start+1) || seqs[0] != 1 || seqs[len(seqs)-1] != tt.want.end {
				t.Errorf("inputs %v, want %d..%d", seqs, tt.want.start, tt.want.end)
			}
			// The batches inside the span are handled: this process and
			// any other acknowledge them without work.
			other := newTestSpanner(js, st, tt.limits)
			for seq := tt.want.start + 1; seq <= tt.want.end; seq++ {
				for _, p := range []*spanner{s, other} {
					if _, _, covered := claimSpan(t, p, seq); !covered {
						t.Errorf("batch %d not covered", seq)
					}
				}
			}
			// The next batch starts the next span.
			if tt.want.end < uint64(tt.inputs) {
				next, _, covered := claimSpan(t, other, tt.want.end+1)
				if covered || next.start != tt.want.end+1 {
					t.Errorf("claim(%d) = %v covered %v, want a new span there", tt.want.end+1, next, covered)
				}
			}
		})
	}
}

// A span's first batch handed to another process (the first crashed
// before acknowledging it) is the same span, even with more batches
// stored since, so its outputs are completed, not written again larger.
func TestSpanRetakenWhole(t *testing.T) {
	js, st := spanStream(t, 3)
	big := spanLimits{batches: 64, entries: 256, bytes: 1 << 20}
	first, _, _ := claimSpan(t, newTestSpanner(js, st, big), 1)
	addInputs(t, js, 4)
	again, seqs, covered := claimSpan(t, newTestSpanner(js, st, big), 1)
	if covered || again != first || len(seqs) != 3 {
		t.Fatalf("retaken span %v (inputs %v, covered %v), want %v with 3 inputs", again, seqs, covered, first)
	}
}

// Two processes that both judged a span new: the marker written second
// is refused (its expectation of the last marker is stale), whatever
// span it names, and claiming again takes the first one's span.
func TestSpanFixFenced(t *testing.T) {
	js, st := spanStream(t, 6)
	big := spanLimits{batches: 64, entries: 256, bytes: 1 << 20}
	a, b := newTestSpanner(js, st, big), newTestSpanner(js, st, big)
	ctx := context.Background()
	if got, err := a.fix(ctx, span{1, 3}, 0); err != nil || got != (span{1, 3}) {
		t.Fatalf("first fix = %v, %v", got, err)
	}
	for _, sp := range []span{{1, 6}, {2, 6}} {
		if got, err := b.fix(ctx, sp, 0); !errors.Is(err, errSpanRace) {
			t.Errorf("fix(%v) second = %v, %v; want errSpanRace", sp, got, err)
		}
	}
	if sp, seqs, covered := claimSpan(t, b, 1); covered || sp != (span{1, 3}) || len(seqs) != 3 {
		t.Errorf("claim(1) after the race = %v %v covered %v; want the first span", sp, seqs, covered)
	}
	if _, _, covered := claimSpan(t, b, 2); !covered {
		t.Error("batch 2 not covered by the first span")
	}
}

func TestFindSpan(t *testing.T) {
	js, st := spanStream(t, 4)
	big := spanLimits{batches: 2, entries: 256, bytes: 1 << 20}
	s := newTestSpanner(js, st, big)
	claimSpan(t, s, 1) // 1..2
	claimSpan(t, s, 3) // 3..4
	// Another stage's markers in between are not this one's.
	o := &spanner{js: js, st: st, marker: spanMarkerSubject("t", "other"), input: "t.in.>", limits: spanLimits{batches: 1, entries: 1, bytes: 1 << 20},
		count: func([]byte) int { return 1 }}
	claimSpan(t, o, 1)
	claimSpan(t, o, 2)
	for seq, want := range map[uint64]uint64{1: 1, 2: 1, 3: 3, 4: 4 - 1} {
		got, err := findSpan(t.Context(), st, s.marker, seq)
		if err != nil || got != want {
			t.Errorf("findSpan(%d) = %d, %v; want %d", seq, got, err, want)
		}
	}
	// Past every span: the batch is its own.
	if got, err := findSpan(t.Context(), st, s.marker, 99); err != nil || got != 99 {
		t.Errorf("findSpan(99) = %d, %v; want 99", got, err)
	}
	starts, err := findSpans(t.Context(), st, spanMarkerSubject("t", "*"), 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if starts["stage"] != 1 || starts["other"] != 2 || len(starts) != 2 {
		t.Errorf("findSpans(2) = %v, want stage:1 other:2", starts)
	}
}

// A route far behind the others: its span marker comes after thousands of
// the other routes' markers, and is still found.
func TestFindSpansFindsASlowRoute(t *testing.T) {
	js, st := spanStream(t, 1)
	mark := func(stage, start, end string) {
		m := nats.NewMsg(spanMarkerSubject("t", stage))
		m.Header.Set(headerSpanStart, start)
		m.Header.Set(headerSpanEnd, end)
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	mark("fast", "1", "1")
	for range maxSpanScan + 100 {
		mark("fast", "2", "2")
	}
	mark("slow", "1", "1")
	got, err := findSpans(t.Context(), st, spanMarkerSubject("t", "*"), 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got["slow"] != 1 || got["fast"] != 1 || len(got) != 2 {
		t.Errorf("findSpans = %v, want fast:1 slow:1", got)
	}
}

// A span holding nothing for the stage writes no marker: its batches are
// covered in this process, and the next relevant batch starts a span that
// is fixed as usual.
func TestSpanIrrelevantWritesNoMarker(t *testing.T) {
	js, st := spanStream(t, 3)
	s := newTestSpanner(js, st, spanLimits{batches: 64, entries: 256, bytes: 1 << 20})
	relevant := false
	s.relevant = func(nats.Header, []byte) bool { return relevant }
	if _, _, covered := claimSpan(t, s, 1); !covered {
		t.Fatal("a span with nothing for the stage was not covered")
	}
	if _, err := st.GetLastMsgForSubject(t.Context(), s.marker); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("marker written for an irrelevant span (err %v)", err)
	}
	if _, _, covered := claimSpan(t, s, 3); !covered {
		t.Error("batch 3 of the irrelevant span not covered")
	}
	relevant = true
	addInputs(t, js, 2) // sequences 4 and 5
	sp, seqs, covered := claimSpan(t, s, 4)
	if covered || sp != (span{4, 5}) || len(seqs) != 2 {
		t.Errorf("claim(4) = %v %v covered %v, want a fixed span 4..5", sp, seqs, covered)
	}
	if last, _, err := s.lastMarker(t.Context()); err != nil || last != (span{4, 5}) {
		t.Errorf("last marker %v, %v; want 4..5", last, err)
	}
}

// A stage that takes only some of the input subjects reads past the
// others: its span holds only its own batches, counts every batch read
// against the batch limit, and reads the same batches when taken again.
func TestSpanTakesOnlyItsSubjects(t *testing.T) {
	js := jstest.Start(t, "span-takes-test")
	st, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Duplicates: time.Minute})
	if err != nil {
		t.Fatalf("creating stream: %v", err)
	}
	// Sequences 1..8: a b b a a b a b.
	for i, who := range "abbaabab" {
		if _, err := js.Publish(t.Context(), "t.in."+string(who)+"."+strconv.Itoa(i), []byte("x")); err != nil {
			t.Fatalf("storing input: %v", err)
		}
	}
	takesA := func(subject string) bool { return len(subject) > 7 && subject[:7] == "t.in.a." }
	tests := []struct {
		name     string
		batches  int
		want     span
		wantSeqs []uint64
	}{
		{"every batch of its own", 64, span{1, 7}, []uint64{1, 4, 5, 7}},
		{"batch limit counts the others too", 4, span{1, 4}, []uint64{1, 4}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := spanLimits{batches: tt.batches, entries: 256, bytes: 1 << 20}
			s := &spanner{js: js, st: st, marker: spanMarkerSubject("t", "stage"+strconv.Itoa(i)), input: "t.in.>", takes: takesA,
				limits: l, count: func([]byte) int { return 1 }}
			sp, seqs, covered := claimSpan(t, s, 1)
			if covered || sp != tt.want || !slices.Equal(seqs, tt.wantSeqs) {
				t.Fatalf("claim(1) = %v inputs %v covered %v, want %v inputs %v", sp, seqs, covered, tt.want, tt.wantSeqs)
			}
			again := &spanner{js: js, st: st, marker: s.marker, input: s.input, takes: takesA, limits: l, count: s.count}
			sp, seqs, covered = claimSpan(t, again, 1)
			if covered || sp != tt.want || !slices.Equal(seqs, tt.wantSeqs) {
				t.Errorf("retaken claim(1) = %v inputs %v covered %v, want %v inputs %v", sp, seqs, covered, tt.want, tt.wantSeqs)
			}
		})
	}
}
