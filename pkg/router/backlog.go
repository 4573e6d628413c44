package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
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
// An input's backlog is how far behind its routing is, in messages (see
// Router.sampleBacklog for how each pipeline counts it). The router
// samples it; refusing starts when it reaches the limit and stops when it
// falls below four fifths of it, so answers do not flap at the boundary.
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
		Msg:    fmt.Sprintf("not taken now: routing is about %d messages behind at the last sample, and the input refuses from router.max_backlog (%d) until under four fifths of it; resend later", depth, b.limit),
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

// sampleBacklog measures each input's backlog for the limit. If any of it
// cannot be read, it changes nothing and returns the error.
//
// In the batch pipeline an input's backlog is counted on the ingest log,
// where every stored message is, in order: the messages stored since the
// oldest one of the input that a route reading it has not finished (found
// by the ingest-log batch its first unfinished accepted batch names),
// whichever route is furthest behind; for an input no route
// reads, since the oldest the accept stage has not taken. That counts the
// other inputs' messages stored after it too: it is how far behind the
// input's routing is, in messages. Counting unfinished accepted batches
// instead does not work: the accept stage reads ahead, so an accepted
// batch holds from one message to hundreds.
//
// In the message pipeline it is the unfinished messages of the input's
// route furthest behind (the route consumers take new input and replays
// alike), counted exactly, plus those the stage reading the ingest log
// has not split.
func (r *Router) sampleBacklog(ctx context.Context, sizes *batchSizes) error {
	b := r.o.Backlog
	if b.Limit() == 0 {
		return nil
	}
	reader := splitterDurable
	if r.o.Pipeline == PipelineBatch {
		reader = acceptDurable
	}
	ls, err := r.readIngestLog(ctx, sizes, reader)
	if err != nil {
		return err
	}
	depth := make(map[string]uint64)
	for src := range r.o.Translators {
		depth[src] = ls.accepting
	}
	ist, err := r.js.Stream(ctx, store.StreamIngress)
	if err != nil {
		return fmt.Errorf("ingress stream: %w", err)
	}
	// The message pipeline's partition consumers, read in one listing
	// rather than one request each (routes times partitions).
	var infos map[string]*jetstream.ConsumerInfo
	for _, rt := range r.o.Routes {
		var d uint64
		if r.o.Pipeline == PipelineBatch {
			if d, _, err = ls.behind(ctx, r.js, ist, "route-"+rt.Name+"-b"); err != nil {
				return err
			}
		} else {
			if infos == nil {
				if infos, err = consumerInfos(ctx, ist); err != nil {
					return err
				}
			}
			d = ls.accepting
			for p := range r.o.Store.Partitions() {
				d += unfinishedIn(infos["route-"+rt.Name+"-p"+strconv.Itoa(p)])
			}
		}
		depth[rt.Source] = max(depth[rt.Source], d)
	}
	b.update(depth, ls.accepting)
	return nil
}

// ingestLogState is one reading of the ingest log for counting
// backlogs: its last sequence, the sizes of its batches, and the messages
// the stage reading it (the accept stage or the splitter) has not taken.
type ingestLogState struct {
	last      uint64
	sizes     *batchSizes
	accepting uint64
}

// readIngestLog reads the ingest log's state, moving sizes' mean with a
// sample, and what consumer reader has not taken off it.
func (r *Router) readIngestLog(ctx context.Context, sizes *batchSizes, reader string) (ingestLogState, error) {
	lst, err := r.js.Stream(ctx, store.StreamIngestLog)
	if err != nil {
		return ingestLogState{}, fmt.Errorf("ingest log: %w", err)
	}
	s := ingestLogState{last: lst.CachedInfo().State.LastSeq, sizes: sizes}
	sizes.sample(ctx, lst)
	info, pending, err := pendingOf(ctx, r.js, store.StreamIngestLog, reader)
	if err != nil {
		return ingestLogState{}, err
	}
	if pending > 0 {
		s.accepting = s.messages(info.AckFloor.Stream)
	}
	return s, nil
}

// messages returns the messages stored on the log after sequence from.
func (s ingestLogState) messages(from uint64) uint64 {
	return s.sizes.messages(s.last - min(s.last, from))
}

// behind returns how many messages stored on the log batch route
// consumer durable is behind (see routeFinishedTo), and when its first
// unfinished batch was stored; 0 and the zero time when it has finished
// everything.
func (s ingestLogState) behind(ctx context.Context, js jetstream.JetStream, ist jetstream.Stream, durable string) (uint64, time.Time, error) {
	from, at, err := routeFinishedTo(ctx, js, ist, durable)
	if err != nil || from == noBacklog {
		return 0, time.Time{}, err
	}
	return s.messages(from), at, nil
}

// noBacklog is routeFinishedTo's answer for a route with nothing
// unfinished.
const noBacklog = ^uint64(0)

