package router

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/store"
)

// OutboundBatchSubject is where the batch pipeline queues destination d's
// batches.
func OutboundBatchSubject(dest string) string { return store.SubjOutbound + "." + dest + "._b" }

// Outbound batch formats: JOB1, and JOB2 (compressed, see
// batchFormat), which is what is written.
const (
	outBatchMagic           = "JOB1"
	outBatchCompressedMagic = "JOB2"
)

// headerCount gives the number of entries of an outbound batch.
const headerCount = "Junction-Count"

// outEntry is one payload of an outbound batch, with the headers the
// per-message pipeline would have given it.
type outEntry struct {
	h    nats.Header
	body []byte
	// seq is the outbound batch the entry was read from (not encoded).
	seq uint64
}

// encodeOutBatch writes entries as: magic, count, then per entry the
// headers as JSON and the body, each length-prefixed, then compressed
// (FHIR JSON shrinks about eight-fold). sc is the caller's working memory
// (see batchFormat.encodeWith), or nil for a one-off.
func encodeOutBatch(sc *encodeScratch, entries []outEntry) ([]byte, error) {
	if sc == nil {
		sc = new(encodeScratch)
	}
	frames := slices.Grow(sc.frames[:0], len(entries))[:len(entries)]
	metas := sc.metas[:0]
	for i, e := range entries {
		start := len(metas)
		metas = appendHeader(metas, e.h)
		frames[i] = frame{meta: metas[start:len(metas):len(metas)], payload: e.body}
	}
	sc.frames, sc.metas = frames, metas
	return outFormat.encodeWith(sc, frames), nil
}

// outFormat is the format of outbound batches.
var outFormat = batchFormat{plain: outBatchMagic, compressed: outBatchCompressedMagic}

// decodeOutBatch reverses encodeOutBatch. Bodies alias data, or the
// decompressed copy of it.
func decodeOutBatch(data []byte) ([]outEntry, error) {
	frames, err := outFormat.decode(data, 0)
	if err != nil {
		return nil, err
	}
	out := make([]outEntry, 0, len(frames))
	for _, f := range frames {
		h, err := decodeHeader(f.meta)
		if err != nil {
			return nil, errBadBatch
		}
		out = append(out, outEntry{h: h, body: f.payload})
	}
	return out, nil
}

// batchRouteWorker runs one route over accepted batches.
type batchRouteWorker struct {
	w     *routeWorker
	spans *spanner
	// enc is the working memory of the outbound batches it encodes, one
	// at a time.
	enc encodeScratch
}

