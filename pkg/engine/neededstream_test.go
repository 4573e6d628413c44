package engine_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/adapters/pathology"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/disclosure"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestNotReadyWhileTheAuditStreamCannotBeWritten runs an engine on a
// five-node cluster whose streams and buckets are placed by tags: the
// audit stream on n3, n4 and n5, everything else on n1, n2 and n3.
// Stopping n4 and n5 takes the audit stream's quorum alone, as on a
// cluster whose streams elected and placed themselves apart. Input is
// still stored and acknowledged, but no stage can write an audit record,
// so nothing is routed: the engine must not be ready (a load balancer
// would keep sending it messages that wait), and /readyz, its log and
// junction_engine_store_stream_writable must name the stream.
func TestNotReadyWhileTheAuditStreamCannotBeWritten(t *testing.T) {
	buckets := map[string]string{}
	for _, b := range []string{"consent_key", consent.DefaultConsentBucket, consent.DefaultOptOutBucket, patient.DefaultBucket, disclosure.Bucket, pathology.DefaultCorrelationBucket} {
		buckets[b] = jstest.TagMain
	}
	c := jstest.StartApart(t, "engine-needed-test", store.StreamAudit, buckets, func(o *server.Options) { o.SyncAlways, o.MaxPayload = true, 16<<20 })
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var urls, monitors []string
	for _, srv := range c.Servers {
		urls = append(urls, srv.ClientURL())
		monitors = append(monitors, "http://"+srv.MonitorAddr().String())
	}
	e, dir := startEngine(t, "nats:\n  url: "+strings.Join(urls, ",")+"\n  replicas: 3\n  monitor_urls: ["+strings.Join(monitors, ", ")+"]\n")
	base := "http://" + e.HTTPAddr().String()
	// Anything the engine made itself was placed by the cluster, perhaps
	// with the audit stream: this test would then not be what it says.
	for name := range c.JS.StreamNames(ctx).Name() {
		st, err := c.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if name == store.StreamAudit {
			continue
		}
		ci := st.CachedInfo().Cluster
		servers := []string{ci.Leader}
		for _, p := range ci.Replicas {
			servers = append(servers, p.Name)
		}
		for _, srv := range servers {
			if srv != "n1" && srv != "n2" && srv != "n3" {
				t.Fatalf("stream %s is on %v, not n1 to n3: place it in this test", name, servers)
			}
		}
	}
	if st := getJSON(t, base+"/readyz", nil); st != http.StatusOK {
		t.Fatalf("readyz with every server up: %d", st)
	}

	for _, srv := range c.Servers[3:] {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	// Input is still stored, so acknowledged (resent, as a sender would,
	// while the engine's connection leaves a stopped server).
	for {
		code, _ := send(t, mllpAddr(t, e), adt("A01", "AUDITLOST1", "9990000018^^^NHS^NH"))
		if code == hl7v2.AckAA {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("a message sent with the audit stream's quorum lost: %s, want AA (it is stored)", code)
		}
	}
	var why map[string]string
	m := e.Metrics()
	for {
		st := getJSON(t, base+"/readyz", &why)
		// The gauge follows the probe's next round.
		if st == http.StatusServiceUnavailable && strings.Contains(why["reason"], store.StreamAudit) && testutil.ToFloat64(m.StoreWritable.WithLabelValues(store.StreamAudit)) == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("readyz with the audit stream's quorum lost: %d %v, want 503 naming %s", st, why, store.StreamAudit)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, kept := range []string{store.StreamIngress, store.StreamOutbound, patient.DefaultBucket} {
		if strings.Contains(why["reason"], kept) {
			t.Errorf("readyz reason %q names %s, which kept its quorum", why["reason"], kept)
		}
	}
	if e.Ready() {
		t.Error("Ready() = true")
	}
	for name, want := range map[string]float64{store.StreamAudit: 0, store.StreamIngress: 1, "KV_" + patient.DefaultBucket: 1} {
		if got := testutil.ToFloat64(m.StoreWritable.WithLabelValues(name)); got != want {
			t.Errorf("junction_engine_store_stream_writable{name=%q} = %v, want %v", name, got, want)
		}
	}

	// The servers back: ready again, and the message waiting is routed.
	for i := 3; i < len(c.Servers); i++ {
		c.Restart(t, i)
	}
	for {
		st := getJSON(t, base+"/readyz", &why)
		if st == http.StatusOK {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("readyz with every server back: %d %v, want 200", st, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
}
