package adaptertest

import (
	"context"
	"errors"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
)

// RefusingHost is an adapter.Host that stores nothing: Ingest fails and
// Quarantine keeps nothing. It is for tests that make an inbound
// component without sending it anything.
type RefusingHost struct{}

// Ingest refuses env.
func (RefusingHost) Ingest(context.Context, *envelope.Envelope) (adapter.IngestResult, error) {
	return adapter.IngestResult{}, errors.New("not stored")
}

// Quarantine keeps nothing and returns no id.
func (RefusingHost) Quarantine(context.Context, string, []byte, int, string) (string, error) {
	return "", nil
}

// Partition puts every patient in partition 0.
func (RefusingHost) Partition(string) int { return 0 }

// NewID returns the same id every time.
func (RefusingHost) NewID() string { return "id" }