// handle routes one span of accepted batches (see spanner): their
// messages are evaluated in parallel, then every fate is stored
// (outbound batches, then one audit batch) before the span's first batch
// is acknowledged.
func (b *batchRouteWorker) handle(ctx context.Context, msgs []jetstream.Msg) error {
	ctx = context.WithoutCancel(ctx)
	w := b.w
	r := w.r
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading batch metadata: %w", err)
		}
		sp, inputs, covered, err := b.spans.claim(ctx, meta.Sequence.Stream, m.Headers(), m.Data())
		if err != nil {
			return err
		}
		if covered {
			continue
		}
		r.o.Metrics.Spans.WithLabelValues("route", w.rt.Name).Inc()
		r.o.Metrics.SpanBatches.WithLabelValues("route", w.rt.Name).Add(float64(len(inputs)))
		var envs []*envelope.Envelope
		for _, in := range inputs {
			all, err := decodeBatch(in.data)
			if err != nil {
				if _, derr := r.deadLetter(ctx, "route", w.rt.Name, batchHeader(in.header, in.seq), in.data, fault.Wrap(fault.Permanent, fault.CodeInternal, "unreadable accepted batch", err)); derr != nil {
					return derr
				}
				continue
			}
			for _, env := range all {
				if env.Source == w.rt.Source {
					envs = append(envs, env)
				}
			}
		}
		if len(envs) == 0 {
			continue
		}
		evs := make([]*evaluation, len(envs))
		each := parallel
		if r.o.Patients != nil {
			// One patient's messages in batch order: each is applied to
			// the patient index, and reads it, after the one before.
			each = func(_ int, fn func(i int)) { byPartition(envs, fn) }
		}
		// Each message's route span is the parent of its deliveries', as
		// in the message pipeline: its context goes with its payloads.
		sctxs := make([]context.Context, len(envs))
		each(len(envs), func(i int) {
			env := envs[i]
			sctx, span := r.startSpan(traceHeader(env), "route", attribute.String("junction.message_id", env.ID), attribute.String("junction.route", w.rt.Name))
			evs[i] = w.evaluate(sctx, env, nil)
			annotateRoute(span, evs[i])
			span.End()
			sctxs[i] = sctx
		})
		// Payloads per destination, in batch order; queued records wait
		// for their batch's sequence.
		type queued struct {
			dest string
			rec  int
		}
		perDest := map[string][]outEntry{}
		var dests []string
		var pending []queued
		// Sized for every record but a failure's: records are large, and
		// growing the slice by doubling copied them about twice.
		n := 0
		for _, ev := range evs {
			n += len(ev.recs) + len(ev.deliveries)
		}
		recs := make([]audit.Record, 0, n)
		for i, ev := range evs {
			env := envs[i]
			if retryable(ev.fail) {
				return ev.fail
			}
			recs = append(recs, ev.recs...)
			if ev.fail != nil {
				dseq, err := r.deadLetter(ctx, "route", w.rt.Name, env.Header(), env.Raw, ev.fail)
				if err != nil {
					return err
				}
				recs = append(recs, w.failRecords(env, ev, dseq)...)
				continue
			}
			for _, d := range ev.deliveries {
				h := env.Header()
				h.Set(envelope.HeaderContentType, d.ContentType)
				h.Set(envelope.HeaderRoute, w.rt.Name)
				h.Set(envelope.HeaderDestination, d.Destination)
				h.Set(envelope.HeaderPatient, ev.patientHeader())
				setDecided(h, ev.decided, ev.decidedFor, w.optOut)
				others := ev.setPatients(h, d)
				r.prop.Inject(sctxs[i], propagation.HeaderCarrier(h))
				if _, ok := perDest[d.Destination]; !ok {
					dests = append(dests, d.Destination)
				}
				perDest[d.Destination] = append(perDest[d.Destination], outEntry{h: h, body: d.Body})
				pending = append(pending, queued{dest: d.Destination, rec: len(recs)})
				recs = append(recs, queuedRecord(env, ev, w.rt.Name, d, 0, others))
			}
		}
		// One outbound batch per destination, split where it would not fit
		// in one store message; each records its sequence on the queued
		// records of its entries.
		limit := int(r.js.Conn().MaxPayload()) - headerRoom
		for _, dest := range dests {
			entries := perDest[dest]
			chunk := 0
			var recIdx []int
			for _, q := range pending {
				if q.dest == dest {
					recIdx = append(recIdx, q.rec)
				}
			}
			for start := 0; start < len(entries); chunk++ {
				end, size := start, 0
				for end < len(entries) && (end == start || size+len(entries[end].body)+1024 <= limit) {
					size += len(entries[end].body) + 1024
					end++
				}
				data, err := encodeOutBatch(&b.enc, entries[start:end])
				if err != nil {
					return err
				}
				om := nats.NewMsg(OutboundBatchSubject(dest))
				om.Data = data
				om.Header.Set(envelope.HeaderRoute, w.rt.Name)
				om.Header.Set(headerCount, strconv.Itoa(end-start))
				om.Header.Set(jetstream.MsgIDHeader, "ob|"+w.rt.Name+"|"+sp.id()+"|"+dest+"|"+strconv.Itoa(chunk))
				ack, err := r.js.PublishMsg(ctx, om)
				if err != nil {
					return fmt.Errorf("queueing outbound batch: %w", err)
				}
				for _, ri := range recIdx[start:end] {
					recs[ri].Seq = ack.Sequence
				}
				start = end
			}
		}
		if err := writeAuditBatch(ctx, r, "route", w.rt.Name, sp, recs); err != nil {
			return err
		}
	}
	return nil
}

