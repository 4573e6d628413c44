package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestByPartitionKeepsBatchOrder checks that the messages of one partition
// are evaluated one after another in batch order, and every message once.
func TestByPartitionKeepsBatchOrder(t *testing.T) {
	parts := []int{0, 1, 0, 2, 1, 0, 2, 2, 0, 1, 3, 0}
	envs := make([]*envelope.Envelope, len(parts))
	for i, p := range parts {
		envs[i] = &envelope.Envelope{ID: fmt.Sprint(i), Partition: p}
	}
	var mu sync.Mutex
	seen := map[int][]int{}
	var running [4]atomic.Int32
	byPartition(envs, func(i int) {
		p := envs[i].Partition
		if running[p].Add(1) != 1 {
			t.Errorf("two messages of partition %d evaluated at once", p)
		}
		mu.Lock()
		seen[p] = append(seen[p], i)
		mu.Unlock()
		running[p].Add(-1)
	})
	total := 0
	for p, got := range seen {
		total += len(got)
		for k := 1; k < len(got); k++ {
			if got[k] < got[k-1] {
				t.Errorf("partition %d evaluated out of batch order: %v", p, got)
			}
		}
	}
	if total != len(envs) {
		t.Errorf("evaluated %d messages, want %d", total, len(envs))
	}
}

// TestIndexFailures checks how patient index errors are classed: what the
// bundle or the stored records make impossible is counted and routes the
// message with the patient unknown; anything else is a transient store
// fault, which retries the message.
func TestIndexFailures(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		transient  bool
		unreadable float64
	}{
		{"bundle the index cannot read", &patient.ParseError{Reason: "resourceType is not Bundle"}, false, 1},
		{"merge chain loops", fmt.Errorf("reading: %w", patient.ErrMergeLoop), false, 1},
		{"record too large to store", fmt.Errorf("patient index: writing p.00: %w", nats.ErrMaxPayload), false, 0},
		{"store unavailable", errors.New("patient index: reading p.00: nats: timeout"), true, 0},
		{"contended record", patient.ErrConflict, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Router{o: Options{Metrics: telemetry.NewMetrics(prometheus.NewRegistry())}}
			pv, err := r.indexFailed(&envelope.Envelope{Source: "pas"}, tt.err)
			if pv.cel != nil || pv.restricted {
				t.Errorf("view %+v, want the patient unknown", pv)
			}
			if got := retryable(err); got != tt.transient {
				t.Errorf("retryable = %v (%v), want %v", got, err, tt.transient)
			}
			if tt.transient && fault.CodeOf(err) != fault.CodeStoreUnavailable {
				t.Errorf("code %s, want %s", fault.CodeOf(err), fault.CodeStoreUnavailable)
			}
			if v := testutil.ToFloat64(r.o.Metrics.PatientIndex.WithLabelValues("pas", "unreadable")); v != tt.unreadable {
				t.Errorf("unreadable = %v, want %v", v, tt.unreadable)
			}
		})
	}
}

// TestSharedTranslatorIndexesOnce checks that the routes of a source share
// one index update and its view, and that a failed update fails the
// translation without keeping it, so the next route tries again.
func TestSharedTranslatorIndexesOnce(t *testing.T) {
	inner := &slowTranslator{}
	var calls atomic.Int32
	fail := atomic.Bool{}
	fail.Store(true)
	s := newSharedTranslator(inner, nil)
	s.index = func(context.Context, *envelope.Envelope, *adapter.Translation, bool) (patientView, error) {
		calls.Add(1)
		if fail.Load() {
			return patientView{}, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "patient index unavailable", errors.New("down"))
		}
		return patientView{cel: map[string]any{"nhsNumber": "9990000018"}, restricted: true}, nil
	}
	env := &envelope.Envelope{ID: "01JTESTIDX", Source: "pas", Raw: []byte("MSH|")}
	if _, _, err := s.Translate(context.Background(), env); !retryable(err) {
		t.Fatalf("err = %v, want a transient fault", err)
	}
	fail.Store(false)
	var wg sync.WaitGroup
	views := make([]patientView, 4)
	for i := range views {
		wg.Go(func() { _, views[i], _ = s.Translate(context.Background(), env) })
	}
	wg.Wait()
	if got := calls.Load(); got != 2 {
		t.Errorf("index updates = %d, want 2 (the failed one and one shared)", got)
	}
	for i, v := range views {
		if !v.restricted || v.cel["nhsNumber"] != "9990000018" {
			t.Errorf("route %d view %+v", i, v)
		}
	}
}
