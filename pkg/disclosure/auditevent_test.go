package disclosure_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/disclosure"
	"github.com/junction-fhir/junction/pkg/fhirschema"
)

// schemaPath is the FHIR R4 JSON schema: $JUNCTION_FHIR_R4_SCHEMA, or the
// shared corpora beside the repository.
func schemaPath() string {
	if p := os.Getenv("JUNCTION_FHIR_R4_SCHEMA"); p != "" {
		return p
	}
	return filepath.Join("..", "..", "..", "shared", "corpora", "fhir-r4-schema", "fhir.schema.json")
}

func TestAuditEvents(t *testing.T) {
	release := disclosure.Entry{Kind: disclosure.KindRelease, Time: at(3), MessageID: msg1, At: disclosure.Cursor{Seq: 12, Index: 1},
		Source: disclosure.Org{Name: "pas", ODS: "RX1"}, Recipient: disclosure.Org{Name: "registry", ODS: "X26"}, Route: "research",
		Purpose: "research", LegalBasis: "s251", Classes: []string{"Encounter", "Patient"}, Decision: "redact", Rule: "consent:c1:Consent.provision",
		Redacted: 2, OptOutGate: true}
	refusal := disclosure.Entry{Kind: disclosure.KindRefused, Time: at(1), MessageID: msg2, At: disclosure.Cursor{Seq: 9},
		Source: disclosure.Org{Name: "pas"}, Recipient: disclosure.Org{Name: "ehr", ODS: "RX2"}, Route: "adt",
		Purpose: "direct-care", LegalBasis: "direct-care", Decision: "deny", Rule: "consent:c-deny:Consent.provision", Reason: "a consent provision denies"}
	bundle := disclosure.SearchBundle(disclosure.Page{Entries: []disclosure.Entry{release, refusal}}, "9990000018", "http://x/fhir/AuditEvent?patient=9990000018", "http://x/fhir/AuditEvent?patient=9990000018&_cursor=12.1")
	data, err := json.Marshal(bundle)
	if err != nil {
		t.Fatal(err)
	}

	// The codes BALP asks for, read back from the JSON.
	var got struct {
		Type  string
		Link  []struct{ Relation string }
		Entry []struct {
			Resource struct {
				ID      string
				Meta    struct{ Profile []string }
				Type    struct{ Code string }
				Subtype []struct{ Code string }
				Action  string
				Outcome string
				Agent   []struct {
					Type struct{ Coding []struct{ Code string } }
					Who  struct {
						Identifier struct{ Value string }
					}
				}
				Entity []struct {
					Role struct{ Code string }
					What struct {
						Reference  string
						Identifier struct{ Value string }
					}
				}
			}
		}
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Type != "searchset" || len(got.Link) != 2 || got.Link[1].Relation != "next" || len(got.Entry) != 2 {
		t.Fatalf("bundle: %s", data)
	}
	type summary struct {
		ID, Type, Subtype, Action, Outcome string
		Profiles                           []string
		Agents, Entities                   []string
	}
	sum := func(i int) summary {
		r := got.Entry[i].Resource
		s := summary{ID: r.ID, Type: r.Type.Code, Subtype: r.Subtype[0].Code, Action: r.Action, Outcome: r.Outcome, Profiles: r.Meta.Profile}
		for _, a := range r.Agent {
			s.Agents = append(s.Agents, a.Type.Coding[0].Code+" "+a.Who.Identifier.Value)
		}
		for _, e := range r.Entity {
			s.Entities = append(s.Entities, e.Role.Code+" "+e.What.Reference+e.What.Identifier.Value)
		}
		return s
	}
	want := []summary{
		{ID: msg1 + "-12-1", Type: "110106", Subtype: "disclose", Action: "R", Outcome: "0",
			Profiles: []string{"https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PrivacyDisclosure.Source"},
			Agents:   []string{"110153 ", "110152 X26", "159541003 RX1"}, Entities: []string{"1 9990000018", "4 " + msg1}},
		{ID: msg2 + "-9-0", Type: "110113", Subtype: "AuthZ-Consent", Action: "E", Outcome: "8",
			Agents:   []string{"authserver ", "110150 ", "IRCP RX2", "PROV RX2"},
			Entities: []string{"1 9990000018", " Consent/c-deny", "4 " + msg2}},
	}
	if diff := cmp.Diff(want, []summary{sum(0), sum(1)}); diff != "" {
		t.Errorf("AuditEvents (-want +got):\n%s", diff)
	}

	path := schemaPath()
	if _, err := os.Stat(path); err != nil {
		corpustest.Missing(t, "FHIR R4 JSON schema not present at %s; skipping the schema check", path)
	}
	schema, err := fhirschema.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if issues := schema.Validate(data); len(issues) > 0 {
		t.Errorf("the bundle breaks the FHIR R4 schema: %v", issues)
	}
}

func TestParseDateParams(t *testing.T) {
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	day := func(m time.Month, d int) time.Time { return time.Date(2026, m, d, 0, 0, 0, 0, time.UTC) }
	tests := []struct {
		name     string
		in       []string
		from, to time.Time
		err      bool
	}{
		{"none", nil, now.Add(-disclosure.DefaultWindow), now, false},
		{"ge and le days", []string{"ge2026-01-01", "le2026-01-31"}, day(1, 1), day(2, 1).Add(-time.Nanosecond), false},
		{"gt and lt", []string{"gt2026-01-01", "lt2026-01-31"}, day(1, 2), day(1, 31).Add(-time.Nanosecond), false},
		{"month", []string{"2026-02"}, day(2, 1), day(3, 1).Add(-time.Nanosecond), false},
		{"dateTime", []string{"ge2026-01-01T10:00:00+01:00"}, time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC), now, false},
		// English calendar days: in summer one starts at 23:00 UTC.
		{"summer days", []string{"ge2026-05-01", "le2026-05-31"}, day(4, 30).Add(23 * time.Hour), day(5, 31).Add(23*time.Hour - time.Nanosecond), false},
		{"bad prefix", []string{"ne2026-01-01"}, time.Time{}, time.Time{}, true},
		{"bad date", []string{"ge2026-13-01"}, time.Time{}, time.Time{}, true},
		{"dateTime without zone", []string{"ge2026-01-01T10:00:00"}, time.Time{}, time.Time{}, true},
		{"backwards", []string{"ge2026-02-01", "le2026-01-01"}, time.Time{}, time.Time{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			from, to, err := disclosure.ParseDateParams(tc.in, now)
			if (err != nil) != tc.err {
				t.Fatalf("error %v, want error %v", err, tc.err)
			}
			if !tc.err && (!from.Equal(tc.from) || !to.Equal(tc.to)) {
				t.Errorf("window %v to %v, want %v to %v", from, to, tc.from, tc.to)
			}
		})
	}
}

