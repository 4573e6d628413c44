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
	// Unreadable, when set, is given each run of messages the store
	// counts but cannot produce (its files are damaged there), and the
	// scan goes on after the run. Unset, such a run ends the scan with
	// an error saying where the files are damaged.
	Unreadable func(SeqRange)
}

// SeqRange is a run of audit stream sequences, First to Last inclusive.
type SeqRange struct {
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
}

// MergeRuns returns runs in order of their first sequence, with runs
// that overlap or touch made one, so that each sequence is in one run
// at most. runs is not changed.
func MergeRuns(runs []SeqRange) []SeqRange {
	rs := make([]jserr.Run, len(runs))
	for i, r := range runs {
		rs[i] = jserr.Run{First: r.First, Last: r.Last}
	}
	var out []SeqRange
	for _, r := range jserr.MergeRuns(rs) {
		out = append(out, SeqRange{First: r.First, Last: r.Last})
	}
	return out
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
	return ScanMessages(ctx, js, opt, func(pos Position, subject string, data []byte) error {
		return scanMsg(subject, data, pos, fn)
	})
}

// ScanMessages is ScanStream giving each stored audit message whole, as
// its subject and data, rather than its records decoded; the chain's
// gap notes and checkpoints are included. fn may return ErrStopScan to
// end the scan.
func ScanMessages(ctx context.Context, js jetstream.JetStream, opt ScanOptions, fn func(pos Position, subject string, data []byte) error) error {
	st, err := js.Stream(ctx, store.StreamAudit)
	if err != nil {
		return fmt.Errorf("opening audit stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading audit stream state: %w", err)
	}
	last := info.State.LastSeq
	var unreadable func(SeqRange) error
	if opt.Unreadable != nil {
		// Runs are given merged (MergeRuns), once the read is over:
		// damage found as the read goes can move the stream's first
		// message on, and a run met again (a reader placed anew) is
		// given once.
		var runs []SeqRange
		unreadable = func(r SeqRange) error {
			runs = append(runs, r)
			return nil
		}
		defer func() {
			for _, r := range MergeRuns(runs) {
				opt.Unreadable(r)
			}
		}()
		head := opt.AfterSeq + 1
		reaches := !opt.From.After(info.State.FirstTime) || info.State.Msgs == 0
		if head < info.State.FirstSeq && head <= last && reaches && KeepsEverything(info.Config) {
			// The stream has no limits and refuses deletes and purges: a
			// first message after 1 means the store dropped those before
			// it (a damaged block it could not rebuild), and a read that
			// reaches back to the first message would have read them,
			// however early the window ends: their times are not known.
			_ = unreadable(SeqRange{First: head, Last: min(info.State.FirstSeq-1, last)})
		}
	}
	switch {
	case info.State.Msgs == 0, opt.AfterSeq >= last,
		!opt.From.IsZero() && info.State.LastTime.Before(opt.From),
		!opt.To.IsZero() && info.State.FirstTime.After(opt.To):
		// Nothing stored in the window.
		return nil
	}
	// Every message of the stream (its one subject space is
	// store.SubjAudit.>), unfiltered: after a damaged block, a reader
	// filtered on that space read nothing from nats-server 2.15.2 though
	// the store held messages after the block; an unfiltered one reads
	// them (TestReconcileDamagedAudit).
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: info.State.FirstSeq}
	if opt.AfterSeq > 0 {
		cfg.OptStartSeq = opt.AfterSeq + 1
	}
	if opt.AfterSeq == 0 && opt.From.After(info.State.FirstTime) {
		// A window starting after the first message: by time. (One that
		// reaches back to it is read from it by sequence.)
		from := opt.From
		tcfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from}
		if unreadable == nil {
			cfg = tcfg
		} else if cfg.OptStartSeq, err = timeStart(ctx, st, tcfg, info.State.FirstSeq, unreadable); err != nil {
			return err
		}
	}
	var fnErr error
	err = readPast(ctx, st, cfg, last, 1000, func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		if !opt.To.IsZero() && meta.Timestamp.After(opt.To) {
			return true, nil
		}
		if opt.From.IsZero() || !meta.Timestamp.Before(opt.From) {
			if err := fn(Position{Seq: meta.Sequence.Stream, Stored: meta.Timestamp}, m.Subject(), m.Data()); err != nil {
				if !errors.Is(err, ErrStopScan) {
					fnErr = err
				}
				return true, nil
			}
		}
		return false, nil
	}, unreadable)
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("reading audit records: %w", err)
	}
	return nil
}

