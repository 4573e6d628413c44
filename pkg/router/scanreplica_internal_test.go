package router

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/jstest"
)

// TestScanReadsPastAStaleReplica reads a stream whose reader the server
// places on a replica holding only its first messages. Before, the read
// ended there and reported success, so audit reconcile counted every
// later message as pending (seen on a three-node cluster after a SIGKILL
// of one node left its audit replica stuck behind); the read must reach
// what the leader holds, or fail.
func TestScanReadsPastAStaleReplica(t *testing.T) {
	ctx := context.Background()
	leaderJS := jstest.Start(t, "leader")
	staleJS := jstest.Start(t, "stale")
	cfg := jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>", "t.>"}}
	leader, err := leaderJS.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stale, err := staleJS.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Sequences 1-10 on s.a on both copies; 11-20 on the leader only,
	// on s.a; 21-25 on the leader only, on t.x (outside the filter).
	for i := 1; i <= 25; i++ {
		subj := "s.a"
		if i > 20 {
			subj = "t.x"
		}
		if _, err := leaderJS.Publish(ctx, subj, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if i <= 10 {
			if _, err := staleJS.Publish(ctx, subj, []byte(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	seqs := func(from, to uint64) []uint64 {
		var s []uint64
		for i := from; i <= to; i++ {
			s = append(s, i)
		}
		return s
	}
	tests := []struct {
		name         string
		staleReaders int
		cfg          jetstream.OrderedConsumerConfig
		want         []uint64
		wantErr      bool
	}{
		{"first reader on the stale replica", 1, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"s.>"}}, seqs(1, 20), false},
		{"first reader from a sequence on the stale replica", 1,
			jetstream.OrderedConsumerConfig{FilterSubjects: []string{"s.>"}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: 5}, seqs(5, 20), false},
		{"unfiltered", 2, jetstream.OrderedConsumerConfig{}, seqs(1, 25), false},
		{"no stale reader", 0, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"s.>"}}, seqs(1, 20), false},
		{"every reader on the stale replica", 100, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"s.>"}}, seqs(1, 10), true},
	}
	// Both reads: the plain one, and the one going on past damage (a
	// filtered reader stopping short goes on unfiltered).
	reads := map[string]func(jetstream.Stream, jetstream.OrderedConsumerConfig, func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error)) error{
		"scan": func(st jetstream.Stream, cfg jetstream.OrderedConsumerConfig, fn func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error)) error {
			return scanStream(ctx, st, cfg, 4, fn)
		},
		"past damage": func(st jetstream.Stream, cfg jetstream.OrderedConsumerConfig, fn func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error)) error {
			return jserr.ScanPast(ctx, st, cfg, 4, fn, func(r jserr.Run) error { return fmt.Errorf("run %+v taken for damage", r) })
		},
	}
	for read, scan := range reads {
		for _, tt := range tests {
			t.Run(read+", "+tt.name, func(t *testing.T) {
				st := &jstest.StaleReplica{Stream: leader, Stale: stale, StaleReaders: tt.staleReaders}
				var got []uint64
				err := scan(st, tt.cfg, func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
					got = append(got, meta.Sequence.Stream)
					return false, nil
				})
				if (err != nil) != tt.wantErr {
					t.Fatalf("read: err %v, want an error %v", err, tt.wantErr)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("sequences read (-want +got):\n%s", diff)
				}
			})
		}
	}
}
