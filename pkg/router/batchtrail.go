package router

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/store"
)

// IDTime returns when a message id was made (its first 48 bits are Unix
// milliseconds), or false when id is not one of Junction's ids.
func IDTime(id string) (time.Time, bool) {
	if len(id) != 26 {
		return time.Time{}, false
	}
	var hi, lo uint64
	for i := 0; i < len(id); i++ {
		v := strings.IndexByte(crockford, id[i])
		if v < 0 {
			return time.Time{}, false
		}
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(v)
	}
	return time.UnixMilli(int64(hi >> 16)), true
}

// Trail reads every audit record of a message, in time order, from both
// pipelines: the per-message records on its own audit subject and, for a
// message the batch pipeline carried, the records in the batches it was
// part of, with its receipt made from the accepted batch that holds it.
//
// When part of the audit stream cannot be read (damaged files), or the
// store lost audit messages that may have held records of id, it
// returns what it read with an *audit.IncompleteError.
func Trail(ctx context.Context, js jetstream.JetStream, id string) ([]audit.Record, error) {
	recs, err := trail(ctx, js, id)
	if err == nil {
		err = lostRecords(ctx, js, id, len(recs) == 0)
	}
	return recs, err
}

// trail is Trail but for the audit messages the store lost.
func trail(ctx context.Context, js jetstream.JetStream, id string) ([]audit.Record, error) {
	recs, incomplete := audit.Trail(ctx, js, id)
	if !isIncomplete(incomplete) {
		return nil, incomplete
	}
	for _, r := range recs {
		if r.Event == audit.Received {
			return recs, incomplete
		}
	}
	more, err := batchTrail(ctx, js, id)
	if !isIncomplete(err) {
		return nil, err
	}
	recs = append(recs, more...)
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Time.Before(recs[j].Time) })
	return recs, cmp.Or(incomplete, err)
}

// lostRecords returns an *audit.IncompleteError when message id may have
// had records among audit messages the store lost (its files were
// damaged): those before its first message, when none of id was found,
// id was received before that first message, and the stream has no
// limits and refuses deletes and purges (audit.KeepsEverything), so
// only damage could have taken them; or, on a stream that loses
// messages only to damage (audit.GoneIsDamage), a run of sequences the
// server deleted rebuilding a damaged block, stored after id was
// received.
func lostRecords(ctx context.Context, js jetstream.JetStream, id string, none bool) error {
	at, ok := IDTime(id)
	if !ok {
		return nil
	}
	st, err := js.Stream(ctx, store.StreamAudit)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // no audit stream: nothing was lost from it
	}
	if err != nil {
		return fmt.Errorf("checking the audit stream for lost records: %w", err)
	}
	info := st.CachedInfo()
	if none && info.State.FirstSeq > 1 && !at.After(info.State.FirstTime.Add(windowSlack)) && audit.KeepsEverything(info.Config) {
		return &audit.IncompleteError{Err: fmt.Errorf("the store dropped audit stream messages 1-%d (its files were damaged), and this message came before the first message it kept", info.State.FirstSeq-1)}
	}
	if info.State.NumDeleted == 0 || !audit.GoneIsDamage(info.Config) {
		return nil
	}
	// Unanswered, the trail cannot be said to be whole.
	if info, err = st.Info(ctx, jetstream.WithDeletedDetails(true)); err != nil {
		return fmt.Errorf("reading the audit stream's lost sequences: %w", err)
	}
	if len(info.State.Deleted) == 0 {
		return nil
	}
	// The latest run: records are stored after the message they are of
	// was received, so an earlier run holds none of id's if this one
	// holds none.
	gone := slices.Clone(info.State.Deleted)
	slices.Sort(gone)
	gone = slices.Compact(gone)
	i := len(gone) - 1
	for i > 0 && gone[i-1]+1 == gone[i] {
		i--
	}
	first, last := gone[i], gone[len(gone)-1]
	if last < info.State.LastSeq {
		m, err := st.GetMsg(ctx, last+1)
		if err == nil && m.Time.Before(at.Add(-windowSlack)) {
			return nil // the run was stored before id was received
		}
	}
	return &audit.IncompleteError{Err: fmt.Errorf("the store lost audit stream messages %d-%d (its files were damaged), stored after this message was received", first, last)}
}

// isIncomplete reports whether err is nil or an *audit.IncompleteError:
// a read that gave what it could.
func isIncomplete(err error) bool {
	var incomplete *audit.IncompleteError
	return err == nil || errors.As(err, &incomplete)
}

// maxTrailScan bounds how many accepted batches a trail lookup reads.
const maxTrailScan = 200_000

