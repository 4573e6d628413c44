package bucket_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/jstest"
)

// startCluster runs a three-node JetStream cluster in process and
// returns a JetStream handle on it.
func startCluster(t *testing.T) jetstream.JetStream {
	t.Helper()
	return jstest.StartCluster(t, "bucket-test", nil).JS
}

func replicas(t *testing.T, js jetstream.JetStream, name string) int {
	t.Helper()
	st, err := js.Stream(t.Context(), "KV_"+name)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config.Replicas
}

// TestOpen runs the policies against one three-node cluster: a process
// never lowers the replicas others gave a bucket, raises them when it
// wants more, and with a fixed policy (nats.create_streams: false) neither
// creates nor changes a bucket, refusing one missing or with too few
// replicas.
func TestOpen(t *testing.T) {
	js := startCluster(t)
	ctx := t.Context()
	three, one := bucket.Policy{Replicas: 3}, bucket.Policy{Replicas: 1}
	if _, err := three.Open(ctx, js, jetstream.KeyValueConfig{Bucket: "shared", History: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := one.Open(ctx, js, jetstream.KeyValueConfig{Bucket: "single", History: 1}); err != nil {
		t.Fatal(err)
	}
	t.Run("one replica keeps three", func(t *testing.T) {
		kv, err := one.Open(ctx, js, jetstream.KeyValueConfig{Bucket: "shared", History: 1})
		if err != nil {
			t.Fatal(err)
		}
		if got := replicas(t, js, "shared"); got != 3 {
			t.Errorf("opened with 1 replica: bucket has %d, want 3 kept", got)
		}
		if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
			t.Errorf("bucket not usable after opening: %v", err)
		}
	})
	t.Run("three replicas raise one", func(t *testing.T) {
		if _, err := three.Open(ctx, js, jetstream.KeyValueConfig{Bucket: "single", History: 1}); err != nil {
			t.Fatal(err)
		}
		if got := replicas(t, js, "single"); got != 3 {
			t.Errorf("opened with 3 replicas: bucket has %d, want 3", got)
		}
	})
	t.Run("fixed opens without changing", func(t *testing.T) {
		if _, err := three.Open(ctx, js, jetstream.KeyValueConfig{Bucket: "made", History: 5}); err != nil {
			t.Fatal(err)
		}
		kv, err := bucket.Policy{Replicas: 3, Fixed: true}.Open(ctx, js, jetstream.KeyValueConfig{Bucket: "made", History: 1})
		if err != nil {
			t.Fatalf("fixed policy refused a bucket with the replicas it wants: %v", err)
		}
		st, err := js.Stream(ctx, "KV_made")
		if err != nil {
			t.Fatal(err)
		}
		if got := st.CachedInfo().Config.MaxMsgsPerSubject; got != 5 {
			t.Errorf("fixed policy changed the bucket's history to %d, want 5 kept", got)
		}
		if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
			t.Errorf("bucket not usable after opening: %v", err)
		}
	})
	t.Run("fixed refuses", func(t *testing.T) {
		for _, tc := range []struct {
			bucket string
			want   string
		}{
			{"absent", "does not exist and nats.create_streams is false"},
			{"single", "has 3 replicas, config wants 5"},
		} {
			t.Run(tc.bucket, func(t *testing.T) {
				_, err := bucket.Policy{Replicas: 5, Fixed: true}.Open(ctx, js, jetstream.KeyValueConfig{Bucket: tc.bucket, History: 1})
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want one saying %q", err, tc.want)
				}
				if tc.bucket == "absent" {
					if _, err := js.Stream(ctx, "KV_absent"); !errors.Is(err, jetstream.ErrStreamNotFound) {
						t.Errorf("fixed policy made the bucket (lookup: %v)", err)
					}
				}
			})
		}
	})
}
