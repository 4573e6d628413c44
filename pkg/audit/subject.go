package audit

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/store"
)

// IncompleteError is returned, beside what could be read, by a read of
// the audit messages on one subject (a message's trail) that met a part
// of the stream the store cannot produce: the records stored there are
// missing from what was read.
type IncompleteError struct {
	// Err is the read's error at the damage.
	Err error
}

func (e *IncompleteError) Error() string {
	return "some audit records could not be read, so this trail is incomplete: " + e.Err.Error()
}

func (e *IncompleteError) Unwrap() error { return e.Err }

// ReadSubject passes the data of every audit message of st on subject
// (which may hold wildcards), up to the last one stored when it starts,
// to fn in stream order, until fn says to stop. n is how many there are,
// to size the reads and to check that none was passed over: when fewer
// are read, the rest are asked for one by one and given after.
//
// After a damaged block, nats-server 2.15.2 gives a reader filtered on a
// subject nothing more though the store holds more, and the read stalls
// (jserr.ErrNoProgress). The rest is then read message by message, each
// the next the store can produce on subject, and the read ends with an
// *IncompleteError: the damaged block's messages on subject, if any, are
// not among them, and no one can say whether there were any. The store
// finds no next message on subject from before a damaged block that
// holds one, though it holds others after the block: when fewer than n
// have been read, the rest of the stream, up to the last message on
// subject, is read unfiltered past the damage (readPast) for them.
func ReadSubject(ctx context.Context, st jetstream.Stream, subject string, n uint64, fn func(data []byte) (stop bool, err error)) error {
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading audit stream info: %w", err)
	}
	last := info.State.LastSeq
	var at uint64 // the last sequence read
	given := map[uint64]bool{}
	stopped := false
	err = jserr.Scan(ctx, st, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}, int(max(min(n, 1000), 1)),
		func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
			if md.Sequence.Stream > last {
				return true, nil
			}
			at = md.Sequence.Stream
			given[at] = true
			stop, err := fn(m.Data())
			stopped = stop || err != nil
			return stop, err
		})
	if err == nil && !stopped && uint64(len(given)) < n {
		// Fewer than the stream counts: a reader placed on a replica
		// that lost some of them (a follower's damaged block rebuilt)
		// passed over them. The rest are read from the stream.
		_, err := readRest(ctx, st, subject, 1, last, given, fn)
		return err
	}
	if err == nil || !errors.Is(err, jserr.ErrNoProgress) || ctx.Err() != nil {
		return err
	}
	from, rerr := readRest(ctx, st, subject, at+1, last, given, fn)
	if rerr != nil {
		return errors.Join(err, rerr)
	}
	if from <= last && uint64(len(given)) < n {
		// Read until all n are given, or to the last message on subject:
		// the stream after it holds none. A message in the damage is
		// counted in n but never given, and the read would otherwise go
		// on to the end of the stream, however large.
		end := last
		if m, err := st.GetLastMsgForSubject(ctx, subject); err == nil {
			end = min(end, m.Sequence)
		}
		var fnErr error
		cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from}
		rerr := readPast(ctx, st, cfg, end, int(min(end-from+1, 1000)), func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
			if given[md.Sequence.Stream] || !store.SubjectMatches(subject, m.Subject()) {
				return false, nil
			}
			given[md.Sequence.Stream] = true
			stop, err := fn(m.Data())
			if err != nil {
				fnErr = err
				return true, nil
			}
			return stop || uint64(len(given)) >= n, nil
		}, func(SeqRange) error { return nil })
		if fnErr != nil {
			return fnErr
		}
		if rerr != nil {
			// What was read stands: the trail is incomplete, and says
			// why.
			return &IncompleteError{Err: errors.Join(err, fmt.Errorf("reading audit messages past the damage: %w", rerr))}
		}
	}
	return &IncompleteError{Err: err}
}

// readRest passes the data of the audit messages of st on subject from
// from to last that are not in given to fn, asking the stream for each,
// until fn says to stop, adding each to given. It returns the sequence
// from which the store found no more on subject (last+1 when the read
// got past last, or fn stopped it).
func readRest(ctx context.Context, st jetstream.Stream, subject string, from, last uint64, given map[uint64]bool, fn func(data []byte) (stop bool, err error)) (uint64, error) {
	seq := from
	for seq <= last {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return seq, nil
		}
		if err != nil {
			return seq, fmt.Errorf("reading audit messages a reader passed over: %w", err)
		}
		if m.Sequence > last {
			return last + 1, nil
		}
		if !given[m.Sequence] {
			given[m.Sequence] = true
			if stop, err := fn(m.Data); err != nil || stop {
				return last + 1, err
			}
		}
		seq = m.Sequence + 1
	}
	return seq, nil
}
