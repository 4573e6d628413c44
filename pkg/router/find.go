package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/store"
)

// FindQuery asks which stored messages carried a sender's own message id:
// the question "we sent MSH-10 X at ten past nine, did you get it?".
type FindQuery struct {
	// ControlID is the sender's message id: MSH-10, or a FHIR Bundle's
	// identifier value, matched exactly. Without it, every message of
	// the window is found, which must then have both ends.
	ControlID string `json:"control_id,omitempty"`
	// Sender, when set, is the sending system: "APP|FACILITY" (MSH-3 and
	// MSH-4) matches exactly, "APP" any facility of that application.
	Sender string `json:"sender,omitempty"`
	// Source, when set, is the input the message came in on.
	Source string `json:"source,omitempty"`
	// Since and Until bound the time of receipt.
	Since time.Time `json:"since"`
	Until time.Time `json:"until,omitzero"` // left out when open-ended
}

// Found is one receipt of a message with the asked-for control id. It
// holds ids, names and times, no patient data.
type Found struct {
	ID          string    `json:"id"`
	ReceivedAt  time.Time `json:"received_at"`
	Source      string    `json:"source"`
	Sender      string    `json:"sender,omitempty"`
	MessageType string    `json:"message_type,omitempty"`
	ControlID   string    `json:"control_id"`
	// State is "accepted" (stored and routed as a message of its own;
	// its trail tells the rest), "resend" (stored, and recognised as a
	// resend of message Original, so not routed again), "waiting"
	// (acknowledged and stored, not yet taken for routing), "unknown"
	// (read, but without a record saying which; its trail may), or
	// "quarantined" (refused and kept in the quarantine under ID; its
	// one outcome is the refusal's reason).
	State    string `json:"state"`
	Original string `json:"original,omitempty"`
	// Outcomes are, for an accepted message, every outcome it reached
	// (as audit reconcile counts them: delivered, dead_lettered,
	// consent_denied, filtered), or Waiting what it waits for.
	Outcomes []string `json:"outcomes,omitempty"`
	Waiting  []string `json:"waiting,omitempty"`
	// Incomplete, when set, says why the message's trail could not be
	// read whole (audit files damaged): its state and outcomes are from
	// what could be.
	Incomplete string `json:"incomplete,omitempty"`
}

// FindResult is what Find found.
type FindResult struct {
	Messages []Found `json:"messages"`
	// Quarantined are the refused inputs that carried the control id
	// (see FindQuarantined): received, but never messages.
	Quarantined []Found `json:"quarantined,omitempty"`
	// Truncated is set when more matched than are listed, or the scan
	// stopped at its bound before the end of the window.
	Truncated bool `json:"truncated,omitempty"`
	// Retained is when the oldest input still stored was received: a
	// window starting before it may miss messages received then.
	Retained time.Time `json:"retained,omitzero"`
	// Lost lists the runs of ingest log batches acknowledged in the
	// window that the store lost (its files were damaged): the messages
	// in them cannot be found.
	Lost []LostRun `json:"lost,omitempty"`
	// QuarantineLost lists the runs of quarantine entries that may have
	// been kept in the window which the store counts but cannot read
	// (its files were damaged): refused input in them cannot be found.
	QuarantineLost []LostRun `json:"quarantine_lost,omitempty"`
}

// findStoreLag bounds how long after its receipt a message is stored in
// the ingest log: the group commit's publish budget, and a margin.
const findStoreLag = publishBudget + time.Minute

// Bounds of one Find: matches listed, matches whose trail is read, and
// ingest batches read.
const (
	maxFound       = 1000
	maxFoundTrails = 200
	maxFindScan    = 1_000_000
)

