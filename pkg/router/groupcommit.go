package router

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// Group commit. JetStream fsyncs every stream message on its own, so one
// message per fsync caps ingest at the disk's fsync rate (about 6,000 a
// second here). The ingester therefore writes the messages of all
// connections that arrive while the previous write is in flight as ONE
// stream message on the ingest log, and acknowledges each sender once that
// write is stored. A splitter consumer then republishes each entry,
// unchanged and in arrival order, to its per-patient ingress subject, with
// the dedupe key as Nats-Msg-Id, so routing, ordering and the stream's
// dedupe work exactly as for a direct write. Batching adds no waiting: at
// low load every batch holds one message.

const (
	batchMagic           = "JGC1"
	batchCompressedMagic = "JGC2"
	maxBatchCount        = 512
	maxBatchBytes        = 4 << 20
)

// entryMeta is an envelope without its payload, as stored in a batch.
type entryMeta struct {
	ID          string    `json:"id"`
	Source      string    `json:"src"`
	ContentType string    `json:"ct"`
	ReceivedAt  time.Time `json:"rcv"`
	MessageType string    `json:"mt,omitempty"`
	ControlID   string    `json:"cid,omitempty"`
	Sender      string    `json:"snd,omitempty"`
	DedupeKey   string    `json:"dk,omitempty"`
	Partition   int       `json:"p"`
	TraceParent string    `json:"tp,omitempty"`
}

// encodeBatch writes envelopes as: magic, count, then per entry the
// metadata JSON and the raw bytes, each length-prefixed, then compressed
// (see batchFormat).
func encodeBatch(envs []*envelope.Envelope) ([]byte, error) {
	frames := make([]frame, len(envs))
	var metas []byte
	for i, e := range envs {
		start := len(metas)
		metas = appendEntryMeta(metas, &entryMeta{ID: e.ID, Source: e.Source, ContentType: e.ContentType, ReceivedAt: e.ReceivedAt,
			MessageType: e.MessageType, ControlID: e.ControlID, Sender: e.Sender, DedupeKey: e.DedupeKey, Partition: e.Partition, TraceParent: e.TraceParent})
		frames[i] = frame{meta: metas[start:len(metas):len(metas)], payload: e.Raw}
	}
	return ingestFormat.encode(frames), nil
}

// ingestFormat is the format of ingest and accepted batches.
var ingestFormat = batchFormat{plain: batchMagic, compressed: batchCompressedMagic}

var errBadBatch = errors.New("malformed ingest batch")

// decodeBatch reverses encodeBatch. Raw slices alias data, or the
// decompressed copy of it.
func decodeBatch(data []byte) ([]*envelope.Envelope, error) {
	frames, err := ingestFormat.decode(data, maxBatchCount)
	if err != nil {
		return nil, err
	}
	out := make([]*envelope.Envelope, 0, len(frames))
	for _, f := range frames {
		m, err := decodeEntryMeta(f.meta)
		if err != nil {
			return nil, errBadBatch
		}
		out = append(out, &envelope.Envelope{ID: m.ID, Source: m.Source, ContentType: m.ContentType, ReceivedAt: m.ReceivedAt,
			MessageType: m.MessageType, ControlID: m.ControlID, Sender: m.Sender, DedupeKey: m.DedupeKey, Partition: m.Partition, TraceParent: m.TraceParent, Raw: f.payload})
	}
	return out, nil
}

type commitReq struct {
	env  *envelope.Envelope
	done chan error
}

// committer is the one goroutine that writes batches, so arrival order is
// stream order.
type committer struct {
	js jetstream.JetStream
	// maxBytes bounds a batch's payload, below the server's max payload.
	maxBytes int
	metrics  *telemetry.Metrics // nil in some tests
	// note, if set, is told each write's outcome (Store.NoteIngest);
	// refused, if set, says which failures to give up on at once
	// (Store.RefusedForGood).
	note    func(error)
	refused func(error) bool
	reqs    chan commitReq
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once
	// budget bounds one batch's write, retries included (publishBudget
	// if zero; tests shorten it).
	budget time.Duration
}

func newCommitter(js jetstream.JetStream, m *telemetry.Metrics, note func(error), refused func(error) bool) *committer {
	maxBytes := maxBatchBytes
	if mp := int(js.Conn().MaxPayload()); mp > 0 && mp/2 < maxBytes {
		maxBytes = mp / 2
	}
	c := &committer{js: js, metrics: m, note: note, refused: refused, maxBytes: maxBytes, reqs: make(chan commitReq, 4096), stop: make(chan struct{}), stopped: make(chan struct{})}
	go c.loop()
	return c
}

