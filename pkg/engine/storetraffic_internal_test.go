package engine

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/jstest"
)

// TestStoreTraffic checks that the store counters give nothing before the
// store opens and then follow the connection's own statistics.
func TestStoreTraffic(t *testing.T) {
	reg := prometheus.NewRegistry()
	tr := newStoreTraffic()
	reg.MustRegister(tr)
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Fatalf("before the store opens: %d samples (%v), want none", n, err)
	}
	nc := jstest.Start(t, "store-traffic").Conn()
	tr.conn.Store(nc)
	for range 3 {
		if err := nc.Publish("traffic.test", []byte("12345")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s := nc.Stats()
	if s.OutMsgs < 3 || s.OutBytes < 15 {
		t.Fatalf("connection stats %+v, want at least the 3 publishes", s)
	}
	want := map[string]float64{"sent": float64(s.OutMsgs), "received": float64(s.InMsgs)}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]float64{}
	for _, f := range families {
		got[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			got[f.GetName()][m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	for dir, v := range want {
		if g := got["junction_store_client_messages_total"][dir]; g != v {
			t.Errorf("messages %s = %v, want %v", dir, g, v)
		}
	}
	if g := got["junction_store_client_bytes_total"]["sent"]; g != float64(s.OutBytes) {
		t.Errorf("bytes sent = %v, want %v", g, s.OutBytes)
	}
}
