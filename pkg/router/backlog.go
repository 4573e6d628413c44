package router

import (
	"context"
	"errors"
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
	sizes := newBatchSizes(rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	for {
		if err := r.sampleBacklog(ctx, sizes); err != nil && ctx.Err() == nil {
			// The last sample stands: a store too busy to answer is no
			// reason to stop refusing, nor to start.
			r.o.Logger.Debug("input backlog not sampled; the last sample stands", "error", err.Error())
		}
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
// reading the ingest log has not taken off it. If any of it cannot be
// read, it changes nothing and returns the error.
func (r *Router) sampleBacklog(ctx context.Context, sizes *batchSizes) error {
	b := r.o.Backlog
	if b.Limit() == 0 {
		return nil
	}
	ist, err := r.js.Stream(ctx, store.StreamIngress)
	if err != nil {
		return fmt.Errorf("ingress stream: %w", err)
	}
	lst, err := r.js.Stream(ctx, store.StreamIngestLog)
	if err != nil {
		return fmt.Errorf("ingest log: %w", err)
	}
	reader := splitterDurable
	if r.o.Pipeline == PipelineBatch {
		reader = acceptDurable
	}
	accepting, err := sizes.backlog(ctx, r.js, lst, reader)
	if err != nil {
		return err
	}
	depth := make(map[string]uint64)
	for src := range r.o.Translators {
		depth[src] = accepting
	}
	for _, rt := range r.o.Routes {
		var d uint64
		if r.o.Pipeline == PipelineBatch {
			if d, err = sizes.backlog(ctx, r.js, ist, "route-"+rt.Name+"-b"); err != nil {
				return err
			}
		} else {
			// Messages, not batches: the count alone.
			for p := range r.o.Store.Partitions() {
				_, n, err := pendingOf(ctx, r.js, store.StreamIngress, "route-"+rt.Name+"-p"+strconv.Itoa(p))
				if err != nil {
					return err
				}
				d += n
			}
		}
		depth[rt.Source] = max(depth[rt.Source], accepting+d)
	}
	b.update(depth, accepting)
	return nil
}

// pendingOf returns the info of consumer durable on stream and the
// messages it has not finished (pending and awaiting acknowledgement). A
// consumer that does not exist (yet) has none.
func pendingOf(ctx context.Context, js jetstream.JetStream, stream, durable string) (*jetstream.ConsumerInfo, uint64, error) {
	c, err := js.Consumer(ctx, stream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("consumer %s: %w", durable, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("consumer %s: %w", durable, err)
	}
	return info, info.NumPending + uint64(info.NumAckPending), nil
}

// batchSizes keeps, per consumer of stored batches, a running mean of the
// messages a batch holds. A consumer's pending count is in batches, and
// group-commit batches hold from one message to many as load varies, so
// pending times the oldest batch's size (as the route gauges estimate)
// swings by a factor of several from one second to the next: too rough to
// start and stop refusing input on. Each sample reads batches at two
// random places among the unfinished, and the oldest unfinished when it
// is another than at the last sample (one a stalled stage holds would
// otherwise weigh in every second), and moves the mean a tenth of the way
// to each.
type batchSizes struct {
	rng    *rand.Rand
	mean   map[string]float64
	oldest map[string]uint64
}

func newBatchSizes(rng *rand.Rand) *batchSizes {
	return &batchSizes{rng: rng, mean: make(map[string]float64), oldest: make(map[string]uint64)}
}

// randomReads is how many batches at random places a sample reads.
const randomReads = 2

// backlog returns the messages consumer durable on st has not finished,
// estimated as its unfinished batches times their running mean size.
func (z *batchSizes) backlog(ctx context.Context, js jetstream.JetStream, st jetstream.Stream, durable string) (uint64, error) {
	info, pending, err := pendingOf(ctx, js, st.CachedInfo().Config.Name, durable)
	if err != nil || pending == 0 {
		return 0, err
	}
	filters := info.Config.FilterSubjects
	if f := info.Config.FilterSubject; f != "" {
		filters = append(filters, f)
	}
	floor := info.AckFloor.Stream + 1
	last := max(st.CachedInfo().State.LastSeq, floor)
	seen := func(n int) {
		if n <= 0 {
			return
		}
		if mean, ok := z.mean[durable]; ok {
			z.mean[durable] = mean + (float64(n)-mean)/10
		} else {
			z.mean[durable] = float64(n)
		}
	}
	if seq, n := firstBatch(ctx, st, filters, floor); seq != 0 && seq != z.oldest[durable] {
		z.oldest[durable] = seq
		seen(n)
	}
	for range randomReads {
		_, n := firstBatch(ctx, st, filters, floor+z.rng.Uint64N(last-floor+1))
		seen(n)
	}
	mean, ok := z.mean[durable]
	if !ok {
		return pending, nil
	}
	return uint64(float64(pending)*mean + 0.5), nil
}

// firstBatch returns the sequence of the first batch at or after sequence
// from on any of filters and the messages it holds, or 0, 0 if there is
// none (or it cannot be read: the mean waits for the next sample).
func firstBatch(ctx context.Context, st jetstream.Stream, filters []string, from uint64) (uint64, int) {
	var first *jetstream.RawStreamMsg
	for _, f := range filters {
		msg, err := st.GetMsg(ctx, from, jetstream.WithGetMsgSubject(f))
		if err == nil && (first == nil || msg.Sequence < first.Sequence) {
			first = msg
		}
	}
	if first == nil {
		return 0, 0
	}
	return first.Sequence, ingestFormat.count(first.Data)
}
