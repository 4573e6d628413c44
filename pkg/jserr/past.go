package jserr

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/store"
)

// Run is a run of stream sequences, First to Last, that a read passed
// over because the store counts them but cannot produce them (its files
// are damaged there), or has lost them. After and Before are when the
// messages either side of the run were stored, where the store holds
// them (zero where it does not, or there is none): what the run held was
// stored between them. A run a reader of the whole stream passed over at
// the stream's end has for Before when the stream's state says its last
// message was stored: the run's last, stored then.
type Run struct {
	First  uint64    `json:"first"`
	Last   uint64    `json:"last"`
	After  time.Time `json:"after,omitzero"`
	Before time.Time `json:"before,omitzero"`
}

// ScanPast is Scan going on past damage. When the read stalls on
// messages the store counts but cannot produce (its files are damaged
// there; see Unreadable), the run of them is given to unreadable with
// the times around it, and the read goes on after it; an error from
// unreadable ends the read and is returned as it is. A read by start
// time first finds where the store places it: the store places such a
// reader past messages it cannot read, whose times it cannot know, so a
// run of them just before the start is given to unreadable too (it may
// be in the window). Past a run, or when a reader filtered on subjects
// fails or stops short of what the stream holds (as it does after a
// damaged block), the read goes on unfiltered and passes fn only the
// messages on cfg's filters. A reader of the whole stream (unfiltered,
// or filtered on all of its subjects) that passes over messages the
// store counts but cannot produce, as a reader passes over a record
// overwritten in an uncompressed block (in the middle of the stream, or
// its last message, where the read ends), gives them to unreadable too. Any other stall (a store not answering) ends the read
// with Scan's error.
// With unreadable nil, ScanPast is Scan.
func ScanPast(ctx context.Context, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig, batch int,
	fn func(jetstream.Msg, *jetstream.MsgMetadata) (stop bool, err error), unreadable func(Run) error) error {
	if unreadable == nil {
		return Scan(ctx, st, cfg, batch, fn)
	}
	stream := st.CachedInfo().Config.Name
	if cfg.DeliverPolicy == jetstream.DeliverByStartTimePolicy {
		s, err := streamState(ctx, st)
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", stream, err)
		}
		start, err := placeByTime(ctx, st, s, cfg, unreadable)
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", stream, err)
		}
		if start == 0 {
			return nil // nothing stored since
		}
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, start, nil
	}
	// at is the last message read, stored at atTime; resumed is where
	// the read last went on after damage.
	var at, resumed uint64
	var atTime time.Time
	// filters are the subjects to read once the reader reads unfiltered.
	filters := cfg.FilterSubjects
	// next is the sequence a reader of the whole stream is to deliver
	// next: one it passes over without stalling may be a message the
	// store counts but cannot read (an uncompressed block overwritten
	// in the middle is passed over so), which skipped tells.
	next := st.CachedInfo().State.FirstSeq
	if cfg.DeliverPolicy == jetstream.DeliverByStartSequencePolicy {
		next = max(next, cfg.OptStartSeq)
	}
	for {
		whole := covers(cfg.FilterSubjects, st.CachedInfo().Config.Subjects)
		// A reader filtered on subjects reads nothing after a damaged
		// block from nats-server 2.15.2, however far after it it starts,
		// and says nothing more is pending: a filtered read that fails,
		// or whose one reader stops short of what the stream holds, goes
		// on unfiltered (below) rather than trying more readers, which
		// would do the same.
		tries := ScanTries
		if len(cfg.FilterSubjects) > 0 {
			tries = 1
		}
		// end is the stream's last message as this read starts, which
		// the read reaches unless fn stops it: a reader of the whole
		// stream that passes over messages at the end (the last record
		// of an uncompressed block overwritten) ends without a word, so
		// what it passed over is looked at once it has.
		var end uint64
		var endTime time.Time
		if whole {
			info, err := st.Info(ctx)
			if err != nil {
				return fmt.Errorf("reading the state of stream %s: %w", stream, err)
			}
			end, endTime = info.State.LastSeq, info.State.LastTime
		}
		stopped := false
		err := scan(ctx, st, cfg, batch, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
			seq := md.Sequence.Stream
			if whole && next != 0 && seq > next {
				after := atTime
				if at+1 != next {
					after = time.Time{}
				}
				if err := skippedNow(ctx, st, next, seq-1, after, md.Timestamp, unreadable); err != nil {
					return true, fnError{err}
				}
			}
			at, atTime, next = seq, md.Timestamp, seq+1
			if !SubjectMatches(filters, m.Subject()) {
				return false, nil
			}
			stop, err := fn(m, md)
			if err != nil {
				return true, fnError{err}
			}
			stopped = stop
			return stop, nil
		}, tries)
		var fe fnError
		if errors.As(err, &fe) {
			return fe.err
		}
		if err == nil && whole && !stopped && next != 0 && next <= end {
			// A run that ends the stream was stored by the time the
			// state gives for its last message.
			after, before := atTime, endTime
			if at+1 != next {
				after = time.Time{}
			}
			if m, gerr := st.GetMsg(ctx, end+1); gerr == nil {
				before = m.Time
			}
			if err := skippedNow(ctx, st, next, end, after, before, unreadable); err != nil {
				return err
			}
		}
		if err == nil || ctx.Err() != nil {
			return err
		}
		if len(cfg.FilterSubjects) > 0 && !errors.Is(err, ErrNoProgress) {
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, max(at+1, cfg.OptStartSeq, 1), nil
			cfg.FilterSubjects, next = nil, max(at+1, cfg.OptStartSeq, 1)
			continue
		}
		if !errors.Is(err, ErrNoProgress) {
			return err
		}
		// Read from where this reader started (the last read may be
		// before it: the messages between were on other subjects).
		from, after := max(at+1, cfg.OptStartSeq, 1), atTime
		if from != at+1 {
			after = time.Time{}
		}
		s, derr := streamState(ctx, st)
		var run Run
		var resume uint64
		if derr == nil {
			run, resume, derr = damageFrom(ctx, st, s, filters, from, after)
		}
		if derr != nil || resume != 0 && resume <= resumed {
			// Not damage there (the store did not answer, say), or no
			// further than last time: Scan's error says what it saw.
			return err
		}
		if err := unreadable(run); err != nil {
			return err
		}
		if resume == 0 {
			return nil // damaged up to the stream's last message
		}
		resumed, next = resume, resume
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, resume, nil
		// The rest unfiltered (see above), and filtered here.
		cfg.FilterSubjects = nil
	}
}