// commit stores env durably as part of a batch.
func (c *committer) commit(ctx context.Context, env *envelope.Envelope) error {
	req := commitReq{env: env, done: make(chan error, 1)}
	select {
	case c.reqs <- req:
	case <-c.stop:
		return fault.New(fault.CodeStoreUnavailable, "ingest is shutting down")
	case <-ctx.Done():
		return fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "storing inbound message", ctx.Err())
	}
	// The write is under way; wait for its outcome even if ctx ends, so a
	// stored message is never reported as failed. If the committer stopped
	// without taking the request (shutdown raced the send), it was never
	// written.
	select {
	case err := <-req.done:
		return err
	case <-c.stopped:
		select {
		case err := <-req.done:
			return err
		default:
			return fault.New(fault.CodeStoreUnavailable, "ingest is shutting down")
		}
	}
}

func (c *committer) loop() {
	defer close(c.stopped)
	batch := make([]commitReq, 0, maxBatchCount)
	for {
		// Once stopping, what is queued goes the bounded way below,
		// whatever else is ready.
		select {
		case <-c.stop:
			c.answerQueued(batch)
			return
		default:
		}
		select {
		case r := <-c.reqs:
			batch = append(batch[:0], r)
		case <-c.stop:
			c.answerQueued(batch)
			return
		}
		var carry *commitReq
		batch, carry = c.fill(batch)
		c.write(batch)
		if carry != nil {
			c.write([]commitReq{*carry})
		}
	}
}

// fill adds queued requests to batch, which holds one, while there is
// room, and returns it with the request that would not fit, if any. A
// message that would not fit starts the next batch (a message too large
// for any batch goes alone and gets the store's own answer).
func (c *committer) fill(batch []commitReq) ([]commitReq, *commitReq) {
	size := len(batch[0].env.Raw)
	for len(batch) < maxBatchCount && size < c.maxBytes {
		select {
		case r := <-c.reqs:
			if size+len(r.env.Raw) > c.maxBytes {
				return batch, &r
			}
			batch = append(batch, r)
			size += len(r.env.Raw)
		default:
			return batch, nil
		}
	}
	return batch, nil
}

// answerQueued answers the requests queued when the committer stops.
// They are written in batches, as while running, until a write fails;
// the rest are then answered with a failure without being tried, so
// their senders resend. Every write to a store that has gone takes
// publishBudget, and at shutdown the queue can hold a request from every
// connection the inbound listeners gave up waiting for: written one by
// one, or tried one by one after a failure, they would hold the drain
// for the queue's length times publishBudget, far past the shutdown
// timeout. batch is spare capacity.
func (c *committer) answerQueued(batch []commitReq) {
	var failed error
	answer := func(part []commitReq) {
		if failed == nil {
			failed = c.write(part)
			return
		}
		err := fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "ingest is shutting down and the store did not take its last write", failed)
		for _, r := range part {
			r.done <- err
		}
	}
	for {
		select {
		case r := <-c.reqs:
			batch = append(batch[:0], r)
		default:
			return
		}
		var carry *commitReq
		batch, carry = c.fill(batch)
		answer(batch)
		if carry != nil {
			answer([]commitReq{*carry})
		}
	}
}

// write writes batch and answers its requests; it returns the outcome.
func (c *committer) write(batch []commitReq) error {
	envs := make([]*envelope.Envelope, len(batch))
	for i, r := range batch {
		envs[i] = r.env
	}
	start := time.Now()
	err := c.publish(envs)
	if c.note != nil {
		c.note(err)
	}
	if c.metrics != nil {
		c.metrics.CommitLatency.Observe(time.Since(start).Seconds())
		if err == nil {
			c.metrics.Commits.Inc()
			c.metrics.CommitMessages.Add(float64(len(envs)))
		}
	}
	for _, r := range batch {
		r.done <- err
	}
	return err
}

