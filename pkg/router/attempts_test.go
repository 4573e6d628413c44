package router

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/propagation"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/logtest"
	"github.com/junction-fhir/junction/pkg/route"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// scripted is a destination that answers each send with the next error
// of its script (nil: delivered) and counts the sends.
type scripted struct {
	mu    sync.Mutex
	errs  []error
	sends int
	last  adapter.Delivery
}

func (s *scripted) Start(context.Context) error    { return nil }
func (s *scripted) Shutdown(context.Context) error { return nil }

func (s *scripted) Send(_ context.Context, d *adapter.Delivery) (adapter.Receipt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sends++
	s.last = *d
	if len(s.errs) == 0 {
		return adapter.Receipt{Status: "200"}, nil
	}
	err := s.errs[0]
	s.errs = s.errs[1:]
	return adapter.Receipt{}, err
}

func deliveryRouter(t *testing.T) (*Router, jetstream.JetStream) {
	t.Helper()
	js := testStore(t)
	r := &Router{o: Options{Metrics: telemetry.NewMetrics(prometheus.NewRegistry()), Logger: slog.New(slog.DiscardHandler)},
		js: js, audit: audit.NewWriter(js), failLog: newLogLimiter(failLogInterval), prop: propagation.TraceContext{}}
	return r, js
}

func outboundHeader(id string) nats.Header {
	h := nats.Header{}
	h.Set(envelope.HeaderID, id)
	h.Set(envelope.HeaderRoute, "adt")
	h.Set(envelope.HeaderPartition, "0")
	return h
}

// TestDeliveryCarriesReceipt: a destination is told when the message was
// received, from the outbound message's header (a replay's is the
// original's), so it can tell an older message from a newer one.
func TestDeliveryCarriesReceipt(t *testing.T) {
	r, _ := deliveryRouter(t)
	out := &scripted{}
	d := &Destination{Name: "ehr", Out: out,
		Retry: Retry{MaxAttempts: 1, Initial: time.Millisecond, Max: time.Millisecond, Multiplier: 1, Timeout: time.Second}}
	at := time.Date(2024, 7, 16, 9, 15, 0, 123456789, time.UTC)
	h := outboundHeader("01AAAAAAAAAAAAAAAAAAAAAAAA")
	h.Set(envelope.HeaderReceived, at.Format(time.RFC3339Nano))
	if _, _, err := deliverPayload(t.Context(), r, d, h, []byte("payload"), 7, attempts{}); err != nil {
		t.Fatal(err)
	}
	if !out.last.ReceivedAt.Equal(at) {
		t.Errorf("delivery ReceivedAt %v, want %v", out.last.ReceivedAt, at)
	}
}

// attemptsOnTrail is r.attemptsMade, failing t when the trail cannot be
// read.
func attemptsOnTrail(t *testing.T, r *Router, id, rt, dest string, seq uint64) attempts {
	t.Helper()
	a, err := r.attemptsMade(t.Context(), id, rt, dest, seq)
	if err != nil {
		t.Fatalf("counting the attempts of %s: %v", id, err)
	}
	return a
}

func unavailable() error {
	return &fault.Error{Code: fault.CodeDestUnavailable, Class: fault.Transient, Msg: "fhir: server answered 503"}
}

// TestAttemptsMadeArePerMessage: the failures of two messages at the same
// route, destination and attempt number are both on their own trails and
// counted for each (a dedupe id without the message dropped all but the
// first).
func TestAttemptsMadeArePerMessage(t *testing.T) {
	r, _ := deliveryRouter(t)
	d := &Destination{Name: "ehr", Out: &scripted{},
		Retry: Retry{MaxAttempts: 1000, Initial: 5 * time.Millisecond, Max: 5 * time.Millisecond, Multiplier: 1, Timeout: time.Second}}
	ctx, cancel := context.WithCancel(t.Context())
	for _, id := range []string{"01AAAAAAAAAAAAAAAAAAAAAAAA", "01BBBBBBBBBBBBBBBBBBBBBBBB"} {
		// Failed attempts, until shutdown interrupts the retries.
		d.Out.(*scripted).errs = slices.Repeat([]error{unavailable()}, 1000)
		go func() { time.Sleep(50 * time.Millisecond); cancel() }()
		_, now, err := deliverPayload(ctx, r, d, outboundHeader(id), []byte("payload"), 7, attempts{})
		if err == nil {
			t.Fatalf("%s: delivered, want interrupted", id)
		}
		if now.made < 2 {
			t.Fatalf("%s: %d attempts made, want at least 2", id, now.made)
		}
		if got := attemptsOnTrail(t, r, id, "adt", "ehr", 7); got.made != now.made || got.last == nil || got.last.Outcome != "transient" {
			t.Errorf("%s: the trail counts %d attempts (last %+v), want the %d made", id, got.made, got.last, now.made)
		}
		if got := attemptsOnTrail(t, r, id, "adt", "ehr", 8); got.made != 0 {
			t.Errorf("%s: another payload (a replay's) counts %d attempts, want 0", id, got.made)
		}
		ctx, cancel = context.WithCancel(t.Context())
	}
	cancel()
}

