// Package jserr classifies JetStream errors that Junction acts on, and
// retries the ones that pass.
package jserr

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WrongLastSequence reports whether err is a compare-and-set write that
// lost a race: a publish with an expected last sequence, or a KV create
// or update at a revision, that found a newer message. A single server
// answers such a write with error code 10071 and a replicated stream
// with 10164; the KV client reports it as ErrKeyExists or
// ErrKeyRevisionMismatch.
func WrongLastSequence(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// ReadBatch reads a fetched batch whole: its messages and its error (or
// the fetch's own).
func ReadBatch(b jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, b.Error()
}

// Collect runs fetch (a Fetch or FetchNoWait on a consumer) and returns
// the messages it brought and the batch's error. On a cluster, the first
// pulls from a consumer just created can be answered "no responders"
// before its interest has reached every server: a batch that brought
// nothing for that reason is fetched again after a short wait, for up to
// two seconds, before the error is returned.
func Collect(ctx context.Context, fetch func() (jetstream.MessageBatch, error)) ([]jetstream.Msg, error) {
	const wait, tries = 100 * time.Millisecond, 20
	for try := 1; ; try++ {
		msgs, err := ReadBatch(fetch())
		if len(msgs) > 0 || !errors.Is(err, nats.ErrNoResponders) || try == tries {
			return msgs, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

// orderedIdle is how long the server keeps an ordered consumer nobody
// reads before deleting it, should its release not reach the server.
const orderedIdle = 30 * time.Second

// Ordered creates an ordered consumer on st with cfg, and returns it with
// a release function to call once it is read, which deletes it. The
// server counts ephemeral consumers against the stream's limit (1,000
// from nats-server 2.15) until they have been idle for their inactivity
// threshold (5 minutes unless set): reads that each left one behind,
// such as a trail lookup per replayed dead letter, reached the limit and
// failed. An idle threshold of 30 s (unless cfg sets one) covers a
// release that does not reach the server; making the consumer anew is
// tried 3 times (unless cfg says otherwise).
func Ordered(ctx context.Context, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, func(), error) {
	if cfg.InactiveThreshold == 0 {
		cfg.InactiveThreshold = orderedIdle
	}
	if cfg.MaxResetAttempts == 0 {
		// Each fetch may make the consumer anew; a store refusing that
		// (at its consumer limit, say) should fail the read, not hold it
		// retrying for ever whatever its context says.
		cfg.MaxResetAttempts = 3
	}
	c, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	release := func() {
		info := c.CachedInfo()
		if info == nil {
			return
		}
		// Not the caller's context: it may be done, and the consumer
		// should go all the same.
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = st.DeleteConsumer(dctx, info.Name)
	}
	return c, release, nil
}

// Stalled explains a read of stream st that got nothing for a while after
// stream sequence at (0: before reading any) although the stream holds
// more. When the store counts the next message but answers "not found"
// for it (Unreadable: it is not among the deleted ones), its files are
// damaged there (a block cut short or overwritten: a torn copy, a failing disk),
// and the error says so and where; otherwise it says the store did not
// answer, naming the sequence.
func Stalled(ctx context.Context, st jetstream.Stream, at uint64) error {
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("nothing came after stream seq %d, and the stream's state cannot be read: %w", at, err)
	}
	last := info.State.LastSeq
	next := max(at+1, info.State.FirstSeq)
	if next <= last {
		if bad, _ := Unreadable(ctx, st, next); bad {
			return fmt.Errorf("the store counts message %d of %d but cannot read it: its files are damaged there (restore them from a backup; the embedded server's log, component nats, names the failing block)", next, last)
		}
	}
	return fmt.Errorf("no message after stream seq %d of %d, though the stream holds more: the store is not answering, or its files are damaged past there (see the NATS server's log)", at, last)
}
