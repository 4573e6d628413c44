package jserr

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ScanTries is how many ordered consumers Scan makes, at most, to read a
// stream through: the first, and one more each time a consumer stops
// short of what the stream's leader holds or its server fails a read.
const ScanTries = 4

// ErrNoProgress is wrapped by Scan's error for a read that got nothing
// though messages were said to be pending: at once when the store
// counts the next message but answers that it has not got it (its files
// are damaged there; see Unreadable), after 5 s of nothing otherwise
// (the store not answering). The error says which, and another consumer
// would stall as well.
var ErrNoProgress = errors.New("no progress")

// Scan reads the messages of st that an ordered consumer made with cfg
// delivers, up to those stored when it starts, batch at a time, passing
// each to fn until fn says to stop or ctx is done. It takes what the
// server has without waiting for full batches, so it ends as soon as it
// has read them.
//
// On a cluster, the server places an ordered consumer on any of the
// stream's replicas, and the consumer reads that replica's copy: one
// behind the leader, or one whose store is damaged (as a replica whose
// server was killed can be), ends the read early, saying nothing more is
// pending, or fails it. So when a consumer runs out, Scan asks the
// stream's leader whether a message on cfg's filter follows the last one
// read; a consumer that stopped short, or whose server failed a read, is
// replaced by a new one starting after the last message read (the server
// places it afresh), up to ScanTries consumers in all. A read that still
// falls short is an error, never a silent partial answer. An error from
// fn is returned as it is.
func Scan(ctx context.Context, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig, batch int,
	fn func(jetstream.Msg, *jetstream.MsgMetadata) (stop bool, err error)) error {
	return scan(ctx, st, cfg, batch, fn, ScanTries)
}

// scan is Scan making at most tries ordered consumers.
func scan(ctx context.Context, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig, batch int,
	fn func(jetstream.Msg, *jetstream.MsgMetadata) (stop bool, err error), tries int) error {
	stream := st.CachedInfo().Config.Name
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading the state of stream %s: %w", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}
	var seen uint64
	for try := 1; ; try++ {
		done, err := scanOnce(ctx, st, cfg, batch, last, &seen, fn)
		var fe fnError
		if errors.As(err, &fe) {
			return fe.err
		}
		if err == nil && done {
			return nil
		}
		if seen > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, seen+1, nil
		}
		var want uint64
		if err == nil {
			// The consumer has nothing more: ask the leader whether
			// that is so.
			if want, err = leaderNext(ctx, st, cfg, last); err != nil {
				return fmt.Errorf("asking the leader of stream %s for the next message: %w", stream, err)
			}
			if want == 0 {
				return nil
			}
		}
		if ctx.Err() != nil || errors.Is(err, ErrNoProgress) || try == tries {
			if errors.Is(err, ErrNoProgress) && ctx.Err() == nil {
				// Damage (a message counted but not found) or a store not
				// answering: Stalled says which, and where.
				return fmt.Errorf("reading stream %s: %w (%w)", stream, Stalled(ctx, st, seen), ErrNoProgress)
			}
			if err != nil {
				return fmt.Errorf("reading stream %s: %w", stream, err)
			}
			return fmt.Errorf("reading stream %s: readers on its replicas stopped at sequence %d, though its leader holds sequence %d to read (a replica behind or damaged; %d readers tried)",
				stream, seen, want, try)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("reading stream %s: %w", stream, ctx.Err())
		case <-time.After(time.Duration(try) * 200 * time.Millisecond):
		}
	}
}

// fnError carries an error of Scan's fn, which is returned as it is and
// never retried.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// leaderNext returns the sequence of the first message that a read
// with cfg must deliver, at or before last, as the stream's leader knows
// it (0: none). A replicated stream without direct gets answers message
// gets from its leader.
func leaderNext(ctx context.Context, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig, last uint64) (uint64, error) {
	filters := cfg.FilterSubjects
	if len(filters) == 0 {
		filters = []string{">"}
	}
	var from uint64
	switch cfg.DeliverPolicy {
	case jetstream.DeliverAllPolicy:
		from = 1
	case jetstream.DeliverByStartSequencePolicy:
		from = max(cfg.OptStartSeq, 1)
	case jetstream.DeliverByStartTimePolicy:
		// No get by time: the last message on each filter tells
		// whether any is due (one newer than last may hide older ones
		// in the window, so last is taken as due; a new reader reaching
		// past last ends the read).
		var want uint64
		for _, f := range filters {
			m, err := st.GetLastMsgForSubject(ctx, f)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return 0, err
			}
			if cfg.OptStartTime != nil && m.Time.Before(*cfg.OptStartTime) {
				continue
			}
			want = max(want, min(m.Sequence, last))
		}
		return want, nil
	default:
		// Last, new or last per subject: no fixed end to reach.
		return 0, nil
	}
	var want uint64
	for _, f := range filters {
		m, err := st.GetMsg(ctx, from, jetstream.WithGetMsgSubject(f))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if m.Sequence <= last && (want == 0 || m.Sequence < want) {
			want = m.Sequence
		}
	}
	return want, nil
}