// TestDecidedPayloadIsNotSentAgain: a payload delivered again after its
// fate was decided (its retries used up, or a permanent failure) is
// dead-lettered once more without a send, under the same dead letter.
func TestDecidedPayloadIsNotSentAgain(t *testing.T) {
	policy := Retry{MaxAttempts: 3, Initial: time.Millisecond, Max: time.Millisecond, Multiplier: 1, Timeout: time.Second}
	tests := []struct {
		name       string
		last       audit.Record
		made       int
		wantReason string
	}{
		{"retries used up", audit.Record{Event: audit.Failed, Outcome: "transient", Reason: "fhir: server answered 503", Code: string(fault.CodeDestUnavailable)}, 3,
			"gave up after 3 attempts; the last: fhir: server answered 503"},
		{"permanent failure", audit.Record{Event: audit.Failed, Outcome: "permanent", Reason: "fhir: server answered 400", Code: string(fault.CodeDestRejected)}, 1,
			"fhir: server answered 400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, js := deliveryRouter(t)
			out := &scripted{}
			d := &Destination{Name: "ehr", Out: out, Retry: policy}
			prior := attempts{made: tt.made, last: &tt.last}
			for range 2 { // redelivered twice
				recs, _, err := deliverPayload(t.Context(), r, d, outboundHeader("01CCCCCCCCCCCCCCCCCCCCCCCC"), []byte("payload"), 9, prior)
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) != 1 || recs[0].Event != audit.DeadLettered || recs[0].Reason != tt.wantReason {
					t.Errorf("records %+v, want one dead_lettered with reason %q", recs, tt.wantReason)
				}
			}
			if out.sends != 0 {
				t.Errorf("sent %d times, want none", out.sends)
			}
			st, err := js.Stream(t.Context(), store.StreamDeadLetter)
			if err != nil {
				t.Fatal(err)
			}
			if n := st.CachedInfo().State.Msgs; n != 1 {
				t.Errorf("%d dead letters, want 1", n)
			}
		})
	}
}

