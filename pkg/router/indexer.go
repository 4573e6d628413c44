package router

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/store"
)

// indexWorker keeps the patient index current from a source that no
// route reads (a PAS feed kept only so that other feeds' routes know the
// patient, say). It translates each of the source's messages, applies the
// translation to the index and acknowledges. Nothing leaves Junction, so
// it writes no output and no audit record; a message it cannot translate
// is counted (junction_patient_index_total{outcome="untranslated"}) and
// passed over, since no route would have delivered it either. Applying
// a message twice changes nothing (patient.Index.Apply), so a redelivery
// after a crash is harmless; one patient's messages are applied in order.
type indexWorker struct {
	r      *Router
	source string
	tr     *sharedTranslator
}

// unroutedSources returns the sources with a translator that no route
// reads, in a stable order.
func (r *Router) unroutedSources() []string {
	routed := map[string]bool{}
	for _, rt := range r.o.Routes {
		routed[rt.Source] = true
	}
	var out []string
	for src, t := range r.o.Translators {
		if t != nil && !routed[src] {
			out = append(out, src)
		}
	}
	slices.Sort(out)
	return out
}

// indexConsumers returns the consumers of the index workers of the
// unrouted sources, for the pipeline in use.
func (r *Router) indexConsumers(ctx context.Context, ingress jetstream.Stream, shared map[string]*sharedTranslator) ([]*partitionConsumer, error) {
	if r.o.Patients == nil {
		return nil, nil
	}
	var pcs []*partitionConsumer
	for _, src := range r.unroutedSources() {
		w := &indexWorker{r: r, source: src, tr: shared[src]}
		if r.o.Pipeline == PipelineBatch {
			durable := "index-" + src + "-b"
			in, err := acceptedInputOf(ctx, r.js, ingress, durable, src)
			if err != nil {
				return nil, err
			}
			pcs = append(pcs, &partitionConsumer{
				stream: store.StreamIngress, durable: durable, filters: in.filters,
				batch: 1, ackWait: r.o.AckWait, deliver: jetstream.DeliverNewPolicy, log: r.o.Logger, handle: w.handleBatches,
			})
			continue
		}
		for p := range r.o.Store.Partitions() {
			pcs = append(pcs, &partitionConsumer{
				stream: store.StreamIngress, durable: "index-" + src + "-p" + strconv.Itoa(p),
				filter: IngressSubject(src, p), batch: 1, ackWait: r.o.AckWait,
				deliver: jetstream.DeliverNewPolicy, log: r.o.Logger, handle: w.handleMessages,
			})
		}
	}
	return pcs, nil
}

// handleBatches applies the source's messages of accepted batches.
func (w *indexWorker) handleBatches(ctx context.Context, msgs []jetstream.Msg) error {
	ctx = context.WithoutCancel(ctx)
	for _, m := range msgs {
		all, err := decodeBatch(m.Data())
		if err != nil {
			// The routes of other sources dead-letter the batch; it holds
			// nothing this worker could read.
			w.r.o.Logger.Warn("patient index: unreadable accepted batch passed over", slog.String("source", w.source), slog.String("error", err.Error()))
			continue
		}
		var envs []*envelope.Envelope
		for _, env := range all {
			if env.Source == w.source {
				envs = append(envs, env)
			}
		}
		if err := w.apply(ctx, envs); err != nil {
			return err
		}
	}
	return nil
}

// handleMessages applies ingress messages (the message pipeline).
func (w *indexWorker) handleMessages(ctx context.Context, msgs []jetstream.Msg) error {
	ctx = context.WithoutCancel(ctx)
	var envs []*envelope.Envelope
	for _, m := range msgs {
		h := m.Headers()
		if h.Get(envelope.HeaderReplay) != "" {
			continue // a replay is aimed at routes, and was applied before
		}
		envs = append(envs, envelope.FromHeader(h, m.Data()))
	}
	return w.apply(ctx, envs)
}

// apply translates envs and applies them to the index, one partition's
// messages in order. A transient failure (the index unavailable) fails
// the whole call, so the messages come again.
func (w *indexWorker) apply(ctx context.Context, envs []*envelope.Envelope) error {
	errs := make([]error, len(envs))
	byPartition(envs, func(i int) {
		if err := w.tr.Index(ctx, envs[i]); err != nil {
			if retryable(err) {
				errs[i] = err
				return
			}
			w.r.o.Metrics.PatientIndex.WithLabelValues(w.source, "untranslated").Inc()
		}
	})
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("patient index from %s: %w", w.source, err)
		}
	}
	return nil
}