// findAccepted finds the accepted batch holding message id: batches are
// read from just before the id's time until it turns up or the batches
// hold only messages received well after it. Batches the store counts
// but cannot read (its files are damaged there) are passed over: when
// the id is not found and one of them, stored after it was received,
// may have held it, the error is an *audit.IncompleteError saying so.
func findAccepted(ctx context.Context, js jetstream.JetStream, id string) (uint64, *envelope.Envelope, error) {
	at, ok := IDTime(id)
	if !ok {
		return 0, nil, nil
	}
	start := at.Add(-2 * time.Second)
	limit := at.Add(time.Minute)
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SubjAccepted + ".>"}, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	}
	var seq, past uint64 // the batch holding id; the one the read stopped at (0: none)
	var found *envelope.Envelope
	var unreadable []jserr.Run
	// A run stored wholly before the id was made cannot hold it.
	onRun := func(r jserr.Run) error {
		if r.Before.IsZero() || !r.Before.Before(at) {
			unreadable = append(unreadable, r)
		}
		return nil
	}
	scanned := 0
	err := scanFrom(ctx, js, store.StreamIngress, cfg, scanPayloadBatch, func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		if scanned++; scanned > maxTrailScan {
			past = meta.Sequence.Stream
			return true, nil
		}
		envs, err := decodeBatch(m.Data())
		if err != nil {
			return false, nil
		}
		for _, env := range envs {
			if env.ID == id {
				seq, found = meta.Sequence.Stream, env
				return true, nil
			}
		}
		// Past it: batches hold only messages received well after it.
		if len(envs) > 0 && envs[0].ReceivedAt.After(limit) {
			past = meta.Sequence.Stream
			return true, nil
		}
		return false, nil
	}, onRun)
	if err != nil {
		return 0, nil, fmt.Errorf("reading accepted batches: %w", err)
	}
	if found != nil {
		return seq, found, nil
	}
	// A reader filtered on the accepted batches passes over one the
	// store counts but cannot produce (a record overwritten in an
	// uncompressed block) without a word: the same stretch is read
	// again whole, headers only, which tells (jserr.ScanPast).
	whole := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start, HeadersOnly: true}
	err = scanFrom(ctx, js, store.StreamIngress, whole, scanBatch, func(_ jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		return past != 0 && meta.Sequence.Stream >= past, nil
	}, onRun)
	if err != nil {
		return 0, nil, fmt.Errorf("reading the ingress stream: %w", err)
	}
	if len(unreadable) > 0 {
		r := jserr.MergeRuns(unreadable)[0]
		return 0, nil, &audit.IncompleteError{Err: fmt.Errorf("the store counts ingress stream messages %d-%d but cannot read them (its files are damaged), and the accepted batch of this message may be among them", r.First, r.Last)}
	}
	// Or among those it dropped rebuilding a damaged block: stored after
	// the id was made, and not after the batches read.
	dropped, err := ingressDropped(ctx, js)
	if err != nil {
		return 0, nil, err
	}
	for _, r := range dropped {
		if (r.Before.IsZero() || !r.Before.Before(at)) && (r.After.IsZero() || !r.After.After(limit)) {
			return 0, nil, &audit.IncompleteError{Err: fmt.Errorf("the store lost ingress stream messages %d-%d (its files were damaged), stored after this message was received, and its accepted batch may have been among them", r.First, r.Last)}
		}
	}
	return 0, nil, nil
}

