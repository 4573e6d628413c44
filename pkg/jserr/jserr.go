// Package jserr classifies JetStream errors that Junction acts on, and
// retries the ones that pass.
package jserr

import (
	"context"
	"errors"
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
