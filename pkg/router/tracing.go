package router

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/fault"
)

// Span attributes and events the router writes. Every value is an id, a
// configured name, a count or an outcome from a fixed set: never patient
// data, nor a reason text that might quote a receiver's answer.
const (
	attrOutcome     = "junction.outcome"
	attrAttempt     = "junction.attempt"
	attrCode        = "junction.code"
	attrDestination = "junction.destination"
	attrDeliveries  = "junction.deliveries"
	attrBatchSize   = "junction.batch_size"
	attrReplay      = "junction.replay"
)

// startAttempt starts the client span of one delivery attempt, a child of
// the deliver span in ctx, so that each retry shows in the trace with its
// time and outcome.
func (r *Router) startAttempt(ctx context.Context, id, dest string, attempt int, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if r.o.Tracer == nil {
		return ctx, trace.SpanFromContext(context.Background())
	}
	attrs = append(attrs, attribute.String("junction.message_id", id), attribute.String(attrDestination, dest), attribute.Int(attrAttempt, attempt))
	return r.o.Tracer.Start(ctx, "deliver.attempt", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endAttempt ends an attempt's span with its outcome: "ok", or the
// failure's class ("transient", "permanent") with its fault code and an
// error status.
func endAttempt(span trace.Span, err error) {
	if err == nil {
		span.SetAttributes(attribute.String(attrOutcome, "ok"))
		span.End()
		return
	}
	class := "permanent"
	if fault.IsTransient(err) {
		class = "transient"
	}
	span.SetAttributes(attribute.String(attrOutcome, class), attribute.String(attrCode, string(fault.CodeOf(err))))
	span.SetStatus(codes.Error, reasonOf(err))
	span.End()
}

// annotateRoute records on a route span what routing decided: each audit
// record's event (translated, matched, filtered, consent, transformed),
// at its time, with its outcome, destination and code; and, as
// junction.outcome, the message's fate on the route: "queued" (with
// junction.deliveries), "consent_denied", "filtered" (by match or a
// destination's condition), "not_taken" (a type the route does not
// take), "failed" or "none".
func annotateRoute(span trace.Span, ev *evaluation) {
	if !span.IsRecording() {
		return
	}
	denied, filtered, notTaken := false, false, false
	for _, rec := range ev.recs {
		attrs := []attribute.KeyValue{attribute.String(attrOutcome, rec.Outcome)}
		if rec.Destination != "" {
			attrs = append(attrs, attribute.String(attrDestination, rec.Destination))
		}
		if rec.Code != "" {
			attrs = append(attrs, attribute.String(attrCode, rec.Code))
		}
		opts := []trace.EventOption{trace.WithAttributes(attrs...)}
		if !rec.Time.IsZero() {
			opts = append(opts, trace.WithTimestamp(rec.Time))
		}
		span.AddEvent(string(rec.Event), opts...)
		switch {
		case rec.Event == audit.Consent && rec.Outcome == "deny":
			denied = true
		case rec.Event == audit.Filtered && rec.Outcome == "not-taken":
			notTaken = true
		case rec.Event == audit.Filtered:
			filtered = true
		}
	}
	outcome := "none"
	switch {
	case ev.fail != nil:
		outcome = "failed"
		span.SetAttributes(attribute.String(attrCode, string(fault.CodeOf(ev.fail))))
		span.SetStatus(codes.Error, reasonOf(ev.fail))
	case len(ev.deliveries) > 0:
		outcome = "queued"
	case denied:
		outcome = "consent_denied"
	case filtered:
		outcome = "filtered"
	case notTaken:
		outcome = "not_taken"
	}
	span.SetAttributes(attribute.String(attrOutcome, outcome), attribute.Int(attrDeliveries, len(ev.deliveries)))
}
