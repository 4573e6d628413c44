package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// staleReplicaJS is a JetStream whose audit stream's state and message
// gets come from the leader's copy while its first readers are placed on
// an older copy (the same messages at the same sequences, fewer), as
// nats-server may place an ordered consumer on a replica behind the
// leader or damaged by a kill.
type staleReplicaJS struct {
	jetstream.JetStream
	st jetstream.Stream
}

func (j staleReplicaJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if name == store.StreamAudit {
		return j.st, nil
	}
	return j.JetStream.Stream(ctx, name)
}

// TestReadsPastAStaleReplica reads a message's trail, and the whole
// audit stream as verify does, through a first reader placed on a
// replica holding only the first of the message's three audit messages.
// Before, the trail came back with that one record alone and no error,
// and verify failed after 5 s; both must read what the leader holds.
func TestReadsPastAStaleReplica(t *testing.T) {
	ctx := context.Background()
	leaderJS := jstest.Start(t, "leader")
	staleJS := jstest.Start(t, "stale")
	cfg := jetstream.StreamConfig{Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}}
	leader, err := leaderJS.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stale, err := staleJS.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const id = "01TESTSTALEREPLICA0000000"
	events := []audit.Event{audit.Received, audit.Translated, audit.Delivered}
	for i, ev := range events {
		data := recordData(t, id, ev, i)
		if _, err := leaderJS.Publish(ctx, audit.Subject(id), data); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if _, err := staleJS.Publish(ctx, audit.Subject(id), data); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name string
		read func(jetstream.JetStream) (int, error)
	}{
		{"trail", func(js jetstream.JetStream) (int, error) {
			recs, err := audit.Trail(ctx, js, id)
			return len(recs), err
		}},
		{"whole stream", func(js jetstream.JetStream) (int, error) {
			n := 0
			err := audit.ReadStream(ctx, js, func(audit.StoredMsg) { n++ })
			return n, err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := staleReplicaJS{JetStream: leaderJS, st: &jstest.StaleReplica{Stream: leader, Stale: stale, StaleReaders: 1}}
			got, err := tt.read(js)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if got != len(events) {
				t.Errorf("read %d audit messages, want %d", got, len(events))
			}
		})
	}
	t.Run("every reader stale", func(t *testing.T) {
		js := staleReplicaJS{JetStream: leaderJS, st: &jstest.StaleReplica{Stream: leader, Stale: stale, StaleReaders: 100}}
		recs, err := audit.Trail(ctx, js, id)
		if err == nil {
			t.Errorf("Trail gave %d records and no error, from readers that never reached the leader's %d", len(recs), len(events))
		}
	})
}

// TestScanPastAReplicaWithAGap: a reader placed on a replica that lost
// messages in the middle (a follower whose damaged block the server
// rebuilt into deleted sequences) passes over them, though the leader
// holds them. They are not damage to the stream: the scan reads them
// from a reader placed afresh, reports nothing unreadable, and reads
// every message once; readers that never reach them end in an error, not
// in a report of damage the stream does not have.
func TestScanPastAReplicaWithAGap(t *testing.T) {
	ctx := context.Background()
	leaderJS, leader, staleJS, replica := replicaPair(t)
	const msgs = 10
	for i := range msgs {
		id := fmt.Sprintf("01TESTREPLICAGAP000000%04d", i)
		data := recordData(t, id, audit.Received, i)
		for _, js := range []jetstream.JetStream{leaderJS, staleJS} {
			if _, err := js.Publish(ctx, audit.Subject(id), data); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, seq := range []uint64{4, 5, 6} {
		if err := replica.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		readers int
		wantErr bool
	}{
		{"the first reader on the replica", 1, false},
		{"every reader on the replica", 100, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := staleReplicaJS{JetStream: leaderJS, st: &jstest.StaleReplica{Stream: leader, Stale: replica, StaleReaders: tc.readers}}
			var runs []audit.SeqRange
			var read []uint64
			opt := audit.ScanOptions{Unreadable: func(r audit.SeqRange) { runs = append(runs, r) }}
			err := audit.ScanMessages(ctx, js, opt, func(p audit.Position, _ string, _ []byte) error {
				read = append(read, p.Seq)
				return nil
			})
			if len(runs) != 0 {
				t.Errorf("unreadable runs %v: want none, the leader holds them", runs)
			}
			if tc.wantErr {
				if err == nil {
					t.Errorf("ScanMessages read %v and gave no error, from readers that never reached the leader's messages", read)
				}
				return
			}
			if err != nil {
				t.Fatalf("ScanMessages: %v", err)
			}
			if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; !slices.Equal(read, want) {
				t.Errorf("read %v, want %v", read, want)
			}
		})
	}
}

// TestTrailPastAReplicaWithAGap: a trail read by a reader placed on a
// replica that lost one of the message's audit messages in the middle
// (not its last, which Scan's question to the leader catches) has every
// record the leader holds, not two of three with no error.
func TestTrailPastAReplicaWithAGap(t *testing.T) {
	ctx := context.Background()
	leaderJS, leader, staleJS, replica := replicaPair(t)
	const id = "01TESTREPLICAGAPTRAIL00000"
	events := []audit.Event{audit.Received, audit.Translated, audit.Delivered}
	for i, ev := range events {
		data := recordData(t, id, ev, i)
		for _, js := range []jetstream.JetStream{leaderJS, staleJS} {
			if _, err := js.Publish(ctx, audit.Subject(id), data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := replica.DeleteMsg(ctx, 2); err != nil {
		t.Fatal(err)
	}
	js := staleReplicaJS{JetStream: leaderJS, st: &jstest.StaleReplica{Stream: leader, Stale: replica, StaleReaders: 1}}
	recs, err := audit.Trail(ctx, js, id)
	if err != nil {
		t.Fatalf("Trail: %v", err)
	}
	if len(recs) != len(events) {
		t.Errorf("%d records, want the leader's %d", len(recs), len(events))
	}
}

// replicaPair is an audit stream as Junction makes it, as its leader,
// and another copy of it on another server that allows deletes, to
// play a replica that lost messages: what is published to both stands
// at the same sequences.
func replicaPair(t *testing.T) (leaderJS jetstream.JetStream, leader jetstream.Stream, replicaJS jetstream.JetStream, replica jetstream.Stream) {
	t.Helper()
	leaderJS, replicaJS = jstest.Start(t, "leader"), jstest.Start(t, "gap")
	cfg := jetstream.StreamConfig{Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, DenyDelete: true, DenyPurge: true}
	leader, err := leaderJS.CreateStream(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DenyDelete, cfg.DenyPurge = false, false
	if replica, err = replicaJS.CreateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	return leaderJS, leader, replicaJS, replica
}

// recordData is an audit message of one record of message id, event ev,
// timed i seconds after the others' start.
func recordData(t *testing.T, id string, ev audit.Event, i int) []byte {
	t.Helper()
	data, err := json.Marshal([]audit.Record{{MessageID: id, Event: ev, Time: time.Unix(int64(1000+i), 0).UTC()}})
	if err != nil {
		t.Fatal(err)
	}
	return data
}