// Find lists the messages received between q.Since and q.Until whose
// control id is q.ControlID (any, without one), from the ingest log, which holds every
// acknowledged receipt (resends too) for ingress_max_age. Each is told
// as accepted, a resend, or waiting; for an accepted message its trail
// says where it got to, as Reconcile would (routes maps each source to
// the routes that read it).
func Find(ctx context.Context, js jetstream.JetStream, q FindQuery, routes map[string][]string) (FindResult, error) {
	var res FindResult
	if q.ControlID == "" && (q.Since.IsZero() || q.Until.IsZero()) {
		return res, errors.New("a control id, or a window with both ends, is required")
	}
	if !q.Until.IsZero() && q.Until.Before(q.Since) {
		return res, errors.New("the window ends before it starts")
	}
	st, err := js.Stream(ctx, store.StreamIngestLog)
	if err != nil {
		return res, fmt.Errorf("opening the ingest log: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("reading the ingest log: %w", err)
	}
	res.Retained = info.State.FirstTime
	// Batches are written as their messages are acknowledged, so one
	// stored a little before Since holds none received after it; the
	// margin covers a batch's own time.
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{store.SubjIngestLog + ".>"}}
	if !q.Since.IsZero() {
		start := q.Since.Add(-2 * time.Second)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	seqs := map[string]uint64{}
	scanned := 0
	// Batches the store counts but cannot read (damaged files) are
	// passed over, and said below with those it lost.
	var lost []LostRun
	err = scanFrom(ctx, js, store.StreamIngestLog, cfg, scanPayloadBatch, func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		if scanned++; scanned > maxFindScan {
			res.Truncated = true
			return true, nil
		}
		envs, err := decodeBatch(m.Data())
		if err != nil {
			return false, nil // dead-lettered by its reader; no message of its own
		}
		// Inputs store what they receive concurrently, and several
		// processes may share the log, so receipt times are not in stream
		// order: the scan ends only at batches stored well after the
		// window, later than any message received in it can be.
		if !q.Until.IsZero() && meta.Timestamp.After(q.Until.Add(findStoreLag)) {
			return true, nil
		}
		for _, env := range envs {
			if (!q.Until.IsZero() && env.ReceivedAt.After(q.Until)) ||
				(q.ControlID != "" && env.ControlID != q.ControlID) || env.ReceivedAt.Before(q.Since) ||
				(q.Source != "" && env.Source != q.Source) || !senderMatches(env.Sender, q.Sender) {
				continue
			}
			if len(res.Messages) == maxFound {
				res.Truncated = true
				return true, nil
			}
			seqs[env.ID] = meta.Sequence.Stream
			res.Messages = append(res.Messages, Found{ID: env.ID, ReceivedAt: env.ReceivedAt, Source: env.Source,
				Sender: env.Sender, MessageType: env.MessageType, ControlID: env.ControlID})
		}
		return false, nil
	}, func(r LostRun) error { lost = append(lost, r); return nil })
	if err != nil {
		return res, err
	}
	// The scan passes over batches the store dropped as deleted
	// sequences (a damaged block rebuilt; Junction deletes nothing from
	// the ingest log) too: those that may hold messages of the window
	// are said apart.
	dropped, err := ingestLogLoss(ctx, js, 0)
	if err != nil {
		return res, err
	}
	res.Lost = runsInWindow(jserr.MergeRuns(append(lost, dropped...)), q)
	if len(res.Messages) == 0 {
		return res, nil
	}
	floor, err := ingestReadFloor(ctx, js)
	if err != nil {
		return res, err
	}
	since, err := routesSince(ctx, js, routes)
	if err != nil {
		return res, err
	}
	for i := range res.Messages {
		f := &res.Messages[i]
		if seqs[f.ID] > floor {
			f.State = "waiting"
			continue
		}
		if i >= maxFoundTrails {
			f.State = "unknown"
			continue
		}
		recs, err := Trail(ctx, js, f.ID)
		if !isIncomplete(err) {
			return res, fmt.Errorf("reading the trail of message %s: %w", f.ID, err)
		}
		if err != nil {
			f.Incomplete = err.Error()
		}
		f.State = "unknown"
		var stored time.Time
		for _, r := range recs {
			if r.MessageID != f.ID {
				continue
			}
			if orig, ok := resendOf(r); ok {
				f.State, f.Original = "resend", orig
				break
			}
			if r.Event == audit.Received && (stored.IsZero() || r.Time.Before(stored)) {
				// The first: a replay stores the message again.
				f.State, stored = "accepted", r.Time
			}
		}
		if f.State == "accepted" {
			a := audit.Accepted{ID: f.ID, Source: f.Source, Received: f.ReceivedAt, Stored: stored}
			f.Outcomes, f.Waiting = audit.Fate(a, recs, routes[f.Source], since)
		}
	}
	return res, nil
}

