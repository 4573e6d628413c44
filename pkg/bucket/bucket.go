// Package bucket opens the JetStream key-value buckets Junction keeps its
// indexes and settings in, shared by every process on one store.
package bucket

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Policy is what a process may do with the buckets it opens, from its
// nats settings, as with its streams. Its zero value creates buckets with
// one replica.
type Policy struct {
	// Replicas is the replica count the process wants (nats.replicas).
	Replicas int
	// Fixed says the store's operator makes and keeps the buckets
	// (nats.create_streams: false): the process neither creates nor
	// changes them, and refuses one missing or with fewer replicas.
	Fixed bool
}

// Open opens bucket cfg.Bucket with the policy's replicas. It creates the
// bucket, or updates it to cfg, unless the policy is fixed; it never
// lowers the replicas a bucket already has: a bucket is shared by every
// process on the store, and one started with fewer replicas
// (nats.allow_unsafe) must not take the others' redundancy away.
func (p Policy) Open(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = max(p.Replicas, 1)
	st, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	switch {
	case err == nil:
		have := st.CachedInfo().Config.Replicas
		if p.Fixed {
			if have < cfg.Replicas {
				return nil, fmt.Errorf("bucket has %d replicas, config wants %d, and nats.create_streams is false", have, cfg.Replicas)
			}
			return js.KeyValue(ctx, cfg.Bucket)
		}
		cfg.Replicas = max(cfg.Replicas, have)
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("looking the bucket up: %w", err)
	case p.Fixed:
		return nil, errors.New("bucket does not exist and nats.create_streams is false")
	}
	// Callers name the bucket in their errors.
	return js.CreateOrUpdateKeyValue(ctx, cfg)
}