// writeAuditBatch stores the records of one span of one stage as one
// audit message, on the subject named by the span's start. A retried
// write of the same span is deduplicated. Records that would not fit in
// one store message (a span of deliveries retried for hours collects an
// attempt record each time) are written per message instead, on each
// message's own audit subject, where its trail reads them too.
func writeAuditBatch(ctx context.Context, r *Router, stage, name string, sp span, recs []audit.Record) error {
	if len(recs) == 0 {
		return nil
	}
	id := "ab|" + stage + "|" + name + "|" + sp.id()
	if data, ok := encodedToFit(r, recs); ok {
		// The audit writer puts the batch on its hash chain like any record.
		key := strings.TrimPrefix(auditBatchSubject(stage, name, sp.start), store.SubjAudit+".")
		return r.audit.WriteEncoded(ctx, key, id, data)
	}
	var order []string
	byMsg := map[string][]audit.Record{}
	for _, rec := range recs {
		if _, ok := byMsg[rec.MessageID]; !ok {
			order = append(order, rec.MessageID)
		}
		byMsg[rec.MessageID] = append(byMsg[rec.MessageID], rec)
	}
	for _, msg := range order {
		mine := byMsg[msg]
		// One message's records in chunks of a fixed count, so a retry
		// names the same chunks the same way.
		for i := 0; i < len(mine); i += auditChunk {
			if err := r.audit.Write(ctx, msg, id+"|"+msg+"|"+strconv.Itoa(i/auditChunk), mine[i:min(i+auditChunk, len(mine))]...); err != nil {
				return err
			}
		}
	}
	return nil
}

// auditChunk is how many records of one message go in one audit message
// when a span's records do not fit in one: about 1 KiB a record at most.
const auditChunk = 512

// encodedToFit returns recs encoded as one audit message holds them, and
// whether that fits in one store message.
func encodedToFit(r *Router, recs []audit.Record) ([]byte, bool) {
	limit := int(r.js.Conn().MaxPayload()) - headerRoom
	data, err := audit.EncodeRecords(recs)
	return data, err == nil && len(data) <= limit
}

// traceHeader carries env's trace context for a span.
func traceHeader(env *envelope.Envelope) nats.Header {
	h := nats.Header{}
	if env.TraceParent != "" {
		h.Set(envelope.HeaderTraceParent, env.TraceParent)
	}
	return h
}

// parallel runs fn(0..n-1) on up to GOMAXPROCS goroutines.
func parallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next.Lock()
				j := i
				i++
				next.Unlock()
				if j >= n {
					return
				}
				fn(j)
			}
		}()
	}
	wg.Wait()
}

// batchDeliveryWorker sends one destination's outbound batches.
type batchDeliveryWorker struct {
	r     *Router
	d     *Destination
	spans *spanner
	// Concurrency is how many partitions are sent at once.
	concurrency int
	// doneSpan and done remember the entries of the span in hand whose
	// fate is decided, so a retried span does not send them again.
	doneSpan span
	done     map[int][]audit.Record
	// made holds the attempts made at entries still to send: a failed
	// batch attempt, an interrupted try, or attempts before a restart.
	made map[int]attempts
	// unwritten holds failed batch attempts whose own record could not
	// be written, to go with the entry's outcome.
	unwritten map[int][]audit.Record
	// moved are the partitions whose entries of the span in hand went to
	// their lanes, to be marked open before the span is acknowledged.
	moved map[string]bool
}

// batchable returns which of entries, in their partitions' order, may go
// in a batch attempt: those unchanged, up to the first of their partition
// that is not.
func batchable(entries []outEntry, unchanged []bool) []bool {
	held := map[string]bool{}
	out := make([]bool, len(entries))
	for j, e := range entries {
		p := e.h.Get(envelope.HeaderPartition)
		if !unchanged[j] {
			held[p] = true
		}
		out[j] = unchanged[j] && !held[p]
	}
	return out
}