func (c *committer) publish(envs []*envelope.Envelope) error {
	data, err := encodeBatch(envs)
	if err != nil {
		return fault.Wrap(fault.Permanent, fault.CodeInternal, "encoding ingest batch", err)
	}
	m := nats.NewMsg(store.SubjIngestLog + ".0")
	m.Data = data
	// A retried batch write after a lost ack must not store twice.
	m.Header.Set(jetstream.MsgIDHeader, "batch|"+envs[0].ID+"|"+strconv.Itoa(len(envs)))
	// A write whose stream leader dies in flight gets no answer. Waiting
	// for it in short attempts, each retrying the same write (the id
	// makes a second store harmless), lets ingest resume as soon as a new
	// leader is elected rather than after one long timeout.
	deadline := time.Now().Add(cmp.Or(c.budget, publishBudget))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), min(publishAttempt, time.Until(deadline)))
		_, err := c.js.PublishMsg(ctx, m)
		cancel()
		if err == nil {
			return nil
		}
		if c.refused != nil && c.refused(err) {
			// A refusal, not a lost answer: asking again changes nothing
			// until space is freed, and every sender queued behind this
			// write would wait the whole budget for the same answer.
			return fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "storing inbound messages: the store is out of storage", err)
		}
		if errors.Is(err, nats.ErrConnectionClosed) {
			// Closed for good (it reconnects for ever otherwise): the
			// store was closed at shutdown under a write that outlived
			// the drain, which should end now rather than after the
			// budget.
			return fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "storing inbound messages: the store connection is closed", err)
		}
		if time.Until(deadline) < publishRetryWait {
			return fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "storing inbound messages", err)
		}
		time.Sleep(publishRetryWait)
	}
}

// The ingest write's time limits: in all, per attempt, and between
// attempts.
const (
	publishBudget    = 10 * time.Second
	publishAttempt   = 2 * time.Second
	publishRetryWait = 100 * time.Millisecond
)

// resendDedupe is the store's dedupe id of the record on resend id's own
// trail, so a retried write stores it once (and only once per resend:
// the id is checked across the whole audit stream).
func resendDedupe(id string) string { return "resend|" + id }

// resendRecord is the record on the trail of env, a resend of message
// origID, found stored in ingest-log batch logSeq. Its sender may have
// been answered with env's id (a FHIR client is, before the resend is
// recognised), so that id leads to the message it repeats and to what
// was received.
// reusedRecord is the trail record of a message that came under the
// dedupe id of an earlier, different message origID: it is not a resend,
// so it is routed as a message of its own. The id itself (a control id or
// Bundle.identifier) is not repeated.
func reusedRecord(env *envelope.Envelope, origID string, now time.Time) audit.Record {
	return audit.Record{Time: now, MessageID: env.ID, Event: audit.Duplicate, Source: env.Source, Outcome: "control-id-reused",
		Reason: "not a resend: message " + origID + " came with the same dedupe id and different content; routed as a message of its own",
		Hash:   audit.Hash(env.Raw)}
}

// reuseDedupe is the audit dedupe id of message id's reusedRecord.
func reuseDedupe(id string) string { return "reuse|" + id }

func resendRecord(env *envelope.Envelope, origID string, logSeq uint64, now time.Time) audit.Record {
	return audit.Record{Time: now, MessageID: env.ID, Event: audit.Duplicate, Source: env.Source, Outcome: "duplicate",
		Reason: resendReason + origID + "; stored, not routed again", Hash: audit.Hash(env.Raw),
		Stream: store.StreamIngestLog, Seq: logSeq}
}

const resendReason = "resend of message "

// resendOf returns the message r says its message resent, when r is a
// record made by resendRecord.
func resendOf(r audit.Record) (string, bool) {
	if r.Event != audit.Duplicate || r.Stream != store.StreamIngestLog {
		return "", false
	}
	rest, ok := strings.CutPrefix(r.Reason, resendReason)
	if !ok {
		return "", false
	}
	id, _, _ := strings.Cut(rest, ";")
	return id, id != ""
}

// sameMessage reports whether env is a resend of the stored message orig
// (of the same content type): whether their resend contents are equal.
func sameMessage(env *envelope.Envelope, orig []byte) bool {
	return bytes.Equal(resendContent(env.ContentType, env.Raw), resendContent(env.ContentType, orig))
}