// readPast reads the audit stream st as an ordered consumer made with
// cfg delivers it, up to stream sequence last, passing each message to
// fn until fn says to stop. jserr.ScanPast does the reading, through to
// what the stream's leader holds even when the server places the reader
// on a replica behind or damaged, and past damage (below).
//
// The audit stream refuses deletes, so a message the store counts but
// cannot produce is damage (a block cut short: a torn copy, a failing
// disk), not a gap, and so, on a stream that loses messages only to
// damage (GoneIsDamage), is a sequence the read passes over. With
// unreadable set, each run of such messages is passed to it (a run met
// twice may be passed twice: MergeRuns) and the read goes on after the
// run, unless it returns an
// error, which ends the read; a start by time that the store cannot
// place (damage where it looks) becomes a start at the first message, so
// fn must skip messages stored before that time. Without unreadable, the
// read ends at the damage with jserr.Scan's error, which says where it
// is.
func readPast(ctx context.Context, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig, last uint64, batch int,
	fn func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error), unreadable func(SeqRange) error) error {
	// next is the sequence the read should meet next (0: not known, a
	// start by time): one it passes over is a gap (gone).
	var next uint64
	if cfg.DeliverPolicy == jetstream.DeliverByStartSequencePolicy {
		next = max(cfg.OptStartSeq, 1)
	}
	stopped := false
	var passed replicaGap // a run a reader passed over that the leader holds
	// onRun takes a run of messages the store counts but cannot produce,
	// which jserr.ScanPast reads on after: sequences before it that the
	// read passed over are gone, and the read meets the run's end next.
	var onRun func(jserr.Run) error
	if unreadable != nil {
		onRun = func(r jserr.Run) error {
			if r.First > last {
				return nil
			}
			if next != 0 && next < r.First {
				if err := gone(ctx, st, SeqRange{First: next, Last: r.First - 1}, last, unreadable); err != nil {
					return err
				}
			}
			if err := unreadable(SeqRange{First: r.First, Last: min(r.Last, last)}); err != nil {
				return err
			}
			next = max(next, r.Last+1)
			return nil
		}
	}
	for tries := 1; ; {
		err := jserr.ScanPast(ctx, st, cfg, batch, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
			seq := md.Sequence.Stream
			if seq > last {
				return true, nil
			}
			if next != 0 && seq > next {
				// A reader placed on a replica that lost messages (a
				// follower's damaged block rebuilt) passes over what the
				// leader holds: that is read again, not reported.
				switch _, err := st.GetMsg(ctx, next); {
				case err == nil:
					return true, replicaGap{first: next, last: seq - 1}
				case !errors.Is(err, jetstream.ErrMsgNotFound):
					return true, fmt.Errorf("reading audit stream message %d: %w", next, err)
				}
				if err := gone(ctx, st, SeqRange{First: next, Last: seq - 1}, last, unreadable); err != nil {
					return true, err
				}
			}
			next = seq + 1
			stop, err := fn(m, md)
			stopped = stop || err != nil
			return stop || seq == last, err
		}, onRun)
		if errors.As(err, &passed) {
			if tries++; tries > jserr.ScanTries {
				return fmt.Errorf("readers placed on the stream's replicas passed over messages %d-%d, which its leader holds (a replica damaged; %d readers tried)", passed.first, passed.last, jserr.ScanTries)
			}
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, passed.first, nil
			continue
		}
		if err == nil && !stopped && next != 0 && next <= last {
			// Nothing more though the stream's last message is after
			// the last read: the run up to it is gone.
			return gone(ctx, st, SeqRange{First: next, Last: last}, last, unreadable)
		}
		return err
	}
}

// replicaGap is a run of sequences a reader passed over that the
// stream's leader holds.
type replicaGap struct{ first, last uint64 }