// routeFinishedTo returns the ingest-log sequence up to which batch route
// consumer durable has finished every message of its input, or noBacklog
// when it has nothing unfinished: the ingest-log batch before the last
// one its first unfinished accepted batch covers. Not the one its last
// finished accepted batch covers to: for an input that sends a message a
// minute while another sends hundreds a second, that would count all of
// the other's messages since the last one. It undercounts by what the
// accept stage read ahead into that batch (at most acceptAhead's 64
// group-commit batches). It also returns when that first unfinished
// batch was stored.
func routeFinishedTo(ctx context.Context, js jetstream.JetStream, ist jetstream.Stream, durable string) (uint64, time.Time, error) {
	info, pending, err := pendingOf(ctx, js, store.StreamIngress, durable)
	if err != nil {
		return 0, time.Time{}, err
	}
	if pending == 0 {
		return noBacklog, time.Time{}, nil
	}
	first, err := firstOf(ctx, ist, consumerFilters(info), info.AckFloor.Stream+1)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("consumer %s: its first unfinished batch: %w", durable, err)
	}
	if first == nil {
		return noBacklog, time.Time{}, nil // gone since: nothing to count
	}
	if c, ok := coveredTo(first.Subject); ok && c > 0 {
		return c - 1, first.Time, nil
	}
	return noBacklog, time.Time{}, nil
}

// coveredTo returns the ingest-log sequence an accepted batch's subject
// names as the last it covers (its last token, in this version's subjects
// and in earlier ones).
func coveredTo(subject string) (uint64, bool) {
	if !strings.HasPrefix(subject, SubjAccepted+".") {
		return 0, false
	}
	n, err := strconv.ParseUint(subject[strings.LastIndexByte(subject, '.')+1:], 10, 64)
	return n, err == nil
}

// consumerInfos returns the info of every consumer of st by name, read
// in one listing (a request for each page of 256) rather than a request
// for each.
func consumerInfos(ctx context.Context, st jetstream.Stream) (map[string]*jetstream.ConsumerInfo, error) {
	infos := map[string]*jetstream.ConsumerInfo{}
	l := st.ListConsumers(ctx)
	for info := range l.Info() {
		infos[info.Name] = info
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("listing the consumers of %s: %w", st.CachedInfo().Config.Name, err)
	}
	return infos, nil
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
	return info, unfinishedIn(info), nil
}

// unfinishedIn returns the messages of the consumer whose info is info
// (nil: none) that it has not finished: pending and awaiting
// acknowledgement.
func unfinishedIn(info *jetstream.ConsumerInfo) uint64 {
	if info == nil {
		return 0
	}
	return info.NumPending + uint64(info.NumAckPending)
}

// batchSizes keeps a running mean of the messages an ingest-log batch
// holds (one group-commit write: one message to a few, as load varies),
// to turn a count of batches into one of messages. Each sample reads four
// of the latest thousand batches, at random, and moves the mean a
// twentieth of the way to each; the first twenty reads make a plain mean
// of those read, so a mean begun on a quiet input's single messages does
// not undercount a surge that follows for long.
type batchSizes struct {
	rng   *rand.Rand
	mean  float64
	reads int
}

func newBatchSizes(rng *rand.Rand) *batchSizes { return &batchSizes{rng: rng} }

// randomReads is how many batches a sample reads.
const randomReads = 4

// sample reads randomReads of the latest thousand batches of ingest log
// st and moves the mean towards each.
func (z *batchSizes) sample(ctx context.Context, st jetstream.Stream) {
	state := st.CachedInfo().State
	if state.LastSeq < state.FirstSeq || state.LastSeq == 0 {
		return
	}
	from := max(state.FirstSeq, state.LastSeq-min(state.LastSeq, 1000))
	for range randomReads {
		_, k := firstBatch(ctx, st, []string{store.SubjIngestLog + ".>"}, from+z.rng.Uint64N(state.LastSeq-from+1))
		if k <= 0 {
			continue
		}
		z.reads = min(z.reads+1, 20)
		z.mean += (float64(k) - z.mean) / float64(z.reads)
	}
}

// messages returns the messages n ingest-log batches hold, estimated with
// the running mean.
func (z *batchSizes) messages(n uint64) uint64 {
	return uint64(float64(n)*max(z.mean, 1) + 0.5)
}

// firstBatch returns the sequence of the first batch at or after sequence
// from on any of filters and the messages it holds, or 0, 0 if there is
// none (or it cannot be read: the mean waits for the next sample).
func firstBatch(ctx context.Context, st jetstream.Stream, filters []string, from uint64) (uint64, int) {
	first := firstOn(ctx, st, filters, from)
	if first == nil {
		return 0, 0
	}
	return first.Sequence, ingestFormat.count(first.Data)
}

// firstOn returns the first message of st at or after sequence from on
// any of filters, or nil if there is none or it cannot be read.
func firstOn(ctx context.Context, st jetstream.Stream, filters []string, from uint64) *jetstream.RawStreamMsg {
	first, _ := firstOf(ctx, st, filters, from)
	return first
}

// firstOf is firstOn, with the error of a read that failed other than
// for want of a message.
func firstOf(ctx context.Context, st jetstream.Stream, filters []string, from uint64) (*jetstream.RawStreamMsg, error) {
	var first *jetstream.RawStreamMsg
	var failed error
	for _, f := range filters {
		m, err := st.GetMsg(ctx, from, jetstream.WithGetMsgSubject(f))
		switch {
		case err == nil:
			if first == nil || m.Sequence < first.Sequence {
				first = m
			}
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			failed = err
		}
	}
	if first == nil && failed != nil {
		return nil, failed
	}
	return first, nil
}

// consumerFilters returns the subjects a consumer takes.
func consumerFilters(info *jetstream.ConsumerInfo) []string {
	filters := slices.Clone(info.Config.FilterSubjects)
	if f := info.Config.FilterSubject; f != "" {
		filters = append(filters, f)
	}
	return filters
}
