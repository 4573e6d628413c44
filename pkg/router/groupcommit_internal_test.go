package router

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
)

// scriptedJS is a JetStream whose PublishMsg answers as told: stored,
// or no answer until the attempt's context ends (a store that has gone).
type scriptedJS struct {
	jetstream.JetStream
	gone bool
	// err, if set, is every publish's answer at once.
	err error

	mu    sync.Mutex
	sizes []int // entries in each batch written
}

func (s *scriptedJS) PublishMsg(ctx context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	envs, err := decodeBatch(m.Data)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.sizes = append(s.sizes, len(envs))
	s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	if s.gone {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &jetstream.PubAck{Stream: "INGEST_LOG"}, nil
}

// TestCommitterStopsInBoundedTime: the requests queued when the
// committer stops (senders the inbound listeners gave up waiting for at
// shutdown) are written in batches, and once a write fails the rest are
// answered without being tried. Written one by one, a store that has
// gone held the drain for every queued request times the write budget.
func TestCommitterStopsInBoundedTime(t *testing.T) {
	const queued = 40
	for _, tc := range []struct {
		name  string
		gone  bool
		sizes []int
	}{
		{"store answering", false, []int{queued}},
		{"store gone", true, []int{queued}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := &scriptedJS{gone: tc.gone}
			c := &committer{js: js, maxBytes: maxBatchBytes, reqs: make(chan commitReq, queued),
				stop: make(chan struct{}), stopped: make(chan struct{}), budget: 50 * time.Millisecond}
			reqs := make([]commitReq, queued)
			for i := range reqs {
				reqs[i] = commitReq{env: &envelope.Envelope{ID: "m" + strconv.Itoa(i), Source: "pas", Raw: []byte("MSH|^~\\&|")}, done: make(chan error, 1)}
				c.reqs <- reqs[i]
			}
			// Stopping with the queue full, as after inbound listeners
			// that gave up waiting for their handlers.
			close(c.stop)
			start := time.Now()
			go c.loop()
			select {
			case <-c.stopped:
			case <-time.After(30 * time.Second):
				t.Fatal("committer did not stop")
			}
			took := time.Since(start)
			js.mu.Lock()
			sizes := js.sizes
			js.mu.Unlock()
			if len(sizes) != len(tc.sizes) || sizes[0] != tc.sizes[0] {
				t.Errorf("batches written at stop hold %v entries, want %v (took %v)", sizes, tc.sizes, took)
			}
			for i, r := range reqs {
				err := <-r.done
				if tc.gone != (err != nil) {
					t.Fatalf("request %d answered %v, want failure %v", i, err, tc.gone)
				}
				if err != nil && fault.CodeOf(err) != fault.CodeStoreUnavailable {
					t.Errorf("request %d answered %v, want %s", i, err, fault.CodeStoreUnavailable)
				}
			}
		})
	}
}

// TestCommitterAnswersUntriedAfterFailure: once a write at stop fails,
// the requests after it are answered with a failure that says so,
// without another write.
func TestCommitterAnswersUntriedAfterFailure(t *testing.T) {
	js := &scriptedJS{gone: true}
	// Room for two entries a batch: the queue takes three writes.
	c := &committer{js: js, maxBytes: 20, reqs: make(chan commitReq, 6),
		stop: make(chan struct{}), stopped: make(chan struct{}), budget: 50 * time.Millisecond}
	var reqs []commitReq
	for i := range 6 {
		r := commitReq{env: &envelope.Envelope{ID: "m" + strconv.Itoa(i), Source: "pas", Raw: []byte("0123456789")}, done: make(chan error, 1)}
		reqs = append(reqs, r)
		c.reqs <- r
	}
	close(c.stop)
	c.loop()
	if len(js.sizes) != 1 || js.sizes[0] != 2 {
		t.Fatalf("batches written %v, want one of 2 entries", js.sizes)
	}
	for i, r := range reqs {
		err := <-r.done
		if err == nil {
			t.Fatalf("request %d answered stored", i)
		}
		untried := i >= 2
		var fe *fault.Error
		if !errors.As(err, &fe) || fe.Class != fault.Transient {
			t.Errorf("request %d: %v is not a transient fault", i, err)
		}
		if got := fe.Msg == "ingest is shutting down and the store did not take its last write"; got != untried {
			t.Errorf("request %d: %q, untried %v", i, fe.Msg, untried)
		}
	}
}

