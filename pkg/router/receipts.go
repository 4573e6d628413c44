package router

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/store"
)

// recordReceipts writes the received audit record of every stored inbound
// message, from the ingress stream itself: the record cannot be lost to a
// crash between storing and acknowledging, and the sender's ACK waits for
// one write, not two. Replayed input is skipped (replay writes its own
// record).
func (r *Router) recordReceipts(_ context.Context, msgs []jetstream.Msg) error {
	futs := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		h := m.Headers()
		if h.Get(envelope.HeaderReplay) != "" || strings.HasPrefix(m.Subject(), SubjAccepted+".") || strings.HasPrefix(m.Subject(), store.SubjIngress+"._span.") ||
			strings.HasPrefix(m.Subject(), SubjIngestLost+".") {
			// Accepted batches are their messages' receipt; span markers
			// and records of lost batches are no message's.
			continue
		}
		env := envelope.FromHeader(h, m.Data())
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading message metadata: %w", err)
		}
		recs := []audit.Record{{Time: env.ReceivedAt, MessageID: env.ID, Event: audit.Received, Source: env.Source, Outcome: "stored",
			Hash: audit.Hash(m.Data()), Stream: store.StreamIngress, Seq: meta.Sequence.Stream}}
		if !r.sourceRouted[env.Source] {
			// No route reads this source: the message ends here, and the
			// trail says so rather than leaving it without a fate.
			recs = append(recs, audit.Record{Time: time.Now().UTC(), MessageID: env.ID, Event: audit.Filtered, Source: env.Source,
				Outcome: "no-route", Reason: "no loaded route takes input from this source"})
		}
		f, err := r.audit.WriteAsync(env.ID, "recv|"+env.ID+"|"+strconv.FormatUint(meta.Sequence.Stream, 10), recs...)
		if err != nil {
			return err
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		if _, err := wait(f); err != nil {
			return fmt.Errorf("writing receipt records: %w", err)
		}
	}
	return nil
}
