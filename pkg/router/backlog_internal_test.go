package router

import (
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
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

// TestBatchBacklogEstimate checks the batch pipeline's count of a
// route's backlog on the ingest log: 300 group-commit batches of 1 to 6
// messages, accepted in batches of which one read ahead over 70 of them
// (so accepted batches hold from 6 to 245 messages), the route finished
// to the one covering batch 120 and the accept stage to batch 250; and
// the backlog of a quiet input beside it.
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
	lst, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: store.StreamIngestLog, Subjects: []string{store.SubjIngestLog + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	ist, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: store.StreamIngress, Subjects: []string{store.SubjIngress + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	sizes := make([]int, 301) // by ingest-log sequence
	for seq := 1; seq <= 300; seq++ {
		sizes[seq] = 1 + seq%6
		if _, err := js.Publish(ctx, store.SubjIngestLog+".0", batch(sizes[seq])); err != nil {
			t.Fatal(err)
		}
	}
	sum := func(from, to int) (n int) {
		for seq := from; seq <= to; seq++ {
			n += sizes[seq]
		}
		return n
	}
	for _, covered := range []uint64{50, 120, 121, 200, 300} {
		if _, err := js.Publish(ctx, AcceptedSubject("pas", covered), batch(1)); err != nil {
			t.Fatal(err)
		}
	}
	// A quiet input: one message in ingest-log batch 10, finished, and
	// one in batch 290, not.
	for _, covered := range []uint64{10, 290} {
		if _, err := js.Publish(ctx, AcceptedSubject("lab", covered), batch(1)); err != nil {
			t.Fatal(err)
		}
	}
	consume := func(st jetstream.Stream, durable string, filters []string, n int) {
		t.Helper()
		c, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: durable, FilterSubjects: filters, AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		msgs, err := c.Fetch(n)
		if err != nil {
			t.Fatal(err)
		}
		for m := range msgs.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	consume(ist, "route-done-b", acceptedFilters("pas"), 2) // to the batch covering 120
	consume(ist, "route-new-b", acceptedFilters("pas"), 0)
	consume(ist, "route-all-b", acceptedFilters("pas"), 5)
	consume(ist, "route-lab-b", acceptedFilters("lab"), 1)
	consume(lst, acceptDurable, []string{ingestLogBatches}, 250)
	if _, err := lst.Info(ctx); err != nil { // refreshes CachedInfo
		t.Fatal(err)
	}
	z := newBatchSizes(rand.New(rand.NewPCG(1, 2)))
	for range 60 {
		z.sample(ctx, lst)
	}
	tests := []struct {
		durable  string
		finished uint64 // noBacklog for none
		want     int
	}{
		{"route-done-b", 120, sum(121, 300)},
		// Nothing finished: from the first unfinished batch's last
		// ingest-log batch (an undercount by what it read ahead).
		{"route-new-b", 49, sum(50, 300)},
		// Not counted from its last finished batch (10): pas's
		// messages since then are not the lab's backlog.
		{"route-lab-b", 289, sum(290, 300)},
		{"route-all-b", noBacklog, 0},
		{"no-such-consumer-b", noBacklog, 0},
	}
	for _, tt := range tests {
		t.Run(tt.durable, func(t *testing.T) {
			from, at, err := routeFinishedTo(ctx, js, ist, tt.durable)
			if err != nil {
				t.Fatal(err)
			}
			if from != tt.finished {
				t.Fatalf("finished to %d, want %d", from, tt.finished)
			}
			if from == noBacklog {
				return
			}
			if age := time.Since(at); age < 0 || age > time.Minute {
				t.Errorf("first unfinished batch stored %v ago, want its time", age)
			}
			if got := float64(z.messages(300 - from)); math.Abs(got-float64(tt.want)) > float64(tt.want)/5 {
				t.Errorf("estimate %v, want within a fifth of %d", got, tt.want)
			}
		})
	}
	info, _, err := pendingOf(ctx, js, store.StreamIngestLog, acceptDurable)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := float64(z.messages(300-info.AckFloor.Stream)), float64(sum(251, 300)); math.Abs(got-want) > want/5 {
		t.Errorf("accept stage's backlog estimated %v, want within a fifth of %v", got, want)
	}
}