// sendBatch makes one attempt at every entry through the destination's
// batch interface, marking those delivered as done and keeping the failed
// attempts of the rest for the per-entry retries.
func (w *batchDeliveryWorker) sendBatch(ctx context.Context, bs adapter.BatchSender, all []outEntry, open map[string]bool) {
	r, d := w.r, w.d
	// Entries of partitions whose lanes are open go there, behind what
	// waits in them, not in the batch; entries already done (delivered
	// and recorded before the span came back) are not sent again.
	var entries []outEntry
	var index []int
	for i, e := range all {
		if _, done := w.done[i]; !done && !open[e.h.Get(envelope.HeaderPartition)] {
			entries, index = append(entries, e), append(index, i)
		}
	}
	// An entry whose consent changed since it was decided goes to the
	// per-entry path, which decides it again, and so do the entries of
	// its partition after it, which must not reach the receiver first.
	keep := batchable(entries, r.unchangedForBatch(ctx, d, entries))
	kept := 0
	for j := range entries {
		if keep[j] {
			entries[kept], index[kept] = entries[j], index[j]
			kept++
		}
	}
	entries, index = entries[:kept], index[:kept]
	if len(entries) == 0 {
		return
	}
	ds := make([]*adapter.Delivery, len(entries))
	spans := make([]trace.Span, len(entries))
	tries := make([]trace.Span, len(entries))
	defer func() {
		for _, s := range spans {
			s.End()
		}
	}()
	for i, e := range entries {
		var sctx context.Context
		sctx, spans[i] = r.startSpan(e.h, "deliver", attribute.String("junction.message_id", e.h.Get(envelope.HeaderID)), attribute.String("junction.destination", d.Name))
		// The batch is one attempt for each of its entries.
		_, tries[i] = r.startAttempt(sctx, e.h.Get(envelope.HeaderID), d.Name, 1, attribute.Int(attrBatchSize, len(entries)))
		id, rt := e.h.Get(envelope.HeaderID), e.h.Get(envelope.HeaderRoute)
		ds[i] = &adapter.Delivery{MessageID: id, Route: rt, Destination: d.Name, ContentType: e.h.Get(envelope.HeaderContentType),
			Body: e.body, IdempotencyKey: id + "|" + rt + "|" + d.Name, Attempt: 1, ReceivedAt: receivedAt(e.h)}
	}
	actx, cancel := context.WithTimeout(ctx, d.Retry.Timeout)
	start := time.Now()
	var rcs []adapter.Receipt
	var errs []error
	if err := safely(func() error { rcs, errs = bs.SendBatch(actx, ds); return nil }); err != nil || len(rcs) != len(ds) || len(errs) != len(ds) {
		// A broken batch sender: leave every entry to the per-entry path.
		cancel()
		for _, s := range tries {
			endAttempt(s, fault.New(fault.CodeInternal, "batch sender failed; sent one at a time"))
		}
		return
	}
	if ctx.Err() != nil {
		// Shutting down: what failed was cut short, not refused. Nothing
		// is recorded; the span comes back after the restart.
		cancel()
		for i, s := range tries {
			endAttempt(s, errs[i])
		}
		return
	}
	cancel()
	for i, s := range tries {
		endAttempt(s, errs[i])
	}
	took := time.Since(start).Seconds()
	for i, e := range entries {
		r.o.Metrics.SendLatency.WithLabelValues(d.Name).Observe(took)
		rec := audit.Record{Time: time.Now().UTC(), MessageID: ds[i].MessageID, Route: ds[i].Route, Destination: d.Name,
			Stream: store.StreamOutbound, Seq: e.seq, Hash: audit.Hash(e.body), Attempt: 1}
		patientOf(e.h, &rec)
		if errs[i] == nil {
			r.o.Metrics.Attempts.WithLabelValues(d.Name, "ok").Inc()
			r.o.Metrics.Delivered.WithLabelValues(d.Name, "delivered").Inc()
			if rcv := ds[i].ReceivedAt; !rcv.IsZero() {
				r.o.Metrics.EndToEnd.WithLabelValues(ds[i].Route, d.Name).Observe(time.Since(rcv).Seconds())
			}
			rec.Event, rec.Outcome, rec.Status, rec.Location = audit.Delivered, "delivered", rcs[i].Status, rcs[i].Location
			spans[i].SetAttributes(attribute.String(attrOutcome, "delivered"), attribute.Int(attrAttempt, 1))
			w.done[index[i]] = []audit.Record{rec}
			r.delivering(d.Name)
			continue
		}
		class := "permanent"
		if fault.IsTransient(errs[i]) {
			class = "transient"
		}
		// Its fate (a lane's retries, or a dead letter) is decided and
		// traced after, on a span of its own.
		spans[i].SetAttributes(attribute.String(attrOutcome, "failed"), attribute.Int(attrAttempt, 1), attribute.String(attrCode, string(fault.CodeOf(errs[i]))))
		spans[i].SetStatus(codes.Error, reasonOf(errs[i]))
		r.o.Metrics.Attempts.WithLabelValues(d.Name, class).Inc()
		rec.Event, rec.Outcome, rec.Reason, rec.Code = audit.Failed, class, reasonOf(errs[i]), string(fault.CodeOf(errs[i]))
		if !r.recordFailure(rec) {
			w.unwritten[index[i]] = []audit.Record{rec} // written with the outcome instead
		}
		w.made[index[i]] = attempts{made: 1, last: &rec, asked: fault.RetryAfterOf(errs[i])}
	}
}