// placeByTime returns the stream sequence a read by start time, cfg, of
// stream st whose state (with its deleted sequences) was s,
// starts at: where the store places an ordered consumer made with it (0:
// past the last message). A run of messages the store counts but cannot
// produce just before it is given to unreadable. When the store cannot
// place the reader at all (damage where it looks), the read starts at
// the stream's first message, and the reader's own filter on times (a
// read by time is given messages stored before it) must skip those
// before the window. A message missing because it has left the head
// since s was read (Expired) is not in the run, nor any before it.
func placeByTime(ctx context.Context, st jetstream.Stream, s jetstream.StreamState, cfg jetstream.OrderedConsumerConfig, unreadable func(Run) error) (uint64, error) {
	if s.Msgs == 0 {
		return 0, nil
	}
	start := s.FirstSeq
	// Placed unfiltered: where the window starts, whatever its subjects.
	place := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: cfg.OptStartTime, HeadersOnly: true}
	if c, release, err := Ordered(ctx, st, place); err == nil {
		ci, err := c.Info(ctx)
		release()
		if err != nil {
			return 0, fmt.Errorf("finding where the window starts: %w", err)
		}
		start = max(ci.Delivered.Stream+1, s.FirstSeq)
	}
	if start > s.LastSeq {
		// Past the last message: nothing in the window, unless the store
		// placed it past damage at the end.
		start = s.LastSeq + 1
	}
	deleted := make(map[uint64]bool, len(s.Deleted))
	for _, seq := range s.Deleted {
		deleted[seq] = true
	}
	run := Run{Last: start - 1}
	for seq := start - 1; seq >= s.FirstSeq && seq > 0; seq-- {
		m, err := st.GetMsg(ctx, seq)
		if err == nil {
			run.After = m.Time
			break
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, fmt.Errorf("reading stream message %d: %w", seq, err)
		}
		if deleted[seq] {
			break
		}
		gone, _, err := Expired(ctx, st, seq)
		if err != nil {
			return 0, err
		}
		if gone {
			break // it and every message before it left the head
		}
		run.First = seq
	}
	if run.First != 0 {
		if start <= s.LastSeq {
			if m, err := st.GetMsg(ctx, start); err == nil {
				run.Before = m.Time
			}
		} else {
			// The run ends the stream: stored by the time the state
			// gives for its last message (see Run).
			run.Before = s.LastTime
		}
		if err := unreadable(run); err != nil {
			return 0, err
		}
	}
	if start > s.LastSeq {
		return 0, nil
	}
	return start, nil
}