// TestDecidedAfterDecidingAgain: a payload decided again (consent changed
// while it waited) whose attempts then ran out before a restart is
// dead-lettered after it with the payload those attempts sent, not the
// one first queued; one whose new payload is no longer stored keeps the
// queued one.
func TestDecidedAfterDecidingAgain(t *testing.T) {
	policy := Retry{MaxAttempts: 2, Initial: time.Millisecond, Max: time.Millisecond, Multiplier: 1, Timeout: time.Second}
	tests := []struct {
		name     string
		removed  bool
		wantBody string
	}{
		{"new payload stored", false, "decided again"},
		{"new payload gone", true, "queued"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, js := deliveryRouter(t)
			out := &scripted{}
			d := &Destination{Name: "ehr", Out: out, Retry: policy}
			id := "01DDDDDDDDDDDDDDDDDDDDDDDD"
			m := nats.NewMsg(redecidedSubject(d.Name))
			m.Header = outboundHeader(id)
			m.Header.Set(envelope.HeaderReplay, "recheck.ehr.9")
			m.Data = []byte("decided again")
			ack, err := js.PublishMsg(t.Context(), m)
			if err != nil {
				t.Fatal(err)
			}
			if tt.removed {
				st, err := js.Stream(t.Context(), store.StreamOutbound)
				if err != nil {
					t.Fatal(err)
				}
				if err := st.DeleteMsg(t.Context(), ack.Sequence); err != nil {
					t.Fatal(err)
				}
			}
			last := audit.Record{MessageID: id, Route: "adt", Destination: d.Name, Seq: 9, SentSeq: ack.Sequence,
				Event: audit.Failed, Outcome: "transient", Reason: "fhir: server answered 503", Code: string(fault.CodeDestUnavailable)}
			recs, _, err := deliverPayload(t.Context(), r, d, outboundHeader(id), []byte("queued"), 9, attempts{made: 2, last: &last})
			if err != nil {
				t.Fatal(err)
			}
			if out.sends != 0 {
				t.Errorf("sent %d times, want none", out.sends)
			}
			if len(recs) != 1 || recs[0].Event != audit.DeadLettered {
				t.Fatalf("records %+v, want one dead_lettered", recs)
			}
			if got, want := recs[0].Hash, audit.Hash([]byte(tt.wantBody)); got != want {
				t.Errorf("dead letter record's hash %s, want the hash of %q", got, tt.wantBody)
			}
			dst, err := js.Stream(t.Context(), store.StreamDeadLetter)
			if err != nil {
				t.Fatal(err)
			}
			dl, err := dst.GetMsg(t.Context(), recs[0].Seq)
			if err != nil {
				t.Fatal(err)
			}
			if string(dl.Data) != tt.wantBody {
				t.Errorf("dead letter holds %q, want %q", dl.Data, tt.wantBody)
			}
		})
	}
}

