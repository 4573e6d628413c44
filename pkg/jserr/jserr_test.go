package jserr_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/jstest"
)

func TestWrongLastSequence(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"single server", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Code: 400}, true},
		{"replicated stream", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant, Code: 400}, true},
		{"wrapped", fmt.Errorf("writing: %w", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant}), true},
		{"kv create", jetstream.ErrKeyExists, true},
		{"kv update", fmt.Errorf("%w: %w", jetstream.ErrKeyRevisionMismatch, errors.New("wrong last sequence")), true},
		{"another api error", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound, Code: 404}, false},
		{"timeout", errors.New("nats: timeout"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := jserr.WrongLastSequence(tt.err); got != tt.want {
				t.Errorf("WrongLastSequence(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestWrongLastSequenceFromServer checks the classification against what
// a real server answers, for a stream publish and a KV update.
func TestWrongLastSequenceFromServer(t *testing.T) {
	js := jstest.Start(t, "jserr")
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	_, err := js.Publish(ctx, "s.a", []byte("2"), jetstream.WithExpectLastSequencePerSubject(7))
	if !jserr.WrongLastSequence(err) {
		t.Errorf("publish at a stale sequence: %v not taken for a lost race", err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "B"})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(ctx, "k", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "k", []byte("2"), rev); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "k", []byte("3"), rev); !jserr.WrongLastSequence(err) {
		t.Errorf("KV update at a stale revision: %v not taken for a lost race", err)
	}
	if _, err := kv.Create(ctx, "k", []byte("4")); !jserr.WrongLastSequence(err) {
		t.Errorf("KV create of a key that exists: %v not taken for a lost race", err)
	}
}

// batch is a fetched batch of no messages that ended with err.
type batch struct{ err error }

func (b batch) Messages() <-chan jetstream.Msg {
	ch := make(chan jetstream.Msg)
	close(ch)
	return ch
}

func (b batch) Error() error { return b.err }

func TestCollectRetriesNoResponders(t *testing.T) {
	calls := 0
	fetch := func(answers ...error) func() (jetstream.MessageBatch, error) {
		calls = 0
		return func() (jetstream.MessageBatch, error) {
			err := answers[min(calls, len(answers)-1)]
			calls++
			return batch{err}, nil
		}
	}
	if _, err := jserr.Collect(t.Context(), fetch(nats.ErrNoResponders, nats.ErrNoResponders, jetstream.ErrNoMessages)); !errors.Is(err, jetstream.ErrNoMessages) || calls != 3 {
		t.Errorf("after two no-responders answers: %v in %d fetches, want the third answer (no messages) in 3", err, calls)
	}
	if _, err := jserr.Collect(t.Context(), fetch(nats.ErrNoResponders)); !errors.Is(err, nats.ErrNoResponders) || calls != 20 {
		t.Errorf("no responders for ever: %v after %d fetches, want it returned after 20", err, calls)
	}
	if _, err := jserr.Collect(t.Context(), fetch(errors.New("nats: timeout"))); err == nil || calls != 1 {
		t.Errorf("another error: %v after %d fetches, want it returned at once", err, calls)
	}
}

// TestCollectFromServer reads real messages through Collect.
func TestCollectFromServer(t *testing.T) {
	js := jstest.Start(t, "collect")
	ctx := t.Context()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "C", Subjects: []string{"c.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "c."+fmt.Sprint(i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := jserr.Collect(ctx, func() (jetstream.MessageBatch, error) { return c.FetchNoWait(10) })
	if err != nil || len(msgs) != 3 {
		t.Errorf("collected %d messages (%v), want 3", len(msgs), err)
	}
}

// TestOrderedLeavesNoConsumer checks that a released ordered consumer is
// gone from the server, so that many reads do not reach the stream's
// consumer limit.
func TestOrderedLeavesNoConsumer(t *testing.T) {
	js := jstest.Start(t, "ordered")
	ctx := t.Context()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "O", Subjects: []string{"o.>"}, MaxConsumers: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "o.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// Twice the stream's limit: each read must give its consumer back.
	for i := range 10 {
		c, release, err := jserr.Ordered(ctx, st, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		msgs, err := jserr.Collect(ctx, func() (jetstream.MessageBatch, error) { return c.FetchNoWait(10) })
		if err != nil || len(msgs) != 1 {
			t.Fatalf("read %d: %d messages (%v), want 1", i, len(msgs), err)
		}
		release()
	}
	// Each fetch of an ordered consumer makes a new server consumer and
	// deletes the one before in a goroutine of the client's (with a 10 s
	// timeout); release deletes the last. So the count reaches 0 once
	// those deletes are done, not always at once.
	var left int
	for deadline := time.Now().Add(10 * time.Second); ; {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if left = info.State.Consumers; left == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left != 0 {
		t.Errorf("%d consumers left on the stream 10 s after the last read", left)
	}
}
