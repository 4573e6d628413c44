package router

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// Backlog is the limit on stored messages not yet routed. Inputs store
// faster than the route stage can route (translation, the patient index,
// rules, one fsync a write), so under sustained load a backlog grows
// until the disk fills, or until ingress_max_age ages its oldest out
// before it was routed. With a limit, an input whose backlog is over it
// has new messages refused before they are stored, with a resend-later
// answer (AR or CE with ERR 207 over MLLP, 503 with Retry-After over
// HTTP), so senders hold them instead: the flow control HL7 v2 senders
// already have for a receiver whose store is down.
//
// An input's backlog is the most any route reading it has not finished,
// plus the messages of every input group-committed to the ingest log and
// not yet taken off it. The router samples it (see Router.sampleBacklog);
// refusing starts when it reaches the limit and stops when it falls
// below four fifths of it, so answers do not flap at the boundary.
type Backlog struct {
	limit   uint64
	log     *slog.Logger
	metrics *telemetry.Metrics
	// state is the last sample, replaced whole by each.
	state atomic.Pointer[backlogState]
	mu    sync.Mutex // serialises samples
}

// backlogState is one sample: each input's backlog and whether it is
// refusing, and what an input the sample did not name is given.
type backlogState struct {
	depth   map[string]uint64
	over    map[string]bool
	other   uint64
	otherOn bool
}

// NewBacklog returns a limit of limit messages; 0 means none, and a nil
// *Backlog refuses nothing either.
func NewBacklog(limit uint64, log *slog.Logger, m *telemetry.Metrics) *Backlog {
	b := &Backlog{limit: limit, log: log, metrics: m}
	b.state.Store(&backlogState{})
	return b
}

// Limit returns the limit, 0 for none.
func (b *Backlog) Limit() uint64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// refuse returns a transient fault with code fault.CodeBacklog when
// source's backlog was over the limit at the last sample, else nil.
func (b *Backlog) refuse(source string) error {
	if b == nil || b.limit == 0 {
		return nil
	}
	st := b.state.Load()
	depth, over := st.other, st.otherOn
	if d, ok := st.depth[source]; ok {
		depth, over = d, st.over[source]
	}
	if !over {
		return nil
	}
	return &fault.Error{Code: fault.CodeBacklog, Class: fault.Transient,
		Msg:    fmt.Sprintf("not stored: %d messages stored before it are not yet routed, over router.max_backlog (%d); resend later", depth, b.limit),
		HL7Err: "207"}
}

// update takes a sample: each named input's backlog, and other, the
// backlog of any input not named.
func (b *Backlog) update(depth map[string]uint64, other uint64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	prev := b.state.Load()
	next := &backlogState{depth: maps.Clone(depth), over: make(map[string]bool, len(depth)), other: other}
	next.otherOn = b.limit > 0 && b.decide(prev.otherOn, other)
	for src, d := range depth {
		was, ok := prev.over[src]
		if !ok {
			was = prev.otherOn
		}
		on := b.limit > 0 && b.decide(was, d)
		next.over[src] = on
		if on != was {
			if on {
				b.log.Warn("input backlog over its limit: new messages answered resend-later until routing catches up",
					"input", src, "backlog", d, "limit", b.limit)
			} else {
				b.log.Info("input backlog back under its limit: new messages stored again", "input", src, "backlog", d, "limit", b.limit)
			}
		}
		if b.metrics != nil {
			b.metrics.Backlog.WithLabelValues(src).Set(float64(d))
			v := 0.0
			if on {
				v = 1
			}
			b.metrics.BacklogRefusing.WithLabelValues(src).Set(v)
		}
	}
	b.state.Store(next)
}

// decide says whether an input refusing (was) with backlog d refuses now.
func (b *Backlog) decide(was bool, d uint64) bool {
	if was {
		return d >= b.limit-b.limit/5
	}
	return d >= b.limit
}