func batchTrail(ctx context.Context, js jetstream.JetStream, id string) ([]audit.Record, error) {
	accSeq, env, err := findAccepted(ctx, js, id)
	if err != nil || env == nil {
		return nil, err
	}
	out := []audit.Record{{Time: env.ReceivedAt, MessageID: id, Event: audit.Received, Source: env.Source, Outcome: "stored",
		Hash: audit.Hash(env.Raw), Stream: store.StreamIngress, Seq: accSeq}}
	ast, err := js.Stream(ctx, store.StreamAudit)
	if err != nil {
		return nil, fmt.Errorf("opening audit stream: %w", err)
	}
	// A route's records sit in the audit batch of the span that held the
	// accepted batch, named by the span's start.
	ingress, err := js.Stream(ctx, store.StreamIngress)
	if err != nil {
		return nil, fmt.Errorf("opening ingress stream: %w", err)
	}
	starts, err := findSpans(ctx, ingress, spanMarkerSubject(store.SubjIngress, "*"), 3, accSeq)
	if err != nil {
		return nil, err
	}
	// Records the accept stage wrote for the batch (no route takes the
	// source) sit in its own audit batch, named by the accepted batch.
	subjects := []string{store.SubjAudit + "._b.route.*." + strconv.FormatUint(accSeq, 10), auditBatchSubject("accept", "*", accSeq)}
	for name, start := range starts {
		if start != accSeq {
			subjects = append(subjects, auditBatchSubject("route", name, start))
		}
	}
	var routeRecs []audit.Record
	var incomplete error // an *audit.IncompleteError: the records read go on
	for _, subj := range subjects {
		recs, err := readAuditBatches(ctx, ast, subj, id)
		if !isIncomplete(err) {
			return nil, err
		}
		incomplete = cmp.Or(incomplete, err)
		routeRecs = append(routeRecs, recs...)
	}
	out = append(out, routeRecs...)
	outbound, err := js.Stream(ctx, store.StreamOutbound)
	if err != nil {
		return nil, fmt.Errorf("opening outbound stream: %w", err)
	}
	seen := map[string]bool{}
	for _, r := range routeRecs {
		if r.Event != audit.Queued || r.Seq == 0 {
			continue
		}
		start, err := findSpan(ctx, outbound, spanMarkerSubject(store.SubjOutbound, r.Destination), r.Seq)
		if err != nil {
			return nil, err
		}
		subj := auditBatchSubject("deliver", r.Destination, start)
		if seen[subj] {
			continue
		}
		seen[subj] = true
		recs, err := readAuditBatches(ctx, ast, subj, id)
		if !isIncomplete(err) {
			return nil, err
		}
		incomplete = cmp.Or(incomplete, err)
		out = append(out, recs...)
	}
	return out, incomplete
}

// readAuditBatches returns the records for id in the audit messages on
// subject (which may hold wildcards).
func readAuditBatches(ctx context.Context, st jetstream.Stream, subject, id string) ([]audit.Record, error) {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, fmt.Errorf("reading audit stream info: %w", err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	if n == 0 {
		return nil, nil
	}
	// audit.ReadSubject reads through to what the stream's leader holds,
	// even when the server places the reader on a replica behind or
	// damaged, and past a damaged block, with an *audit.IncompleteError.
	var out []audit.Record
	var decodeErr error
	err = audit.ReadSubject(ctx, st, subject, n, func(data []byte) (bool, error) {
		var recs []audit.Record
		if err := json.Unmarshal(data, &recs); err != nil {
			decodeErr = fmt.Errorf("decoding audit records: %w", err)
			return true, nil
		}
		for _, r := range recs {
			if r.MessageID == id {
				out = append(out, r)
			}
		}
		return false, nil
	})
	if decodeErr != nil {
		return nil, decodeErr
	}
	var incomplete *audit.IncompleteError
	if errors.As(err, &incomplete) {
		return out, err
	}
	if err != nil {
		return nil, fmt.Errorf("reading audit batches: %w", err)
	}
	return out, nil
}

// StoredPayload is one stored payload of one message.
type StoredPayload struct {
	Subject string
	Header  nats.Header
	Data    []byte
	Time    time.Time
}

// LoadPayload reads message id's payload stored at seq on stream, taking
// it out of its batch when the batch pipeline stored it (for outbound
// batches, the entry for destination dest).
func LoadPayload(ctx context.Context, js jetstream.JetStream, stream string, seq uint64, id, dest string) (*StoredPayload, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", stream, err)
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return nil, fmt.Errorf("reading stored payload: %w", err)
	}
	switch {
	case strings.HasPrefix(m.Subject, SubjAccepted+"."), strings.HasPrefix(m.Subject, store.SubjIngestLog+"."):
		envs, err := decodeBatch(m.Data)
		if err != nil {
			return nil, fmt.Errorf("reading accepted batch: %w", err)
		}
		for _, env := range envs {
			if env.ID == id {
				return &StoredPayload{Subject: IngressSubject(env.Source, env.Partition), Header: env.Header(), Data: env.Raw, Time: m.Time}, nil
			}
		}
		return nil, fmt.Errorf("message %s is not in batch %d of %s", id, seq, stream)
	case strings.HasPrefix(m.Subject, store.SubjOutbound+".") && strings.HasSuffix(m.Subject, "._b"):
		entries, err := decodeOutBatch(m.Data)
		if err != nil {
			return nil, fmt.Errorf("reading outbound batch: %w", err)
		}
		for _, e := range entries {
			if e.h.Get(envelope.HeaderID) == id && (dest == "" || e.h.Get(envelope.HeaderDestination) == dest) {
				return &StoredPayload{Subject: m.Subject, Header: e.h, Data: e.body, Time: m.Time}, nil
			}
		}
		return nil, fmt.Errorf("message %s is not in outbound batch %d", id, seq)
	}
	return &StoredPayload{Subject: m.Subject, Header: m.Header, Data: m.Data, Time: m.Time}, nil
}