func TestParseWindow(t *testing.T) {
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, from, to string
		wantFrom       time.Time
		wantTo         time.Time
		err            bool
	}{
		{"defaults", "", "", now.Add(-disclosure.DefaultWindow), now, false},
		{"dates", "2026-01-01", "2026-01-31", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC).Add(-time.Nanosecond), false},
		{"summer dates are English days", "2026-05-01", "2026-05-31", time.Date(2026, 4, 30, 23, 0, 0, 0, time.UTC), time.Date(2026, 5, 31, 23, 0, 0, 0, time.UTC).Add(-time.Nanosecond), false},
		{"a year is no date", "2026", "", time.Time{}, time.Time{}, true},
		{"times", "2026-01-01T08:00:00Z", "2026-01-01T09:00:00Z", time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC), time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC), false},
		{"bad from", "yesterday", "", time.Time{}, time.Time{}, true},
		{"backwards", "2026-02-01", "2026-01-01", time.Time{}, time.Time{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			from, to, err := disclosure.ParseWindow(tc.from, tc.to, now)
			if (err != nil) != tc.err {
				t.Fatalf("error %v, want error %v", err, tc.err)
			}
			if !tc.err && (!from.Equal(tc.wantFrom) || !to.Equal(tc.wantTo)) {
				t.Errorf("window %v to %v, want %v to %v", from, to, tc.wantFrom, tc.wantTo)
			}
		})
	}
}

func TestCursor(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{{"12.0", true}, {"18446744073709551615.3", true}, {"12", false}, {"12.-1", false}, {"a.b", false}, {"012.1", false}, {"1.2.3", false}, {"", false}} {
		t.Run(tc.in, func(t *testing.T) {
			c, err := disclosure.ParseCursor(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseCursor(%q) = %v, %v; want ok %v", tc.in, c, err, tc.ok)
			}
			if tc.ok && c.String() != tc.in {
				t.Errorf("round trip %q -> %q", tc.in, c.String())
			}
		})
	}
	if !(disclosure.Cursor{Seq: 2}).After(disclosure.Cursor{Seq: 1, Index: 9}) || (disclosure.Cursor{Seq: 2}).After(disclosure.Cursor{Seq: 2}) {
		t.Error("Cursor.After orders wrongly")
	}
}
