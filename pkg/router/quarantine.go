package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/store"
)

// QuarantineListing is what ListQuarantine read besides the entries.
type QuarantineListing struct {
	// Omitted counts the entries of the listing's range left out, older
	// than the one at which fn stopped it: the one fn stopped at and the
	// older ones the store produced (those it could not are in Lost).
	Omitted int
	// Lost are the runs of entries of the listing's range that the store
	// counts but cannot read, or dropped (its files damaged), oldest
	// first, with when the entries either side were kept (After, Before;
	// a run ending the quarantine has for Before when the stream's state
	// says its last entry was kept): refused input in them cannot be
	// listed. They are of the whole range, also where fn stopped the
	// listing before them.
	Lost []LostRun
}

// ListQuarantine gives fn the newest limit entries of the quarantine
// (by sequence), newest first, until fn says stop: the entry fn stopped
// at and every older one of the range it reads are counted as omitted.
// Entries it cannot read are passed over and named as runs, in the
// whole range: past the entry fn stopped at, the older ones are still
// read (and not given to fn), so that damage among them is named too.
// Junction deletes no entry (they leave from the stream's head, by age
// or size), so a sequence of the range the stream does not produce is
// damage, unless it has left the head since the listing read the
// stream's state.
func ListQuarantine(ctx context.Context, js jetstream.JetStream, limit int, fn func(*jetstream.RawStreamMsg) (stop bool)) (QuarantineListing, error) {
	var out QuarantineListing
	st, err := js.Stream(ctx, store.StreamQuarantine)
	if err != nil {
		return out, fmt.Errorf("opening the quarantine: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return out, fmt.Errorf("reading the quarantine's state: %w", err)
	}
	s := info.State
	first := s.FirstSeq
	if s.LastSeq >= uint64(limit) && s.LastSeq-uint64(limit)+1 > first {
		first = s.LastSeq - uint64(limit) + 1
	}
	// gone are the sequences of the range the store did not produce;
	// kept, when each entry read was kept, for the times around them.
	var gone []uint64
	kept := map[uint64]time.Time{}
	listing := true
	// missed are the sequences not produced since the last entry read,
	// newest first, not yet known not to have left the head: an entry
	// kept older than them says they have not (entries leave from the
	// head, oldest first), so the stream's first is asked only of misses
	// with no entry read below them yet (settle).
	var missed []uint64
	settle := func() (left bool, err error) {
		if len(missed) == 0 {
			return false, nil
		}
		expired, firstNow, err := jserr.Expired(ctx, st, missed[len(missed)-1])
		if err != nil {
			return false, err
		}
		for _, m := range missed {
			if m >= firstNow {
				gone = append(gone, m)
			}
		}
		missed = missed[:0]
		return expired, nil
	}
	seq := s.LastSeq
	for ; s.Msgs > 0 && seq >= first && seq > 0; seq-- {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			missed = append(missed, seq)
			if len(missed) < settleMisses {
				continue
			}
			left, err := settle()
			if err != nil {
				return out, err
			}
			if left {
				break // some left the head, with every older one
			}
			continue
		}
		if err != nil {
			return out, fmt.Errorf("reading quarantine entry %d: %w", seq, err)
		}
		// An entry kept below the misses: they are damage.
		gone, missed = append(gone, missed...), missed[:0]
		kept[seq] = m.Time
		if listing && fn(m) {
			listing = false
		}
		if !listing {
			out.Omitted++
		}
	}
	if _, err := settle(); err != nil {
		return out, err
	}
	// below is the entry before the oldest of the range, when the read
	// went down to it (not stopped by entries leaving the head; if they
	// left below the last misses, it left too, and is not read).
	below := seq
	out.Lost, err = runsAt(gone, func(at uint64) (time.Time, error) {
		switch {
		case at > s.LastSeq:
			// A run ending the quarantine: its last entry was kept when
			// the state says.
			return s.LastTime, nil
		case at == below && below+1 == first && below >= s.FirstSeq && below > 0:
			if m, err := st.GetMsg(ctx, at); err == nil {
				return m.Time, nil
			}
		}
		return kept[at], nil
	})
	return out, err
}

// settleMisses is how many entries in a row ListQuarantine misses before
// it asks whether they have left the head, so that a read whose window
// is leaving the head stops soon after it, not at the window's end.
const settleMisses = 64