// resendContent is what a resend of raw must repeat. HL7 v2 senders often
// rebuild MSH (a new MSH-7 time) when they resend, and a message passed
// through another system may come back with LF or CR LF between segments,
// so for v2 it is the segments after MSH, each after one CR, with no
// empty ones. A FHIR client retrying a post often serialises the resource
// again, with other white space, and stamps it again as it does (a new
// Bundle.timestamp, the FHIR message's MSH-7, or meta.lastUpdated), so
// for FHIR JSON it is the JSON without insignificant white space and
// without the top-level timestamp and meta.lastUpdated (the same keys in
// another order, or other values, are other content). Other content must
// match exactly. It copies FHIR JSON, and v2 only when the separators
// need it.
func resendContent(contentType string, raw []byte) []byte {
	if contentType == envelope.ContentTypeFHIR {
		var out bytes.Buffer
		out.Grow(len(raw))
		if json.Compact(&out, raw) != nil {
			return raw
		}
		return withoutMembers(out.Bytes(), "timestamp", "meta")
	}
	if contentType != envelope.ContentTypeHL7v2 {
		return raw
	}
	b := afterFirstSegment(raw)
	if bytes.IndexByte(b, '\n') < 0 && !bytes.Contains(b, []byte("\r\r")) {
		return bytes.TrimRight(b, "\r")
	}
	out := make([]byte, 0, len(b))
	for seg := range bytes.FieldsFuncSeq(b, func(r rune) bool { return r == '\r' || r == '\n' }) {
		out = append(append(out, '\r'), seg...)
	}
	return out
}

