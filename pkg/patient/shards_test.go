package patient

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/bucket"
)

// applyPatients applies an A01 for each of n patients to ix and returns
// their NHS numbers.
func applyPatients(tb testing.TB, ix *Index, n int) []string {
	tb.Helper()
	var numbers []string
	for i := range n {
		numbers = append(numbers, num(tb, i))
		apply(tb.(*testing.T), ix, bundle(tb, "A01", pat{nhsNumber: numbers[i], ids: []Identifier{local(fmt.Sprintf("H%06d", i))}, family: "TESTPATIENT"}), src(i+1))
	}
	return numbers
}

// mustFind checks that ix finds every patient, by NHS number and by local
// identifier.
func mustFind(t *testing.T, ix *Index, numbers []string) {
	t.Helper()
	for i, n := range numbers {
		if r, err := ix.Get(t.Context(), n); err != nil || r.NHSNumber != n {
			t.Fatalf("patient %d: Get: %v", i, err)
		}
		if _, err := ix.GetByIdentifier(t.Context(), local(fmt.Sprintf("H%06d", i))); err != nil {
			t.Fatalf("patient %d: GetByIdentifier: %v", i, err)
		}
	}
}

// dropMetadata updates bucket's stream without the shard count, as a
// version that kept the index in one bucket does when it opens it.
func dropMetadata(t *testing.T, js jetstream.JetStream, bucket string) {
	t.Helper()
	st, err := js.Stream(t.Context(), "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Metadata = maps.Clone(cfg.Metadata)
	delete(cfg.Metadata, shardsMetadata)
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
}

func TestNewIndexSpreadsOverShards(t *testing.T) {
	js := startJetStream(t)
	ix := openIndex(t, js, "PATIENTS_SPREAD")
	want := []string{"PATIENTS_SPREAD", "PATIENTS_SPREAD_1", "PATIENTS_SPREAD_2", "PATIENTS_SPREAD_3"}
	if got := ix.Buckets(); !slices.Equal(got, want) {
		t.Fatalf("buckets %v, want %v", got, want)
	}
	numbers := applyPatients(t, ix, 40)
	for _, b := range want {
		kv, err := js.KeyValue(t.Context(), b)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		// 80 keys over 4 buckets: each holds some, none holds most.
		if v := st.Values(); v == 0 || v > 40 {
			t.Errorf("bucket %s holds %d of 80 keys", b, v)
		}
	}
	// Another process, opening the store afresh, finds every record.
	mustFind(t, openIndex(t, js, "PATIENTS_SPREAD"), numbers)
}

func TestIndexKeepsTheStoredLayout(t *testing.T) {
	tests := []struct {
		name string
		// made makes the index as it stands on the store.
		made    func(t *testing.T, js jetstream.JetStream, b string) *Index
		change  func(t *testing.T, js jetstream.JetStream, b string)
		reopen  Config
		buckets int
	}{
		{
			name: "one bucket made by an earlier version",
			made: func(t *testing.T, js jetstream.JetStream, b string) *Index {
				ix, err := Open(t.Context(), js, Config{Bucket: b, HashKey: testHashKey, Shards: 1})
				if err != nil {
					t.Fatal(err)
				}
				return ix
			},
			change:  func(t *testing.T, js jetstream.JetStream, b string) { dropMetadata(t, js, b) },
			buckets: 1,
		},
		{
			name:    "the count configured now differs",
			made:    func(t *testing.T, js jetstream.JetStream, b string) *Index { return openIndex(t, js, b) },
			reopen:  Config{Shards: 2},
			buckets: 4,
		},
		{
			name:    "the count taken away by an earlier version after a rollback",
			made:    func(t *testing.T, js jetstream.JetStream, b string) *Index { return openIndex(t, js, b) },
			change:  func(t *testing.T, js jetstream.JetStream, b string) { dropMetadata(t, js, b) },
			buckets: 4,
		},
		{
			name:    "made by hand, fixed",
			made:    func(t *testing.T, js jetstream.JetStream, b string) *Index { return openIndex(t, js, b) },
			reopen:  Config{Buckets: bucket.Policy{Fixed: true}},
			buckets: 4,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := startJetStream(t)
			b := fmt.Sprintf("PATIENTS_KEPT%d", i)
			numbers := applyPatients(t, tt.made(t, js, b), 20)
			if tt.change != nil {
				tt.change(t, js, b)
			}
			cfg := tt.reopen
			cfg.Bucket, cfg.HashKey = b, testHashKey
			ix, err := Open(t.Context(), js, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(ix.Buckets()); got != tt.buckets {
				t.Fatalf("%d buckets, want %d", got, tt.buckets)
			}
			if _, err := js.Stream(t.Context(), "KV_"+ShardBucket(b, tt.buckets)); err == nil {
				t.Errorf("bucket %s made beside the stored layout", ShardBucket(b, tt.buckets))
			}
			mustFind(t, ix, numbers)
			// Written by the reopened index, read by one opened afresh.
			more := applyPatients(t, ix, 30)
			mustFind(t, openIndex(t, js, b), more)
		})
	}
}

func TestOpenRefusesAnIncompleteLayout(t *testing.T) {
	tests := []struct {
		name   string
		make   func(ctx context.Context, t *testing.T, js jetstream.JetStream)
		policy bucket.Policy
		want   string
	}{
		{
			name:   "no first bucket, fixed",
			make:   func(context.Context, *testing.T, jetstream.JetStream) {},
			policy: bucket.Policy{Fixed: true},
			want:   "bucket PATIENTS_BAD: bucket does not exist and nats.create_streams is false",
		},
		{
			name: "a bucket missing, fixed",
			make: func(ctx context.Context, t *testing.T, js jetstream.JetStream) {
				openIndex(t, js, "PATIENTS_BAD")
				if err := js.DeleteStream(ctx, "KV_PATIENTS_BAD_2"); err != nil {
					t.Fatal(err)
				}
			},
			policy: bucket.Policy{Fixed: true},
			want:   "bucket PATIENTS_BAD_2: bucket does not exist and nats.create_streams is false",
		},
		{
			name: "a count that is no count",
			make: func(ctx context.Context, t *testing.T, js jetstream.JetStream) {
				if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "PATIENTS_BAD", Metadata: map[string]string{shardsMetadata: "0"}}); err != nil {
					t.Fatal(err)
				}
			},
			want: `bucket PATIENTS_BAD: metadata junction_patient_index_shards is "0"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := startJetStream(t)
			tt.make(t.Context(), t, js)
			_, err := Open(t.Context(), js, Config{Bucket: "PATIENTS_BAD", HashKey: testHashKey, Buckets: tt.policy})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestLostShardIsMadeAgain(t *testing.T) {
	js := startJetStream(t)
	numbers := applyPatients(t, openIndex(t, js, "PATIENTS_LOST"), 20)
	if err := js.DeleteStream(t.Context(), "KV_PATIENTS_LOST_1"); err != nil {
		t.Fatal(err)
	}
	ix := openIndex(t, js, "PATIENTS_LOST")
	if len(ix.Buckets()) != 4 {
		t.Fatalf("buckets %v after one was lost, want 4 kept by the first's count", ix.Buckets())
	}
	// The patients of the lost bucket are gone; the others are found
	// where they were.
	found := 0
	for _, n := range numbers {
		if _, err := ix.Get(t.Context(), n); err == nil {
			found++
		}
	}
	if found == 0 || found == len(numbers) {
		t.Errorf("%d of %d patients found after losing one bucket of four", found, len(numbers))
	}
}
