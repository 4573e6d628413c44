package consent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jstest"
)

// startJetStream runs an embedded JetStream server for the test.
func startJetStream(t *testing.T) jetstream.JetStream { return jstest.Start(t, "consent-test") }

func openTestStore(t *testing.T, js jetstream.JetStream) *Store {
	t.Helper()
	s, err := OpenStore(t.Context(), js, StoreConfig{HashKey: []byte("test-key-0123456789abcdef"), OptOutMaxAge: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return s
}

// consentJSON returns the example Consent with id, status and patient set.
func consentJSON(t *testing.T, id, status, patient string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "consent-valid.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	c["id"], c["status"] = id, status
	c["patient"].(map[string]any)["identifier"].(map[string]any)["value"] = patient
	out, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func ids(pols []Policy) []string {
	var out []string
	for _, p := range pols {
		out = append(out, p.ID+":"+p.Status)
	}
	return out
}

func TestStoreConsents(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	s := openTestStore(t, js)

	for _, c := range [][]byte{
		consentJSON(t, "c1", "active", patientA),
		consentJSON(t, "c2", "active", patientA),
		consentJSON(t, "c3", "active", patientB),
		consentJSON(t, "c1", "inactive", patientA), // withdrawal replaces c1
	} {
		if _, err := s.PutConsent(ctx, c); err != nil {
			t.Fatalf("PutConsent: %v", err)
		}
	}
	got, err := s.Policies(ctx, patientA)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"c2:active", "c1:inactive"}; strings.Join(ids(got), ",") != strings.Join(want, ",") {
		t.Errorf("patient A consents %v, want %v", ids(got), want)
	}
	if err := s.DeleteConsent(ctx, patientA, "c2"); err != nil {
		t.Fatal(err)
	}
	got, err = s.Policies(ctx, "999 000 0018")
	if err != nil {
		t.Fatal(err)
	}
	if want := "c1:inactive"; strings.Join(ids(got), ",") != want {
		t.Errorf("after delete: %v, want %v", ids(got), want)
	}
	got, err = s.Policies(ctx, patientB)
	if err != nil {
		t.Fatal(err)
	}
	if want := "c3:active"; strings.Join(ids(got), ",") != want {
		t.Errorf("patient B: %v, want %v", ids(got), want)
	}

	// No key of the bucket holds an NHS number.
	kv, err := js.KeyValue(ctx, "consent")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for k := range keys.Keys() {
		n++
		if strings.Contains(k, patientA) || strings.Contains(k, patientB) {
			t.Errorf("bucket key %q holds an NHS number", k)
		}
	}
	if n != 2 {
		t.Errorf("%d keys, want 2 (one per patient)", n)
	}
}

func TestStoreRefusesConsentOutsideProfile(t *testing.T) {
	s := openTestStore(t, startJetStream(t))
	bad := consentJSON(t, "c1", "active", patientA)
	// Keys are written sorted, so the first deny is the innermost one.
	bad = []byte(strings.Replace(string(bad), `"type":"deny"`, `"type":"sometimes"`, 1))
	_, err := s.PutConsent(t.Context(), bad)
	var issues Issues
	if !errors.As(err, &issues) || len(issues) != 1 || issues[0].Location != "Consent.provision.provision[0].provision[0].type" {
		t.Fatalf("err = %v, want one issue at Consent.provision.provision[0].provision[0].type", err)
	}
	noID := consentJSON(t, "", "active", patientA)
	if _, err := s.PutConsent(t.Context(), noID); !errors.As(err, &issues) {
		t.Fatalf("a Consent without id: err = %v, want Issues", err)
	}
}

func TestStoreOptOut(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t, startJetStream(t))
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

	st, err := s.OptOut(ctx, patientA, now)
	if err != nil {
		t.Fatal(err)
	}
	if st != (OptOutStatus{Stale: true}) {
		t.Errorf("before any import: %+v, want stale", st)
	}
	if err := s.ImportOptOuts(ctx, []string{patientA}, now.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		patient string
		at      time.Time
		want    OptOutStatus
	}{
		{"listed", patientA, now, OptOutStatus{OptedOut: true}},
		{"not listed", patientB, now, OptOutStatus{}},
		{"list too old", patientB, now.Add(7 * 24 * time.Hour), OptOutStatus{Stale: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.OptOut(ctx, tt.patient, tt.at)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	// A new list replaces the old one.
	if err := s.ImportOptOuts(ctx, []string{patientB}, now); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{patientA: false, patientB: true} {
		got, err := s.OptOut(ctx, p, now)
		if err != nil {
			t.Fatal(err)
		}
		if got.OptedOut != want || got.Stale {
			t.Errorf("after second import, opted out %v stale %v; want %v, fresh", got.OptedOut, got.Stale, want)
		}
	}
	if err := s.ImportOptOuts(ctx, []string{"9990000019"}, now); err == nil || strings.Contains(err.Error(), "9990000019") {
		t.Errorf("invalid number: err = %v, want an error without the number", err)
	}
}

// TestOptOutImportWritesChangesOnly: importing a list again writes only
// what changed (and the date), not every number again.
func TestOptOutImportWritesChangesOnly(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t, startJetStream(t))
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	writes := func() uint64 {
		t.Helper()
		st, err := s.optout.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
	}
	list := []string{patientA, patientB, "9990000034"}
	if err := s.ImportOptOuts(ctx, list, now); err != nil {
		t.Fatal(err)
	}
	first := writes()
	if first != 4 {
		t.Fatalf("first import made %d writes, want 4 (three numbers and the date)", first)
	}
	if err := s.ImportOptOuts(ctx, list, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := writes() - first; n != 1 {
		t.Errorf("importing the same list again made %d writes, want 1 (the date)", n)
	}
	before := writes()
	if err := s.ImportOptOuts(ctx, []string{patientA, "9990000042"}, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Two removed, one added, the date.
	if n := writes() - before; n != 4 {
		t.Errorf("importing a changed list made %d writes, want 4", n)
	}
	for p, want := range map[string]bool{patientA: true, patientB: false, "9990000034": false, "9990000042": true} {
		got, err := s.OptOut(ctx, p, now.Add(2*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if got.OptedOut != want {
			t.Errorf("opted out %v after the changed list, want %v", got.OptedOut, want)
		}
	}
}

// The engine on the store: a withdrawal applies to the next decision.
func TestEngineOnStoreWithdrawal(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t, startJetStream(t))
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	e := &Engine{Source: s, Now: func() time.Time { return now }, Destinations: map[string]Destination{"gp": {ODS: "A81001"}}}
	req := Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care", Destination: "gp", PatientKey: patientA, Default: Permit,
		Bundle: map[string]any{"entry": []any{map[string]any{"resource": map[string]any{"resourceType": "Encounter"}}}}}
	deny := []byte(`{"resourceType":"Consent","id":"w","status":"active",
		"scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},
		"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],
		"patient":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}},
		"provision":{"type":"deny"}}`)
	steps := []struct {
		name string
		do   func() error
		want Outcome
	}{
		{"nothing recorded", func() error { return nil }, Permit},
		{"deny stored", func() error { _, err := s.PutConsent(ctx, deny); return err }, Deny},
		{"deny withdrawn", func() error { return s.DeleteConsent(ctx, patientA, "w") }, Permit},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		d, err := e.Decide(context.Background(), req)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if d.Outcome != st.want {
			t.Errorf("%s: %s (%s), want %s", st.name, d.Outcome, d.Rule, st.want)
		}
	}
}

// TestStoredConsentOfEarlierRulesStillLoads checks that a Consent stored
// under the earlier, laxer profile (a purpose no route declares) still
// loads, so decisions for its patient go on (the element matching
// nothing) rather than failing as if the store were down, while the same
// Consent posted now is refused.
func TestStoredConsentOfEarlierRulesStillLoads(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, startJetStream(t))
	c := map[string]any{}
	if err := json.Unmarshal(consentJSON(t, "legacy-1", "active", "9990000018"), &c); err != nil {
		t.Fatal(err)
	}
	prov := c["provision"].(map[string]any)["provision"].([]any)[0].(map[string]any)
	prov["purpose"] = []any{map[string]any{"system": SystemActReason, "code": "ETREAT"}}
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, issues := ParsePolicy(raw); len(issues) == 0 {
		t.Fatal("the Consent is accepted when posted now; the test needs one the current rules refuse")
	}
	if err := s.update(ctx, "9990000018", func(l []json.RawMessage) ([]json.RawMessage, error) { return append(l, raw), nil }); err != nil {
		t.Fatal(err)
	}
	e := &Engine{Source: s}
	if _, err := e.Decide(ctx, Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care", Destination: "d",
		PatientKey: "9990000018", Default: Permit, Bundle: map[string]any{"resourceType": "Bundle"}}); err != nil {
		t.Errorf("deciding for the patient: %v", err)
	}
}

func TestStoreLastChanges(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t, startJetStream(t))
	hA, hB := s.PatientHash(patientA), s.PatientHash(patientB)
	changed := func(t *testing.T, hashes []string, since time.Time, optOut bool) bool {
		t.Helper()
		c, err := s.LastChanges(ctx, hashes, optOut)
		if err != nil {
			t.Fatalf("LastChanges: %v", err)
		}
		return c.After(hashes, since, optOut)
	}
	start := time.Now()
	if changed(t, []string{hA, hB}, start, true) {
		t.Error("nothing stored: reported a change")
	}
	if _, err := s.PutConsent(ctx, consentJSON(t, "c1", "active", patientA)); err != nil {
		t.Fatal(err)
	}
	afterPut := time.Now()
	if _, err := s.PutConsent(ctx, consentJSON(t, "c9", "active", patientB)); err != nil {
		t.Fatal(err)
	}
	afterB := time.Now()
	// The same Consent again writes nothing.
	if _, err := s.PutConsent(ctx, consentJSON(t, "c9", "active", patientB)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteConsent(ctx, patientA, "c1"); err != nil {
		t.Fatal(err)
	}
	afterWithdraw := time.Now()
	tests := []struct {
		name   string
		hashes []string
		since  time.Time
		want   bool
	}{
		{"stored after", []string{hA}, start, true},
		{"another patient's", []string{hB}, afterB, false},
		{"withdrawn after", []string{hA}, afterPut, true},
		{"one of several", []string{hB, hA}, afterPut, true},
		{"nothing after", []string{hA, hB}, afterWithdraw, false},
		{"no patients", nil, start, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := changed(t, tt.hashes, tt.since, false); got != tt.want {
				t.Errorf("changed = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("opt-out list imported", func(t *testing.T) {
		now := time.Now()
		if err := s.ImportOptOuts(ctx, []string{patientA}, now); err != nil {
			t.Fatal(err)
		}
		if !changed(t, []string{hA}, now, true) {
			t.Error("a patient listed since, for a decision under the opt-out gate: no change reported")
		}
		if changed(t, []string{hA}, now, false) {
			t.Error("a patient listed since, for a decision the opt-out gate did not apply to: reported a change")
		}
		if changed(t, []string{hB}, now, true) {
			t.Error("an import leaving the patient off the list: reported a change")
		}
	})
}
