package jstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/store"
)

// Placement tags of StartApart's servers: n1 and n2 carry TagMain, n4
// and n5 TagApart, and n3 both.
const (
	TagMain  = "main"
	TagApart = "apart"
)

// StartApart runs a five-node cluster (StartClusterOf, each server's
// options changed by tweak when that is not nil) and places Junction's
// streams on it, three replicas each, as a cluster whose streams were
// placed and elected apart may have them: the stream apart (such as
// store.StreamAudit) on n3, n4 and n5, every other one on n1, n2 and n3,
// and each of buckets on the servers of the tag it maps to. Stopping n4
// and n5 (Servers[3:]) then takes the quorum of apart, and of the
// buckets placed with it, and leaves every other stream's.
func StartApart(tb testing.TB, name, apart string, buckets map[string]string, tweak func(*server.Options)) *Cluster {
	tb.Helper()
	c := StartClusterOf(tb, name, 5, func(o *server.Options) {
		switch o.ServerName {
		case "n1", "n2":
			o.Tags = append(o.Tags, TagMain)
		case "n3":
			o.Tags = append(o.Tags, TagMain, TagApart)
		default:
			o.Tags = append(o.Tags, TagApart)
		}
		if tweak != nil {
			tweak(o)
		}
	})
	ctx, cancel := context.WithTimeout(tb.Context(), 30*time.Second)
	defer cancel()
	on := func(tag string) *jetstream.Placement { return &jetstream.Placement{Tags: []string{tag}} }
	for name, subj := range map[string]string{
		store.StreamIngress: store.SubjIngress, store.StreamOutbound: store.SubjOutbound,
		store.StreamDeadLetter: store.SubjDeadLetter, store.StreamAudit: store.SubjAudit,
		store.StreamIngestLog: store.SubjIngestLog, store.StreamQuarantine: store.SubjQuarantine,
	} {
		sc := jetstream.StreamConfig{Name: name, Subjects: []string{subj + ".>"}, Replicas: 3, Placement: on(TagMain)}
		if name == apart {
			sc.Placement = on(TagApart)
		}
		// The store refuses an audit stream that allows either.
		sc.DenyDelete, sc.DenyPurge = name == store.StreamAudit, name == store.StreamAudit
		if _, err := c.JS.CreateStream(ctx, sc); err != nil {
			tb.Fatalf("placing stream %s: %v", name, err)
		}
	}
	for bucket, tag := range buckets {
		if _, err := c.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Replicas: 3, Placement: on(tag)}); err != nil {
			tb.Fatalf("placing bucket %s: %v", bucket, err)
		}
	}
	return c
}
