// Package audit records every hop of every message on an append-only
// JetStream stream and reads a message's trail back. Records carry ids,
// hashes and outcomes, never payloads.
package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/store"
)

// Event names the hop a record describes.
type Event string

// Hops.
const (
	Received     Event = "received"
	Duplicate    Event = "duplicate"
	Quarantined  Event = "quarantined"
	Translated   Event = "translated"
	Matched      Event = "matched"
	Filtered     Event = "filtered"
	Consent      Event = "consent"
	Transformed  Event = "transformed"
	Queued       Event = "queued"
	Delivered    Event = "delivered"
	Failed       Event = "failed"
	DeadLettered Event = "dead_lettered"
	Replayed     Event = "replayed"
	// Accessed records a caller's use of an admin or audit API that shows
	// payloads or disclosures: who (Principal), which endpoint (Endpoint)
	// under which permission (Rule), the message (MessageID) or patient
	// (Patient) concerned, and whether it was allowed or denied (Outcome).
	// It is written under the message's id, or under an id of its own
	// ("access-...") when the request names no message.
	Accessed Event = "accessed"
	// WithheldFromReport records that an authorised person withheld one
	// release from a patient's disclosure report (DPA 2018 Schedule 3).
	WithheldFromReport Event = "withheld_from_report"
)