// scanOnce reads with one ordered consumer, recording in seen the stream
// sequence of each message it passes to fn. It returns done when fn
// stopped or the read reached last; otherwise the consumer ran out of
// messages it said were pending.
func scanOnce(ctx context.Context, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig, batch int, last uint64, seen *uint64,
	fn func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error)) (bool, error) {
	c, release, err := Ordered(ctx, st, cfg)
	if err != nil {
		return false, fmt.Errorf("creating a reader: %w", err)
	}
	defer release()
	ci, err := c.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("creating a reader: %w", err)
	}
	for pending, idle := ci.NumPending, 0; pending > 0; {
		msgs, berr := Collect(ctx, func() (jetstream.MessageBatch, error) { return c.FetchNoWait(batch) })
		for _, m := range msgs {
			// A caller gone (an admin request over a wide window) stops
			// the read, not only the next fetch.
			if err := ctx.Err(); err != nil {
				return false, err
			}
			meta, err := m.Metadata()
			if err != nil {
				return false, fmt.Errorf("reading metadata: %w", err)
			}
			if meta.Sequence.Stream > last {
				return true, nil
			}
			*seen = meta.Sequence.Stream
			if stop, err := fn(m, meta); err != nil {
				return true, fnError{err}
			} else if stop {
				return true, nil
			}
			if meta.Sequence.Stream == last {
				return true, nil
			}
			if meta.NumPending == 0 {
				return false, nil
			}
			pending = meta.NumPending
		}
		if len(msgs) > 0 {
			idle = 0
			continue
		}
		if berr != nil && !errors.Is(berr, jetstream.ErrNoMessages) {
			return false, fmt.Errorf("reading a batch: %w", berr)
		}
		// None came: the count may be stale (messages removed ahead of
		// the reader, as a replay removes dead letters), so ask again.
		if ci, err := c.Info(ctx); err == nil {
			if pending = ci.NumPending; pending == 0 {
				return false, nil
			}
			// A reader meeting messages the store counts but cannot
			// produce gets nothing however long it waits: the store says
			// so at once when asked for them (a slow store does not).
			if bad, _ := unreadableNext(ctx, st, c, cfg, ci.Delivered.Stream); bad {
				return false, fmt.Errorf("the store counts messages after stream seq %d that it cannot produce: %w", ci.Delivered.Stream, ErrNoProgress)
			}
		}
		// Messages said to be pending and none coming for 5s: the store
		// is not answering.
		if idle++; idle > 50 {
			return false, ErrNoProgress
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false, nil
}

// unreadableNext reports whether the next message consumer c (made with
// cfg, placed after stream sequence at) is to deliver is one the store
// counts but cannot produce: a read that gets nothing there is stalled
// on damage, not waiting for a slow store. Unfiltered, that is the
// message at at+1, which the store says it has not got though it is
// neither before the stream's first nor after its last nor deleted
// (Unreadable). Filtered, it is when the store has no message on any of
// cfg's filters at or after at+1 while c still counts one pending. Any
// other answer, an error included, is not damage: false.
func unreadableNext(ctx context.Context, st jetstream.Stream, c jetstream.Consumer, cfg jetstream.OrderedConsumerConfig, at uint64) (bool, error) {
	if len(cfg.FilterSubjects) == 0 {
		return Unreadable(ctx, st, at+1)
	}
	for _, f := range cfg.FilterSubjects {
		_, err := st.GetMsg(ctx, at+1, jetstream.WithGetMsgSubject(f))
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, err
		}
	}
	// Asked after the gets: a message deleted meanwhile is no longer
	// pending.
	ci, err := c.Info(ctx)
	if err != nil {
		return false, err
	}
	return ci.NumPending > 0, nil
}

// Unreadable reports whether stream st counts the message at sequence
// seq but cannot produce it: the store answers that it has not got it,
// though seq is between the stream's first and last sequences and not
// among its deleted ones. Its files are then damaged there (a block cut
// short or overwritten). The state is asked after the message, so a
// message deleted between the two is not taken for damage.
func Unreadable(ctx context.Context, st jetstream.Stream, seq uint64) (bool, error) {
	_, err := st.GetMsg(ctx, seq)
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, err
	}
	info, err := st.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return false, err
	}
	s := info.State
	return seq >= s.FirstSeq && seq <= s.LastSeq && !slices.Contains(s.Deleted, seq), nil
}