// runsInWindow returns the runs of runs that may hold what was received
// in q's window: those stored, as far as the times around them tell,
// before a message received in it can be stored (findStoreLag) and not
// ending before it starts.
func runsInWindow(runs []LostRun, q FindQuery) []LostRun {
	var out []LostRun
	for _, r := range runs {
		if (!r.Before.IsZero() && r.Before.Before(q.Since)) || (!q.Until.IsZero() && r.After.After(q.Until.Add(findStoreLag))) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// senderMatches reports whether a message's sender ("APP|FACILITY") is the
// asked-for one: the same, or want names only the application.
func senderMatches(sender, want string) bool {
	if want == "" || sender == want {
		return true
	}
	app, _, _ := strings.Cut(sender, "|")
	return !strings.Contains(want, "|") && app == want
}

// ingestReadFloor is the last ingest-log sequence its reader (the batch
// pipeline's accept stage, or the splitter) has finished with.
func ingestReadFloor(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	var floor uint64
	for _, durable := range []string{splitterDurable, acceptDurable} {
		c, err := js.Consumer(ctx, store.StreamIngestLog, durable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("reading the ingest log reader's progress: %w", err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("reading the ingest log reader's progress: %w", err)
		}
		floor = max(floor, info.AckFloor.Stream)
	}
	return floor, nil
}

// HeaderOf reads the sender's identity from input kept in the quarantine:
// its control id, sender ("APP|FACILITY") and message type, when the
// input says them (the header of an HL7 v2 message that was refused, say);
// ok is false when it does not.
type HeaderOf func(raw []byte) (controlID, sender, messageType string, ok bool)

// maxQuarantineScan bounds the quarantined entries one FindQuarantined
// reads.
const maxQuarantineScan = 100_000

// QuarantineFound is what FindQuarantined found.
type QuarantineFound struct {
	// Found are the entries that matched.
	Found []Found
	// Truncated is set when more matched than are listed, or the scan
	// stopped at its bound.
	Truncated bool
	// Lost are the runs of entries that may have been kept in the window
	// which the store counts but cannot read, or dropped (its files
	// damaged): the read goes on past them, and what they held cannot be
	// found.
	Lost []LostRun
}

// FindQuarantined lists the input kept in the quarantine between q.Since
// and q.Until whose control id, read by header, is q.ControlID (any,
// without one), from q.Sender and q.Source when they are set: what a
// sender sent that was refused, so never became a message. Each is told
// with State "quarantined", its quarantine id as ID, and the refusal's
// reason code as its one outcome. They hold ids, names and times, no
// patient data. Entries the store counts but cannot read (damaged
// files) are passed over (jserr.ScanPast) and said as runs, with those
// it dropped.
func FindQuarantined(ctx context.Context, js jetstream.JetStream, q FindQuery, header HeaderOf) (QuarantineFound, error) {
	var out []Found
	truncated := false
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{store.SubjQuarantine + ".>"}}
	if !q.Since.IsZero() {
		start := q.Since.Add(-2 * time.Second)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	var lost []LostRun
	scanned := 0
	err := scanFrom(ctx, js, store.StreamQuarantine, cfg, scanPayloadBatch, func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		if scanned++; scanned > maxQuarantineScan {
			truncated = true
			return true, nil
		}
		h := m.Headers()
		received, err := time.Parse(time.RFC3339Nano, h.Get(envelope.HeaderReceived))
		if err != nil {
			received = meta.Timestamp
		}
		if !q.Until.IsZero() && meta.Timestamp.After(q.Until.Add(findStoreLag)) {
			return true, nil
		}
		if received.Before(q.Since) || (!q.Until.IsZero() && received.After(q.Until)) {
			return false, nil
		}
		source := h.Get(envelope.HeaderSource)
		if q.Source != "" && source != q.Source {
			return false, nil
		}
		ctrl, sender, msgType, ok := header(m.Data())
		if !ok || (q.ControlID != "" && ctrl != q.ControlID) || !senderMatches(sender, q.Sender) {
			return false, nil
		}
		if len(out) == maxFound {
			truncated = true
			return true, nil
		}
		out = append(out, Found{ID: h.Get(envelope.HeaderID), ReceivedAt: received, Source: source, Sender: sender, MessageType: msgType,
			ControlID: ctrl, State: "quarantined", Outcomes: []string{h.Get(envelope.HeaderReason)}})
		return false, nil
	}, func(r LostRun) error { lost = append(lost, r); return nil })
	if err != nil {
		return QuarantineFound{}, fmt.Errorf("reading the quarantine: %w", err)
	}
	// Junction deletes no entry (they leave from the stream's head, by
	// age or size): deleted sequences are what the server dropped of a
	// damaged block it rebuilt.
	st, err := js.Stream(ctx, store.StreamQuarantine)
	if err != nil {
		return QuarantineFound{}, fmt.Errorf("opening the quarantine: %w", err)
	}
	dropped, err := droppedRuns(ctx, st, 0)
	if err != nil {
		return QuarantineFound{}, err
	}
	return QuarantineFound{Found: out, Truncated: truncated, Lost: runsInWindow(jserr.MergeRuns(append(lost, dropped...)), q)}, nil
}
