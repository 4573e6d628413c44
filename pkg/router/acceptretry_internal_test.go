package router

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/store"
)

// failAcceptedOnce is a JetStream whose first write of an accepted batch
// fails (a store that did not answer in time); every other write, and
// every later one, goes through.
type failAcceptedOnce struct {
	jetstream.JetStream
	failed bool
}

func (f *failAcceptedOnce) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if !f.failed && strings.HasPrefix(m.Subject, SubjAccepted+".") {
		f.failed = true
		return nil, errors.New("nats: timeout")
	}
	return f.JetStream.PublishMsg(ctx, m, opts...)
}

// TestAcceptRetriedAfterFailedWrite: when the accepted batch's write
// fails, the batch is judged again, and its messages (already in the
// dedupe index from the first try) find themselves there: they are
// accepted, not taken for resends of themselves and dropped.
func TestAcceptRetriedAfterFailedWrite(t *testing.T) {
	js := testStore(t)
	a, _ := testAcceptor(t, js, time.Hour)
	a.r.js = &failAcceptedOnce{JetStream: js}
	in := []acceptInput{{seq: 1, envs: []*envelope.Envelope{testEnv("A", "pas"), testEnv("C", "pas")}}}
	if err := a.accept(t.Context(), in); err == nil {
		t.Fatal("accept with the write failing = nil, want its error")
	}
	if err := a.accept(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	ingress, err := js.Stream(t.Context(), store.StreamIngress)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ingress.GetLastMsgForSubject(t.Context(), AcceptedSubject("pas", 1))
	if err != nil {
		t.Fatalf("no accepted batch after the retry: %v", err)
	}
	envs, err := decodeBatch(raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, env := range envs {
		ids = append(ids, env.ID)
	}
	if strings.Join(ids, ",") != "A,C" {
		t.Errorf("accepted %v, want A and C", ids)
	}
}