// TestCommitterCloseHonoursContext: close returns when its context ends,
// while a write to a store that has gone is still being tried; the
// request is answered when the write gives up.
func TestCommitterCloseHonoursContext(t *testing.T) {
	js := &scriptedJS{gone: true}
	c := &committer{js: js, maxBytes: maxBatchBytes, reqs: make(chan commitReq, 1),
		stop: make(chan struct{}), stopped: make(chan struct{}), budget: 2 * time.Second}
	go c.loop()
	answered := make(chan error, 1)
	go func() {
		answered <- c.commit(context.Background(), &envelope.Envelope{ID: "m1", Source: "pas", Raw: []byte("MSH|^~\\&|")})
	}()
	for {
		js.mu.Lock()
		n := len(js.sizes)
		js.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("close = %v, want %v", err, context.DeadlineExceeded)
	}
	if took := time.Since(start); took >= time.Second {
		t.Errorf("close took %v, past its context", took)
	}
	select {
	case err := <-answered:
		if fault.CodeOf(err) != fault.CodeStoreUnavailable {
			t.Errorf("request answered %v, want %s", err, fault.CodeStoreUnavailable)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request never answered")
	}
}

// TestCommitterStopsTryingOnClosedConnection: a write that meets the
// store's connection closed (at shutdown, under a write that outlived
// the drain) fails at once rather than being tried until its budget.
func TestCommitterStopsTryingOnClosedConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		tries func(n int) bool
	}{
		{"connection closed", nats.ErrConnectionClosed, func(n int) bool { return n == 1 }},
		{"no answer yet", nats.ErrNoResponders, func(n int) bool { return n > 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := &scriptedJS{err: tc.err}
			c := &committer{js: js, maxBytes: maxBatchBytes, budget: 500 * time.Millisecond}
			err := c.publish([]*envelope.Envelope{{ID: "m1", Source: "pas", Raw: []byte("MSH|^~\\&|")}})
			if fault.CodeOf(err) != fault.CodeStoreUnavailable || !errors.Is(err, tc.err) {
				t.Errorf("publish = %v, want %s wrapping %v", err, fault.CodeStoreUnavailable, tc.err)
			}
			if n := len(js.sizes); !tc.tries(n) {
				t.Errorf("%d writes tried", n)
			}
		})
	}
}

// TestCommitterRefusesOnceStopped: a message that reaches a committer
// that has stopped is answered with a store failure, never as stored,
// whether it came after the stop or its send won the race with it and
// sits in the queue no loop will read. Answered as stored, the sender
// would hear AA (or 202) for a message nothing wrote.
func TestCommitterRefusesOnceStopped(t *testing.T) {
	for _, tc := range []struct {
		name string
		// queue is the request queue's room; stopClosed whether stop is
		// closed when the message comes (stopped always is).
		queue      int
		stopClosed bool
	}{
		// No room and nobody reading: only the stop can answer.
		{"sent after the stop", 0, true},
		// Room in the queue and stop not yet closed: the send wins,
		// and the loop has already ended without taking it.
		{"queued after the loop ended", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := &scriptedJS{}
			c := &committer{js: js, maxBytes: maxBatchBytes, reqs: make(chan commitReq, tc.queue),
				stop: make(chan struct{}), stopped: make(chan struct{})}
			if tc.stopClosed {
				close(c.stop)
			}
			close(c.stopped)
			err := c.commit(context.Background(), &envelope.Envelope{ID: "m1", Source: "pas", Raw: []byte("MSH|^~\\&|")})
			if fault.CodeOf(err) != fault.CodeStoreUnavailable {
				t.Errorf("commit = %v, want %s", err, fault.CodeStoreUnavailable)
			}
			if n := len(js.sizes); n != 0 {
				t.Errorf("%d batches written by a stopped committer", n)
			}
		})
	}
}
