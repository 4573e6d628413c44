package pds_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/pds"
	"github.com/junction-fhir/junction/pkg/pds/pdstest"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// enricherFixture is an index, a double and an enricher between them.
type enricherFixture struct {
	ix      *patient.Index
	srv     *pdstest.Server
	en      *pds.Enricher
	metrics *telemetry.Metrics
}

func newEnricherFixture(t *testing.T, o pds.EnricherOptions) *enricherFixture {
	t.Helper()
	ix, err := patient.Open(t.Context(), jstest.Start(t, "pds-test"), patient.Config{HashKey: []byte("pds-test-hash-key-0123456789")})
	if err != nil {
		t.Fatal(err)
	}
	srv := pdstest.NewServer(pdstest.Seed()...)
	t.Cleanup(srv.Close)
	m := telemetry.NewMetrics(prometheus.NewRegistry())
	o.Metrics = m
	en := pds.NewEnricher(newClient(t, srv, testToken), ix, o)
	return &enricherFixture{ix: ix, srv: srv, en: en, metrics: m}
}

// pd1 sets the practice on the patient's record as an ADT message with
// PD1 received at would.
func (f *enricherFixture) pd1(t *testing.T, nhsNumber, practice string, at time.Time) {
	t.Helper()
	if _, err := f.ix.Update(t.Context(), nhsNumber, func(r *patient.Record) error {
		r.SetGP(practice, "", patient.Source{MessageID: "01TESTMSG", Received: at})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func (f *enricherFixture) get(t *testing.T, nhsNumber string) *patient.Record {
	t.Helper()
	rec, err := f.ix.Get(t.Context(), nhsNumber)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestEnricherRefresh(t *testing.T) {
	n := nhs.TestNumber
	past := time.Now().Add(-time.Hour)
	tests := []struct {
		name string
		// pd1 is the practice a PD1 received an hour before the lookup
		// set ("" for none).
		pd1        string
		setup      func(s *pdstest.Server)
		number     string
		wantOut    string
		wantNumber string // the record Get(number) reaches
		wantGP     string
		wantRestr  bool
		wantPDS    string // the recorded PDS outcome
	}{
		{name: "no practice yet", number: n(0), wantOut: "found", wantNumber: n(0), wantGP: "Y12345", wantPDS: "found"},
		{name: "PDS wins over an older PD1", pd1: "A81001", number: n(0), wantOut: "found", wantNumber: n(0), wantGP: "Y12345", wantPDS: "found"},
		{name: "restricted keeps the PD1 practice", pd1: "A81001", number: n(2), wantOut: "found", wantNumber: n(2), wantGP: "A81001", wantRestr: true, wantPDS: "found"},
		{name: "unknown is remembered", pd1: "A81001", number: n(10), wantOut: "not_found", wantNumber: n(10), wantGP: "A81001", wantPDS: "not_found"},
		{name: "superseded merges into the current number", setup: func(s *pdstest.Server) { s.Supersede(n(12), n(1)) },
			pd1: "A81001", number: n(12), wantOut: "superseded", wantNumber: n(1), wantGP: "Y23456", wantPDS: "found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEnricherFixture(t, pds.EnricherOptions{})
			if tt.setup != nil {
				tt.setup(f.srv)
			}
			if tt.pd1 != "" {
				f.pd1(t, tt.number, tt.pd1, past)
			}
			if got := f.en.Refresh(t.Context(), tt.number); got != tt.wantOut {
				t.Fatalf("Refresh = %q, want %q", got, tt.wantOut)
			}
			rec := f.get(t, tt.number)
			if rec.NHSNumber != tt.wantNumber || rec.GPPractice != tt.wantGP || rec.Restricted != tt.wantRestr || rec.PDS.Outcome != tt.wantPDS {
				t.Errorf("record: number %s, practice %q, restricted %v, pds %q; want %s, %q, %v, %q",
					rec.NHSNumber, rec.GPPractice, rec.Restricted, rec.PDS.Outcome, tt.wantNumber, tt.wantGP, tt.wantRestr, tt.wantPDS)
			}
			if rec.PDS.CheckedAt.IsZero() || f.en.Due(rec, time.Now()) {
				t.Errorf("a patient just looked up is due again (checked at %v)", rec.PDS.CheckedAt)
			}
			if !f.en.Due(rec, time.Now().Add(pds.DefaultRefreshAfter)) {
				t.Errorf("not due after refresh_after")
			}
			if v := testutil.ToFloat64(f.metrics.PDSLookups.WithLabelValues(tt.wantOut)); v != 1 {
				t.Errorf("lookups{outcome=%s} = %v, want 1", tt.wantOut, v)
			}
		})
	}
}

// TestEnricherNewerPD1Wins: a PD1 received after the PDS lookup replaces
// PDS's practice, and a later lookup dated before it does not undo that.
func TestEnricherNewerPD1Wins(t *testing.T) {
	f := newEnricherFixture(t, pds.EnricherOptions{})
	n := nhs.TestNumber(0)
	f.en.Refresh(t.Context(), n)
	f.pd1(t, n, "A81001", time.Now().Add(time.Hour))
	f.en.Refresh(t.Context(), n)
	if got := f.get(t, n).GPPractice; got != "A81001" {
		t.Errorf("practice = %q, want the newer PD1's A81001", got)
	}
}

// TestEnricherQueue checks dedupe and drop-when-full without a worker,
// then that the worker takes the queue and stops.
func TestEnricherQueue(t *testing.T) {
	f := newEnricherFixture(t, pds.EnricherOptions{QueueSize: 2})
	a, b, c := nhs.TestNumber(0), nhs.TestNumber(1), nhs.TestNumber(3)
	for _, tc := range []struct {
		number string
		want   bool
	}{{a, true}, {a, true}, {b, true}, {c, false}} {
		if got := f.en.Enqueue(tc.number); got != tc.want {
			t.Errorf("Enqueue = %v, want %v", got, tc.want)
		}
	}
	if v := testutil.ToFloat64(f.metrics.PDSDropped); v != 1 {
		t.Errorf("dropped = %v, want 1", v)
	}
	ctx := context.Background()
	f.en.Start(ctx)
	deadline := time.Now().Add(10 * time.Second)
	practice := func(n string) string {
		rec, err := f.ix.Get(t.Context(), n)
		if err != nil {
			return "" // not written yet
		}
		return rec.GPPractice
	}
	for practice(b) != "Y23456" || practice(a) != "Y12345" {
		if time.Now().After(deadline) {
			t.Fatal("the worker did not look the queued patients up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := len(f.srv.Requests()); got != 2 {
		t.Errorf("requests = %d, want 2 (one per queued patient)", got)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := f.en.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	if err := f.en.Stop(sctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}