// recordDelivered writes at once the records of the entries idx (one
// partition's) already delivered in the span in hand, and leaves them
// done with nothing more to write.
func (w *batchDeliveryWorker) recordDelivered(ctx context.Context, mu *sync.Mutex, idx []int) error {
	for _, i := range idx {
		mu.Lock()
		recs := w.done[i]
		mu.Unlock()
		if len(recs) == 0 {
			continue
		}
		rec := recs[len(recs)-1]
		if err := w.r.audit.Write(ctx, rec.MessageID, "deliver|early|"+w.d.Name+"|"+strconv.FormatUint(rec.Seq, 10)+"|"+rec.MessageID+"|"+rec.Route, recs...); err != nil {
			return fmt.Errorf("recording deliveries before moving to a lane: %w", err)
		}
		mu.Lock()
		w.done[i] = nil
		mu.Unlock()
	}
	return nil
}

// countEarlier reads, for a span delivered before (by a process that
// stopped), the attempts made at each of its entries, which count towards
// max_attempts: entries delivered (or routed again, their consent having
// changed) and recorded before are marked done, not to be sent, moved nor
// routed again. An error (a trail that cannot be read) leaves the span to
// be tried again: sent as if never tried, an entry could be delivered
// twice or refused for good again and again.
func (w *batchDeliveryWorker) countEarlier(ctx context.Context, entries []outEntry) error {
	for i, e := range entries {
		a, err := w.r.attemptsMade(ctx, e.h.Get(envelope.HeaderID), e.h.Get(envelope.HeaderRoute), w.d.Name, e.seq)
		if err != nil {
			return err
		}
		switch {
		case a.delivered, a.settled != nil:
			w.done[i] = nil
		case a.made > 0:
			w.made[i] = a
		}
	}
	return nil
}

