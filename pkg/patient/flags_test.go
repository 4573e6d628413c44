package patient

import (
	"encoding/json"
	"testing"
	"time"
)

// flagBundle returns a collection Bundle of entries (each a resource as
// a map), with fullUrls urn:uuid:e0, e1...
func flagBundle(t *testing.T, resources ...map[string]any) map[string]any {
	t.Helper()
	var entries []any
	for i, r := range resources {
		entries = append(entries, map[string]any{"fullUrl": "urn:uuid:e" + string(rune('0'+i)), "resource": r})
	}
	b := map[string]any{"resourceType": "Bundle", "type": "collection", "entry": entries}
	// Round-trip through JSON so the maps look like a decoded bundle.
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

const cppSystem = "https://example.org/CodeSystem/socialcare-flag"

// flagRes is a Flag resource about subject with the given status and
// period.
func flagRes(subject map[string]any, status, start, end string) map[string]any {
	f := map[string]any{
		"resourceType": "Flag", "status": status, "subject": subject,
		"code":   map[string]any{"coding": []any{map[string]any{"system": cppSystem, "code": "CPP", "display": "Child protection plan"}}},
		"author": map[string]any{"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "E09000033"}},
	}
	if start != "" || end != "" {
		p := map[string]any{}
		if start != "" {
			p["start"] = start
		}
		if end != "" {
			p["end"] = end
		}
		f["period"] = p
	}
	return f
}

func byNHS(n string) map[string]any {
	return map[string]any{"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": n}}
}

// TestFlagResources checks that Flag resources in a bundle set and clear
// the patient's flags, by reference to a Patient of the bundle or by NHS
// number alone, each flag ordered by its own source, without touching the
// demographics of a patient known only as a Flag's subject.
func TestFlagResources(t *testing.T) {
	js := startJetStream(t)
	ix := openIndex(t, js, "PATIENTS_FLAGS")
	n0, n1 := num(t, 0), num(t, 1)
	patient := map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"family": "TESTPATIENT"}},
		"identifier": []any{map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": n0}}}
	steps := []struct {
		name       string
		bundle     map[string]any
		src        Source
		nhs        string
		wantActive bool
		wantFamily string
		want       Result
	}{
		{"active flag on a Patient of the bundle", flagBundle(t, patient, flagRes(map[string]any{"reference": "urn:uuid:e0"}, "active", "2026-02-01", "")),
			src(2), n0, true, "TESTPATIENT", Result{Updated: 1}},
		{"older message clearing it loses", flagBundle(t, flagRes(byNHS(n0), "inactive", "", "")),
			src(1), n0, true, "TESTPATIENT", Result{Stale: 1}},
		{"newer message clears it, demographics kept", flagBundle(t, flagRes(byNHS(n0), "inactive", "", "")),
			src(3), n0, false, "TESTPATIENT", Result{Updated: 1}},
		{"flag alone creates the record", flagBundle(t, flagRes(byNHS(n1), "active", "", "")),
			src(4), n1, true, "", Result{Updated: 1}},
		{"flag without a code or patient is not indexed", flagBundle(t,
			map[string]any{"resourceType": "Flag", "status": "active", "subject": byNHS(n1)},
			flagRes(map[string]any{"reference": "Patient/unknown"}, "active", "", "")),
			src(5), n1, true, "", Result{Unindexed: 2}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			res, err := ix.Apply(t.Context(), st.bundle, st.src)
			if err != nil {
				t.Fatal(err)
			}
			if res != st.want {
				t.Errorf("result %+v, want %+v", res, st.want)
			}
			r, err := ix.Get(t.Context(), st.nhs)
			if err != nil {
				t.Fatal(err)
			}
			now := base.Add(time.Hour)
			cel := r.CELAt(now)
			active, _ := cel["activeFlags"].([]any)
			if got := len(active) == 1 && active[0] == "CPP"; got != st.wantActive {
				t.Errorf("active flags %v, want CPP active %v", active, st.wantActive)
			}
			if r.Family != st.wantFamily {
				t.Errorf("family %q, want %q", r.Family, st.wantFamily)
			}
			if len(r.Flags) == 1 && r.Flags[0].Origin != "ods:E09000033" {
				t.Errorf("origin %q", r.Flags[0].Origin)
			}
		})
	}
}

// TestFlagPeriodBounds checks that a Flag's period is read as FHIR
// defines it: an end given as a date, month or year includes all of it,
// so the flag still applies on its last day; a start is its first
// instant; and a cleared flag with such an end ends after it.
func TestFlagPeriodBounds(t *testing.T) {
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name, start, end string
		when             string
		active           bool
	}{
		// Dates are English calendar days: in summer a day runs from
		// 23:00 UTC the day before (BST), in winter from midnight UTC.
		{"last day of a date end", "", "2026-07-31", "2026-07-31T12:00:00Z", true},
		{"last instant of a date end in summer", "", "2026-07-31", "2026-07-31T22:59:59Z", true},
		{"midnight BST after a date end", "", "2026-07-31", "2026-07-31T23:00:00Z", false},
		{"day after a date end", "", "2026-07-31", "2026-08-01T00:00:00Z", false},
		{"last instant of a date end in winter", "", "2026-12-30", "2026-12-30T23:59:59Z", true},
		{"day after a date end in winter", "", "2026-12-30", "2026-12-31T00:00:00Z", false},
		{"late on the day the clocks go back", "", "2026-10-25", "2026-10-25T23:30:00Z", true},
		{"month end", "", "2026-07", "2026-07-31T18:00:00Z", true},
		{"after a month end", "", "2026-07", "2026-07-31T23:00:00Z", false},
		{"year end", "", "2026", "2026-12-31T18:00:00Z", true},
		{"dateTime end is exact", "", "2026-07-31T10:00:00+01:00", "2026-07-31T09:00:00Z", false},
		{"before a dateTime end", "", "2026-07-31T10:00:00+01:00", "2026-07-31T08:59:59Z", true},
		{"time without a zone is English", "", "2026-07-31T10:00:00", "2026-07-31T09:00:00Z", false},
		{"before a time without a zone", "", "2026-07-31T10:00:00", "2026-07-31T08:59:59Z", true},
		{"first instant of a date start", "2026-07-01", "", "2026-06-30T23:00:00Z", true},
		{"before a date start", "2026-07-01", "", "2026-06-30T22:59:59Z", false},
		{"first instant of a date start in winter", "2026-12-01", "", "2026-12-01T00:00:00Z", true},
		{"before a date start in winter", "2026-12-01", "", "2026-11-30T23:59:59Z", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, ok := readFlag(flagRes(byNHS("9990000018"), "active", tt.start, tt.end))
			if !ok {
				t.Fatal("flag not read")
			}
			if got := fd.flag.ActiveAt(at(tt.when)); got != tt.active {
				t.Errorf("active at %s = %v, want %v (start %v, end %v)", tt.when, got, tt.active, fd.flag.Start, fd.flag.End)
			}
		})
	}
	t.Run("cleared with a date end", func(t *testing.T) {
		fd, ok := readFlag(flagRes(byNHS("9990000018"), "inactive", "2026-07-01", "2026-07-31"))
		if !ok || !fd.cleared {
			t.Fatalf("flag not read as cleared: %v %+v", ok, fd)
		}
		// The end of 31 July in England: midnight BST.
		if want := at("2026-07-31T23:00:00Z"); !fd.clearedAt.Equal(want) {
			t.Errorf("cleared at %v, want %v", fd.clearedAt, want)
		}
	})
}
