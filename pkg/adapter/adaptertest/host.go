package adaptertest

import (
	"context"
	"errors"
	"testing"
	"time"

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

// NewInbound makes the inbound component named name that f builds for
// cfg, on a RefusingHost, and fails t unless that succeeds and the
// component, never started, shuts down within 5 s. It returns the
// component, for its type to be checked.
func NewInbound(t testing.TB, f adapter.InboundFactory, name string, cfg any) adapter.Inbound {
	t.Helper()
	in, err := f.NewInbound(context.Background(), adapter.Settings{Name: name}, RefusingHost{}, cfg)
	if err != nil {
		t.Fatalf("NewInbound: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := in.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown without Start: %v", err)
	}
	return in
}
