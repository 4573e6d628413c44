package router

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestBacklogRefusesFromLimitUntilNineTenths checks when an input is
// refused as its sampled backlog moves: from the limit, and on until it
// falls below four fifths of it, so answers do not flap at the boundary;
// inputs are limited each on their own backlog, and one a sample does not
// name on the backlog common to all.
func TestBacklogRefusesFromLimitUntilNineTenths(t *testing.T) {
	type sample struct {
		depth map[string]uint64
		other uint64
		// refused are the inputs refused after it; "x" stands for every
		// input the sample does not name.
		refused []string
	}
	tests := []struct {
		name    string
		limit   uint64
		samples []sample
	}{
		{"under the limit", 100, []sample{
			{depth: map[string]uint64{"pas": 99, "lab": 0}, refused: nil},
		}},
		{"at the limit, and on down to four fifths", 100, []sample{
			{depth: map[string]uint64{"pas": 100, "lab": 5}, refused: []string{"pas"}},
			{depth: map[string]uint64{"pas": 95, "lab": 5}, refused: []string{"pas"}},
			{depth: map[string]uint64{"pas": 80, "lab": 5}, refused: []string{"pas"}},
			{depth: map[string]uint64{"pas": 79, "lab": 5}, refused: nil},
			{depth: map[string]uint64{"pas": 95, "lab": 5}, refused: nil},
		}},
		{"the common backlog limits an input not named", 100, []sample{
			{depth: map[string]uint64{"pas": 120}, other: 120, refused: []string{"pas", "x"}},
			{depth: map[string]uint64{"pas": 120}, other: 10, refused: []string{"pas"}},
		}},
		{"an input first named while the common backlog refuses stays refused down to four fifths", 100, []sample{
			{depth: map[string]uint64{}, other: 150, refused: []string{"x"}},
			{depth: map[string]uint64{"pas": 85}, other: 85, refused: []string{"pas", "x"}},
		}},
		{"no limit", 0, []sample{
			{depth: map[string]uint64{"pas": 1 << 40}, other: 1 << 40, refused: nil},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := telemetry.NewMetrics(prometheus.NewRegistry())
			b := NewBacklog(tt.limit, slog.New(slog.DiscardHandler), m)
			for i, s := range tt.samples {
				b.update(s.depth, s.other)
				for _, src := range []string{"pas", "lab", "x"} {
					name := src
					if _, ok := s.depth[src]; !ok {
						name = "x"
					}
					want := slices.Contains(s.refused, name)
					err := b.refuse(src)
					if got := err != nil; got != want {
						t.Errorf("sample %d: %s refused %v, want %v", i, src, got, want)
					}
					if err == nil {
						continue
					}
					if fault.CodeOf(err) != fault.CodeBacklog || !fault.IsTransient(err) {
						t.Errorf("sample %d: %s refused with %v, want a transient %s", i, src, err, fault.CodeBacklog)
					}
					if !strings.Contains(err.Error(), "router.max_backlog") {
						t.Errorf("sample %d: %q does not name the setting", i, err)
					}
				}
				if d, ok := s.depth["pas"]; ok && tt.limit > 0 {
					if got := testutil.ToFloat64(m.Backlog.WithLabelValues("pas")); got != float64(d) {
						t.Errorf("sample %d: backlog_messages{pas} = %v, want %d", i, got, d)
					}
				}
			}
		})
	}
	var none *Backlog
	if err := none.refuse("pas"); err != nil {
		t.Errorf("nil backlog refused: %v", err)
	}
}
