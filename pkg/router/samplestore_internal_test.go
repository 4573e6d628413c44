package router

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestSampleStoreGaugesGrowth checks the store gauges: what each stream
// holds, rising as it is written, the embedded store's filesystem, and
// its storage limit and what it uses of it, rising as it is written.
func TestSampleStoreGaugesGrowth(t *testing.T) {
	st, err := store.Open(t.Context(), store.DefaultConfig(), t.TempDir(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	m := telemetry.NewMetrics(prometheus.NewRegistry())
	r := &Router{o: Options{Metrics: m, Store: st}, js: st.JS}
	r.sampleStore(t.Context())
	before := map[string]float64{}
	for _, name := range storeStreams {
		before[name] = testutil.ToFloat64(m.StreamBytes.WithLabelValues(name))
	}
	usedBefore := testutil.ToFloat64(m.StoreUsed)
	body := make([]byte, 4096)
	subjects := []string{store.SubjAudit + ".x", DeadLetterSubject("delivery", "ehr")}
	for _, subj := range subjects {
		if _, err := st.JS.Publish(t.Context(), subj, body); err != nil {
			t.Fatal(err)
		}
	}
	r.sampleStore(t.Context())
	for _, tc := range []struct {
		stream string
		grew   bool
	}{
		{store.StreamAudit, true},
		{store.StreamDeadLetter, true},
		{store.StreamIngress, false},
	} {
		t.Run(tc.stream, func(t *testing.T) {
			got := testutil.ToFloat64(m.StreamBytes.WithLabelValues(tc.stream))
			if grew := got >= before[tc.stream]+4096; grew != tc.grew {
				t.Errorf("stream bytes %v after %v; grew by a 4 KiB message: %v, want %v", got, before[tc.stream], grew, tc.grew)
			}
		})
	}
	free, size := testutil.ToFloat64(m.DiskFree), testutil.ToFloat64(m.DiskSize)
	if free <= 0 || size < free {
		t.Errorf("disk free %v of %v bytes, want some free of a larger size", free, size)
	}
	limit, used := testutil.ToFloat64(m.StoreLimit), testutil.ToFloat64(m.StoreUsed)
	if used <= 0 || limit < used {
		t.Errorf("store used %v of a limit of %v bytes, want some used, within the limit", used, limit)
	}
	if grown := float64(len(subjects) * len(body)); used < usedBefore+grown {
		t.Errorf("store used %v bytes after %v, want it grown by the %v bytes written", used, usedBefore, grown)
	}
}
