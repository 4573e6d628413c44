package router

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestIngestRefusedWhileStoreCannotWrite checks that input is refused,
// unstored and at once, as a store fault to resend later, while the
// store says it cannot write (a stream stopped by a full disk), rather
// than each sender waiting out a write that gets no answer.
func TestIngestRefusedWhileStoreCannotWrite(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
	}{
		{"HL7 v2 input", "pas"},
		{"FHIR input", "fhir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := telemetry.NewMetrics(prometheus.NewRegistry())
			// No JetStream: a write tried would panic.
			i := &Ingester{metrics: m, ids: &IDGen{}, writeFailed: func() error {
				return errors.New("stream JUNCTION_INGEST_LOG cannot write until space is freed: no space left on device")
			}}
			start := time.Now()
			_, err := i.Ingest(t.Context(), &envelope.Envelope{Source: tc.input, Raw: []byte("x")})
			if err == nil {
				t.Fatal("stored while the store cannot write")
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("refusal took %v, want at once", took)
			}
			if fault.CodeOf(err) != fault.CodeStoreUnavailable || !fault.IsTransient(err) {
				t.Errorf("refused with %v, want a transient %s", err, fault.CodeStoreUnavailable)
			}
			if got := testutil.ToFloat64(m.Rejected.WithLabelValues(tc.input, string(fault.CodeStoreUnavailable))); got != 1 {
				t.Errorf("ingress_rejected_total{reason=store.unavailable} = %v, want 1", got)
			}
		})
	}
}