func (g replicaGap) Error() string {
	return fmt.Sprintf("a reader passed over messages %d-%d, which the leader holds", g.first, g.last)
}

// gone handles run r, sequences up to last that a read passed over: the
// store no longer has them. When it rebuilds a damaged block at start,
// the server turns what it cannot read of it into deleted sequences
// (an uncompressed block cut short, a compressed one zeroed), and
// readers then pass over them as they do over deleted messages. On an
// audit stream as Junction makes it, that can only be damage: r is given
// to unreadable, or, without it, is an error saying so. Where the stream
// lets messages go otherwise (deletes, purges, per-subject limits or
// message TTLs allowed) it is not damage, nor is a run at the head of a
// stream with limits that its limits have since removed.
func gone(ctx context.Context, st jetstream.Stream, r SeqRange, last uint64, unreadable func(SeqRange) error) error {
	cfg := st.CachedInfo().Config
	if !GoneIsDamage(cfg) {
		return nil
	}
	if !KeepsEverything(cfg) {
		info, err := st.Info(ctx)
		if err != nil {
			return fmt.Errorf("reading audit stream state: %w", err)
		}
		if info.State.FirstSeq > r.Last {
			return nil // expired since the read began
		}
		r.First = max(r.First, info.State.FirstSeq)
	}
	if unreadable == nil {
		return fmt.Errorf("the store no longer has messages %d-%d of %d, which the audit stream, refusing deletes, can only lose to damage: its files are damaged there; restore them from a backup (the embedded server's log, component nats, names the failing block)", r.First, r.Last, last)
	}
	return unreadable(r)
}

// timeStart returns the stream sequence to read from for a read by
// time, tcfg: where the store places an ordered consumer made with it.
// The store places it past messages it cannot read, whose times it
// cannot know; a run of them just before the start is given to
// unreadable, since they may be in the window. When the store cannot
// place it at all (damage where it looks), the read starts at first, the
// stream's first message; the reader must skip messages stored before
// the window.
func timeStart(ctx context.Context, st jetstream.Stream, tcfg jetstream.OrderedConsumerConfig, first uint64, unreadable func(SeqRange) error) (uint64, error) {
	c, release, err := jserr.Ordered(ctx, st, tcfg)
	if err != nil {
		return first, nil
	}
	ci, err := c.Info(ctx)
	release()
	if err != nil {
		return 0, fmt.Errorf("finding where the window starts: %w", err)
	}
	start := ci.Delivered.Stream + 1
	bad := start - 1
	for ; bad >= first && bad > 0; bad-- {
		_, err := st.GetMsg(ctx, bad)
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, fmt.Errorf("reading audit stream message %d: %w", bad, err)
		}
	}
	if bad+1 < start {
		if err := unreadable(SeqRange{First: bad + 1, Last: start - 1}); err != nil {
			return 0, err
		}
	}
	return start, nil
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

// KeepsEverything reports whether an audit stream of configuration cfg
// can only lose messages to damage: it has no limits that expire or
// discard messages and refuses deletes and purges, as Junction creates
// it. An operator may set limits by hand (to keep a year, say); a first
// message after sequence 1 is then messages expired, not damage. A count
// or size limit with the discard-new policy refuses new messages rather
// than removing old ones, so it expires nothing.
func KeepsEverything(cfg jetstream.StreamConfig) bool {
	discardsOld := cfg.Discard != jetstream.DiscardNew
	return cfg.MaxAge == 0 && (cfg.MaxMsgs <= 0 && cfg.MaxBytes <= 0 || !discardsOld) && cfg.MaxMsgsPerSubject <= 0 &&
		cfg.DenyDelete && cfg.DenyPurge
}

// GoneIsDamage reports whether an audit stream of configuration cfg can
// lose a message after its first only to damage: it refuses deletes and
// purges and has no per-subject limits or message TTLs (limits of age,
// count or size remove only its oldest messages). A sequence missing
// between its first and last, such as one the server deleted rebuilding
// a damaged block, is then a message lost.
func GoneIsDamage(cfg jetstream.StreamConfig) bool {
	return cfg.DenyDelete && cfg.DenyPurge && cfg.MaxMsgsPerSubject <= 0 && !cfg.AllowMsgTTL
}
