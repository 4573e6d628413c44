package durability

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/mllp"
	"github.com/junction-fhir/junction/pkg/nhs"
)

func TestPlan(t *testing.T) {
	msgs := Plan("T", 10, 3)
	if len(msgs) != 10 {
		t.Fatalf("%d messages, want 10", len(msgs))
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		if seen[m.Ctrl] {
			t.Errorf("MSH-10 %s twice", m.Ctrl)
		}
		seen[m.Ctrl] = true
		pm, err := hl7v2.Parse(m.Raw)
		if err != nil {
			t.Fatalf("%s does not parse: %v", m.Ctrl, err)
		}
		if pm.ControlID() != m.Ctrl {
			t.Errorf("MSH-10 %q, want %q", pm.ControlID(), m.Ctrl)
		}
		if nn := pm.Segment("PID").Component(3, 1, 1, 1); !nhs.ValidNumber(nn) || nn != nhs.TestNumber(m.Patient) {
			t.Errorf("%s: NHS number %q, want patient %d's valid test number", m.Ctrl, nn, m.Patient)
		}
	}
	if msgs[4].Patient != 1 || msgs[4].Seq != 1 {
		t.Errorf("message 4 is patient %d seq %d, want patient 1 seq 1", msgs[4].Patient, msgs[4].Seq)
	}
}

func TestCheck(t *testing.T) {
	msgs := Plan("C", 6, 2) // patient 0: C000-00000, -00001, -00002; patient 1 likewise
	ids := func(ms ...int) []string {
		var out []string
		for _, i := range ms {
			out = append(out, msgs[i].Ctrl)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		acked    []string
		arrivals []string
		want     Verdict
	}{
		{"all in order", ids(0, 1, 2, 3, 4, 5), ids(0, 1, 2, 3, 4, 5), Verdict{Acked: 6, Distinct: 6, Deliveries: 6}},
		{"lost", ids(0, 1, 2), ids(0, 2), Verdict{Acked: 3, Distinct: 2, Deliveries: 2, Lost: ids(1)}},
		{"unacknowledged but delivered is fine", ids(0), ids(0, 1), Verdict{Acked: 1, Distinct: 1, Deliveries: 2}},
		{"duplicate", ids(0, 1), ids(0, 0, 1), Verdict{Acked: 2, Distinct: 2, Deliveries: 3, Duplicated: 1, ExtraDeliveries: 1, DuplicatedIDs: []string{msgs[0].Ctrl + "×2"}}},
		{"unknown", ids(0), []string{msgs[0].Ctrl, "STRANGER"}, Verdict{Acked: 1, Distinct: 1, Deliveries: 2, Unknown: []string{"STRANGER"}}},
		// msgs[0] and msgs[2] are patient 0's first two; msgs[2] arriving
		// first is an inversion, another patient between them is not.
		{"inversion", ids(0, 2), ids(2, 1, 0), Verdict{Acked: 2, Distinct: 2, Deliveries: 3,
			Inversions: []string{"patient 0: " + msgs[0].Ctrl + " first delivered after " + msgs[2].Ctrl}}},
		{"a redelivery after later messages is not an inversion", ids(0, 2), ids(0, 2, 0), Verdict{Acked: 2, Distinct: 2, Deliveries: 3, Duplicated: 1, ExtraDeliveries: 1, DuplicatedIDs: []string{msgs[0].Ctrl + "×2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Check(msgs, tc.acked, tc.arrivals)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestSendResendsUntilAA: a receiver that drops the first try of every
// message still gets each one acknowledged, in order per patient.
func TestSendResendsUntilAA(t *testing.T) {
	var mu sync.Mutex
	tries := map[string]int{}
	var got []string
	srv := &mllp.Server{Addr: "127.0.0.1:0", IdleTimeout: -1, Handler: mllp.HandlerFunc(func(_ context.Context, _ *mllp.ConnInfo, p []byte) ([]byte, bool) {
		m, err := hl7v2.Parse(p)
		if err != nil {
			return nil, true
		}
		mu.Lock()
		defer mu.Unlock()
		tries[m.ControlID()]++
		if tries[m.ControlID()] == 1 {
			return nil, true // no answer: the sender must resend
		}
		got = append(got, m.ControlID())
		return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAA}), false
	})}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(context.Background()) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	msgs := Plan("S", 20, 4)
	st := NewStats()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := Send(ctx, msgs, 2, 0, func(int) string { return srv.ListenAddr().String() }, st); err != nil {
		t.Fatal(err)
	}
	if st.AckedCount() != 20 || st.Resends.Load() != 20 {
		t.Errorf("acked %d with %d resends, want 20 and 20", st.AckedCount(), st.Resends.Load())
	}
	mu.Lock()
	arrivals := slices.Clone(got)
	mu.Unlock()
	v := Check(msgs, st.AckedIDs(), arrivals)
	if len(v.Lost)+len(v.Inversions)+len(v.Unknown) > 0 || v.Distinct != 20 {
		t.Errorf("verdict %+v", v)
	}
	if st.Latency(0.99) <= 0 {
		t.Error("no latency recorded")
	}
}

func TestPlanResults(t *testing.T) {
	msgs := PlanResults("R", 6, 100, 3)
	for i, m := range msgs {
		pm, err := hl7v2.Parse(m.Raw)
		if err != nil {
			t.Fatalf("%s does not parse: %v", m.Ctrl, err)
		}
		if got := pm.Segment("MSH").Component(9, 1, 1, 1) + "^" + pm.Event(); got != "ORU^R01" {
			t.Errorf("%s is %s, want ORU^R01", m.Ctrl, got)
		}
		if m.Patient != 100+i%3 || m.Seq != i/3 || pm.ControlID() != m.Ctrl {
			t.Errorf("message %d: patient %d seq %d ctrl %s", i, m.Patient, m.Seq, pm.ControlID())
		}
		if nn := pm.Segment("PID").Component(3, 1, 1, 1); nn != nhs.TestNumber(m.Patient) {
			t.Errorf("%s: NHS number %q, want patient %d's", m.Ctrl, nn, m.Patient)
		}
		if len(pm.SegmentsNamed("OBX")) != 3 {
			t.Errorf("%s has %d OBX, want 3", m.Ctrl, len(pm.SegmentsNamed("OBX")))
		}
	}
}
