package store

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestUnansweredPublishGivesBackItsSlot: an asynchronous publish that is
// never acknowledged ends in an error and frees its slot in the window,
// rather than holding it until the connection drops (a full window
// stalls every publisher). The subject has a subscriber that never
// answers, as a lost acknowledgement looks to the client.
func TestUnansweredPublishGivesBackItsSlot(t *testing.T) {
	s, err := Open(t.Context(), DefaultConfig(), t.TempDir(), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	sub, err := s.NC.SubscribeSync("silent.acks")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	js, err := newJetStream(s.NC, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	f, err := js.PublishMsgAsync(&nats.Msg{Subject: "silent.acks", Data: []byte("x")})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case <-f.Ok():
		t.Fatal("acknowledged, with no one to acknowledge it")
	case err := <-f.Err():
		if !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
			t.Fatalf("error %v, want %v", err, jetstream.ErrAsyncPublishTimeout)
		}
	case <-time.After(time.Minute):
		t.Fatal("no answer a minute on: the slot is held")
	}
	if n := js.PublishAsyncPending(); n != 0 {
		t.Errorf("%d publishes pending, want 0", n)
	}
}
