package router

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/store"
)

// splitterDurable is the ingest splitter's durable consumer.
const splitterDurable = "ingest-splitter"

// Reconcile reads every accepted message still retained (the ingress
// stream, and ingest-log entries not split yet or recognised there as
// resends) and every audit record, and reports each message's fate.
// routes maps each source to the routes that read it. With since set, it
// reports only the messages received at or after it, and reads the
// streams from a little before it (what was stored since, allowing for
// clocks out of step), so a window bounds its time and memory; without,
// it reads the retained streams in full, which on a large store takes a
// while. Runs of the ingress stream and the ingest log that the store
// counts but cannot read (damaged files) are read past and named, with
// when the messages around them were stored (IngressUnreadable, and
// IngestLogLost for batches not yet taken for routing). It changes
// nothing.
func Reconcile(ctx context.Context, js jetstream.JetStream, routes map[string][]string, since time.Time) (audit.Reconciliation, error) {
	return ReconcileWindow(ctx, js, routes, since, time.Time{})
}

// ReconcileWindow is Reconcile of the messages received at or after
// since and, with until set, before until: a window closed at both ends,
// so that windows laid end to end count every message once. With until
// set, a message whose receipt is unknown is in no window (the whole
// store's reconcile still counts it); without, as Reconcile.
func ReconcileWindow(ctx context.Context, js jetstream.JetStream, routes map[string][]string, since, until time.Time) (audit.Reconciliation, error) {
	return reconcile(ctx, js, routes, since, until, nil)
}

// ReconcilePaced is ReconcileWindow at the pace of a background task: it
// reads at most a quarter of the time, sleeping the rest, so that the
// engine's own reads and writes of the store go on beside it (see pacer).
func ReconcilePaced(ctx context.Context, js jetstream.JetStream, routes map[string][]string, since, until time.Time) (audit.Reconciliation, error) {
	return reconcile(ctx, js, routes, since, until, newPacer(schedulePaceIdle))
}