// damageFrom finds where a read of stream st, whose state (with its
// deleted sequences) was s, on filters (all subjects when none), stalled
// at sequence from, is damaged: the first run at or after from of
// messages the store counts but cannot produce (neither deleted nor past
// its last, nor gone from its head since s was read: Expired), passing
// over messages of other subjects and deleted ones before it. after is when the message before from was
// stored (zero: not known). It returns the run and the sequence of the
// first message the store produces after it (0: none up to the stream's
// last). A message on filters before the run, or no run, is not damage:
// an error.
func damageFrom(ctx context.Context, st jetstream.Stream, s jetstream.StreamState, filters []string, from uint64, after time.Time) (Run, uint64, error) {
	deleted := make(map[uint64]bool, len(s.Deleted))
	for _, seq := range s.Deleted {
		deleted[seq] = true
	}
	var run Run
	if after.IsZero() && from > s.FirstSeq {
		if m, err := st.GetMsg(ctx, from-1); err == nil {
			after = m.Time
		}
	}
	for seq := max(from, s.FirstSeq); seq <= s.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		switch {
		case err == nil && run.First == 0:
			if SubjectMatches(filters, m.Subject) {
				return Run{}, 0, fmt.Errorf("stream message %d is there to read: not damage", seq)
			}
			after = m.Time
			continue
		case err == nil:
			run.Before = m.Time
			return run, seq, nil
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return Run{}, 0, fmt.Errorf("reading stream message %d: %w", seq, err)
		case run.First == 0 && deleted[seq]:
			continue
		}
		gone, first, err := Expired(ctx, st, seq)
		if err != nil {
			return Run{}, 0, err
		}
		switch {
		case gone:
			// It left the head since s was read, with every message
			// before it (the run too): go on from the first kept.
			run, after, seq = Run{}, time.Time{}, first-1
		case run.First != 0:
			run.Last = seq
		default:
			run = Run{First: seq, Last: seq, After: after}
		}
	}
	if run.First == 0 {
		return Run{}, 0, errors.New("no message the store cannot produce: not damage")
	}
	return run, 0, nil
}

