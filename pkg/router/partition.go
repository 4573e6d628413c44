package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/junction-fhir/junction/pkg/jserr"
)

// partitionConsumer processes one partition of one stage. Ordered stages
// (routes, deliveries, the ingest splitter) use batch 1: the durable
// consumer lets one message be outstanding (MaxAckPending 1), so while any
// process holds a message no process can take the next one of that
// partition. Per-patient order therefore holds across replicas, and a
// message not acknowledged (crash, shutdown) is redelivered before any
// later one. Unordered stages (receipt records) take larger batches.
// Every message is acknowledged explicitly, one by one, after its fate is
// stored: an acknowledgement never covers a message another process holds.
type partitionConsumer struct {
	stream  string
	durable string
	filter  string
	// filters, when set, replace filter with several subjects.
	filters []string
	batch   int
	ackWait time.Duration
	deliver jetstream.DeliverPolicy
	// startSeq, when set, is where a new consumer starts (with deliver
	// DeliverByStartSequencePolicy).
	startSeq uint64
	log      *slog.Logger
	// fetchLog, if set, limits "fetch failed" lines, which every
	// consumer writes while the store is away.
	fetchLog *logLimiter
	// handle processes msgs in order. It returns an error only when the
	// batch must be retried (store unavailable); every message fate
	// (delivered, dead-lettered...) is durable when it returns nil.
	handle func(ctx context.Context, msgs []jetstream.Msg) error
	// acked, if set, is told of msgs once their acknowledgement is
	// confirmed.
	acked func(ctx context.Context, msgs []jetstream.Msg)
	// stuckAfter is how long a batch may keep failing before the
	// partition is reported stuck (defaultStuckAfter if zero).
	stuckAfter time.Duration
	// failing, if set, counts this consumer's batches being retried: one
	// from a batch's first failure until it succeeds or is handed back.
	failing prometheus.Gauge
}

func (p *partitionConsumer) consumer(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       p.durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: p.batch,
		AckWait:       p.ackWait,
		DeliverPolicy: p.deliver,
		OptStartSeq:   p.startSeq,
		MaxDeliver:    -1,
	}
	if len(p.filters) > 0 {
		cfg.FilterSubjects = p.filters
	} else {
		cfg.FilterSubject = p.filter
	}
	// A consumer the server already holds as cfg asks is taken as it is.
	// An update rewrites its file even when nothing changes, which with
	// every write fsynced is two syncs a consumer, and a start asks for
	// every stage's consumers (about 120 with the shipped routes). Any
	// other answer (missing, different, or an error) leaves it to the
	// update, as before.
	if c, err := js.Consumer(ctx, p.stream, p.durable); err == nil && sameConsumer(c.CachedInfo().Config, cfg) {
		return c, nil
	}
	c, err := js.CreateOrUpdateConsumer(ctx, p.stream, cfg)
	if errors.Is(err, jetstream.ErrConsumerMultipleFilterSubjectsNotSupported) {
		c, err = updatedFilters(ctx, js, p.stream, cfg, err)
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", p.durable, err)
	}
	return c, nil
}

// sameConsumer reports whether have, a consumer's config as the server
// holds it, is what an update with want (as partitionConsumer.consumer
// makes it) would leave: the settings Junction gives, and none set by
// hand that the update would clear.
func sameConsumer(have, want jetstream.ConsumerConfig) bool {
	return have.Durable == want.Durable && have.AckPolicy == want.AckPolicy &&
		have.MaxAckPending == want.MaxAckPending && have.AckWait == want.AckWait &&
		have.DeliverPolicy == want.DeliverPolicy && have.OptStartSeq == want.OptStartSeq && have.OptStartTime == nil &&
		have.MaxDeliver == want.MaxDeliver && slices.Equal(filtersOf(have), filtersOf(want)) &&
		len(have.BackOff) == 0 && !have.HeadersOnly && have.RateLimit == 0 && have.SampleFrequency == "" &&
		have.ReplayPolicy == jetstream.ReplayInstantPolicy && have.DeliverSubject == "" && !have.FlowControl &&
		have.IdleHeartbeat == 0 && have.DeliverGroup == "" && have.InactiveThreshold == 0 && !have.MemoryStorage && have.Replicas == want.Replicas &&
		have.MaxRequestBatch == 0 && have.MaxRequestExpires == 0 && have.MaxRequestMaxBytes == 0 &&
		have.PauseUntil == nil && have.PriorityPolicy == jetstream.PriorityPolicyNone && len(have.PriorityGroups) == 0
}

// filtersOf returns the subjects cfg filters on, given as one or many.
func filtersOf(cfg jetstream.ConsumerConfig) []string {
	if len(cfg.FilterSubjects) > 0 {
		return cfg.FilterSubjects
	}
	if cfg.FilterSubject != "" {
		return []string{cfg.FilterSubject}
	}
	return nil
}

