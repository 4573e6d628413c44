package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/store"
)

// storedTime returns when the store took the audit message at seq.
func storedTime(t testing.TB, js jetstream.JetStream, seq uint64) time.Time {
	t.Helper()
	st, err := js.Stream(t.Context(), store.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(t.Context(), seq)
	if err != nil {
		t.Fatal(err)
	}
	return m.Time
}

// lastSeq returns the audit stream's last sequence.
func lastSeq(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	return auditState(t, js).LastSeq
}

// auditState returns the audit stream's state.
func auditState(t testing.TB, js jetstream.JetStream) jetstream.StreamState {
	t.Helper()
	st, err := js.Stream(t.Context(), store.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

func TestScan(t *testing.T) {
	const (
		msgA = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
		msgB = "01JQ4Z9A7B8C9D0E1F2G3H4J5M"
		msgC = "01JQ4Z9A7B8C9D0E1F2G3H4J5N"
	)
	js := openJS(t)
	w := audit.NewWriter(js, audit.WithSigningKey(testKey(1)))
	ctx := t.Context()
	// Three periods: A before the window, B in it (one per-message
	// write, one batch of two messages, a checkpoint), C after it.
	if err := w.Write(ctx, msgA, "", rec(msgA, audit.Received, 0)); err != nil {
		t.Fatal(err)
	}
	firstB := lastSeq(t, js) + 1
	if err := w.Write(ctx, msgB, "", rec(msgB, audit.Received, 1), rec(msgB, audit.Translated, 2)); err != nil {
		t.Fatal(err)
	}
	batch, err := json.Marshal([]audit.Record{rec(msgB, audit.Matched, 3), rec(msgC, audit.Matched, 4)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, store.SubjAudit+"._b.route.adt.7", batch); err != nil {
		t.Fatal(err)
	}
	if err := w.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	lastB := lastSeq(t, js)
	if err := w.Write(ctx, msgC, "", rec(msgC, audit.Delivered, 5)); err != nil {
		t.Fatal(err)
	}
	closeWriter(t, w)
	from, to := storedTime(t, js, firstB), storedTime(t, js, lastB)

	ids := func(recs []audit.Record) []string {
		var out []string
		for _, r := range recs {
			out = append(out, r.MessageID+" "+string(r.Event))
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		from, to time.Time
		want     []string
	}{
		{"window", from, to, []string{msgB + " received", msgB + " translated", msgB + " matched", msgC + " matched"}},
		{"everything", time.Time{}, time.Time{}, []string{msgA + " received", msgB + " received", msgB + " translated", msgB + " matched", msgC + " matched", msgC + " delivered"}},
		{"from on", from, time.Time{}, []string{msgB + " received", msgB + " translated", msgB + " matched", msgC + " matched", msgC + " delivered"}},
		{"after the last", storedTime(t, js, lastSeq(t, js)).Add(time.Second), time.Time{}, nil},
		{"before the first", time.Time{}, storedTime(t, js, 1).Add(-time.Second), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []audit.Record
			err := audit.Scan(t.Context(), js, tc.from, tc.to, func(r audit.Record) error {
				got = append(got, r)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, ids(got)); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("cursor and stop", func(t *testing.T) {
		var first []audit.Position
		err := audit.ScanStream(t.Context(), js, audit.ScanOptions{}, func(p audit.Position, r audit.Record) error {
			first = append(first, p)
			if len(first) == 2 {
				return audit.ErrStopScan
			}
			return nil
		})
		if err != nil || len(first) != 2 {
			t.Fatalf("stopped scan: %d records, %v; want 2, nil", len(first), err)
		}
		var rest []audit.Record
		err = audit.ScanStream(t.Context(), js, audit.ScanOptions{AfterSeq: first[1].Seq}, func(_ audit.Position, r audit.Record) error {
			rest = append(rest, r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{msgB + " matched", msgC + " matched", msgC + " delivered"}
		if diff := cmp.Diff(want, ids(rest)); diff != "" {
			t.Errorf("records after the cursor (-want +got):\n%s", diff)
		}
	})

	t.Run("callback error", func(t *testing.T) {
		boom := errors.New("boom")
		err := audit.Scan(t.Context(), js, time.Time{}, time.Time{}, func(audit.Record) error { return boom })
		if !errors.Is(err, boom) {
			t.Errorf("Scan error = %v, want boom", err)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := audit.Scan(cctx, js, time.Time{}, time.Time{}, func(audit.Record) error { return nil }); err == nil {
			t.Error("Scan with a cancelled context succeeded")
		}
	})
}

// TestMergeRuns: runs of unreadable sequences met in any order, parts of
// them met again, come out sorted, each sequence in one run.
func TestMergeRuns(t *testing.T) {
	r := func(first, last uint64) audit.SeqRange { return audit.SeqRange{First: first, Last: last} }
	tests := []struct {
		name string
		in   []audit.SeqRange
		want []audit.SeqRange
	}{
		{"none", nil, nil},
		{"one", []audit.SeqRange{r(3, 5)}, []audit.SeqRange{r(3, 5)}},
		{"apart, out of order", []audit.SeqRange{r(10, 12), r(1, 4)}, []audit.SeqRange{r(1, 4), r(10, 12)}},
		{"touching", []audit.SeqRange{r(1, 4), r(5, 9)}, []audit.SeqRange{r(1, 9)}},
		{"the same twice", []audit.SeqRange{r(1, 72), r(1, 72)}, []audit.SeqRange{r(1, 72)}},
		{"overlapping", []audit.SeqRange{r(1, 50), r(20, 72)}, []audit.SeqRange{r(1, 72)}},
		{"one within another, met after", []audit.SeqRange{r(145, 216), r(1, 72), r(150, 160)}, []audit.SeqRange{r(1, 72), r(145, 216)}},
		{"a longer end met later", []audit.SeqRange{r(145, 200), r(1, 72), r(145, 216)}, []audit.SeqRange{r(1, 72), r(145, 216)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, audit.MergeRuns(tc.in)); diff != "" {
				t.Errorf("MergeRuns(%v) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}