// handle delivers one span of outbound batches (see spanner):
// partitions concurrently, each partition's entries in order. An entry
// that fails and is to be tried again goes, with the rest of its
// partition's entries, to the partition's lane (see lanes.go), where it
// is retried with backoff without holding the span back; so do the
// entries of partitions whose lanes are open. A permanent failure
// dead-letters the entry. Then one audit batch records them all.
func (w *batchDeliveryWorker) handle(ctx context.Context, msgs []jetstream.Msg) error {
	r, d := w.r, w.d
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading batch metadata: %w", err)
		}
		sp, inputs, covered, err := w.spans.claim(context.WithoutCancel(ctx), meta.Sequence.Stream, m.Headers(), m.Data())
		if err != nil {
			return err
		}
		if covered {
			continue
		}
		r.o.Metrics.Spans.WithLabelValues("deliver", d.Name).Inc()
		r.o.Metrics.SpanBatches.WithLabelValues("deliver", d.Name).Add(float64(len(inputs)))
		var entries []outEntry
		for _, in := range inputs {
			es, err := decodeOutBatch(in.data)
			if err != nil {
				if _, derr := r.deadLetter(context.WithoutCancel(ctx), "delivery", d.Name, batchHeader(in.header, in.seq), in.data, fault.Wrap(fault.Permanent, fault.CodeInternal, "unreadable outbound batch", err)); derr != nil {
					return derr
				}
				continue
			}
			for i := range es {
				es[i].seq = in.seq
			}
			entries = append(entries, es...)
		}
		outbound := w.spans.st
		lanes, err := readLanes(ctx, outbound, d.Name)
		if err != nil {
			return err
		}
		if w.doneSpan != sp || w.done == nil {
			w.doneSpan, w.done, w.made, w.unwritten, w.moved = sp, map[int][]audit.Record{}, map[int]attempts{}, map[int][]audit.Record{}, map[string]bool{}
			if meta.NumDelivered > 1 {
				if err := w.countEarlier(ctx, entries); err != nil {
					// Counted again, from the first, on the next try.
					w.done = nil
					return err
				}
			}
			if bs, ok := d.Out.(adapter.BatchSender); ok && len(w.made) == 0 {
				w.sendBatch(ctx, bs, entries, lanes.open)
			}
		}
		groups := map[string][]int{}
		var order []string
		for i, e := range entries {
			p := e.h.Get(envelope.HeaderPartition)
			if _, ok := groups[p]; !ok {
				order = append(order, p)
			}
			groups[p] = append(groups[p], i)
		}
		var mu sync.Mutex
		var firstErr error
		sem := make(chan struct{}, max(1, w.concurrency))
		var wg sync.WaitGroup
		for _, p := range order {
			wg.Add(1)
			sem <- struct{}{}
			go func(p string, idx []int) {
				defer func() { <-sem; wg.Done() }()
				mu.Lock()
				lane := lanes.open[p] || w.moved[p]
				mu.Unlock()
				for _, i := range idx {
					mu.Lock()
					_, ok := w.done[i]
					prior := w.made[i]
					mu.Unlock()
					if ok {
						continue
					}
					e := entries[i]
					var recs []audit.Record
					now, err := prior, error(nil)
					decided := prior.decided(d.Retry)
					if decided || !lane && prior.made == 0 {
						// A fate earlier attempts decided (refused for good,
						// or out of attempts) is dead-lettered here, without
						// another attempt, lane or not: a lane's worker
						// would not know it was decided.
						recs, now, err = sendPayload(ctx, r, d, e.h, e.body, e.seq, prior, true)
					} else if !lane {
						// A failed batch attempt: to the lane, not a wait.
						err = errDeferred
					}
					if !lane && errors.Is(err, errDeferred) {
						// Record first what this partition delivered
						// directly in this span, so that the span, given
						// again, skips it rather than moving it behind
						// what waits in the lane. Then open the lane
						// before moving anything: a process that stops
						// after the move must leave it open, or the span
						// given again would send directly what waits in
						// the lane. (Opened again after the span, below,
						// in case the lane's worker closed it between.)
						err = w.recordDelivered(context.WithoutCancel(ctx), &mu, idx)
						if err == nil {
							err = r.openLanes(context.WithoutCancel(ctx), outbound, d.Name, map[string]bool{p: true})
						}
						if err == nil {
							err = errDeferred
						}
					}
					if lane && !decided || errors.Is(err, errDeferred) {
						if err = r.toLane(ctx, d.Name, e, now); err == nil {
							if !lane {
								r.o.Logger.Info("delivery moved to its partition's lane to be retried", "message_id", e.h.Get(envelope.HeaderID), "destination", d.Name, "partition", p)
							}
							lane = true
							mu.Lock()
							w.moved[p] = true
							w.unwritten[i] = append(w.unwritten[i], recs...)
							w.done[i] = nil
							mu.Unlock()
							continue
						}
					}
					if err != nil {
						mu.Lock()
						w.made[i] = now // for the span's next try
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
					mu.Lock()
					w.done[i] = recs
					mu.Unlock()
				}
			}(p, groups[p])
		}
		wg.Wait()
		if firstErr != nil {
			return firstErr
		}
		if len(w.moved) > 0 {
			// Open after the moves and before the span is acknowledged:
			// the next span must find them open (see lanes.go).
			if err := r.openLanes(context.WithoutCancel(ctx), outbound, d.Name, w.moved); err != nil {
				return err
			}
		}
		n := 0
		for i := range entries {
			n += len(w.unwritten[i]) + len(w.done[i])
		}
		recs := make([]audit.Record, 0, n)
		for i := range entries {
			recs = append(append(recs, w.unwritten[i]...), w.done[i]...)
		}
		if err := writeAuditBatch(context.WithoutCancel(ctx), r, "deliver", d.Name, sp, recs); err != nil {
			return err
		}
		w.done, w.made, w.unwritten, w.moved = nil, nil, nil, nil
	}
	return nil
}