// withoutMembers returns obj, compact JSON, without its top-level member
// drop, and with the lastUpdated member of its top-level member meta (a
// resource's) removed, the others in their order. It reads obj in place
// (it runs for every FHIR message stored); JSON that is not an object is
// returned as it is.
func withoutMembers(obj []byte, drop, meta string) []byte {
	if len(obj) < 2 || obj[0] != '{' || !bytes.Contains(obj, []byte(`"`+drop+`"`)) && !bytes.Contains(obj, []byte(`"lastUpdated"`)) {
		return obj
	}
	out := make([]byte, 0, len(obj))
	out = append(out, '{')
	for i := 1; i < len(obj) && obj[i] != '}'; {
		if obj[i] == ',' {
			i++
		}
		keyEnd := skipJSON(obj, i)
		if keyEnd >= len(obj) || obj[i] != '"' || obj[keyEnd] != ':' {
			return obj
		}
		valEnd := skipJSON(obj, keyEnd+1)
		if valEnd > len(obj) {
			return obj
		}
		key, val := string(obj[i+1:keyEnd-1]), obj[keyEnd+1:valEnd]
		start := i
		i = valEnd
		switch {
		case key == drop:
			continue
		case key == meta && meta != "":
			val = withoutMembers(val, "lastUpdated", "")
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(append(out, obj[start:keyEnd+1]...), val...)
	}
	return append(out, '}')
}

// skipJSON returns the index just after the JSON value starting at i in
// b, which is compact and valid (json.Compact wrote it), or len(b)+1 when
// b ends first.
func skipJSON(b []byte, i int) int {
	depth, inString := 0, false
	for j := i; j < len(b); j++ {
		c := b[j]
		switch {
		case inString:
			switch c {
			case '\\':
				j++
			case '"':
				inString = false
				if depth == 0 {
					return j + 1
				}
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth == 0 {
				return j // the end of a scalar inside its container
			}
			if depth--; depth == 0 {
				return j + 1
			}
		case c == ',' && depth == 0:
			return j
		}
	}
	if depth == 0 && !inString && i < len(b) {
		return len(b)
	}
	return len(b) + 1
}

func afterFirstSegment(b []byte) []byte {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		return b[i:]
	}
	return nil
}

// DQControlIDReused is the data-quality issue counted for a message
// stored under a dedupe id (an MSH-10, a Bundle.identifier or an
// Idempotency-Key) already used for a different message.
const DQControlIDReused = "control_id_reused"

// reuseKey is the dedupe key under which a message that reused another's
// control id is kept: the key and a hash of its resend content, so that
// its own resends find it.
func reuseKey(env *envelope.Envelope) string {
	return dedupeKeyOf(env) + "|" + audit.Hash(resendContent(env.ContentType, env.Raw))[:16]
}

// close stops accepting and waits until every queued request is
// answered, or until ctx ends.
func (c *committer) close(ctx context.Context) error {
	c.once.Do(func() { close(c.stop) })
	select {
	case <-c.stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ingest: messages queued for the store not yet answered: %w", ctx.Err())
	}
}

// Splitter republishes ingest-log batches to the per-patient ingress
// subjects. It implements the partition consumer's handler.
type splitter struct {
	r       *Router
	js      jetstream.JetStream
	audit   *audit.Writer
	ingress jetstream.Stream
	onDup   func(source string)
	// log is the ingest log, asked about batches its consumer passed
	// over (recordPassedOver); splitTo is the last batch of it this
	// process split.
	log     jetstream.Stream
	splitTo uint64
}

func (s *splitter) handle(ctx context.Context, msgs []jetstream.Msg) error {
	ctx = context.WithoutCancel(ctx)
	type pub struct {
		env *envelope.Envelope
		f   jetstream.PubAckFuture
		// logSeq is the ingest-log batch the message was split from.
		logSeq uint64
	}
	var pubs []pub
	var last uint64
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading ingest batch metadata: %w", err)
		}
		seq := meta.Sequence.Stream
		// Batches the consumer passed over before this one, unreadable,
		// are recorded lost before it moves past them (see passedOver).
		if err := s.r.recordPassedOver(ctx, s.ingress, s.log, splitterDurable, seq, max(s.splitTo, last)); err != nil {
			return err
		}
		last = seq
		envs, err := decodeBatch(m.Data())
		if err != nil {
			// Not a batch this version can read: keep it for inspection
			// rather than drop it.
			if _, derr := s.r.deadLetter(ctx, "ingest", "splitter", batchHeader(m.Headers(), seq), m.Data(), fault.Wrap(fault.Permanent, fault.CodeInternal, "unreadable ingest batch", err)); derr != nil {
				return derr
			}
			continue
		}
		for _, env := range envs {
			f, err := s.js.PublishMsgAsync(ingressMsg(env), jetstream.WithStallWait(time.Minute))
			if err != nil {
				return fmt.Errorf("splitting ingest batch: %w", err)
			}
			pubs = append(pubs, pub{env: env, f: f, logSeq: meta.Sequence.Stream})
		}
	}
	for _, p := range pubs {
		var ack *jetstream.PubAck
		select {
		case ack = <-p.f.Ok():
		case err := <-p.f.Err():
			return fmt.Errorf("splitting ingest batch: %w", err)
		case <-time.After(time.Minute):
			return errors.New("splitting ingest batch: store did not acknowledge")
		}
		if !ack.Duplicate {
			s.r.o.Metrics.Accepted.WithLabelValues(p.env.Source).Inc()
			continue
		}
		// A duplicate is either a sender's resend or this splitter's own
		// retry of a batch it had half split; only the first is a resend.
		orig, err := s.ingress.GetMsg(ctx, ack.Sequence)
		if err != nil {
			return fmt.Errorf("reading original of a duplicate: %w", err)
		}
		origID := orig.Header.Get(envelope.HeaderID)
		if origID == p.env.ID {
			continue
		}
		if !sameMessage(p.env, orig.Data) {
			// The sender reused a control id for a different message (a
			// counter reset, say). Dropping it would lose it: store it under
			// a key that includes its content, and count the reuse.
			m := ingressMsg(p.env)
			m.Header.Set(jetstream.MsgIDHeader, reuseKey(p.env))
			ack2, err := s.js.PublishMsg(ctx, m)
			if err != nil {
				return fmt.Errorf("storing a message with a reused control id: %w", err)
			}
			if ack2.Duplicate {
				// A resend of the message already kept under that key.
				s.onDup(p.env.Source)
				continue
			}
			s.r.o.Metrics.DataQuality.WithLabelValues(p.env.Source, DQControlIDReused).Inc()
			s.r.o.Metrics.Accepted.WithLabelValues(p.env.Source).Inc()
			if err := s.audit.Write(ctx, p.env.ID, reuseDedupe(p.env.ID), reusedRecord(p.env, origID, time.Now().UTC())); err != nil {
				return err
			}
			continue
		}
		s.onDup(p.env.Source)
		now := time.Now().UTC()
		rec := audit.Record{Time: now, MessageID: origID, Event: audit.Duplicate, Source: p.env.Source, Outcome: "duplicate",
			Reason: "resent as message " + p.env.ID + "; not routed again", Hash: audit.Hash(p.env.Raw), Stream: store.StreamIngress, Seq: ack.Sequence}
		if err := s.audit.Write(ctx, origID, "dup|"+p.env.ID, rec); err != nil {
			return err
		}
		if err := s.audit.Write(ctx, p.env.ID, resendDedupe(p.env.ID), resendRecord(p.env, origID, p.logSeq, now)); err != nil {
			return err
		}
	}
	s.splitTo = max(s.splitTo, last)
	return nil
}
