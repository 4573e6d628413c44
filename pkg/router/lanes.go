package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/store"
)

// Lanes keep one patient's failing delivery from holding up the others'
// in the batch pipeline, where a destination sends one span of batches at
// a time. When an entry fails and will be tried again, the batch worker
// moves it, and the rest of its partition's entries in the span, to the
// partition's own lane: the per-partition outbound subject the message
// pipeline's delivery consumers read (they run in both pipelines), where
// it is retried with backoff on its own. The span then finishes and later
// spans go on for every other partition.
//
// Order within a partition holds because, while its lane may hold
// entries, later spans put that partition's entries in the lane too,
// behind them. Which lanes are open is recorded on one marker subject per
// destination in the outbound stream (laneSubject), read once a span and
// changed by compare-and-set, so every process sharing the destination
// agrees:
//
//   - the batch worker marks a lane open, publishes entries to it, marks
//     it open again (its worker may have closed it in between), then
//     acknowledges its span; a process that stops part way leaves the
//     lane open, so the span, given again, moves the rest behind them
//     (the store keeps one copy of an entry moved twice);
//   - a lane's delivery worker, once an entry moved there (HeaderLane) is
//     delivered and acknowledged, closes the lane when its consumer has
//     nothing more (pending or unacknowledged), with compare-and-set on
//     the marker it read before looking.
//
// An entry published to the lane between the look and the close either
// changed the marker first (the close fails and looks again) or marks the
// lane open again after it; no later span runs in between, since the
// span that moved it is not yet acknowledged.

// HeaderLane marks an outbound payload the batch pipeline moved to its
// partition's lane; HeaderAttemptsMade carries the attempts already made
// at it, so max_attempts and the backoff carry on, and HeaderRetryAfter
// how long the last of them asked to wait (an HTTP Retry-After, as a Go
// duration), so the lane's first retry waits that long too.
const (
	HeaderLane         = "Junction-Lane"
	HeaderAttemptsMade = "Junction-Attempts-Made"
	HeaderRetryAfter   = "Junction-Retry-After"
)

// errDeferred is deliverPayload's answer, when asked to defer, for a
// payload that failed and will be tried again: the caller moves it to
// its lane.
var errDeferred = errors.New("delivery deferred to the partition's lane")

// laneSubject is the marker subject listing destination d's open lanes.
func laneSubject(d string) string { return store.SubjOutbound + "._lanes." + d }

// lanes is a destination's open lanes, by partition, and the marker's
// sequence (0 for none).
type lanes struct {
	open map[string]bool
	seq  uint64
}

// readLanes returns destination d's open lanes.
func readLanes(ctx context.Context, st jetstream.Stream, d string) (lanes, error) {
	m, err := st.GetLastMsgForSubject(ctx, laneSubject(d))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return lanes{open: map[string]bool{}}, nil
	}
	if err != nil {
		return lanes{}, fmt.Errorf("reading %s's open lanes: %w", d, err)
	}
	l := lanes{open: map[string]bool{}, seq: m.Sequence}
	for p := range strings.SplitSeq(string(m.Data), ",") {
		if p != "" {
			l.open[p] = true
		}
	}
	return l, nil
}

// writeLanes replaces the marker with open, expecting it at seq. It
// reports false when another process changed it first.
func writeLanes(ctx context.Context, js jetstream.JetStream, d string, open map[string]bool, seq uint64) (bool, error) {
	ps := make([]string, 0, len(open))
	for p := range open {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	m := nats.NewMsg(laneSubject(d))
	m.Data = []byte(strings.Join(ps, ","))
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(seq, 10))
	_, err := js.PublishMsg(ctx, m)
	if jserr.WrongLastSequence(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("writing %s's open lanes: %w", d, err)
	}
	return true, nil
}

// openLanes marks partitions ps of destination d open.
func (r *Router) openLanes(ctx context.Context, st jetstream.Stream, d string, ps map[string]bool) error {
	for {
		l, err := readLanes(ctx, st, d)
		if err != nil {
			return err
		}
		for p := range ps {
			l.open[p] = true
		}
		ok, err := writeLanes(ctx, r.js, d, l.open, l.seq)
		if ok || err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// closeLane closes partition p's lane of destination d when its
// consumer holds nothing more (see the comment above).
// A failure only leaves the lane open, which costs later entries of that
// partition a detour, never their order.
func (r *Router) closeLane(ctx context.Context, d, p string) {
	st, err := r.js.Stream(ctx, store.StreamOutbound)
	if err != nil {
		return
	}
	for range 5 {
		l, err := readLanes(ctx, st, d)
		if err != nil || !l.open[p] {
			return
		}
		c, err := r.js.Consumer(ctx, store.StreamOutbound, "dest-"+d+"-p"+p)
		if err != nil {
			return
		}
		info, err := c.Info(ctx)
		if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
			return
		}
		delete(l.open, p)
		if ok, err := writeLanes(ctx, r.js, d, l.open, l.seq); ok || err != nil {
			if ok {
				r.o.Logger.Info("delivery lane closed", "destination", d, "partition", p)
			}
			return
		}
	}
}

// toLane publishes batch entry e, with the attempts already made at it
// (their count, and the wait the last asked for), to its partition's
// lane of destination d.
func (r *Router) toLane(ctx context.Context, d string, e outEntry, made attempts) error {
	p := e.h.Get(envelope.HeaderPartition)
	n, err := strconv.Atoi(p)
	if err != nil {
		return fmt.Errorf("moving an entry to its lane: partition %q: %w", p, err)
	}
	m := nats.NewMsg(OutboundSubject(d, n))
	for k, v := range e.h {
		m.Header[k] = v
	}
	m.Header.Set(HeaderLane, "1")
	m.Header.Set(HeaderAttemptsMade, strconv.Itoa(made.made))
	if made.asked > 0 {
		m.Header.Set(HeaderRetryAfter, made.asked.String())
	} else {
		m.Header.Del(HeaderRetryAfter)
	}
	// The same entry moved again (its span retried) is stored once.
	m.Header.Set(jetstream.MsgIDHeader, e.h.Get(envelope.HeaderID)+"|"+e.h.Get(envelope.HeaderRoute)+"|"+d+"|"+e.h.Get(envelope.HeaderReplay)+"|lane")
	m.Data = e.body
	if _, err := r.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("moving an entry to its lane: %w", err)
	}
	return nil
}
