package store_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/logtest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestAuditStreamLosesQuorumAlone runs a store on a real five-node
// cluster whose streams are placed by tags: the audit stream and one
// bucket on n3, n4 and n5, every other stream and a second bucket on n1,
// n2 and n3. Stopping n4 and n5 takes the audit stream's quorum (one of
// its three servers is left) and leaves every other stream's, as a
// cluster whose streams elected and placed themselves apart can. The
// ingress stream still stores, and answers the probe; but no audit
// record can be written, so a message acknowledged would wait, never
// routed. The store must say which streams it cannot write, and not the
// others.
func TestAuditStreamLosesQuorumAlone(t *testing.T) {
	c := jstest.StartApart(t, "needed-test", store.StreamAudit, map[string]string{"lost_with_audit": jstest.TagApart, "kept": jstest.TagMain},
		func(o *server.Options) { o.SyncAlways = true })
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	cfg := clusterConfig(c)
	var logs logtest.Buffer
	s, err := store.Open(ctx, cfg, t.TempDir(), nil, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.NeedBucket("lost_with_audit", "a test bucket placed with the audit stream")
	s.NeedBucket("kept", "a test bucket placed with the ingress stream")
	if why := s.CannotWrite(); why != "" {
		t.Fatalf("CannotWrite = %q with every server up, want none", why)
	}

	for _, srv := range c.Servers[3:] {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	// The facts: input is still stored (once the connection has left a
	// stopped server: a write in flight as it went is not answered), an
	// audit record is not.
	publish := func(subj, data string) error {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		defer pcancel()
		_, err := s.JS.Publish(pctx, subj, []byte(data))
		return err
	}
	for {
		err := publish(store.SubjIngress+".pas.0", "MSH|")
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("storing input with the audit stream's quorum lost: %v", err)
		}
	}
	if err := publish(store.SubjAudit+".m1", `[{"kind":"received"}]`); err == nil {
		t.Fatal("an audit record was stored with two of the audit stream's three servers down")
	}

	var why string
	for {
		why = s.CannotWrite()
		if strings.Contains(why, store.StreamAudit) && strings.Contains(why, "bucket lost_with_audit") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("CannotWrite = %q after the audit stream lost its quorum, want it and the bucket placed with it named", why)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, kept := range []string{store.StreamIngress, store.StreamIngestLog, store.StreamOutbound, store.StreamDeadLetter, "bucket kept"} {
		if strings.Contains(why, kept) {
			t.Errorf("CannotWrite = %q names %s, which kept its quorum", why, kept)
		}
	}
	if !s.Healthy() {
		t.Error("Healthy = false: the ingress stream kept its quorum")
	}
	var unwritable []string
	for _, w := range s.Writable() {
		if !w.Writable {
			unwritable = append(unwritable, w.Stream)
		}
	}
	slices.Sort(unwritable)
	if want := []string{store.StreamAudit, "KV_lost_with_audit"}; !slices.Equal(unwritable, want) {
		t.Errorf("Writable: %v not writable, want %v", unwritable, want)
	}
	// Logged at the probe's next round.
	for _, want := range []string{`"msg":"store cannot write a stream messages need`, `"stream":"JUNCTION_AUDIT"`, `"bucket":"lost_with_audit"`} {
		for !strings.Contains(logs.String(), want) {
			if ctx.Err() != nil {
				t.Fatalf("the log does not say %s:\n%s", want, logs.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// TestEmbeddedProbesTheIngressStreamAlone: the embedded server holds
// every stream on one server, where none can lose its leader apart (a
// stream of it that stops writing is found another way), so its store
// probes as before, the ingress stream alone, and a bucket said to be
// needed adds nothing.
func TestEmbeddedProbesTheIngressStreamAlone(t *testing.T) {
	s, err := store.Open(t.Context(), store.DefaultConfig(), t.TempDir(), nil, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.NeedBucket("JUNCTION_PATIENTS", "the patient index")
	if got, want := s.Writable(), []store.StreamWritable{{Stream: store.StreamIngress, Writable: true}}; !slices.Equal(got, want) {
		t.Errorf("Writable = %+v, want %+v", got, want)
	}
	if why := s.CannotWrite(); why != "" {
		t.Errorf("CannotWrite = %q", why)
	}
}
