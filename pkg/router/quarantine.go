package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/store"
)

// QuarantineListing is what ListQuarantine read besides the entries.
type QuarantineListing struct {
	// Omitted counts the entries of the listing's range left out, older
	// than the one at which fn stopped it.
	Omitted int
	// Lost are the runs of entries of the listing's range that the store
	// counts but cannot read, or dropped (its files damaged), oldest
	// first, with when the entries either side were kept (After, Before;
	// a run ending the quarantine has for Before when the stream's state
	// says its last entry was kept): refused input in them cannot be
	// listed.
	Lost []LostRun
}

// ListQuarantine gives fn the newest limit entries of the quarantine
// (by sequence), newest first, until fn says stop: the entry fn stopped
// at and every older one of the range are counted as omitted. Entries it
// cannot read are passed over and named as runs. Junction deletes no
// entry (they leave from the stream's head, by age or size), so a
// sequence of the range the stream does not produce is damage, unless
// it has left the head since the listing read the stream's state.
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
	// runs are newest first while reading; before is when the entry
	// after seq was kept (for the last, as the state says).
	var runs []LostRun
	before := s.LastTime
	inRun := func(seq uint64) *LostRun {
		if n := len(runs); n > 0 && runs[n-1].First == seq+1 {
			return &runs[n-1]
		}
		return nil
	}
	seq := s.LastSeq
	for ; s.Msgs > 0 && seq >= first && seq > 0; seq-- {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			gone, _, err := jserr.Expired(ctx, st, seq)
			if err != nil {
				return out, err
			}
			if gone {
				break // this and every older one left the head
			}
			if r := inRun(seq); r != nil {
				r.First = seq
			} else {
				runs = append(runs, LostRun{First: seq, Last: seq, Before: before})
			}
			before = time.Time{}
			continue
		}
		if err != nil {
			return out, fmt.Errorf("reading quarantine entry %d: %w", seq, err)
		}
		if r := inRun(seq); r != nil {
			r.After = m.Time
		}
		before = m.Time
		if fn(m) {
			out.Omitted = int(seq - first + 1)
			break
		}
	}
	if r := inRun(seq); r != nil && seq+1 == first && seq > 0 {
		// The oldest run of the range starts it: the entry before it
		// was kept when.
		if m, err := st.GetMsg(ctx, seq); err == nil {
			r.After = m.Time
		}
	}
	slices.Reverse(runs)
	out.Lost = runs
	return out, nil
}