// updatedFilters returns the consumer cfg names when the server holds it
// with cfg's filters, else an error wrapping updateErr. The client takes
// an answer to an update without the filters asked for as a server that
// cannot hold more than one, but a server answers the first update of a
// consumer after it restarted with the consumer as it recovered it: after
// an upgrade, an earlier version's single FilterSubject, although the
// update was made. Reading the consumer back tells the two apart.
func updatedFilters(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, updateErr error) (jetstream.Consumer, error) {
	c, err := js.Consumer(ctx, stream, cfg.Durable)
	if err != nil {
		return nil, fmt.Errorf("%w; reading it back: %w", updateErr, err)
	}
	if have := c.CachedInfo().Config.FilterSubjects; !slices.Equal(have, cfg.FilterSubjects) {
		return nil, fmt.Errorf("%w: the server holds filters %q, not %q", updateErr, have, cfg.FilterSubjects)
	}
	return c, nil
}

// run fetches and processes batches until ctx is done. It returns when the
// current batch has finished (drain).
func (p *partitionConsumer) run(ctx context.Context, c jetstream.Consumer) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		msgs, err := p.fetch(c)
		if err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			if ctx.Err() != nil {
				return
			}
			if ok, held := p.fetchLog.allow("fetch", time.Now()); ok {
				p.log.Warn("fetch failed", "consumer", p.durable, "err", err, "similar_lines_held_back", held)
			}
			sleep(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if len(msgs) == 0 {
			continue
		}
		// Messages fetched are processed even when shutdown has begun, so
		// none waits out ack_wait.
		p.process(ctx, msgs)
	}
}

// fetch takes what is waiting, up to the batch size, or with nothing
// waiting the first message to arrive within a second. A stage taking one
// message at a time asks once, with a pull that waits: it returns as soon
// as a message is there, so asking first without waiting would only add a
// request whenever the stage is idle. The waiting pull is left to expire
// rather than cancelled at shutdown: a cancelled pull stays open on the
// server, and a message it hands out then would sit unacknowledged until
// ack_wait.
func (p *partitionConsumer) fetch(c jetstream.Consumer) ([]jetstream.Msg, error) {
	if p.batch > 1 {
		msgs, err := jserr.ReadBatch(c.FetchNoWait(p.batch))
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
	}
	return jserr.ReadBatch(c.Fetch(1, jetstream.FetchMaxWait(time.Second)))
}

// process handles one batch, keeping it alive while it works, retrying on
// infrastructure errors, then acknowledges every message.
func (p *partitionConsumer) process(ctx context.Context, msgs []jetstream.Msg) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(p.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	defer func() { close(done); wg.Wait() }()
	backoff := 200 * time.Millisecond
	var failingSince time.Time
	defer func() {
		if !failingSince.IsZero() && p.failing != nil {
			p.failing.Dec()
		}
	}()
	stuck := false
	for {
		// Handlers run on a context that survives shutdown so an in-flight
		// batch finishes; they watch ctx themselves for long waits.
		err := p.handle(ctx, msgs)
		if err == nil {
			if stuck {
				p.log.Info("batch succeeded again; the partition moves on", "consumer", p.durable, "after", time.Since(failingSince).Round(time.Second).String())
			}
			break
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
			if p.failing != nil {
				p.failing.Inc()
			}
		}
		if ctx.Err() != nil {
			// Shutting down: hand the messages back at once so another
			// process (or this one after restart) takes them without
			// waiting out ack_wait.
			for _, m := range msgs {
				_ = m.Nak()
			}
			p.log.Info("batch handed back at shutdown", "consumer", p.durable, "messages", len(msgs))
			return
		}
		p.log.Warn("batch failed; retrying", "consumer", p.durable, "err", err)
		if !stuck && time.Since(failingSince) >= cmp.Or(p.stuckAfter, defaultStuckAfter) {
			// Every later message of the partition waits behind this
			// batch: said once at ERROR, so an alert can catch it.
			stuck = true
			p.log.Error("batch failing for over a minute: the partition's later messages wait behind it until it succeeds", "consumer", p.durable, "err", err)
		}
		sleep(ctx, backoff)
		backoff = min(backoff*2, 10*time.Second)
	}
	// Acks travel in order on one connection, so confirming the last
	// confirms them all.
	for _, m := range msgs[:len(msgs)-1] {
		_ = m.Ack()
	}
	actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := msgs[len(msgs)-1].DoubleAck(actx); err != nil {
		// Redelivered later; handlers are idempotent.
		p.log.Warn("ack failed; batch will be redelivered", "consumer", p.durable, "err", err)
		return
	}
	if p.acked != nil {
		p.acked(actx, msgs)
	}
}

// consumerStage returns the stage and name a durable consumer's
// metrics carry: route, delivery or index with the route, destination or
// input it serves, or ingest with the consumer's own name (accept, the
// ingest splitter, receipts).
func consumerStage(durable string) (stage, name string) {
	for _, s := range []struct{ prefix, stage string }{{"route-", "route"}, {"dest-", "delivery"}, {"index-", "index"}} {
		rest, ok := strings.CutPrefix(durable, s.prefix)
		if !ok {
			continue
		}
		// One suffix: -pN (a partition's) or -b (the batch pipeline's).
		if i := strings.LastIndex(rest, "-p"); i > 0 && isDigits(rest[i+2:]) {
			return s.stage, rest[:i]
		}
		return s.stage, strings.TrimSuffix(rest, "-b")
	}
	return "ingest", durable
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// defaultStuckAfter is how long a batch may keep failing before the
// partition is reported stuck.
const defaultStuckAfter = time.Minute

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
