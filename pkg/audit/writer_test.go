package audit_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
)

// waitFuture returns the store's answer to an async write.
func waitFuture(t testing.TB, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	t.Helper()
	select {
	case a := <-f.Ok():
		return a, nil
	case err := <-f.Err():
		return nil, err
	case <-time.After(time.Minute):
		t.Fatal("no answer to an async write within a minute")
		return nil, nil
	}
}

func closeWriter(t testing.TB, w *audit.Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func verifyStream(t testing.TB, js jetstream.JetStream, keys ...ed25519.PublicKey) *audit.Report {
	t.Helper()
	rep, err := audit.VerifyStream(t.Context(), js, keys...)
	if err != nil {
		t.Fatalf("VerifyStream: %v", err)
	}
	return rep
}

func chainReport(t testing.TB, rep *audit.Report, chain string) audit.ChainReport {
	t.Helper()
	for _, c := range rep.Chains {
		if c.Chain == chain {
			return c
		}
	}
	t.Fatalf("no chain %s in the report", chain)
	return audit.ChainReport{}
}

// TestWriterConcurrentChainsVerify writes through two writers (as two
// processes would) from many goroutines at once, sync and async, and
// checks that the stream verifies clean and every chain is checkpointed to
// its end.
func TestWriterConcurrentChainsVerify(t *testing.T) {
	js := openJS(t)
	key := testKey(7)
	writers := []*audit.Writer{
		audit.NewWriter(js, audit.WithSigningKey(key), audit.WithCheckpointInterval(time.Millisecond)),
		audit.NewWriter(js, audit.WithSigningKey(key)),
	}
	const goroutines, perG = 6, 40
	var wg sync.WaitGroup
	errs := make(chan error, len(writers)*goroutines)
	for wi, w := range writers {
		for g := range goroutines {
			wg.Go(func() {
				for i := range perG {
					id := fmt.Sprintf("01JQ4Z9A7B8C9D0E1F2G%02d%04d", wi*goroutines+g, i)
					r := rec(id, audit.Received, i)
					if i%2 == 0 {
						if err := w.Write(t.Context(), id, "", r); err != nil {
							errs <- err
							return
						}
						continue
					}
					f, err := w.WriteAsync(id, "", r)
					if err != nil {
						errs <- err
						return
					}
					if _, err := waitFuture(t, f); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("write: %v", err)
	}
	for _, w := range writers {
		closeWriter(t, w)
	}
	rep := verifyStream(t, js, key.Public().(ed25519.PublicKey))
	if rep.Tampered() {
		t.Fatalf("findings on an untouched stream: %v", rep.Findings)
	}
	if len(rep.Chains) != len(writers) {
		t.Fatalf("%d chains, want %d", len(rep.Chains), len(writers))
	}
	for _, w := range writers {
		c := chainReport(t, rep, w.Chain())
		want := uint64(goroutines * perG)
		if c.Last != want || c.Stored != int(want) || len(c.Explained) != 0 {
			t.Errorf("chain %s: last %d, stored %d, explained %v; want %d, %d, none", c.Chain, c.Last, c.Stored, c.Explained, want, want)
		}
		if c.Checkpoint == nil || c.Checkpoint.Seq != want || !c.Checkpoint.Pinned || c.Uncovered != 0 {
			t.Errorf("chain %s: checkpoint %+v, uncovered %d; want a pinned checkpoint at %d", c.Chain, c.Checkpoint, c.Uncovered, want)
		}
	}
	// Records still read back through Trail.
	got, err := audit.Trail(t.Context(), js, "01JQ4Z9A7B8C9D0E1F2G070039")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]audit.Record{rec("01JQ4Z9A7B8C9D0E1F2G070039", audit.Received, 39)}, got); diff != "" {
		t.Errorf("Trail (-want +got):\n%s", diff)
	}
}

func TestWriterWithoutKey(t *testing.T) {
	js := openJS(t)
	w := audit.NewWriter(js)
	for i := range 3 {
		if err := w.Write(t.Context(), "01JQ4Z9A7B8C9D0E1F2G3H4J5K", "", rec("01JQ4Z9A7B8C9D0E1F2G3H4J5K", audit.Received, i)); err != nil {
			t.Fatal(err)
		}
	}
	closeWriter(t, w)
	rep := verifyStream(t, js)
	if rep.Tampered() || rep.Checkpoints != 0 {
		t.Fatalf("findings %v, checkpoints %d; want none", rep.Findings, rep.Checkpoints)
	}
	c := chainReport(t, rep, w.Chain())
	if c.Last != 3 || c.Checkpoint != nil || c.Uncovered != 3 {
		t.Errorf("chain: last %d, checkpoint %v, uncovered %d; want 3, none, 3", c.Last, c.Checkpoint, c.Uncovered)
	}
}

// TestWriterDuplicateExplained: a write the store drops as a duplicate of
// an earlier one with the same dedupe id (by this writer or another
// process's) took a chain position; a gap note explains it.
func TestWriterDuplicateExplained(t *testing.T) {
	const id = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
	js := openJS(t)
	key := testKey(7)
	a := audit.NewWriter(js, audit.WithSigningKey(key))
	b := audit.NewWriter(js, audit.WithSigningKey(key))
	r := rec(id, audit.Received, 1)
	if err := a.Write(t.Context(), id, "stage-1", r); err != nil {
		t.Fatal(err)
	}
	if err := a.Write(t.Context(), id, "stage-1", r); err != nil { // same writer retries
		t.Fatal(err)
	}
	f, err := b.WriteAsync(id, "stage-1", r) // another process retries
	if err != nil {
		t.Fatal(err)
	}
	ack, err := waitFuture(t, f)
	if err != nil || !ack.Duplicate {
		t.Fatalf("ack %+v, err %v; want a duplicate", ack, err)
	}
	if err := a.Write(t.Context(), id, "stage-2", r); err != nil {
		t.Fatal(err)
	}
	closeWriter(t, a)
	closeWriter(t, b)
	trail, err := audit.Trail(t.Context(), js, id)
	if err != nil || len(trail) != 2 {
		t.Fatalf("Trail: %d records, err %v; want 2", len(trail), err)
	}
	rep := verifyStream(t, js, key.Public().(ed25519.PublicKey))
	if rep.Tampered() {
		t.Fatalf("findings: %v", rep.Findings)
	}
	for _, tc := range []struct {
		w        *audit.Writer
		lost     uint64
		wantLast uint64 // records, duplicate position and its note
	}{
		{a, 2, 4},
		{b, 1, 2},
	} {
		c := chainReport(t, rep, tc.w.Chain())
		if len(c.Explained) != 1 {
			t.Fatalf("chain %s explained %v; want position %d", c.Chain, c.Explained, tc.lost)
		}
		g := c.Explained[0]
		// Stream seq 2: the first message is a's signed checkpoint of its
		// empty chain, sent ahead of its first record.
		if g.Seq != tc.lost || g.Reason != audit.GapDuplicate || g.Original != 2 || g.Subject != audit.Subject(id) {
			t.Errorf("chain %s gap %+v; want position %d, duplicate of stream seq 2", c.Chain, g, tc.lost)
		}
		if c.Last != tc.wantLast || c.Checkpoint == nil || c.Checkpoint.Seq != c.Last {
			t.Errorf("chain %s: last %d, checkpoint %+v; want %d covered", c.Chain, c.Last, c.Checkpoint, tc.wantLast)
		}
	}
}

// faultJS wraps a JetStream and fails chosen async publishes.
type faultJS struct {
	jetstream.JetStream
	mu sync.Mutex
	// fault decides, per published audit subject, what to do.
	fault func(m *nats.Msg) fault
}

type fault int

const (
	pass       fault = iota
	refuse           // fail the call: nothing sent
	failLater        // nothing sent; the future reports an error
	silent           // nothing sent; the future never answers
	loseAnswer       // sent and stored; the future never answers
)

type fakeFuture struct {
	msg *nats.Msg
	ok  chan *jetstream.PubAck
	err chan error
}

func (f *fakeFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *fakeFuture) Err() <-chan error            { return f.err }
func (f *fakeFuture) Msg() *nats.Msg               { return f.msg }

func (j *faultJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	j.mu.Lock()
	what := j.fault(m)
	j.mu.Unlock()
	ff := &fakeFuture{msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	switch what {
	case refuse:
		return nil, errors.New("refused by the test")
	case failLater:
		ff.err <- errors.New("failed by the test")
		return ff, nil
	case silent:
		return ff, nil
	case loseAnswer:
		if _, err := j.JetStream.PublishMsgAsync(m, opts...); err != nil {
			return nil, err
		}
		return ff, nil
	}
	return j.JetStream.PublishMsgAsync(m, opts...)
}

// TestWriterFailures: a publish that fails after taking a chain position
// is explained by a gap note, never left as a silent gap; a publish the
// connection refuses gives its position back.
func TestWriterFailures(t *testing.T) {
	const id = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
	for _, tc := range []struct {
		name string
		f    fault
		// write 2 of 4 gets the fault
		wantErr      bool
		wantLast     uint64
		wantExplain  []audit.GapReason
		wantRecords  int
		asyncTimeout bool // the writer gives up waiting
	}{
		{name: "refused before sending", f: refuse, wantErr: true, wantLast: 3, wantRecords: 3},
		{name: "failed after sending", f: failLater, wantErr: true, wantLast: 5, wantExplain: []audit.GapReason{audit.GapFailed}, wantRecords: 3},
		{name: "no answer, not stored", f: silent, wantLast: 5, wantExplain: []audit.GapReason{audit.GapUnconfirmed}, wantRecords: 3, asyncTimeout: true},
		{name: "no answer, but stored", f: loseAnswer, wantLast: 5, wantRecords: 4, asyncTimeout: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			real := openJS(t)
			n := 0
			fj := &faultJS{JetStream: real, fault: func(m *nats.Msg) fault {
				if m.Subject != audit.Subject(id) {
					return pass
				}
				n++
				if n == 2 {
					return tc.f
				}
				return pass
			}}
			key := testKey(7)
			// The timeout gives up on the faulted write; the store's real
			// answers to the others (and to the note) must beat it, or
			// they are explained too and a second note takes a position.
			// With 50 ms, on a machine loaded by other tests, this failed
			// 5 runs in 30 with the chain's last position 6, not 5.
			w := audit.NewWriter(fj, audit.WithSigningKey(key), audit.WithAckTimeout(time.Second))
			var errs int
			for i := range 4 {
				f, err := w.WriteAsync(id, fmt.Sprint("stage-", i), rec(id, audit.Received, i))
				if err == nil && !tc.asyncTimeout {
					_, err = waitFuture(t, f)
				}
				if err != nil {
					errs++
				}
			}
			if (errs == 1) != tc.wantErr || errs > 1 {
				t.Errorf("%d writes failed; want error %v", errs, tc.wantErr)
			}
			closeWriter(t, w)
			trail, err := audit.Trail(t.Context(), real, id)
			if err != nil || len(trail) != tc.wantRecords {
				t.Fatalf("Trail: %d records, err %v; want %d", len(trail), err, tc.wantRecords)
			}
			rep := verifyStream(t, real, key.Public().(ed25519.PublicKey))
			if rep.Tampered() {
				t.Fatalf("findings: %v", rep.Findings)
			}
			c := chainReport(t, rep, w.Chain())
			var reasons []audit.GapReason
			for _, g := range c.Explained {
				if g.Seq != 2 {
					t.Errorf("explained position %d, want 2", g.Seq)
				}
				reasons = append(reasons, g.Reason)
			}
			if diff := cmp.Diff(tc.wantExplain, reasons); diff != "" {
				t.Errorf("explained gaps (-want +got):\n%s", diff)
			}
			if c.Last != tc.wantLast || c.Checkpoint == nil || c.Checkpoint.Seq != tc.wantLast {
				t.Errorf("chain: last %d, checkpoint %+v; want %d, covered", c.Last, c.Checkpoint, tc.wantLast)
			}
			// Without its gap note, a lost position is reported missing:
			// the note is what makes the gap honest.
			if len(tc.wantExplain) > 0 {
				var msgs []audit.StoredMsg
				var noteSeq string
				if err := audit.ReadStream(t.Context(), real, func(m audit.StoredMsg) {
					if m.Subject == audit.SubjGap+"."+w.Chain() {
						noteSeq = m.Header.Get(audit.HeaderSeq)
						return
					}
					msgs = append(msgs, m)
				}); err != nil {
					t.Fatal(err)
				}
				// The note took whichever position came next when the
				// failure was seen.
				want := []string{"missing 2"} // with a note at 3: positions 2-3
				switch noteSeq {
				case "4":
					want = append(want, "missing 4")
				case "5":
					want = append(want, "truncated 5")
				}
				rep := audit.Verify(msgs, key.Public().(ed25519.PublicKey))
				var kinds []string
				for _, f := range rep.Findings {
					kinds = append(kinds, fmt.Sprintf("%s %d", f.Kind, f.Seq))
				}
				if diff := cmp.Diff(want, kinds); diff != "" {
					t.Errorf("findings without the gap note (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestWriterCloseTimesOut(t *testing.T) {
	// A position the store never answers and whose gap note never lands
	// keeps Close waiting until its context ends, and Close says so.
	const id = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
	real := openJS(t)
	fj := &faultJS{JetStream: real, fault: func(m *nats.Msg) fault { return silent }}
	w := audit.NewWriter(fj, audit.WithAckTimeout(time.Hour))
	if _, err := w.WriteAsync(id, "", rec(id, audit.Received, 1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := w.Close(ctx); err == nil {
		t.Fatal("Close returned nil with a position unsettled")
	}
}

// TestWriterCloseExplainsUnanswered: a record lost with a server (no
// answer will come before the writer's ack timeout, here an hour) does
// not hold Close to its deadline: Close explains it as unconfirmed in a
// gap note once it has waited a while for answers, and the chain
// verifies whole.
func TestWriterCloseExplainsUnanswered(t *testing.T) {
	const id = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
	real := openJS(t)
	fj := &faultJS{JetStream: real, fault: func(m *nats.Msg) fault {
		if m.Subject == audit.Subject(id) {
			return silent
		}
		return pass
	}}
	w := audit.NewWriter(fj, audit.WithAckTimeout(time.Hour))
	if _, err := w.WriteAsync(id, "", rec(id, audit.Received, 1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantFirstUnconfirmed(t, real, w)
}

// wantFirstUnconfirmed checks that the stream verifies whole, with w's
// first position, and no other, explained as unconfirmed.
func wantFirstUnconfirmed(t *testing.T, js jetstream.JetStream, w *audit.Writer) {
	t.Helper()
	rep := verifyStream(t, js)
	if rep.Tampered() {
		t.Fatalf("findings: %v", rep.Findings)
	}
	c := chainReport(t, rep, w.Chain())
	if len(c.Explained) != 1 || c.Explained[0].Seq != 1 || c.Explained[0].Reason != audit.GapUnconfirmed {
		t.Errorf("explained %+v; want position 1 unconfirmed", c.Explained)
	}
}

// BenchmarkPublishAsyncUnchained is the baseline for BenchmarkWriteAsync:
// the same records published straight to JetStream, without a chain.
func BenchmarkPublishAsyncUnchained(b *testing.B) {
	js := openJS(b)
	const id = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
	recs := []audit.Record{
		{Time: base, MessageID: id, Event: audit.Translated, Route: "adt-to-fhir-store"},
		{Time: base, MessageID: id, Event: audit.Matched, Route: "adt-to-fhir-store"},
		{Time: base, MessageID: id, Event: audit.Queued, Destination: "fhir-store", Stream: "JUNCTION_OUTBOUND", Seq: 1},
	}
	for b.Loop() {
		data, err := json.Marshal(recs)
		if err != nil {
			b.Fatal(err)
		}
		m := nats.NewMsg(audit.Subject(id))
		m.Data = data
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("async writes not acknowledged within a minute")
	}
}

func TestWriteUnansweredExplained(t *testing.T) {
	// A synchronous write the store never answers fails at the caller's
	// deadline; the writer explains the position and later writes chain
	// across it.
	const id = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
	real := openJS(t)
	n := 0
	fj := &faultJS{JetStream: real, fault: func(m *nats.Msg) fault {
		if m.Subject != audit.Subject(id) {
			return pass
		}
		n++
		if n == 1 {
			return silent
		}
		return pass
	}}
	w := audit.NewWriter(fj, audit.WithAckTimeout(20*time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := w.Write(ctx, id, "stage-0", rec(id, audit.Received, 0)); err == nil {
		t.Fatal("Write returned nil with no answer from the store")
	}
	if err := w.Write(t.Context(), id, "stage-0", rec(id, audit.Received, 0)); err != nil {
		t.Fatalf("retry: %v", err)
	}
	closeWriter(t, w)
	wantFirstUnconfirmed(t, real, w)
}
