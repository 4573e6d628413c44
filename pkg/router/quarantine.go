package router

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/store"
)

// QuarantineListing is what ListQuarantine read besides the entries.
type QuarantineListing struct {
	// Omitted counts the entries of the listing's range left out, older
	// than the one at which fn stopped it.
	Omitted int
}

// ListQuarantine gives fn the newest limit entries of the quarantine
// (by sequence), newest first, until fn says stop: the entry fn stopped
// at and every older one of the range are counted as omitted.
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
	for seq := s.LastSeq; s.Msgs > 0 && seq >= first && seq > 0; seq-- {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if fn(m) {
			out.Omitted = int(seq - first + 1)
			break
		}
	}
	return out, nil
}
