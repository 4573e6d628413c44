// Package bucket opens the JetStream key-value buckets Junction keeps its
// indexes and settings in, shared by every process on one store.
package bucket

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Open creates bucket cfg.Bucket, or updates it to cfg, but never lowers
// the replicas it already has: a bucket is shared by every process on the
// store, and one started with fewer replicas (nats.allow_unsafe) must not
// take the others' redundancy away, as streams keep theirs.
func Open(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	st, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	switch {
	case err == nil:
		cfg.Replicas = max(cfg.Replicas, st.CachedInfo().Config.Replicas)
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("looking the bucket up: %w", err)
	}
	// Callers name the bucket in their errors.
	return js.CreateOrUpdateKeyValue(ctx, cfg)
}