// reconcile is ReconcileWindow, paced by p (not when nil).
func reconcile(ctx context.Context, js jetstream.JetStream, routes map[string][]string, since, until time.Time, p *pacer) (audit.Reconciliation, error) {
	var accepted []audit.Accepted
	// at is the place in accepted of each message stored for routing.
	at := map[string]int{}
	// before says whether a message received at rcv is outside the
	// window (one whose receipt is unknown is not, unless the window is
	// closed).
	before := func(rcv time.Time) bool {
		if until.IsZero() {
			return !since.IsZero() && !rcv.IsZero() && rcv.Before(since)
		}
		return rcv.IsZero() || rcv.Before(since) || !rcv.Before(until)
	}
	take := func(id, source string, rcv, stored time.Time) {
		if id == "" || before(rcv) {
			return
		}
		if i, ok := at[id]; ok {
			// Stored again by a replay: the routes that could see the
			// message are those running when it was first stored (the
			// replay goes to its own routes only).
			if a := &accepted[i]; !stored.IsZero() && (a.Stored.IsZero() || stored.Before(a.Stored)) {
				a.Stored = stored
			}
			return
		}
		at[id] = len(accepted)
		accepted = append(accepted, audit.Accepted{ID: id, Source: source, Received: rcv, Stored: stored})
	}
	// storedAt is when the stream took m: what a route's consumers, which
	// start at new messages, compare.
	storedAt := func(m jetstream.Msg) time.Time {
		meta, err := m.Metadata()
		if err != nil {
			return time.Time{}
		}
		return meta.Timestamp
	}
	from := time.Time{}
	if !since.IsZero() {
		from = since.Add(-windowSlack)
	}
	// The ingest log's read floor is read before the streams its reader
	// writes: every entry at or below it was stored for routing before,
	// so the scans below see it. Read after them, an entry stored in
	// between would be below the floor and not seen stored, and taken
	// for a resend.
	floor, err := ingestReadFloor(ctx, js)
	if err != nil {
		return audit.Reconciliation{}, err
	}
	// The scans pass over batches the store dropped as deleted
	// sequences (a damaged block rebuilt): those after the floor held
	// acknowledged messages no stream has, said apart.
	lost, err := ingestLogLoss(ctx, js, floor)
	if err != nil {
		return audit.Reconciliation{}, err
	}
	// inWindow says whether run r may hold messages of the window: one
	// written wholly before from holds none.
	inWindow := func(r jserr.Run) bool { return from.IsZero() || r.Before.IsZero() || !r.Before.Before(from) }
	var ingestLost []jserr.Run
	for _, r := range lost {
		if inWindow(r) {
			ingestLost = append(ingestLost, r)
		}
	}
	// Runs of the ingress stream and ingest log that the store counts
	// but cannot read (damaged files): the scans go on past them, and
	// the reconciliation says where they were.
	var ingressRuns, logRuns []jserr.Run
	onIngress := func(r jserr.Run) error { ingressRuns = append(ingressRuns, r); return nil }
	err = scan(ctx, js, store.StreamIngress, store.SubjIngress+".>", true, from, func(m jetstream.Msg) error {
		if strings.HasPrefix(m.Subject(), SubjAccepted+".") {
			return nil // read in full below
		}
		if strings.HasPrefix(m.Subject(), SubjIngestLost+".") {
			return nil // read in full below
		}
		h := m.Headers()
		rcv, _ := time.Parse(time.RFC3339Nano, h.Get(envelope.HeaderReceived))
		take(h.Get(envelope.HeaderID), h.Get(envelope.HeaderSource), rcv, storedAt(m))
		return p.step(ctx, 1)
	}, onIngress)
	if err != nil {
		return audit.Reconciliation{}, err
	}
	// The batch pipeline's accepted batches hold their messages.
	err = scan(ctx, js, store.StreamIngress, SubjAccepted+".>", false, from, func(m jetstream.Msg) error {
		envs, err := decodeBatch(m.Data())
		if err != nil {
			return nil
		}
		stored := storedAt(m)
		for _, env := range envs {
			take(env.ID, env.Source, env.ReceivedAt, stored)
		}
		return p.step(ctx, len(envs))
	}, onIngress)
	if err != nil {
		return audit.Reconciliation{}, err
	}
	// Batches the accept stage passed over, recorded lost as it moved
	// past them: below its floor now, so not found above.
	err = scan(ctx, js, store.StreamIngress, SubjIngestLost+".>", false, from, func(m jetstream.Msg) error {
		var r jserr.Run
		if err := json.Unmarshal(m.Data(), &r); err == nil && inWindow(r) {
			ingestLost = append(ingestLost, r)
		}
		return nil
	}, onIngress)
	if err != nil {
		return audit.Reconciliation{}, err
	}
	// The scans pass over what the server dropped as deleted sequences
	// rebuilding a damaged block (Junction deletes nothing from the
	// ingress stream): lost the same way.
	dropped, err := ingressDropped(ctx, js)
	if err != nil {
		return audit.Reconciliation{}, err
	}
	// Both scans meet the same damage: each run once, those of the
	// window.
	ingressRuns = slices.DeleteFunc(jserr.MergeRuns(append(ingressRuns, dropped...)), func(r jserr.Run) bool { return !inWindow(r) })
	// mayBeUnreadable says whether a message the ingest log's reader
	// took, from a batch written at written, may have been stored for
	// routing in a run of the ingress stream the store cannot read: one
	// stored after it was written. It is then not taken for a resend.
	mayBeUnreadable := func(written time.Time) bool {
		return slices.ContainsFunc(ingressRuns, func(r jserr.Run) bool { return r.Before.IsZero() || !r.Before.Before(written) })
	}
	// Entries the ingest log's reader (the splitter, or the batch
	// pipeline's accept stage) had passed (floor, read first) but that
	// were not stored under their own id were resends, unless their
	// stored copy may be unreadable; those it had not passed are still
	// waiting.
	err = scan(ctx, js, store.StreamIngestLog, store.SubjIngestLog+".>", false, from, func(m jetstream.Msg) error {
		envs, err := decodeBatch(m.Data())
		if err != nil {
			return nil // dead-lettered by the splitter; not an accepted message of its own
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading ingest-log metadata: %w", err)
		}
		for _, env := range envs {
			if _, stored := at[env.ID]; stored || before(env.ReceivedAt) {
				continue
			}
			a := audit.Accepted{ID: env.ID, Source: env.Source, Received: env.ReceivedAt}
			switch {
			case meta.Sequence.Stream > floor:
				a.Unsplit = true
			case mayBeUnreadable(meta.Timestamp):
				// Counted by its records, kept below as those of a
				// message stored for routing.
				at[env.ID] = len(accepted)
			default:
				a.Duplicate = true
			}
			accepted = append(accepted, a)
		}
		return p.step(ctx, len(envs))
	}, func(r jserr.Run) error { logRuns = append(logRuns, r); return nil })
	if err != nil {
		return audit.Reconciliation{}, err
	}
	// Unreadable batches after the floor were not taken for routing
	// either: lost, as those the store dropped. (Those at or below it
	// were taken: their messages are counted from the ingress stream,
	// and resends are not counted.)
	for _, r := range logRuns {
		if r.Last > floor && inWindow(r) {
			r.First = max(r.First, floor+1)
			ingestLost = append(ingestLost, r)
		}
	}
	ingestLost = jserr.MergeRuns(ingestLost)
	ledger := audit.NewLedger()
	// Only the records of messages stored for routing decide anything:
	// resends and messages not yet split end without them, and records
	// of messages no longer retained (or outside the window) are not
	// kept.
	keep := func(id string) bool { _, ok := at[id]; return ok }
	// Records in damaged files cannot be read: the reconciliation goes
	// on without them and says where they were.
	var unreadable []audit.SeqRange
	opt := audit.ScanOptions{From: from, Unreadable: func(r audit.SeqRange) { unreadable = append(unreadable, r) }}
	err = audit.ScanMessages(ctx, js, opt, func(_ audit.Position, subject string, data []byte) error {
		if strings.HasPrefix(subject, audit.SubjGap+".") || strings.HasPrefix(subject, audit.SubjCheckpoint+".") {
			return nil // the chain's own notes, not records
		}
		if err := ledger.AddJSON(data, keep); err != nil {
			return err
		}
		return p.step(ctx, 1)
	})
	if err != nil {
		return audit.Reconciliation{}, err
	}
	routesStarted, err := routesSince(ctx, js, routes)
	if err != nil {
		return audit.Reconciliation{}, err
	}
	rep := ledger.Reconcile(accepted, routes, routesStarted)
	rep.Since, rep.Until, rep.Unreadable, rep.IngestLogLost, rep.IngressUnreadable = since, until, unreadable, ingestLost, ingressRuns
	return rep, nil
}

