package patient

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultShards is how many buckets a new index is spread over.
//
// Every write to the index is one stream message, and with every write
// synced a stream writes one message at a time, so one bucket's writes
// set the pace of the full route; buckets are streams of their own,
// syncing beside each other (BENCHMARKS.md, 2026-12-08). Each key lives
// in one bucket, chosen by a hash of the key, so compare-and-set on a
// record works as with one bucket.
const DefaultShards = 4

// shardsMetadata is the metadata key of the first bucket that holds the
// number of buckets the index is spread over.
const shardsMetadata = "junction_patient_index_shards"

// maxShards bounds the count read from a bucket's metadata.
const maxShards = 64

// ShardBucket returns the name of the i-th bucket of the index whose
// first bucket is bucket: bucket itself for 0, else bucket_i.
func ShardBucket(bucket string, i int) string {
	if i == 0 {
		return bucket
	}
	return bucket + "_" + strconv.Itoa(i)
}

// Buckets returns the names of the buckets the index is spread over, the
// first (Config.Bucket) first.
func (ix *Index) Buckets() []string {
	out := make([]string, len(ix.kvs))
	for i, kv := range ix.kvs {
		out[i] = kv.Bucket()
	}
	return out
}

// StoredBuckets returns the buckets the index named bucket is spread over
// on the store, as Open would use them; nil when its first bucket does
// not exist (Open would make a new index of DefaultShards buckets).
func StoredBuckets(ctx context.Context, js jetstream.JetStream, bucket string) ([]string, error) {
	n, err := storedShards(ctx, js, bucket)
	if err != nil || n == 0 {
		return nil, err
	}
	out := make([]string, n)
	for i := range out {
		out[i] = ShardBucket(bucket, i)
	}
	return out, nil
}

// storedShards returns how many buckets the index named bucket is spread
// over on the store, or 0 when its first bucket does not exist. The count
// is in the first bucket's metadata. A first bucket without it was made
// by a version that kept the index in one bucket, or had its metadata
// taken away by such a version updating it (after a rollback): then the
// count is the run of buckets bucket_1, bucket_2, ... that exist beside
// it, since a new index makes its other buckets before its first.
func storedShards(ctx context.Context, js jetstream.JetStream, bucket string) (int, error) {
	st, err := js.Stream(ctx, "KV_"+bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("looking up bucket %s: %w", bucket, err)
	}
	if v, ok := st.CachedInfo().Config.Metadata[shardsMetadata]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxShards {
			return 0, fmt.Errorf("bucket %s: metadata %s is %q, not a count from 1 to %d", bucket, shardsMetadata, v, maxShards)
		}
		return n, nil
	}
	n := 1
	for ; n < maxShards; n++ {
		_, err := js.Stream(ctx, "KV_"+ShardBucket(bucket, n))
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("looking up bucket %s: %w", ShardBucket(bucket, n), err)
		}
	}
	return n, nil
}

// openShards opens the buckets of the index named cfg.Bucket: as many as
// the store holds, or cfg.Shards for a new index, making the first bucket
// last so that a process that finds it finds the others.
func openShards(ctx context.Context, js jetstream.JetStream, cfg Config) ([]jetstream.KeyValue, error) {
	n, err := storedShards(ctx, js, cfg.Bucket)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		if cfg.Buckets.Fixed {
			// Name the first bucket, the one an operator making the
			// store by hand must make.
			return nil, fmt.Errorf("bucket %s: bucket does not exist and nats.create_streams is false", cfg.Bucket)
		}
		n = cfg.Shards
	}
	kvs := make([]jetstream.KeyValue, n)
	for i := n - 1; i >= 0; i-- {
		name := ShardBucket(cfg.Bucket, i)
		kc := jetstream.KeyValueConfig{
			Bucket: name, Description: "Junction: patient index", History: 1,
			Storage: jetstream.FileStorage,
		}
		if i == 0 {
			kc.Metadata = map[string]string{shardsMetadata: strconv.Itoa(n)}
		}
		kv, err := cfg.Buckets.Open(ctx, js, kc)
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", name, err)
		}
		kvs[i] = kv
	}
	return kvs, nil
}

// shard returns the bucket holding key.
func (ix *Index) shard(key string) jetstream.KeyValue {
	if len(ix.kvs) == 1 {
		return ix.kvs[0]
	}
	return ix.kvs[fnv32(key)%uint32(len(ix.kvs))]
}

// fnv32 returns the 32-bit FNV-1a hash of s. Which bucket holds a key
// depends on it, so it must never change.
func fnv32(s string) uint32 {
	var h uint32 = 2166136261
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}
