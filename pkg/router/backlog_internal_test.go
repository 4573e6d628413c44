package router

import (
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestBacklogRefusesFromLimitUntilNineTenths checks when an input is
// refused as its sampled backlog moves: from the limit, and on until it
// falls below four fifths of it, so answers do not flap at the boundary;
// inputs are limited each on their own backlog, and one a sample does not
// name on the backlog common to all.
func TestBacklogRefusesFromLimitUntilFourFifths(t *testing.T) {
	type sample struct {
		depth map[string]uint64
		other uint64
		// refused are the inputs refused after it; "x" stands for every
		// input the sample does not name.
		refused []string
	}
	tests := []struct {
		name    string
		limit   uint64
		samples []sample
	}{
		{"under the limit", 100, []sample{
			{depth: map[string]uint64{"pas": 99, "lab": 0}, refused: nil},
		}},
		{"at the limit, and on down to four fifths", 100, []sample{
			{depth: map[string]uint64{"pas": 100, "lab": 5}, refused: []string{"pas"}},
			{depth: map[string]uint64{"pas": 95, "lab": 5}, refused: []string{"pas"}},
			{depth: map[string]uint64{"pas": 80, "lab": 5}, refused: []string{"pas"}},
			{depth: map[string]uint64{"pas": 79, "lab": 5}, refused: nil},
			{depth: map[string]uint64{"pas": 95, "lab": 5}, refused: nil},
		}},
		{"the common backlog limits an input not named", 100, []sample{
			{depth: map[string]uint64{"pas": 120}, other: 120, refused: []string{"pas", "x"}},
			{depth: map[string]uint64{"pas": 120}, other: 10, refused: []string{"pas"}},
		}},
		{"an input first named while the common backlog refuses stays refused down to four fifths", 100, []sample{
			{depth: map[string]uint64{}, other: 150, refused: []string{"x"}},
			{depth: map[string]uint64{"pas": 85}, other: 85, refused: []string{"pas", "x"}},
		}},
		{"no limit", 0, []sample{
			{depth: map[string]uint64{"pas": 1 << 40}, other: 1 << 40, refused: nil},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := telemetry.NewMetrics(prometheus.NewRegistry())
			b := NewBacklog(tt.limit, slog.New(slog.DiscardHandler), m)
			for i, s := range tt.samples {
				b.update(s.depth, s.other)
				for _, src := range []string{"pas", "lab", "x"} {
					name := src
					if _, ok := s.depth[src]; !ok {
						name = "x"
					}
					want := slices.Contains(s.refused, name)
					err := b.refuse(src)
					if got := err != nil; got != want {
						t.Errorf("sample %d: %s refused %v, want %v", i, src, got, want)
					}
					if err == nil {
						continue
					}
					if fault.CodeOf(err) != fault.CodeBacklog || !fault.IsTransient(err) {
						t.Errorf("sample %d: %s refused with %v, want a transient %s", i, src, err, fault.CodeBacklog)
					}
					if !strings.Contains(err.Error(), "router.max_backlog") {
						t.Errorf("sample %d: %q does not name the setting", i, err)
					}
				}
				if d, ok := s.depth["pas"]; ok && tt.limit > 0 {
					if got := testutil.ToFloat64(m.Backlog.WithLabelValues("pas")); got != float64(d) {
						t.Errorf("sample %d: backlog_messages{pas} = %v, want %d", i, got, d)
					}
				}
			}
		})
	}
	var none *Backlog
	if err := none.refuse("pas"); err != nil {
		t.Errorf("nil backlog refused: %v", err)
	}
}

// TestBatchBacklogEstimate checks the estimate of a consumer's unfinished
// messages from its unfinished batches (200 of 8 messages, among other
// subjects' messages) behind an oldest batch that does not move, as a
// stalled stage leaves it: read every second, an oldest batch of 1 or of
// 64 would pull the mean towards its own size, and the estimate far from
// the count.
func TestBatchBacklogEstimate(t *testing.T) {
	js := jstest.Start(t, "backlog")
	ctx := t.Context()
	batch := func(n int) []byte {
		frames := make([]frame, n)
		for i := range frames {
			frames[i] = frame{payload: []byte("MSH|^~\\&|PAS|RX1|||20261123093000||ADT^A01|C" + strconv.Itoa(i) + "|P|2.4\r")}
		}
		return ingestFormat.encode(frames)
	}
	for _, oldest := range []int{1, 64} {
		t.Run("oldest batch of "+strconv.Itoa(oldest), func(t *testing.T) {
			name := "T" + strconv.Itoa(oldest)
			st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(ctx, name+".b", batch(oldest)); err != nil {
				t.Fatal(err)
			}
			for i := range 200 {
				if _, err := js.Publish(ctx, name+".b", batch(8)); err != nil {
					t.Fatal(err)
				}
				for range i % 3 {
					if _, err := js.Publish(ctx, name+".other", []byte("x")); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", FilterSubject: name + ".b", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Info(ctx); err != nil { // refreshes CachedInfo
				t.Fatal(err)
			}
			want := float64(oldest + 200*8)
			z := newBatchSizes(rand.New(rand.NewPCG(1, 2)))
			var got uint64
			for range 60 {
				if got, err = z.backlog(ctx, js, st, "c"); err != nil {
					t.Fatal(err)
				}
			}
			if math.Abs(float64(got)-want) > want/10 {
				t.Errorf("estimate %d after 60 samples, want within a tenth of %v", got, want)
			}
			if n, err := z.backlog(ctx, js, st, "no-such-consumer"); n != 0 || err != nil {
				t.Errorf("a consumer that does not exist: %d, %v; want 0, nil", n, err)
			}
		})
	}
}