// ingressDropped returns the runs of sequences the ingress stream no
// longer holds between its first and last (droppedRuns).
func ingressDropped(ctx context.Context, js jetstream.JetStream) ([]jserr.Run, error) {
	st, err := js.Stream(ctx, store.StreamIngress)
	if err != nil {
		return nil, fmt.Errorf("opening the ingress stream: %w", err)
	}
	return droppedRuns(ctx, st, 0)
}

// routesSince returns when each route started taking messages: the
// earliest creation of its consumers on the ingress stream, which start
// at new messages, so a route added later never sees earlier ones. A
// route with no consumer yet is left out (waited for on every message).
func routesSince(ctx context.Context, js jetstream.JetStream, routes map[string][]string) (map[string]time.Time, error) {
	names := map[string]bool{}
	for _, rs := range routes {
		for _, rt := range rs {
			names[rt] = true
		}
	}
	st, err := js.Stream(ctx, store.StreamIngress)
	if err != nil {
		return nil, fmt.Errorf("reading route consumers: %w", err)
	}
	since := map[string]time.Time{}
	lister := st.ListConsumers(ctx)
	for info := range lister.Info() {
		rt, ok := routeOfDurable(info.Name)
		if !ok || !names[rt] {
			continue
		}
		if t, seen := since[rt]; !seen || info.Created.Before(t) {
			since[rt] = info.Created
		}
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("reading route consumers: %w", err)
	}
	return since, nil
}

// routeOfDurable returns the route whose consumer durable is name:
// "route-NAME-b" (batch pipeline) or "route-NAME-pN" (partitions).
func routeOfDurable(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "route-")
	if !ok {
		return "", false
	}
	if rt, ok := strings.CutSuffix(rest, "-b"); ok && rt != "" {
		return rt, true
	}
	i := strings.LastIndex(rest, "-p")
	if i <= 0 || i+2 == len(rest) {
		return "", false
	}
	for _, c := range rest[i+2:] {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return rest[:i], true
}

// windowSlack is how long before a reconcile window's start the streams
// are read from: a message is stored after it is received, but the
// store's clock and the receiving process's can differ.
const windowSlack = time.Minute

// scan reads every message of stream on filter stored at or after from
// (every one, from the zero time), up to those stored when it starts,
// with an ordered consumer, giving unreadable (when set) each run of
// messages the store counts but cannot read and reading on after it
// (jserr.ScanPast).
func scan(ctx context.Context, js jetstream.JetStream, stream, filter string, headersOnly bool, from time.Time, fn func(jetstream.Msg) error,
	unreadable func(jserr.Run) error) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, HeadersOnly: headersOnly}
	if !from.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	batch := scanBatch
	if !headersOnly {
		batch = scanPayloadBatch
	}
	return scanFrom(ctx, js, stream, cfg, batch, func(m jetstream.Msg, _ *jetstream.MsgMetadata) (bool, error) {
		return false, fn(m)
	}, unreadable)
}

// Messages a scan asks for at once: scanBatch of small ones (headers),
// scanPayloadBatch of stored batches, which carry up
// to a few MiB of payloads each.
const (
	scanBatch        = 1000
	scanPayloadBatch = 32
)

// scanFrom reads the messages of stream that an ordered consumer made
// with cfg delivers, up to those stored when it starts, batch at a time,
// until fn says to stop or ctx is done. It takes what the server has
// without waiting for full batches, so it ends as soon as it has read
// them. With unreadable set, each run of messages the store counts but
// cannot read (its files are damaged there) is given to it, and the read
// goes on after the run (jserr.ScanPast); without, the read ends there
// with an error saying so.
func scanFrom(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.OrderedConsumerConfig, batch int,
	fn func(jetstream.Msg, *jetstream.MsgMetadata) (stop bool, err error), unreadable func(jserr.Run) error) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("opening stream %s: %w", stream, err)
	}
	return jserr.ScanPast(ctx, st, cfg, batch, fn, unreadable)
}

// scanStream is scanFrom on a stream already opened: jserr.Scan, which
// reads through to what the stream's leader holds even when the server
// places the reader on a replica that is behind or damaged.
func scanStream(ctx context.Context, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig, batch int,
	fn func(jetstream.Msg, *jetstream.MsgMetadata) (stop bool, err error)) error {
	return jserr.Scan(ctx, st, cfg, batch, fn)
}