// watchBacklog samples the backlog at start and every BacklogEvery.
func (r *Router) watchBacklog(ctx context.Context) {
	every := r.o.BacklogEvery
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	sizes := make(batchSizes)
	for {
		r.sampleBacklog(ctx, sizes)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sampleBacklog measures each input's backlog for the limit: the most any
// route reading it has not finished (the consumers that take new input,
// not those of replays in the batch pipeline), plus what the stage
// reading the ingest log has not taken off it.
func (r *Router) sampleBacklog(ctx context.Context, sizes batchSizes) {
	b := r.o.Backlog
	if b.Limit() == 0 {
		return
	}
	ist, err := r.js.Stream(ctx, store.StreamIngress)
	if err != nil {
		return
	}
	lst, err := r.js.Stream(ctx, store.StreamIngestLog)
	if err != nil {
		return
	}
	reader := splitterDurable
	if r.o.Pipeline == PipelineBatch {
		reader = acceptDurable
	}
	accepting := sizes.backlog(ctx, r.js, lst, reader)
	depth := make(map[string]uint64)
	for src := range r.o.Translators {
		depth[src] = accepting
	}
	for _, rt := range r.o.Routes {
		var d uint64
		if r.o.Pipeline == PipelineBatch {
			d = sizes.backlog(ctx, r.js, ist, "route-"+rt.Name+"-b")
		} else {
			// Messages, not batches: the count alone.
			for p := range r.o.Store.Partitions() {
				_, n := unfinished(ctx, r.js, store.StreamIngress, "route-"+rt.Name+"-p"+strconv.Itoa(p))
				d += n
			}
		}
		depth[rt.Source] = max(depth[rt.Source], accepting+d)
	}
	b.update(depth, accepting)
}

// batchSizes is, per consumer of stored batches, a running mean of the
// messages a batch holds. A consumer's pending count is in batches, and
// group-commit batches hold from one message to many as load varies, so
// pending times the oldest batch's size (as the route gauges estimate)
// swings by a factor of several from one second to the next: too rough to
// start and stop refusing input on. Each sample reads the oldest unfinished
// batch and one at a random place among the unfinished, and moves the mean
// a tenth of the way to each.
type batchSizes map[string]float64

// backlog returns the messages consumer durable on st has not finished,
// estimated as its unfinished batches times their running mean size.
func (z batchSizes) backlog(ctx context.Context, js jetstream.JetStream, st jetstream.Stream, durable string) uint64 {
	info, pending := unfinished(ctx, js, st.CachedInfo().Config.Name, durable)
	if pending == 0 {
		return 0
	}
	filters := info.Config.FilterSubjects
	if f := info.Config.FilterSubject; f != "" {
		filters = append(filters, f)
	}
	floor := info.AckFloor.Stream + 1
	last := st.CachedInfo().State.LastSeq
	for _, from := range []uint64{floor, floor + rand.Uint64N(max(last, floor)-floor+1)} {
		if n := firstBatchSize(ctx, st, filters, from); n > 0 {
			if mean, ok := z[durable]; ok {
				z[durable] = mean + (float64(n)-mean)/10
			} else {
				z[durable] = float64(n)
			}
		}
	}
	mean, ok := z[durable]
	if !ok {
		return pending
	}
	return uint64(float64(pending)*mean + 0.5)
}

// firstBatchSize returns the messages in the first batch at or after
// sequence from on any of filters, or 0 if there is none.
func firstBatchSize(ctx context.Context, st jetstream.Stream, filters []string, from uint64) int {
	var first *jetstream.RawStreamMsg
	for _, f := range filters {
		msg, err := st.GetMsg(ctx, from, jetstream.WithGetMsgSubject(f))
		if err == nil && (first == nil || msg.Sequence < first.Sequence) {
			first = msg
		}
	}
	if first == nil {
		return 0
	}
	return ingestFormat.count(first.Data)
}
