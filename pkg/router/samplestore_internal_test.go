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
// holds, rising as it is written, and the embedded store's filesystem.
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
	body := make([]byte, 4096)
	for _, subj := range []string{store.SubjAudit + ".x", DeadLetterSubject("delivery", "ehr")} {
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
}