// skipped gives unreadable each run of messages from to to (which a
// reader of the whole stream st, whose state with its deleted sequences
// was s, passed over) that the store counts but
// cannot produce: neither before its first message nor deleted. after
// and before are when the messages either side of from-to were stored
// (after zero: not known). Messages deleted or expired (before s's first,
// or gone from the head since: Expired) are not damage, and are left to
// the caller.
func skipped(ctx context.Context, st jetstream.Stream, s jetstream.StreamState, from, to uint64, after, before time.Time, unreadable func(Run) error) error {
	deleted := make(map[uint64]bool, len(s.Deleted))
	for _, seq := range s.Deleted {
		deleted[seq] = true
	}
	if after.IsZero() && from > s.FirstSeq {
		if m, err := st.GetMsg(ctx, from-1); err == nil {
			after = m.Time
		}
	}
	var run Run
	flush := func(next time.Time) error {
		if run.First == 0 {
			return nil
		}
		run.Before = next
		r := run
		run = Run{}
		return unreadable(r)
	}
	for seq := from; seq <= to; seq++ {
		if seq < s.FirstSeq || deleted[seq] {
			if err := flush(time.Time{}); err != nil {
				return err
			}
			continue
		}
		m, err := st.GetMsg(ctx, seq)
		if err == nil {
			if err := flush(m.Time); err != nil {
				return err
			}
			after = m.Time
			continue
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("reading stream message %d: %w", seq, err)
		}
		gone, first, err := Expired(ctx, st, seq)
		if err != nil {
			return err
		}
		switch {
		case gone:
			// It left the head since s was read, with every message
			// before it (the run too): go on from the first kept.
			run, after, seq = Run{}, time.Time{}, first-1
		case run.First == 0:
			run = Run{First: seq, Last: seq, After: after}
		default:
			run.Last = seq
		}
	}
	return flush(before)
}

// Expired reports whether stream message seq, which st did not produce
// though a state read before said the stream held it, has since left the
// stream's head (by its age, size or count limits): it is before the
// stream's first message now, first, and is not damage. Readers that
// read the state and then ask for messages ask this of each they miss.
func Expired(ctx context.Context, st jetstream.Stream, seq uint64) (gone bool, first uint64, err error) {
	info, err := st.Info(ctx)
	if err != nil {
		return false, 0, fmt.Errorf("reading the state of stream %s: %w", st.CachedInfo().Config.Name, err)
	}
	return seq < info.State.FirstSeq, info.State.FirstSeq, nil
}

// skippedNow is skipped with the stream's state read now.
func skippedNow(ctx context.Context, st jetstream.Stream, from, to uint64, after, before time.Time, unreadable func(Run) error) error {
	s, err := streamState(ctx, st)
	if err != nil {
		return err
	}
	return skipped(ctx, st, s, from, to, after, before, unreadable)
}

// streamState reads the state of stream st with its deleted sequences.
func streamState(ctx context.Context, st jetstream.Stream) (jetstream.StreamState, error) {
	info, err := st.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return jetstream.StreamState{}, fmt.Errorf("reading the stream's state: %w", err)
	}
	return info.State, nil
}

// covers reports whether filters read the whole of a stream on
// subjects: none, or the stream's own subjects, each of them.
func covers(filters, subjects []string) bool {
	if len(filters) == 0 {
		return true
	}
	for _, s := range subjects {
		if !slices.Contains(filters, s) {
			return false
		}
	}
	return len(subjects) > 0
}

// SubjectMatches reports whether subject is on one of filters (NATS
// subjects, "*" matching one token and a last ">" the rest); no filters
// match every subject.
func SubjectMatches(filters []string, subject string) bool {
	if len(filters) == 0 {
		return true
	}
	for _, f := range filters {
		if store.SubjectMatches(f, subject) {
			return true
		}
	}
	return false
}

// MergeRuns returns runs in order of their first sequence, with runs
// that overlap or touch made one (After from the earliest, Before from
// the one reaching furthest), so that each sequence is in one run at
// most: the same damage met by two reads is said once. runs is not
// changed.
func MergeRuns(runs []Run) []Run {
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b Run) int { return cmp.Compare(a.First, b.First) })
	var out []Run
	for _, r := range sorted {
		if n := len(out); n > 0 && r.First <= out[n-1].Last+1 {
			if o := &out[n-1]; r.Last > o.Last {
				o.Last, o.Before = r.Last, r.Before
			}
			continue
		}
		out = append(out, r)
	}
	return out
}