// Record is one hop.
type Record struct {
	Time        time.Time `json:"time"`
	MessageID   string    `json:"message_id"`
	Event       Event     `json:"event"`
	Source      string    `json:"source,omitempty"`
	Route       string    `json:"route,omitempty"`
	Destination string    `json:"destination,omitempty"`
	// Outcome is a short result: ok, permit, deny, transient, permanent...
	Outcome string `json:"outcome,omitempty"`
	// Reason is safe text saying why (never patient data).
	Reason string `json:"reason,omitempty"`
	// Code is a fault code where the hop failed.
	Code string `json:"code,omitempty"`
	// Rule names the rule or policy that decided (consent, filter).
	Rule string `json:"rule,omitempty"`
	// Attempt counts delivery attempts from 1.
	Attempt int `json:"attempt,omitempty"`
	// Hash is the SHA-256 of the payload this hop handled.
	Hash string `json:"hash,omitempty"`
	// Stream and Seq locate the payload (ingress or outbound stream).
	Stream string `json:"stream,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	// SentSeq, on the records of a payload whose consent was decided
	// again before it was sent, locates in the outbound stream what the
	// new decision made and was sent (or tried) in its place; Seq stays
	// the queued payload's.
	SentSeq uint64 `json:"sent_seq,omitempty"`
	// Status is the receiver's short answer (HTTP status, ACK code).
	Status string `json:"status,omitempty"`
	// Location is what the receiver said it stored.
	Location string `json:"location,omitempty"`
	// TraceID links the record to its trace.
	TraceID string `json:"trace_id,omitempty"`
	// Patient is the keyed hash (hex HMAC-SHA256 under the engine's
	// patient hash key) of the patient's key, so a patient's records can
	// be found without patient data in the trail. The route stage puts it
	// on every record of a message it translated (translation, consent,
	// queued, failure) and passes it to the delivery stage with the
	// outbound payload, whose records (delivered, failed, dead-lettered,
	// replayed) carry it too. Records written before that carry it on the
	// translation record only.
	Patient string `json:"patient,omitempty"`
	// NoPatient marks a record of a message that has no patient hash: its
	// translation named no patient, or the engine hashes none. It is set
	// where Patient would be, so that a record with neither was written
	// before records carried Patient beyond the translation, and a
	// disclosure report knows to find its patient from that translation.
	NoPatient bool `json:"no_patient,omitempty"`
	// Patients are the keyed hashes (as Patient) of the further patients
	// the record concerns, in a message about more than one (a merge's
	// retired record, a Bundle with a second Patient): on consent records
	// those the decision was about, on queued and delivery records those
	// whose data the payload carries. A disclosure report for any of them
	// finds the record as it finds it for Patient.
	Patients []string `json:"patients,omitempty"`
	// Principal is the configured name of the caller (never a secret), on
	// access records, and on replayed records the caller who asked for
	// the replay.
	Principal string `json:"principal,omitempty"`
	// Endpoint is the method and path pattern called (such as
	// "GET /api/messages/{id}"), on access records.
	Endpoint string `json:"endpoint,omitempty"`
	// Purpose and LegalBasis are the route's declared purpose of use and
	// legal basis, on its consent records, for disclosure reports.
	Purpose    string `json:"purpose,omitempty"`
	LegalBasis string `json:"legal_basis,omitempty"`
	// RecipientODS and SourceODS are the ODS codes of the destination's
	// and the input's organisations as configured when consent decided
	// (consent.destinations, consent.sources), on consent records, so a
	// disclosure report names the organisations as they were, whatever
	// the configuration says since.
	RecipientODS string `json:"recipient_ods,omitempty"`
	SourceODS    string `json:"source_ods,omitempty"`
	// Classes are the data classes queued for a destination: the sorted
	// distinct FHIR resource types of the payload, or the HL7 v2 message
	// type of a raw payload, on the Queued record.
	Classes []string `json:"classes,omitempty"`
}

// Hash returns the hex SHA-256 of b.
func Hash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Writer appends records. Each Writer is one hash chain: every stream
// message it publishes carries the chain id, its position and the hash of
// the previous position (see HeaderChain and ChainHash), and positions are
// taken in the order messages reach the store. Many goroutines may write
// at once; several processes each have their own chains.
//
// A position whose publish is not confirmed stored (the store failed it,
// called it a duplicate of an earlier message with the same dedupe id, or
// did not answer within the ack timeout) is never re-sent: that would put
// it after later positions. The writer instead publishes a gap note, a
// chained message on SubjGap.<chain> stating the position, its chain hash
// and why, so verification reports it as explained rather than missing and
// still checks the chain across it. A caller that retries writes a new
// position. With a signing key the writer also publishes signed
// checkpoints of its settled prefix (see Checkpoint).
type Writer struct {
	js         jetstream.JetStream
	chain      string
	key        ed25519.PrivateKey
	interval   time.Duration
	ackTimeout time.Duration
	now        func() time.Time

	// send serialises taking a position with handing the message to the
	// connection.
	send sync.Mutex
	seq  uint64 // last position taken
	last string // its chain hash
	// genesisSent: the checkpoint of the empty chain was sent.
	genesisSent bool

	// mu guards the settlement state below (lock order: send, then mu).
	mu          sync.Mutex
	open        map[uint64]*position
	water       uint64 // every position up to here is settled
	waterHash   string
	gaps        []Gap // positions waiting for a gap note
	noting      bool  // a gap note is in flight
	noteRetryAt time.Time
	cpSeq       uint64 // last checkpointed position
	cpTime      time.Time
	cpBusy      bool
	// cpPending: a trailing checkpoint is scheduled; closed: Close ran.
	cpPending bool
	closed    bool
}

// writeTimeout bounds Write when its context has no deadline.
const writeTimeout = 5 * time.Second

// Subject is the audit subject of a message.
func Subject(messageID string) string { return store.SubjAudit + "." + messageID }

// Write stores the records of one stage of one message as one stream
// message, and returns once they are durable. dedupe makes a retried
// write of the same stage harmless; pass "" to disable.
func (w *Writer) Write(ctx context.Context, messageID, dedupe string, recs ...Record) error {
	data, err := EncodeRecords(recs)
	if err != nil {
		return err
	}
	return w.WriteEncoded(ctx, messageID, dedupe, data)
}

// WriteEncoded is Write for records already encoded as a JSON array (as
// json.Marshal encodes a []Record), for a caller that encoded them to
// measure them.
func (w *Writer) WriteEncoded(ctx context.Context, messageID, dedupe string, data []byte) error {
	if _, ok := ctx.Deadline(); !ok {
		// As a synchronous JetStream publish would.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, writeTimeout)
		defer cancel()
	}
	for attempt := 0; ; attempt++ {
		msg, err := w.msg(messageID, dedupe, data)
		if err != nil {
			return err
		}
		f, err := w.publish(msg, nil)
		if err != nil {
			return fmt.Errorf("writing audit records: %w", err)
		}
		select {
		case <-f.ok:
			return nil
		case err := <-f.err:
			// A stream with no leader for a moment answers "no
			// responders"; try a new position, as a synchronous publish
			// would have retried.
			if attempt < 2 && (errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)) {
				select {
				case <-ctx.Done():
					return fmt.Errorf("writing audit records: %w", ctx.Err())
				case <-time.After(jetstream.DefaultPubRetryWait):
				}
				continue
			}
			return fmt.Errorf("writing audit records: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("writing audit records: %w", ctx.Err())
		}
	}
}

// WriteAsync queues the records and returns a future for the store's ack.
func (w *Writer) WriteAsync(messageID, dedupe string, recs ...Record) (jetstream.PubAckFuture, error) {
	data, err := EncodeRecords(recs)
	if err != nil {
		return nil, err
	}
	msg, err := w.msg(messageID, dedupe, data)
	if err != nil {
		return nil, err
	}
	f, err := w.publish(msg, nil)
	if err != nil {
		return nil, fmt.Errorf("writing audit records: %w", err)
	}
	return f, nil
}

func (w *Writer) msg(messageID, dedupe string, data []byte) (*nats.Msg, error) {
	if messageID == "" {
		return nil, errors.New("audit: empty message id")
	}
	m := nats.NewMsg(Subject(messageID))
	m.Data = data
	if dedupe != "" {
		m.Header.Set(jetstream.MsgIDHeader, dedupe)
	}
	return m, nil
}

// Trail reads every record of a message in the order written. When part
// of the audit stream cannot be read (damaged files), it returns what it
// read with an *IncompleteError.
func Trail(ctx context.Context, js jetstream.JetStream, messageID string) ([]Record, error) {
	st, err := js.Stream(ctx, store.StreamAudit)
	if err != nil {
		return nil, fmt.Errorf("opening audit stream: %w", err)
	}
	var out []Record
	// Records of one message are few; read them with an ordered consumer
	// filtered to its subject.
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(Subject(messageID)))
	if err != nil {
		return nil, fmt.Errorf("reading audit stream info: %w", err)
	}
	n := info.State.Subjects[Subject(messageID)]
	if n == 0 {
		return nil, nil
	}
	// ReadSubject reads through to what the stream's leader holds, even
	// when the server places the reader on a replica behind or damaged,
	// and past a damaged block, saying the trail is then incomplete.
	var decodeErr error
	err = ReadSubject(ctx, st, Subject(messageID), n, func(data []byte) (bool, error) {
		var recs []Record
		if err := json.Unmarshal(data, &recs); err != nil {
			decodeErr = fmt.Errorf("decoding audit record: %w", err)
			return true, nil
		}
		out = append(out, recs...)
		return false, nil
	})
	if decodeErr != nil {
		return nil, decodeErr
	}
	var incomplete *IncompleteError
	if err != nil && !errors.As(err, &incomplete) {
		return nil, fmt.Errorf("reading audit trail: %w", err)
	}
	// Stages write independently (the receipt record comes from its own
	// consumer), so order the trail by when each hop happened.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	if incomplete != nil {
		return out, incomplete
	}
	return out, nil
}
