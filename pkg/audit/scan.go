package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/store"
)

// ErrStopScan is returned by a scan's callback to end the scan early
// without an error.
var ErrStopScan = errors.New("audit: stop scan")

// Position locates the stream message a scanned record came from.
type Position struct {
	// Seq is the audit stream sequence of the message.
	Seq uint64
	// Stored is when the store took the message.
	Stored time.Time
}

// ScanOptions selects the audit stream messages a scan reads.
type ScanOptions struct {
	// From and To bound the messages by the time the store took them
	// (inclusive). A zero From starts at the beginning; a zero To reads
	// up to the last message stored when the scan starts.
	From, To time.Time
	// AfterSeq, when set, starts after this stream sequence instead of
	// at From (a paging cursor); messages stored before From are still
	// skipped.
	AfterSeq uint64
}

// Scan calls fn with every audit record the store took between from and
// to, in stream order, from both pipelines: records on each message's
// own subject and the batch pipeline's record batches. The chain's gap
// notes and checkpoints are not records and are skipped. It reads every
// audit message in the window, so its cost is that of the window, not of
// what fn keeps.
func Scan(ctx context.Context, js jetstream.JetStream, from, to time.Time, fn func(Record) error) error {
	return ScanStream(ctx, js, ScanOptions{From: from, To: to}, func(_ Position, r Record) error { return fn(r) })
}

// ScanStream is Scan with its options and each record's position. fn may
// return ErrStopScan to end the scan.
func ScanStream(ctx context.Context, js jetstream.JetStream, opt ScanOptions, fn func(Position, Record) error) error {
	st, err := js.Stream(ctx, store.StreamAudit)
	if err != nil {
		return fmt.Errorf("opening audit stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading audit stream state: %w", err)
	}
	last := info.State.LastSeq
	switch {
	case info.State.Msgs == 0, opt.AfterSeq >= last,
		!opt.From.IsZero() && info.State.LastTime.Before(opt.From),
		!opt.To.IsZero() && info.State.FirstTime.After(opt.To):
		// Nothing stored in the window.
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{store.SubjAudit + ".>"}}
	switch {
	case opt.AfterSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, opt.AfterSeq+1
	case !opt.From.IsZero():
		from := opt.From
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	// jserr.Scan reads through to what the stream's leader holds, even
	// when the server places the reader on a replica behind or damaged.
	var fnErr error
	err = jserr.Scan(ctx, st, cfg, 1000, func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		seq := meta.Sequence.Stream
		if !opt.To.IsZero() && meta.Timestamp.After(opt.To) {
			return true, nil
		}
		if opt.From.IsZero() || !meta.Timestamp.Before(opt.From) {
			if err := scanMsg(m.Subject(), m.Data(), Position{Seq: seq, Stored: meta.Timestamp}, fn); err != nil {
				if errors.Is(err, ErrStopScan) {
					return true, nil
				}
				fnErr = err
				return true, nil
			}
		}
		return false, nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("reading audit records: %w", err)
	}
	return nil
}

// scanMsg passes the records of one audit stream message to fn.
func scanMsg(subject string, data []byte, pos Position, fn func(Position, Record) error) error {
	if strings.HasPrefix(subject, SubjGap+".") || strings.HasPrefix(subject, SubjCheckpoint+".") {
		return nil // the chain's own notes, not records
	}
	var recs []Record
	if err := json.Unmarshal(data, &recs); err != nil {
		return fmt.Errorf("decoding audit records at sequence %d: %w", pos.Seq, err)
	}
	for _, r := range recs {
		if err := fn(pos, r); err != nil {
			return err
		}
	}
	return nil
}