// TestRouteBacklogGauges: the route gauges count the stored messages a
// route's consumers have not finished (a batch pipeline's on the ingest
// log, from the first its first unfinished accepted batch covers) and the
// oldest one's age; a finished route reads 0.
func TestRouteBacklogGauges(t *testing.T) {
	for _, pipeline := range []string{PipelineBatch, PipelineMessage} {
		t.Run(pipeline, func(t *testing.T) {
			r, js := deliveryRouter(t)
			r.o.Pipeline = pipeline
			r.o.Routes = []*route.Route{{Name: "adt"}, {Name: "idle"}}
			ctx := t.Context()
			durable, filter := "route-adt-b", ownAccepted("pas")
			if pipeline == PipelineMessage {
				durable, filter = "route-adt-p0", IngressSubject("pas", 0)
			}
			if _, err := js.CreateOrUpdateConsumer(ctx, store.StreamIngress, jetstream.ConsumerConfig{Durable: durable, FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
				t.Fatal(err)
			}
			envs := []*envelope.Envelope{{ID: "01A", Source: "pas", Raw: []byte("a")}, {ID: "01B", Source: "pas", Raw: []byte("b")}, {ID: "01C", Source: "pas", Raw: []byte("c")}}
			if pipeline == PipelineBatch {
				data, err := encodeBatch(envs)
				if err != nil {
					t.Fatal(err)
				}
				// Four group-commit batches of three on the ingest log,
				// accepted in two batches covering two each; the
				// route counts from the first batch the first
				// unfinished accepted batch covers (read ahead or not).
				frames := make([]frame, 3)
				for i := range frames {
					frames[i] = frame{payload: []byte("m")}
				}
				for range 4 {
					if _, err := js.Publish(ctx, store.SubjIngestLog+".0", ingestFormat.encode(frames)); err != nil {
						t.Fatal(err)
					}
				}
				for _, covered := range []uint64{2, 4} {
					if _, err := js.Publish(ctx, AcceptedSubject("pas", covered), data); err != nil {
						t.Fatal(err)
					}
				}
				// The accept stage has not finished batch 4: a route
				// with nothing unfinished (idle) waits for it.
				c, err := js.CreateOrUpdateConsumer(ctx, store.StreamIngestLog, jetstream.ConsumerConfig{Durable: acceptDurable, AckPolicy: jetstream.AckExplicitPolicy})
				if err != nil {
					t.Fatal(err)
				}
				msgs, err := c.Fetch(3)
				if err != nil {
					t.Fatal(err)
				}
				for m := range msgs.Messages() {
					if err := m.DoubleAck(ctx); err != nil {
						t.Fatal(err)
					}
				}
				// A replay, which the partition consumer takes in this
				// pipeline too.
				if _, err := js.CreateOrUpdateConsumer(ctx, store.StreamIngress, jetstream.ConsumerConfig{Durable: "route-adt-p0", FilterSubject: IngressSubject("pas", 0), AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
					t.Fatal(err)
				}
				if _, err := js.Publish(ctx, IngressSubject("pas", 0), []byte("m")); err != nil {
					t.Fatal(err)
				}
			} else {
				for range 3 {
					if _, err := js.Publish(ctx, IngressSubject("pas", 0), []byte("m")); err != nil {
						t.Fatal(err)
					}
				}
			}
			want := map[string]float64{"adt": 3, "idle": 0}
			if pipeline == PipelineBatch {
				want["adt"] = 10 // ingest-log batches 2 to 4, of three each, and a replay
				want["idle"] = 3 // batch 4, not yet accepted
			}
			sizes := newBatchSizes(rand.New(rand.NewPCG(1, 2)))
			sampleUntil(t, func() { r.sampleRoutes(ctx, 1, sizes) }, r.o.Metrics.RouteDepth, want)
			if age := testutil.ToFloat64(r.o.Metrics.RouteAge.WithLabelValues("adt")); age <= 0 || age > 60 {
				t.Errorf("adt age %v, want the oldest message's", age)
			}
		})
	}
}

// TestDeliveryBatchQueueEstimate: a destination's waiting outbound
// batches are counted by the mean size of several of them, not by the
// oldest's alone: behind an oldest batch of one wait batches of a hundred
// (a route writes one outbound batch per accepted batch, and the accept
// stage reads ahead), so the oldest's size alone would count 5 for 401.
func TestDeliveryBatchQueueEstimate(t *testing.T) {
	r, js := deliveryRouter(t)
	ctx := t.Context()
	if _, err := js.CreateOrUpdateConsumer(ctx, store.StreamOutbound, jetstream.ConsumerConfig{Durable: "dest-ehr-b", FilterSubject: OutboundBatchSubject("ehr"), AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 100, 100, 100, 100} {
		m := nats.NewMsg(OutboundBatchSubject("ehr"))
		m.Header.Set(headerCount, strconv.Itoa(n))
		m.Data = []byte("batch")
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		// Another destination's batches between them.
		if _, err := js.Publish(ctx, OutboundBatchSubject("other"), []byte("batch")); err != nil {
			t.Fatal(err)
		}
	}
	ost, err := js.Stream(ctx, store.StreamOutbound)
	if err != nil {
		t.Fatal(err)
	}
	for seed := range uint64(20) {
		got, oldest := r.batchQueue(ctx, ost, "ehr", rand.New(rand.NewPCG(seed, seed)))
		// The oldest and four at random: at least one of a hundred
		// unless all four draws land on the oldest.
		if got < 5*101/5 || got > 5*100 {
			t.Errorf("seed %d: estimated %d waiting, want between %d and %d for 401", seed, got, 5*101/5, 5*100)
		}
		if age := time.Since(oldest); age < 0 || age > time.Minute {
			t.Errorf("seed %d: oldest stored %v ago, want the oldest batch's time", seed, age)
		}
	}
}

// TestDestinationGauges: a destination's gauges count the deliveries its
// partition consumers have not finished, across partitions, and the
// oldest one's age; one with none reads 0.
func TestDestinationGauges(t *testing.T) {
	r, js := deliveryRouter(t)
	r.o.Pipeline = PipelineMessage
	r.o.Destinations = map[string]*Destination{"ehr": {Name: "ehr"}, "idle": {Name: "idle"}}
	ctx := t.Context()
	for p, n := range []int{3, 1} {
		if _, err := js.CreateOrUpdateConsumer(ctx, store.StreamOutbound, jetstream.ConsumerConfig{Durable: "dest-ehr-p" + strconv.Itoa(p), FilterSubject: OutboundSubject("ehr", p), AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
		for range n {
			if _, err := js.Publish(ctx, OutboundSubject("ehr", p), []byte("payload")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, store.StreamOutbound, jetstream.ConsumerConfig{Durable: "dest-idle-p0", FilterSubject: OutboundSubject("idle", 0), AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"ehr": 4, "idle": 0}
	sizes := newBatchSizes(rand.New(rand.NewPCG(1, 2)))
	sampleUntil(t, func() { r.sampleDestinations(ctx, 2, sizes) }, r.o.Metrics.QueueDepth, want)
	if age := testutil.ToFloat64(r.o.Metrics.QueueAge.WithLabelValues("ehr")); age <= 0 || age > 60 {
		t.Errorf("ehr age %v, want the oldest delivery's", age)
	}
	if age := testutil.ToFloat64(r.o.Metrics.QueueAge.WithLabelValues("idle")); age != 0 {
		t.Errorf("idle age %v, want 0", age)
	}
}

// sampleUntil calls sample until depth reads want for each name, for up
// to 5 s (what was just stored can take a moment to show in a consumer's
// counts), then reports each that does not.
func sampleUntil(t *testing.T, sample func(), depth *prometheus.GaugeVec, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		sample()
		matched := true
		for name, w := range want {
			matched = matched && testutil.ToFloat64(depth.WithLabelValues(name)) == w
		}
		if matched || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, w := range want {
		if got := testutil.ToFloat64(depth.WithLabelValues(name)); got != w {
			t.Errorf("%s depth %v, want %v", name, got, w)
		}
	}
}

// TestDeadLetterGauge: the dead-letter gauge counts the dead letters the
// stream holds, by stage and route or destination, so an alert can see
// that some wait (the counters only say that some were made, and not at
// all after a restart); a replay, which removes them, brings it back to
// zero, and a removed route's series goes once its dead letters do.
func TestDeadLetterGauge(t *testing.T) {
	type key = [2]string
	tests := []struct {
		name    string
		publish []key // dead letters stored, in order
		remove  []int // of those, the ones replayed (removed), by index
		want    map[key]float64
		absent  []key
	}{
		{
			name: "none waiting",
			want: map[key]float64{{"route", "adt"}: 0, {"delivery", "ehr"}: 0, {"delivery", "idle"}: 0},
		},
		{
			name:    "waiting by stage and name",
			publish: []key{{"delivery", "ehr"}, {"delivery", "ehr"}, {"route", "adt"}},
			want:    map[key]float64{{"route", "adt"}: 1, {"delivery", "ehr"}: 2, {"delivery", "idle"}: 0},
		},
		{
			name:    "replayed ones no longer count",
			publish: []key{{"delivery", "ehr"}, {"delivery", "ehr"}, {"route", "adt"}},
			remove:  []int{0, 2},
			want:    map[key]float64{{"route", "adt"}: 0, {"delivery", "ehr"}: 1},
		},
		{
			name:    "a removed route's",
			publish: []key{{"route", "gone"}, {"ingest", "accept"}},
			want:    map[key]float64{{"route", "gone"}: 1, {"ingest", "accept"}: 1, {"route", "adt"}: 0},
		},
		{
			name:    "a removed route's, replayed",
			publish: []key{{"route", "gone"}},
			remove:  []int{0},
			absent:  []key{{"route", "gone"}},
			want:    map[key]float64{{"route", "adt"}: 0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, js := deliveryRouter(t)
			r.o.Routes = []*route.Route{{Name: "adt"}}
			r.o.Destinations = map[string]*Destination{"ehr": {Name: "ehr"}, "idle": {Name: "idle"}}
			ctx := t.Context()
			shown := map[key]bool{}
			var seqs []uint64
			for _, k := range tc.publish {
				ack, err := js.Publish(ctx, DeadLetterSubject(k[0], k[1]), []byte("dead letter"))
				if err != nil {
					t.Fatal(err)
				}
				seqs = append(seqs, ack.Sequence)
			}
			// A sample before the replay, so a series it removes was shown.
			r.sampleDeadLetters(ctx, shown)
			dlq, err := js.Stream(ctx, store.StreamDeadLetter)
			if err != nil {
				t.Fatal(err)
			}
			for _, i := range tc.remove {
				if err := dlq.DeleteMsg(ctx, seqs[i]); err != nil {
					t.Fatal(err)
				}
			}
			r.sampleDeadLetters(ctx, shown)
			for k, want := range tc.want {
				if got := testutil.ToFloat64(r.o.Metrics.DeadLetters.WithLabelValues(k[0], k[1])); got != want {
					t.Errorf("%s %s: %v waiting, want %v", k[0], k[1], got, want)
				}
			}
			for _, k := range tc.absent {
				if r.o.Metrics.DeadLetters.DeleteLabelValues(k[0], k[1]) {
					t.Errorf("%s %s: still has a series after its dead letters went", k[0], k[1])
				}
			}
		})
	}
}

// TestDeadLetterLogSaysWhatToDo: the line logged for a message's dead
// letter tells the operator how to see why in full and how to resend it,
// by the message's id; one without a message (an unreadable stored
// batch) cannot be replayed by id, so its line does not say so.
func TestDeadLetterLogSaysWhatToDo(t *testing.T) {
	tests := []struct {
		name       string
		stage      string
		id         string
		configFile string
		wantNext   string // "" for none
		wantDetail string
	}{
		{name: "delivery", stage: "delivery", id: "01AAAAAAAAAAAAAAAAAAAAAAAA", wantNext: "junction replay --id 01AAAAAAAAAAAAAAAAAAAAAAAA", wantDetail: "junction audit deadletters --detail"},
		{name: "route", stage: "route", id: "01BBBBBBBBBBBBBBBBBBBBBBBB", wantNext: "junction replay --id 01BBBBBBBBBBBBBBBBBBBBBBBB", wantDetail: "junction audit deadletters --detail"},
		// An engine given a config file: the commands reach it, not the
		// default address.
		{name: "with a config file", stage: "delivery", id: "01CCCCCCCCCCCCCCCCCCCCCCCC", configFile: "/etc/junction/junction.yaml",
			wantNext: "junction replay -c /etc/junction/junction.yaml --id 01CCCCCCCCCCCCCCCCCCCCCCCC", wantDetail: "junction audit deadletters -c /etc/junction/junction.yaml --detail"},
		{name: "with a config file to quote", stage: "delivery", id: "01DDDDDDDDDDDDDDDDDDDDDDDD", configFile: "/srv/my configs/it's.yaml",
			wantNext: `junction replay -c '/srv/my configs/it'\''s.yaml' --id 01DDDDDDDDDDDDDDDDDDDDDDDD`, wantDetail: "junction audit deadletters -c '/srv/my configs/it"},
		{name: "unreadable ingest batch", stage: "ingest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := deliveryRouter(t)
			r.o.ConfigFile = tc.configFile
			var logs logtest.Buffer
			r.o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			h := nats.Header{}
			if tc.id != "" {
				h.Set(envelope.HeaderID, tc.id)
			}
			cause := fault.Wrap(fault.Permanent, fault.CodeInternal, "receiver refused it", errors.New("400"))
			if _, err := r.deadLetter(t.Context(), tc.stage, "ehr", h, []byte("payload"), cause); err != nil {
				t.Fatal(err)
			}
			var line struct {
				Msg  string `json:"msg"`
				Next string `json:"next"`
			}
			if err := json.Unmarshal([]byte(logs.String()), &line); err != nil {
				t.Fatalf("log %q: %v", logs.String(), err)
			}
			if line.Msg != "dead-lettered" {
				t.Fatalf("logged %q, want dead-lettered", line.Msg)
			}
			switch {
			case tc.wantNext == "" && line.Next != "":
				t.Errorf("next %q, want none", line.Next)
			case tc.wantNext != "" && (!strings.Contains(line.Next, tc.wantNext) || !strings.Contains(line.Next, tc.wantDetail)):
				t.Errorf("next %q, want it to name %q and %q", line.Next, tc.wantNext, tc.wantDetail)
			}
		})
	}
}

// TestRecoveryIsLogged: a destination's first delivery after failed
// attempts is logged, with how long it was failing, as its failures were;
// a delivery with no failure before it, or the next after the recovery,
// writes nothing.
func TestRecoveryIsLogged(t *testing.T) {
	r, _ := deliveryRouter(t)
	var logs logtest.Buffer
	r.o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	down := fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "server answered 503", nil)
	out := &scripted{errs: []error{down, down}}
	d := &Destination{Name: "ehr", Out: out,
		Retry: Retry{MaxAttempts: 5, Initial: time.Millisecond, Max: time.Millisecond, Multiplier: 1, Timeout: time.Second}}
	count := func(msg string) int { return strings.Count(logs.String(), `"msg":"`+msg+`"`) }
	if _, _, err := deliverPayload(t.Context(), r, d, outboundHeader("01AAAAAAAAAAAAAAAAAAAAAAAA"), []byte("payload"), 7, attempts{}); err != nil {
		t.Fatal(err)
	}
	if out.sends != 3 || count("delivery attempt failed") != 1 || count("destination delivering again") != 1 || !strings.Contains(logs.String(), `"destination":"ehr","failing_for":"0s"`) {
		t.Errorf("after two failures and a success (%d sends), logged:\n%s", out.sends, logs.String())
	}
	if _, _, err := deliverPayload(t.Context(), r, d, outboundHeader("01BBBBBBBBBBBBBBBBBBBBBBBB"), []byte("payload"), 8, attempts{}); err != nil {
		t.Fatal(err)
	}
	if n := count("destination delivering again"); n != 1 {
		t.Errorf("a delivery with no failure before it logged a recovery: %d lines", n)
	}
}

// TestAttemptsMadeFromAnIncompleteTrail: a payload's trail that comes
// back incomplete (its first failed attempts were in a damaged audit
// block) still counts what it holds: the attempts recorded after the
// damage, so that retries end, and a delivery recorded, so that the
// payload is not sent again. Before, an incomplete trail counted
// nothing: a delivered payload was sent again, and each redelivery
// started the count afresh.
func TestAttemptsMadeFromAnIncompleteTrail(t *testing.T) {
	var ids IDGen
	failing, delivered := ids.New(), ids.New()
	rec := func(id string, ev audit.Event, attempt int) audit.Record {
		return audit.Record{Time: time.Now().UTC(), MessageID: id, Event: ev, Route: "adt", Destination: "ehr", Seq: 7,
			Attempt: attempt, Outcome: "transient", Reason: strings.Repeat("x", 250)}
	}
	const msgs = 150
	js := jstest.DamagedStream(t, jetstream.StreamConfig{
		Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, DenyDelete: true, DenyPurge: true,
	}, func(js jetstream.JetStream) {
		for i := range msgs {
			r := rec(ids.New(), audit.Received, 0) // another message's
			switch i {
			case 0: // in the block damaged
				r = rec(failing, audit.Failed, 1)
			case 1:
				r = rec(delivered, audit.Failed, 1)
			case msgs - 3: // after it
				r = rec(failing, audit.Failed, 2)
			case msgs - 2:
				r = rec(failing, audit.Failed, 3)
			case msgs - 1:
				r = rec(delivered, audit.Delivered, 2)
				r.Outcome = "ok"
			}
			data, err := json.Marshal([]audit.Record{r})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(t.Context(), audit.Subject(r.MessageID), data); err != nil {
				t.Fatalf("audit %d: %v", i, err)
			}
		}
	})
	for _, id := range []string{failing, delivered} {
		var inc *audit.IncompleteError
		if _, err := audit.Trail(t.Context(), js, id); !errors.As(err, &inc) {
			t.Fatalf("trail of %s: %v, want it incomplete (its first record unreadable)", id, err)
		}
	}
	var logged strings.Builder
	r := &Router{o: Options{Metrics: telemetry.NewMetrics(prometheus.NewRegistry()), Logger: slog.New(slog.NewJSONHandler(&logged, nil))}, js: js}
	if got := attemptsOnTrail(t, r, failing, "adt", "ehr", 7); got.made != 3 || got.last == nil || got.last.Attempt != 3 || got.delivered {
		t.Errorf("failing payload: %d attempts made (last %+v), delivered %v; want the 3 the trail still holds, not delivered", got.made, got.last, got.delivered)
	}
	if got := attemptsOnTrail(t, r, delivered, "adt", "ehr", 7); !got.delivered {
		t.Errorf("delivered payload: delivered %v, want true (its delivery is on the trail)", got.delivered)
	}
	if !strings.Contains(logged.String(), "incomplete") {
		t.Errorf("log %q: want the incomplete trail said", logged.String())
	}
}

// TestRedeliveredPayloadWaitsForAnUnreadableTrail: a payload delivered
// again (its process stopped, or its acknowledgement was lost) whose
// trail cannot be read is not sent as if never tried: it may have been
// delivered already, or refused for good. It waits, an error for the
// partition to try again, and goes once the trail can be read.
func TestRedeliveredPayloadWaitsForAnUnreadableTrail(t *testing.T) {
	ctx := t.Context()
	js := testStore(t)
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PAYLOADS", Subjects: []string{"payloads"}})
	if err != nil {
		t.Fatal(err)
	}
	var ids IDGen
	id := ids.New()
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "payloads", Header: outboundHeader(id), Data: []byte("payload")}); err != nil {
		t.Fatal(err)
	}
	c, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "dest", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	// Delivered once and handed back, as by a process that stopped: the
	// second delivery is a redelivery.
	var m jetstream.Msg
	for range 2 {
		b, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		m = <-b.Messages()
		if m == nil {
			t.Fatalf("no delivery: %v", b.Error())
		}
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	if meta, err := m.Metadata(); err != nil || meta.NumDelivered != 2 {
		t.Fatalf("metadata %+v, %v: want the second delivery", meta, err)
	}

	out := &scripted{}
	d := &Destination{Name: "ehr", Out: out,
		Retry: Retry{MaxAttempts: 3, Initial: time.Millisecond, Max: time.Millisecond, Multiplier: 1, Timeout: time.Second}}
	r, _ := deliveryRouter(t)
	live := r.js
	r.js = closedStore(t)
	w := &deliveryWorker{r: r, d: d}
	if _, err := w.deliver(ctx, m); err == nil {
		t.Error("delivered with its trail unreadable, want an error to try again")
	}
	if out.sends != 0 {
		t.Errorf("%d sends with its trail unreadable, want none", out.sends)
	}

	r.js = live
	recs, err := w.deliver(ctx, m)
	if err != nil {
		t.Fatalf("with the trail readable again: %v", err)
	}
	if out.sends != 1 || len(recs) != 1 || recs[0].Event != audit.Delivered {
		t.Errorf("with the trail readable again: %d sends, records %+v; want it sent once and delivered", out.sends, recs)
	}
}

// closedStore returns a JetStream context on a store that is closed: every
// read fails, as when the store is out of reach.
func closedStore(t *testing.T) jetstream.JetStream {
	t.Helper()
	st, err := store.Open(t.Context(), store.DefaultConfig(), t.TempDir(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	return st.JS
}

// TestRedeliveredSpanWaitsForUnreadableTrails: the batch pipeline's
// delivery stage, given a span again, counts each entry's earlier
// attempts from its trail; when a trail cannot be read it says so (for
// the span to be tried again) rather than counting none, and with the
// trails readable it marks the delivered entry done and carries the
// failed one's attempts on.
func TestRedeliveredSpanWaitsForUnreadableTrails(t *testing.T) {
	r, js := deliveryRouter(t)
	var ids IDGen
	delivered, failed, untried := ids.New(), ids.New(), ids.New()
	for _, rec := range []audit.Record{
		{MessageID: delivered, Event: audit.Delivered, Outcome: "delivered", Attempt: 1},
		{MessageID: failed, Event: audit.Failed, Outcome: "transient", Attempt: 1},
		{MessageID: failed, Event: audit.Failed, Outcome: "transient", Attempt: 2},
	} {
		rec.Time, rec.Route, rec.Destination, rec.Seq = time.Now().UTC(), "adt", "ehr", 7
		data, err := json.Marshal([]audit.Record{rec})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(t.Context(), audit.Subject(rec.MessageID), data); err != nil {
			t.Fatal(err)
		}
	}
	var entries []outEntry
	for _, id := range []string{delivered, failed, untried} {
		entries = append(entries, outEntry{h: outboundHeader(id), body: []byte("payload"), seq: 7})
	}
	w := &batchDeliveryWorker{r: r, d: &Destination{Name: "ehr"}, done: map[int][]audit.Record{}, made: map[int]attempts{}}

	r.js = closedStore(t)
	if err := w.countEarlier(t.Context(), entries); err == nil {
		t.Error("counted with the trails unreadable, want an error")
	}

	r.js = js
	w.done, w.made = map[int][]audit.Record{}, map[int]attempts{}
	if err := w.countEarlier(t.Context(), entries); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.done[0]; !ok || len(w.done) != 1 {
		t.Errorf("done %v, want only the delivered entry (0)", w.done)
	}
	if len(w.made) != 1 || w.made[1].made != 2 {
		t.Errorf("attempts carried on %+v, want the failed entry's (1) 2", w.made)
	}
}
