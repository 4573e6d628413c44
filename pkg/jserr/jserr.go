// Package jserr classifies JetStream errors that Junction acts on.
package jserr

import (
	"errors"

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
