package audit

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jserr"
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
// to size the reads.
//
// After a damaged block, nats-server 2.15.2 gives a reader filtered on a
// subject nothing more though the store holds more, and the read stalls
// (jserr.ErrNoProgress). The rest is then read message by message, each
// the next the store can produce on subject, and the read ends with an
// *IncompleteError: the damaged block's messages on subject, if any, are
// not among them, and no one can say whether there were any.
func ReadSubject(ctx context.Context, st jetstream.Stream, subject string, n uint64, fn func(data []byte) (stop bool, err error)) error {
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading audit stream info: %w", err)
	}
	last := info.State.LastSeq
	var at uint64 // the last sequence read
	err = jserr.Scan(ctx, st, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}, int(max(min(n, 1000), 1)),
		func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
			if md.Sequence.Stream > last {
				return true, nil
			}
			at = md.Sequence.Stream
			return fn(m.Data())
		})
	if err == nil || !errors.Is(err, jserr.ErrNoProgress) || ctx.Err() != nil {
		return err
	}
	for seq := at + 1; seq <= last; {
		m, gerr := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(gerr, jetstream.ErrMsgNotFound) {
			break
		}
		if gerr != nil {
			return errors.Join(err, gerr)
		}
		if m.Sequence > last {
			break
		}
		stop, ferr := fn(m.Data)
		if ferr != nil {
			return ferr
		}
		if stop {
			break
		}
		seq = m.Sequence + 1
	}
	return &IncompleteError{Err: err}
}
