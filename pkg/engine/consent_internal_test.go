package engine

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestConsentSkipCounter checks that the decisions in which a statutory route
// skipped the Consent gate are counted by route and destination, and no
// others.
func TestConsentSkipCounter(t *testing.T) {
	m := telemetry.NewMetrics(prometheus.NewRegistry())
	sc := skipCounter{next: &consent.Engine{}, skipped: m.ConsentSkipped}
	reqs := []consent.Request{
		{Route: "safeguarding-referrals", Destination: "mash", Purpose: "safeguarding", LegalBasis: "safeguarding", SkipConsent: true, Default: consent.Permit},
		{Route: "safeguarding-referrals", Destination: "mash", Purpose: "safeguarding", LegalBasis: "safeguarding", SkipConsent: true, Default: consent.Permit},
		{Route: "adt", Destination: "ehr", Purpose: "direct-care", LegalBasis: "direct-care", Default: consent.Permit},
	}
	for _, r := range reqs {
		if _, err := sc.Decide(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if v := testutil.ToFloat64(m.ConsentSkipped.WithLabelValues("safeguarding-referrals", "mash")); v != 2 {
		t.Errorf("skipped for safeguarding-referrals/mash = %v, want 2", v)
	}
	if n := testutil.CollectAndCount(m.ConsentSkipped); n != 1 {
		t.Errorf("%d skip series, want 1", n)
	}
}
