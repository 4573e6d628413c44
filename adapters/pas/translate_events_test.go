package pas

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// msh returns testMSH for another event.
func msh(event string) string {
	return strings.Replace(testMSH, "ADT^A01", "ADT^"+event, 1)
}

// resourcesOf returns every resource of type typ in b.
func resourcesOf[T any](t *testing.T, b *models.Bundle, typ string, unmarshal func([]byte) (T, error)) []T {
	t.Helper()
	var out []T
	for _, e := range b.Entry {
		if rt, _ := fhir.ResourceType(e.Resource); rt == typ {
			r, err := unmarshal(e.Resource)
			if err != nil {
				t.Fatalf("unmarshal %s: %v", typ, err)
			}
			out = append(out, r)
		}
	}
	return out
}

func TestEventStatuses(t *testing.T) {
	cancelled := DefaultDialect()
	cancelled.CancelAdmitStatus = CancelAdmitCancelled
	visit := pv1(map[int]string{2: "I", 3: "WARD1^^^RX1", 6: "WARD2^^^RX1", 19: "V1", 44: "20240715093000", 45: "20240716120000"})
	tests := []struct {
		event    string
		dialect  Dialect
		status   string
		end      bool     // Encounter.period.end present
		location []string // location statuses, "-" for none
	}{
		{"A01", DefaultDialect(), "in-progress", true, []string{"active"}},
		{"A02", DefaultDialect(), "in-progress", true, []string{"active", "completed"}},
		{"A03", DefaultDialect(), "finished", true, []string{"completed"}},
		{"A04", DefaultDialect(), "in-progress", true, []string{"active"}},
		{"A05", DefaultDialect(), "planned", true, []string{"planned"}},
		{"A06", DefaultDialect(), "in-progress", true, []string{"active"}},
		{"A07", DefaultDialect(), "in-progress", true, []string{"active"}},
		{"A08", DefaultDialect(), "finished", true, []string{"completed"}},
		{"A11", DefaultDialect(), "entered-in-error", true, []string{"-"}},
		{"A11", cancelled, "cancelled", true, []string{"-"}},
		{"A38", DefaultDialect(), "cancelled", true, []string{"-"}},
		{"A12", DefaultDialect(), "in-progress", true, []string{"active", "-"}},
		{"A13", DefaultDialect(), "in-progress", false, []string{"active"}},
		{"A21", DefaultDialect(), "onleave", true, []string{"reserved"}},
		{"A22", DefaultDialect(), "in-progress", true, []string{"active"}},
		{"A28", DefaultDialect(), "finished", true, []string{"completed"}},
		{"A31", DefaultDialect(), "finished", true, []string{"completed"}},
	}
	for _, tt := range tests {
		t.Run(tt.event+"-"+tt.dialect.CancelAdmitStatus, func(t *testing.T) {
			b := translate(t, tt.dialect, hl7(msh(tt.event), pid("9990000018^^^NHS^NH", nil), visit))
			enc, ok := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
			if !ok {
				t.Fatal("no Encounter")
			}
			if got := enc.Status.Code(); got != tt.status {
				t.Errorf("status %q, want %q", got, tt.status)
			}
			if got := enc.Period != nil && enc.Period.End != nil; got != tt.end {
				t.Errorf("period end present = %v, want %v", got, tt.end)
			}
			var locs []string
			for _, l := range enc.Location {
				s := "-"
				if l.Status != nil {
					s = l.Status.Code()
				}
				locs = append(locs, s)
			}
			if diff := cmp.Diff(tt.location, locs); diff != "" {
				t.Errorf("location statuses (-want +got):\n%s", diff)
			}
			mh, _ := resourceOf(t, b, "MessageHeader", models.UnmarshalMessageHeader)
			if *mh.EventCoding.Code != tt.event || mh.EventCoding.Display == nil {
				t.Errorf("eventCoding %v %v", *mh.EventCoding.Code, mh.EventCoding.Display)
			}
		})
	}
}

func TestCancelTransferMarksLocation(t *testing.T) {
	b := translate(t, DefaultDialect(), hl7(msh("A12"), pid("9990000018^^^NHS^NH", nil),
		pv1(map[int]string{2: "I", 3: "WARD1^^^RX1", 6: "WARD2^^^RX1", 19: "V1"})))
	enc, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
	if len(enc.Location) != 2 {
		t.Fatalf("%d locations, want 2", len(enc.Location))
	}
	if *enc.Location[0].Location.Display != "WARD1" || len(enc.Location[0].Extension) != 0 {
		t.Errorf("restored location %+v", enc.Location[0])
	}
	l := enc.Location[1]
	if *l.Location.Display != "WARD2" || len(l.Extension) != 1 || l.Extension[0].Url != nhs.JunctionExtEncounterLocationCancelled ||
		l.Extension[0].ValueBoolean == nil || !*l.Extension[0].ValueBoolean {
		t.Errorf("cancelled location %+v", l)
	}
}

func TestCancelDischargeDropsDischarge(t *testing.T) {
	visit := pv1(map[int]string{2: "I", 19: "V1", 36: "1", 37: "19", 44: "20240715093000", 45: "20240716120000"})
	for _, tt := range []struct {
		event string
		want  bool
	}{{"A03", true}, {"A13", false}} {
		b := translate(t, DefaultDialect(), hl7(msh(tt.event), pid("9990000018^^^NHS^NH", nil), visit))
		enc, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
		method := len(enc.Extension) == 1 && enc.Extension[0].Url == nhs.ExtDischargeMethod
		dest := enc.Hospitalization != nil && enc.Hospitalization.DischargeDisposition != nil
		if method != tt.want || dest != tt.want || (enc.Period.End != nil) != tt.want {
			t.Errorf("%s: discharge method %v, destination %v, end %v, want %v", tt.event, method, dest, enc.Period.End, tt.want)
		}
	}
}

func TestCancelAdmitIgnoresDiagnoses(t *testing.T) {
	raw := hl7(msh("A11"), pid("9990000018^^^NHS^NH", nil), testPV1, "DG1|1||I10^Hypertension^I10")
	b := translate(t, DefaultDialect(), raw)
	if n := len(resourcesOf(t, b, "Condition", models.UnmarshalCondition)); n != 0 {
		t.Errorf("A11 gave %d Conditions", n)
	}
	b = translate(t, DefaultDialect(), hl7(testMSH, pid("9990000018^^^NHS^NH", nil), testPV1, "DG1|1||I10^Hypertension^I10"))
	if n := len(resourcesOf(t, b, "Condition", models.UnmarshalCondition)); n != 1 {
		t.Errorf("A01 gave %d Conditions", n)
	}
}

func TestClassChangeKeepsPriorVisitNumber(t *testing.T) {
	b := translate(t, DefaultDialect(), hl7(msh("A06"), pid("9990000018^^^NHS^NH", nil), "MRG|9990000018^^^NHS||||OP1",
		pv1(map[int]string{2: "I", 19: "V1"})))
	enc, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
	if len(enc.Identifier) != 2 || *enc.Identifier[1].Value != "OP1" || enc.Identifier[1].Use.Code() != "old" || *enc.Class.Code != "IMP" {
		t.Errorf("identifiers %+v, class %v", enc.Identifier, *enc.Class.Code)
	}
}

func TestMerge(t *testing.T) {
	drop := DefaultDialect()
	drop.InvalidNHSNumber = InvalidNHSNumberDrop
	local := DefaultLocalIdentifierSystem
	tests := []struct {
		name    string
		dialect Dialect
		segs    []string
		// want lists, per Patient in bundle order: active, link type and
		// identifiers as system|value.
		want [][]string
		err  fault.Code
	}{
		{"A40", DefaultDialect(), []string{msh("A40"), pid("9990000018^^^NHS^NH", nil), "MRG|9990000026^^^NHS^NH~H9^^^RX1^MR"},
			[][]string{{"true", "replaces", nhs.SystemNHSNumber + "|9990000018"},
				{"false", "replaced-by", nhs.SystemNHSNumber + "|9990000026", local + "|H9"}}, ""},
		{"A34 MRG-4", DefaultDialect(), []string{msh("A34"), pid("H1^^^RX1^MR", nil), "MRG||||H2^^^RX1"},
			[][]string{{"true", "replaces", local + "|H1"}, {"false", "replaced-by", local + "|H2"}}, ""},
		{"invalid old NHS number kept without a system", DefaultDialect(), []string{msh("A40"), pid("9990000018^^^NHS^NH", nil), "MRG|9990000027^^^NHS^NH"},
			[][]string{{"true", "replaces", nhs.SystemNHSNumber + "|9990000018"}, {"false", "replaced-by", "|9990000027"}}, ""},
		{"invalid old NHS number dropped", drop, []string{msh("A40"), pid("9990000018^^^NHS^NH", nil), "MRG|9990000027^^^NHS^NH~H2^^^RX1"},
			[][]string{{"true", "replaces", nhs.SystemNHSNumber + "|9990000018"}, {"false", "replaced-by", local + "|H2"}}, ""},
		{"no MRG", DefaultDialect(), []string{msh("A40"), pid("9990000018^^^NHS^NH", nil)}, nil, fault.CodeHL7Required},
		{"second group without MRG", DefaultDialect(), []string{msh("A40"), pid("9990000018^^^NHS^NH", nil), "MRG|H2^^^RX1",
			pid("9990000026^^^NHS^NH", nil)}, nil, fault.CodeHL7Required},
		{"MRG without PID", DefaultDialect(), []string{msh("A40"), "MRG|H2^^^RX1"}, nil, fault.CodeHL7Required},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := NewTranslator(tt.dialect)
			if err != nil {
				t.Fatal(err)
			}
			tl, err := tr.Translate(testEnvelope("merge", hl7(tt.segs...)))
			if tt.err != "" {
				if fault.CodeOf(err) != tt.err {
					t.Fatalf("error %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := models.UnmarshalBundle(tl.Bundle)
			pats := resourcesOf(t, &b, "Patient", models.UnmarshalPatient)
			var got [][]string
			urls := map[string]string{}
			for i, e := range b.Entry {
				if rt, _ := fhir.ResourceType(e.Resource); rt == "Patient" {
					urls[*pats[len(urls)].Id] = *b.Entry[i].FullUrl
				}
			}
			for _, p := range pats {
				row := []string{"nil", ""}
				if p.Active != nil {
					row[0] = map[bool]string{true: "true", false: "false"}[*p.Active]
				}
				if len(p.Link) == 1 {
					row[1] = p.Link[0].Type.Code()
				}
				for _, id := range p.Identifier {
					row = append(row, deref(id.System)+"|"+*id.Value)
				}
				got = append(got, row)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("patients (-want +got):\n%s", diff)
			}
			// The links point at each other.
			if len(pats) == 2 {
				if *pats[0].Link[0].Other.Reference != urls[*pats[1].Id] || *pats[1].Link[0].Other.Reference != urls[*pats[0].Id] {
					t.Error("merge links do not point at each other")
				}
			}
			if _, ok := resourceOf(t, &b, "Encounter", models.UnmarshalEncounter); ok {
				t.Error("a merge made an Encounter")
			}
		})
	}
}

func TestPatientDemographics(t *testing.T) {
	tests := []struct {
		name   string
		fields map[int]string
		check  func(t *testing.T, p models.Patient)
	}{
		// UK Core binds Patient.communication.language (required) to
		// all languages: BCP 47 tags.
		{"language ISO 639-1", map[int]string{15: "EN^English"}, func(t *testing.T, p models.Patient) {
			if len(p.Communication) != 1 || *p.Communication[0].Language.Coding[0].Code != "en" ||
				*p.Communication[0].Language.Coding[0].System != "urn:ietf:bcp:47" || *p.Communication[0].Language.Text != "English" {
				t.Errorf("communication %+v", p.Communication)
			}
		}},
		{"sign language", map[int]string{15: "q4"}, func(t *testing.T, p models.Patient) {
			if len(p.Communication) != 1 || *p.Communication[0].Language.Coding[0].Code != "bfi" ||
				*p.Communication[0].Language.Coding[0].System != "urn:ietf:bcp:47" {
				t.Errorf("communication %+v", p.Communication)
			}
		}},
		{"Braille, which no language tag names", map[int]string{15: "q1"}, func(t *testing.T, p models.Patient) {
			if len(p.Communication) != 1 || *p.Communication[0].Language.Coding[0].Code != "und" || *p.Communication[0].Language.Text != "Braille" {
				t.Errorf("communication %+v", p.Communication)
			}
		}},
		{"local language code", map[int]string{15: "ENG"}, func(t *testing.T, p models.Patient) {
			if len(p.Communication) != 1 || *p.Communication[0].Language.Coding[0].Code != "und" || *p.Communication[0].Language.Text != "eng" {
				t.Errorf("communication %+v", p.Communication)
			}
		}},
		{"married", map[int]string{16: "M"}, func(t *testing.T, p models.Patient) {
			if c := p.MaritalStatus.Coding[0]; *c.System != systemMaritalStatus || *c.Code != "M" {
				t.Errorf("marital status %+v", c)
			}
		}},
		{"separated", map[int]string{16: "A"}, func(t *testing.T, p models.Patient) {
			if c := p.MaritalStatus.Coding[0]; *c.Code != "L" {
				t.Errorf("marital status %+v", c)
			}
		}},
		{"marital unknown", map[int]string{16: "U"}, func(t *testing.T, p models.Patient) {
			if c := p.MaritalStatus.Coding[0]; *c.System != systemNullFlavor || *c.Code != "UNK" {
				t.Errorf("marital status %+v", c)
			}
		}},
		{"marital local", map[int]string{16: "Q"}, func(t *testing.T, p models.Patient) {
			if p.MaritalStatus != nil {
				t.Errorf("marital status %+v", p.MaritalStatus)
			}
		}},
		{"ethnic category", map[int]string{22: "N^Black African"}, func(t *testing.T, p models.Patient) {
			if len(p.Extension) != 1 || p.Extension[0].Url != nhs.ExtEthnicCategory ||
				*p.Extension[0].ValueCodeableConcept.Coding[0].Code != "N" ||
				*p.Extension[0].ValueCodeableConcept.Coding[0].System != nhs.CodeSystemEthnicCategoryEngland {
				t.Errorf("extensions %+v", p.Extension)
			}
		}},
		{"ethnic not known", map[int]string{22: "99"}, func(t *testing.T, p models.Patient) {
			if len(p.Extension) != 1 || *p.Extension[0].ValueCodeableConcept.Coding[0].Code != "99" {
				t.Errorf("extensions %+v", p.Extension)
			}
		}},
		{"ethnic unknown code", map[int]string{22: "2186-5"}, func(t *testing.T, p models.Patient) {
			if len(p.Extension) != 0 {
				t.Errorf("extensions %+v", p.Extension)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := translate(t, DefaultDialect(), hl7(testMSH, pid("9990000018^^^NHS", tt.fields), testPV1))
			p, _ := resourceOf(t, b, "Patient", models.UnmarshalPatient)
			tt.check(t, p)
			checkBundle(t, mustMarshal(t, b))
		})
	}
}

func mustMarshal(t *testing.T, b *models.Bundle) []byte {
	t.Helper()
	raw, err := fhir.MarshalResource(*b)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestSexCodeTable(t *testing.T) {
	d := DefaultDialect()
	d.SexCodes["I"] = "other"
	d.SexCodes["X"] = "other" // override a default
	tests := []struct{ code, want string }{{"I", "other"}, {"x", "other"}, {"1", "male"}, {"Z", ""}}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			if got := translatedGender(t, d, "H1", tt.code); got != tt.want {
				t.Errorf("gender(%q) = %q, want %q", tt.code, got, tt.want)
			}
		})
	}
	tr, err := NewTranslator(d)
	if err != nil {
		t.Fatal(err)
	}
	d.SexCodes["Z"] = "male"
	tl, _ := tr.Translate(testEnvelope("sex", hl7(testMSH, pid("H1", map[int]string{8: "Z"}), testPV1)))
	if p, _ := fhir.FindResources(tl.Bundle, "Patient"); strings.Contains(string(p[0]), `"gender"`) {
		t.Error("changing the caller's sex code table changed the translator")
	}
}

func TestRegisteredGP(t *testing.T) {
	tests := []struct {
		name     string
		pd1      string
		org      string // system|value or |name
		gpSystem string
	}{
		{"XON-10 and GMP code", "PD1|||THE SURGERY^^^^^^^^^Y99999|G9999991^TESTGP^MORGAN", nhs.SystemODSOrganization + "|Y99999", nhs.SystemGMP},
		{"XON-3", "PD1|||THE SURGERY^^Y99999|G9999991^TESTGP", nhs.SystemODSOrganization + "|Y99999", nhs.SystemGMP},
		{"bare ODS code", "PD1|||Y99999|12345^TESTGP^^^^^^^SDS", nhs.SystemODSOrganization + "|Y99999", nhs.SystemSDSUserID},
		{"local GP code", "PD1|||Y99999|LOCAL1^TESTGP", nhs.SystemODSOrganization + "|Y99999", ""},
		{"name only", "PD1|||The Surgery", "|The Surgery", "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := translate(t, DefaultDialect(), hl7(testMSH, pid("9990000018^^^NHS", nil), tt.pd1, testPV1))
			p, _ := resourceOf(t, b, "Patient", models.UnmarshalPatient)
			orgs := resourcesOf(t, b, "Organization", models.UnmarshalOrganization)
			if len(orgs) != 1 {
				t.Fatalf("%d Organizations", len(orgs))
			}
			got := "|" + deref(orgs[0].Name)
			if len(orgs[0].Identifier) > 0 {
				got = deref(orgs[0].Identifier[0].System) + "|" + *orgs[0].Identifier[0].Value
			}
			if got != tt.org {
				t.Errorf("organization %q, want %q", got, tt.org)
			}
			gps := resourcesOf(t, b, "Practitioner", models.UnmarshalPractitioner)
			wantRefs := 2
			if tt.gpSystem == "-" {
				wantRefs = 1
			} else if len(gps) != 1 || deref(gps[0].Identifier[0].System) != tt.gpSystem {
				t.Errorf("GP %+v, want system %q", gps, tt.gpSystem)
			}
			if len(p.GeneralPractitioner) != wantRefs {
				t.Errorf("generalPractitioner %+v", p.GeneralPractitioner)
			}
		})
	}
}

// TestUnescapedAmpersandInText: an "&" a feed did not escape in a text
// of a primitive type (a CE's text, a practice name, a location's
// description) is kept, not read as a subcomponent separator that cuts
// the text: an allergy to "Penicillin & amoxicillin" is not one to
// penicillin alone.
func TestUnescapedAmpersandInText(t *testing.T) {
	b := translate(t, DefaultDialect(), hl7(msh("A01"), pid("9990000018^^^NHS", nil),
		"PD1|||SMITH & JONES SURGERY^^Y99999",
		pv1(map[int]string{2: "E", 3: "AE^CUB4^^^^^^^A&E Department", 19: "V1", 10: "180^A&E"}),
		"NK1|1|TESTKIN^SAM|XXX^Aunt & carer",
		"AL1|1|DA|^Penicillin & amoxicillin|SV|Rash & itching",
		"DG1|1||S52.6^Fracture of ulna & radius^I10",
		"DG1|2||LOCAL1^^99LOC|Cuts & bruises"))
	var got []string
	for _, r := range resourcesOf(t, b, "RelatedPerson", models.UnmarshalRelatedPerson) {
		got = append(got, deref(r.Relationship[0].Text))
	}
	for _, a := range resourcesOf(t, b, "AllergyIntolerance", models.UnmarshalAllergyIntolerance) {
		got = append(got, deref(a.Code.Text), deref(a.Reaction[0].Manifestation[0].Text))
	}
	for _, c := range resourcesOf(t, b, "Condition", models.UnmarshalCondition) {
		got = append(got, deref(c.Code.Text))
		if len(c.Code.Coding) > 0 {
			got = append(got, deref(c.Code.Coding[0].Display))
		}
	}
	for _, o := range resourcesOf(t, b, "Organization", models.UnmarshalOrganization) {
		got = append(got, deref(o.Name))
	}
	enc, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
	got = append(got, deref(enc.Location[0].Location.Display), deref(enc.ServiceType.Text))
	want := []string{"Aunt & carer", "Penicillin & amoxicillin", "Rash & itching", "Fracture of ulna & radius", "Fracture of ulna & radius",
		"Cuts & bruises", "SMITH & JONES SURGERY", "A&E Department, CUB4", "180 A&E"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("texts (-want +got):\n%s", diff)
	}
}

// TestPointOfCareAmpersand: before v2.7 a point of care, room and bed
// are IS codes, so an unescaped "&" is part of the code ("A&E"); from
// v2.7 they are HD, whose first subcomponent is the code.
func TestPointOfCareAmpersand(t *testing.T) {
	tests := []struct {
		version, pl, name, code string
	}{
		{"2.4", "A&E^CUB4", "A&E, CUB4", "A&E/CUB4"},
		{"2.5.1", "A&E", "A&E", "A&E"},
		{"2.7", "A&E", "A", "A"},
		{"2.8", "WARD7&2.16.840.1.113883.2.1.3.2&ISO^ROOM1", "WARD7, ROOM1", "WARD7/ROOM1"},
	}
	d := DefaultDialect()
	d.LocationIdentifierSystem = "https://fhir.example-trust.nhs.uk/Id/location"
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			b := translate(t, d, hl7(strings.Replace(testMSH, "|P|2.4", "|P|"+tt.version, 1), pid("9990000018^^^NHS", nil),
				pv1(map[int]string{2: "E", 3: tt.pl, 19: "V1"})))
			locs := resourcesOf(t, b, "Location", models.UnmarshalLocation)
			if len(locs) != 1 || deref(locs[0].Name) != tt.name || len(locs[0].Identifier) != 1 || deref(locs[0].Identifier[0].Value) != tt.code {
				t.Errorf("locations %+v, want name %q and code %q", locs, tt.name, tt.code)
			}
		})
	}
}

func TestParticipants(t *testing.T) {
	doc := "C1^TESTCONSULTANT^ALEX^^^DR"
	b := translate(t, DefaultDialect(), hl7(testMSH, pid("9990000018^^^NHS", nil),
		pv1(map[int]string{2: "I", 19: "V1", 7: doc, 8: "G9999991^TESTGP", 9: "9999997^TESTDOCTOR^^^^^^^GMC~LOCAL9^TESTJUNIOR", 17: doc})))
	enc, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
	var roles []string
	for _, p := range enc.Participant {
		roles = append(roles, *p.Type[0].Coding[0].Code)
	}
	if diff := cmp.Diff([]string{"ATND", "REF", "CON", "CON", "ADM"}, roles); diff != "" {
		t.Errorf("participant roles (-want +got):\n%s", diff)
	}
	if *enc.Participant[0].Individual.Reference != *enc.Participant[4].Individual.Reference {
		t.Error("the same doctor as attender and admitter is two resources")
	}
	if n := len(resourcesOf(t, b, "Practitioner", models.UnmarshalPractitioner)); n != 4 {
		t.Errorf("%d Practitioners, want 4", n)
	}
}

func TestHospitalization(t *testing.T) {
	b := translate(t, DefaultDialect(), hl7(msh("A03"), pid("9990000018^^^NHS", nil),
		pv1(map[int]string{2: "I", 19: "V1", 4: "21", 14: "51", 36: "4", 37: "79", 45: "20240716120000"})))
	enc, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
	h := enc.Hospitalization
	if h == nil || len(h.Extension) != 1 || h.Extension[0].Url != nhs.ExtAdmissionMethod ||
		*h.Extension[0].ValueCodeableConcept.Coding[0].Code != "21" ||
		*h.AdmitSource.Coding[0].System != nhs.CodeSystemSourceOfAdmissionEngland ||
		*h.DischargeDisposition.Coding[0].Code != "79" {
		t.Fatalf("hospitalization %+v", h)
	}
	if len(enc.Extension) != 1 || *enc.Extension[0].ValueCodeableConcept.Coding[0].Code != "4" {
		t.Errorf("discharge method %+v", enc.Extension)
	}
	// Local codes are kept as text; a two-digit PV1-36 is a destination.
	b = translate(t, DefaultDialect(), hl7(msh("A03"), pid("9990000018^^^NHS", nil),
		pv1(map[int]string{2: "I", 19: "V1", 4: "E", 14: "GP", 36: "19"})))
	enc, _ = resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
	h = enc.Hospitalization
	if h == nil || h.Extension != nil || *h.AdmitSource.Text != "GP" || *h.DischargeDisposition.Coding[0].Code != "19" || enc.Extension != nil {
		t.Errorf("hospitalization %+v, extensions %+v", h, enc.Extension)
	}
}

func TestClinicalSegments(t *testing.T) {
	b := translate(t, DefaultDialect(), hl7(testMSH, pid("9990000018^^^NHS", nil),
		"NK1|1|TESTMOTHER^JO|MTH^Mother||01234^PRN||N",
		"NK1|2|||",
		testPV1,
		"AL1|1|DA|372687004^Amoxicillin^SCT|SV|Hives",
		"AL1|2|MC|^Latex|U",
		"AL1|3|DA|",
		"DG1|1||I10^Essential hypertension^I10||20240101|F",
		"DG1|2||K359^Appendicitis^ICD10",
		"DG1|3||22298006^Myocardial infarction^SCT",
		"DG1|4||LOC1^^99LOCAL|Local thing",
		"DG1|5||"))
	rps := resourcesOf(t, b, "RelatedPerson", models.UnmarshalRelatedPerson)
	if len(rps) != 1 || *rps[0].Relationship[0].Coding[0].Code != "MTH" || *rps[0].Relationship[1].Coding[0].Code != "N" ||
		*rps[0].Name[0].Family != "TESTMOTHER" || *rps[0].Telecom[0].Value != "01234" {
		t.Errorf("related persons %+v", rps)
	}
	als := resourcesOf(t, b, "AllergyIntolerance", models.UnmarshalAllergyIntolerance)
	if len(als) != 2 {
		t.Fatalf("%d AllergyIntolerances, want 2", len(als))
	}
	if als[0].Category[0].Code() != "medication" || als[0].Criticality.Code() != "high" || als[0].Reaction[0].Severity.Code() != "severe" ||
		*als[0].Code.Coding[0].System != systemSNOMED {
		t.Errorf("allergy 1 %+v", als[0])
	}
	if als[1].Type != nil || als[1].Category != nil || als[1].Criticality.Code() != "unable-to-assess" || als[1].Reaction != nil || *als[1].Code.Text != "Latex" {
		t.Errorf("allergy 2 %+v", als[1])
	}
	conds := resourcesOf(t, b, "Condition", models.UnmarshalCondition)
	var codes []string
	for _, c := range conds {
		s := "text:" + deref(c.Code.Text)
		if len(c.Code.Coding) > 0 {
			s = *c.Code.Coding[0].System + "|" + *c.Code.Coding[0].Code
		}
		codes = append(codes, s)
		if c.Encounter == nil || *c.Category[0].Coding[0].Code != "encounter-diagnosis" {
			t.Errorf("condition %+v", c)
		}
	}
	want := []string{systemICD10 + "|I10", systemICD10 + "|K35.9", systemSNOMED + "|22298006", "text:Local thing"}
	if diff := cmp.Diff(want, codes); diff != "" {
		t.Errorf("condition codes (-want +got):\n%s", diff)
	}
	if *conds[0].OnsetDateTime != "2024-01-01" || *conds[0].VerificationStatus.Coding[0].Code != "confirmed" {
		t.Errorf("condition 1 %+v", conds[0])
	}
	checkBundle(t, mustMarshal(t, b))
}

func TestProvenance(t *testing.T) {
	tests := []struct {
		name    string
		msh     string
		whoType string
		what    string
	}{
		{"ODS sender", testMSH, "Organization", "urn:hl7v2:PAS:RX1|CTRL1"},
		{"local sender", strings.Replace(testMSH, "|RX1|EPR", "|Riverside|EPR", 1), "Device", "urn:hl7v2:PAS:Riverside|CTRL1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := translate(t, DefaultDialect(), hl7(tt.msh, pid("9990000018^^^NHS", nil), testPV1))
			p, ok := resourceOf(t, b, "Provenance", models.UnmarshalProvenance)
			if !ok {
				t.Fatal("no Provenance")
			}
			if p.Recorded != *b.Timestamp || p.Recorded != "2024-07-15T09:35:12+01:00" {
				t.Errorf("recorded %q, timestamp %q", p.Recorded, *b.Timestamp)
			}
			if *p.Agent[0].Who.Type != tt.whoType {
				t.Errorf("agent %+v", p.Agent[0].Who)
			}
			e := p.Entity[0]
			if got := *e.What.Identifier.System + "|" + *e.What.Identifier.Value; got != tt.what || e.Role.Code() != "source" {
				t.Errorf("entity %s %s", got, e.Role.Code())
			}
			if len(p.Target) != len(b.Entry)-2 {
				t.Errorf("%d targets for %d entries", len(p.Target), len(b.Entry))
			}
		})
	}
}

// TestSummerTime checks that local times without an offset get the
// offset in force at that time in the dialect's zone: +01:00 in British
// Summer Time, +00:00 in winter, and that another zone is honoured.
func TestSummerTime(t *testing.T) {
	utc := DefaultDialect()
	utc.TimeZone = "UTC"
	tests := []struct {
		name    string
		dialect Dialect
		admit   string
		want    string
	}{
		{"BST", DefaultDialect(), "20240715093000", "2024-07-15T09:30:00+01:00"},
		{"GMT", DefaultDialect(), "20240115093000", "2024-01-15T09:30:00+00:00"},
		{"last GMT minute", DefaultDialect(), "202403310059", "2024-03-31T00:59:00+00:00"},
		{"first BST minute", DefaultDialect(), "202403310200", "2024-03-31T02:00:00+01:00"},
		{"explicit offset wins", DefaultDialect(), "20240715093000+0000", "2024-07-15T09:30:00+00:00"},
		{"UTC feed", utc, "20240715093000", "2024-07-15T09:30:00+00:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := translate(t, tt.dialect, hl7(testMSH, pid("H1", nil), pv1(map[int]string{2: "I", 19: "V1", 44: tt.admit})))
			enc, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
			if got := *enc.Period.Start; got != tt.want {
				t.Errorf("period.start %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLocationCode(t *testing.T) {
	tests := []struct {
		pointOfCare, room, bed string
		want                   string
	}{
		{"WARD7", "ROOM1", "BED4", "WARD7/ROOM1/BED4"},
		{"WARD7", "", "BED4", "WARD7//BED4"},
		{"WARD7", "ROOM1", "", "WARD7/ROOM1"},
		{"WARD7", "", "", "WARD7"},
		{"", "ROOM1", "", "/ROOM1"},
		{"", "", "BED4", "//BED4"},
		{"", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := locationCode(tt.pointOfCare, tt.room, tt.bed); got != tt.want {
				t.Errorf("locationCode(%q, %q, %q) = %q, want %q", tt.pointOfCare, tt.room, tt.bed, got, tt.want)
			}
		})
	}
}

func TestLocationIdentifier(t *testing.T) {
	const system = "https://fhir.example-trust.nhs.uk/Id/location"
	withSystem := DefaultDialect()
	withSystem.LocationIdentifierSystem = system
	tests := []struct {
		name    string
		dialect Dialect
		event   string
		pv1     map[int]string
		want    []string // "system|value" of each Location, in order; "-" for none
	}{
		{"no system configured", DefaultDialect(), "A01", map[int]string{3: "WARD7^ROOM1^BED4^RX1"}, []string{"-"}},
		{"bed", withSystem, "A01", map[int]string{3: "WARD7^ROOM1^BED4^RX1"}, []string{system + "|WARD7/ROOM1/BED4"}},
		{"bed without room", withSystem, "A01", map[int]string{3: "WARD7^^BED4"}, []string{system + "|WARD7//BED4"}},
		{"ward", withSystem, "A01", map[int]string{3: "WARD7^^^RX1"}, []string{system + "|WARD7"}},
		{"description only", withSystem, "A01", map[int]string{3: "^^^RX1^^^^^Day surgery lounge"}, []string{"-"}},
		{"ods site facility is not the identifier", withSystem, "A01", map[int]string{3: "WARD7^^^RX1AB"}, []string{system + "|WARD7"}},
		{"transfer", withSystem, "A02", map[int]string{3: "WARD9^ROOM2^BED1^RX1", 6: "WARD7^ROOM1^BED4^RX1"},
			[]string{system + "|WARD9/ROOM2/BED1", system + "|WARD7/ROOM1/BED4"}},
		{"cancelled transfer", withSystem, "A12", map[int]string{3: "WARD1", 6: "WARD2"}, []string{system + "|WARD1", system + "|WARD2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields := map[int]string{2: "I", 19: "V1"}
			for k, v := range tt.pv1 {
				fields[k] = v
			}
			b := translate(t, tt.dialect, hl7(msh(tt.event), pid("9990000018^^^NHS^NH", nil), pv1(fields)))
			var got []string
			for _, l := range resourcesOf(t, b, "Location", models.UnmarshalLocation) {
				s := "-"
				switch len(l.Identifier) {
				case 0:
				case 1:
					s = deref(l.Identifier[0].System) + "|" + deref(l.Identifier[0].Value)
				default:
					t.Errorf("Location %s has %d identifiers, want at most 1", deref(l.Name), len(l.Identifier))
				}
				got = append(got, s)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Location identifiers (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLocationName checks the names Locations get: the codes, or the
// description with the room and bed codes it does not name, so a move
// between beds of one described ward still says which.
func TestLocationName(t *testing.T) {
	tests := []struct {
		name, pl, want string
	}{
		{"codes", "WARD7^ROOM1^BED4^RX1", "WARD7, ROOM1, BED4"},
		{"description of the ward", "WD07^B02^BED05^RX1^^^^^Ward 7 Elderly Care", "Ward 7 Elderly Care, B02, BED05"},
		{"description naming room and bed", "ED^MAJORS^CUBICLE4^RX1^^^^^Emergency Department Majors Cubicle 4", "Emergency Department Majors Cubicle 4"},
		{"description naming the room", "WARD7^ROOM1^^RX1^^^^^Ward 7 side room 1", "Ward 7 side room 1"},
		{"description alone", "^^^RX1^^^^^Day surgery lounge", "Day surgery lounge"},
		{"codes inside a word are not named", "W12^1^2^RX1^^^^^Ward 12", "Ward 12, 1, 2"},
		{"a letter is not named by a word holding it", "W7^A^^RX1^^^^^Ward 7 Elderly Care", "Ward 7 Elderly Care, A"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := translate(t, DefaultDialect(), hl7(msh("A01"), pid("9990000018^^^NHS^NH", nil), pv1(map[int]string{2: "I", 3: tt.pl, 19: "V1"})))
			locs := resourcesOf(t, b, "Location", models.UnmarshalLocation)
			if len(locs) != 1 || deref(locs[0].Name) != tt.want {
				var names []string
				for _, l := range locs {
					names = append(names, deref(l.Name))
				}
				t.Errorf("Location names %q, want [%q]", names, tt.want)
			}
		})
	}
}

// TestAdmitReason: PV2-3 becomes the Encounter's reasonCode, coded when
// its coding system is known, else as text.
func TestAdmitReason(t *testing.T) {
	for _, tc := range []struct {
		name, pv2 string
		want      []string // system|code|text of each reason
	}{
		{"text only", "PV2|||^Chest pain", []string{"||Chest pain"}},
		{"coded", "PV2|||R074^Chest pain, unspecified^I10", []string{"http://hl7.org/fhir/sid/icd-10|R07.4|Chest pain, unspecified"}},
		{"none", "PV2||||||||20240720", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := translate(t, DefaultDialect(), hl7(testMSH, pid("9990000018^^^NHS^NH", nil), testPV1, tc.pv2))
			enc, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
			var got []string
			for _, r := range enc.ReasonCode {
				sys, code := "", ""
				if len(r.Coding) > 0 {
					sys, code = deref(r.Coding[0].System), deref(r.Coding[0].Code)
				}
				text := deref(r.Text)
				if text == "" && len(r.Coding) > 0 {
					text = deref(r.Coding[0].Display)
				}
				got = append(got, sys+"|"+code+"|"+text)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("reasonCode (-want +got):\n%s", diff)
			}
		})
	}
}

// TestUpdateWithoutVisitNumber checks that an A08 whose PV1 has no visit
// number makes no Encounter (no receiver could find the visit it updates,
// so each update would make a new one) and says so, while one with a
// visit number updates its Encounter.
func TestUpdateWithoutVisitNumber(t *testing.T) {
	tests := []struct {
		name      string
		pv1       map[int]string
		encounter bool
		dq        []string
	}{
		{"visit number", map[int]string{2: "I", 19: "V1"}, true, nil},
		{"inpatient without one", map[int]string{2: "I", 3: "WARD7"}, false, []string{DQVisitNumberMissing}},
		{"no visit", map[int]string{2: "N"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := NewTranslator(DefaultDialect())
			if err != nil {
				t.Fatal(err)
			}
			tl, err := tr.Translate(testEnvelope("a08", hl7(msh("A08"), pid("9990000018^^^NHS^NH", nil), pv1(tt.pv1))))
			if err != nil {
				t.Fatal(err)
			}
			encs, err := fhir.FindResources(tl.Bundle, "Encounter")
			if err != nil || (len(encs) == 1) != tt.encounter || len(encs) > 1 {
				t.Errorf("%d Encounters (%v), want one: %v", len(encs), err, tt.encounter)
			}
			if diff := cmp.Diff(tt.dq, tl.DataQuality); diff != "" {
				t.Errorf("data quality (-want +got):\n%s", diff)
			}
		})
	}
}

// TestExistingVisitWithoutVisitNumber checks that an event changing a
// visit already begun (a transfer, a leave, a cancel) makes no Encounter
// when PV1 has no visit number, since no receiver could find the visit
// it changes: the Encounter would be a phantom second admission, or a
// stray cancelled one beside the real visit still active. It is flagged,
// the MessageHeader's focus is the Patient, and an event beginning a
// visit still makes its Encounter.
func TestExistingVisitWithoutVisitNumber(t *testing.T) {
	noNumber := map[int]string{2: "I", 3: "WARD1^^^RX1", 6: "WARD2^^^RX1", 44: "20240715093000"}
	tests := []struct {
		event     string
		encounter bool
	}{
		{"A02", false}, {"A11", false}, {"A12", false}, {"A13", false},
		{"A21", false}, {"A22", false}, {"A38", false},
		{"A01", true}, {"A04", true}, {"A05", true},
	}
	for _, tt := range tests {
		t.Run(tt.event, func(t *testing.T) {
			tr, err := NewTranslator(DefaultDialect())
			if err != nil {
				t.Fatal(err)
			}
			tl, err := tr.Translate(testEnvelope("m", hl7(msh(tt.event), pid("9990000018^^^NHS^NH", nil), pv1(noNumber))))
			if err != nil {
				t.Fatal(err)
			}
			encs, err := fhir.FindResources(tl.Bundle, "Encounter")
			if err != nil || len(encs) > 1 || (len(encs) == 1) != tt.encounter {
				t.Errorf("%d Encounters (%v), want one: %v", len(encs), err, tt.encounter)
			}
			if !slices.Contains(tl.DataQuality, DQVisitNumberMissing) {
				t.Errorf("data quality %v lacks %s", tl.DataQuality, DQVisitNumberMissing)
			}
			var b struct {
				Entry []struct {
					Resource struct {
						ResourceType string `json:"resourceType"`
						Focus        []struct {
							Type string `json:"type"`
						} `json:"focus"`
					} `json:"resource"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(tl.Bundle, &b); err != nil {
				t.Fatal(err)
			}
			want := "Patient"
			if tt.encounter {
				want = "Encounter"
			}
			if len(b.Entry) == 0 || b.Entry[0].Resource.ResourceType != "MessageHeader" || len(b.Entry[0].Resource.Focus) != 1 || b.Entry[0].Resource.Focus[0].Type != want {
				t.Errorf("MessageHeader focus %+v, want one %s", b.Entry, want)
			}
		})
	}
}

// TestRecordIdentifiers checks that the records made from NK1, AL1 and
// DG1 carry identifiers that name the same record in every message that
// repeats it (so a FHIR store updates it, not writes another), and
// different records apart.
func TestRecordIdentifiers(t *testing.T) {
	ids := func(t *testing.T, patientIDs, pv1Visit string, segs ...string) map[string][]string {
		t.Helper()
		msg := append([]string{msh("A08"), pid(patientIDs, nil)}, segs...)
		msg = append(msg, pv1(map[int]string{2: "I", 19: pv1Visit}))
		// PV1 first, as a message has it: the diagnosis names its visit.
		msg[2], msg[len(msg)-1] = msg[len(msg)-1], msg[2]
		b := translate(t, DefaultDialect(), hl7(msg...))
		out := map[string][]string{}
		for _, e := range b.Entry {
			var head struct {
				ResourceType string
				Identifier   []struct{ System, Value string }
			}
			if err := json.Unmarshal(e.Resource, &head); err != nil {
				t.Fatal(err)
			}
			switch kind := head.ResourceType; kind {
			case "RelatedPerson", "AllergyIntolerance", "Condition":
				if len(head.Identifier) != 1 || !strings.HasPrefix(head.Identifier[0].System, recordIdentifierSystem) {
					t.Fatalf("%s identifiers %+v, want one of Junction's", kind, head.Identifier)
				}
				out[kind] = append(out[kind], head.Identifier[0].Value)
			}
		}
		return out
	}
	const nk1, al1, dg1 = "NK1|1|TESTKIN^SAM|SPO", "AL1|1|DA|PEN^Penicillin^L", "DG1|1||I10^Hypertension^I10"
	first := ids(t, "9990000018^^^NHS^NH", "V1", nk1, al1, dg1)
	if len(first["RelatedPerson"]) != 1 || len(first["AllergyIntolerance"]) != 1 || len(first["Condition"]) != 1 {
		t.Fatalf("records %v, want one of each", first)
	}
	if again := ids(t, "9990000018^^^NHS^NH", "V1", nk1, al1, dg1); !maps.EqualFunc(first, again, slices.Equal) {
		t.Errorf("the same records named differently in a second message: %v, then %v", first, again)
	}
	other := ids(t, "9990000018^^^NHS^NH", "V2", "NK1|1|TESTKIN^ROBIN|SPO", "AL1|1|DA|LATEX^Latex^L", dg1)
	for kind, v := range other {
		if slices.Equal(v, first[kind]) {
			t.Errorf("another %s (or the diagnosis at another visit) has the same identifier %v", kind, v)
		}
	}
	if otherPatient := ids(t, "9990000026^^^NHS^NH", "V1", nk1, al1, dg1); slices.Equal(otherPatient["AllergyIntolerance"], first["AllergyIntolerance"]) {
		t.Error("another patient's allergy has the same identifier")
	}
	// Keyed by the hospital number while there is one: an NHS number
	// found later (a trace) renames nothing.
	if mrnOnly, traced := ids(t, "H123^^^RX1^MR", "V1", al1), ids(t, "H123^^^RX1^MR~9990000018^^^NHS^NH", "V1", al1); !slices.Equal(mrnOnly["AllergyIntolerance"], traced["AllergyIntolerance"]) {
		t.Errorf("allergy before and after the NHS number came: %v, then %v", mrnOnly, traced)
	}
	// Two trusts' hospital numbers of one value are two patients.
	rx1, rx2 := ids(t, "H123^^^RX1^MR", "V1", al1), ids(t, "H123^^^RX2^MR", "V1", al1)
	if len(rx1["AllergyIntolerance"]) != 1 || slices.Equal(rx1["AllergyIntolerance"], rx2["AllergyIntolerance"]) {
		t.Errorf("hospital number H123 of RX1 and of RX2: allergies %v and %v, want one each, different", rx1, rx2)
	}
	// A record named twice in a message (an admitting and a final
	// diagnosis of one code) stays two records, named the same way in
	// the next message.
	twice := ids(t, "9990000018^^^NHS^NH", "V1", "DG1|1||I10^Hypertension^I10||||A", "DG1|2||I10^Hypertension^I10||||F")
	if d := twice["Condition"]; len(d) != 2 || d[0] == d[1] || d[0] != first["Condition"][0] {
		t.Errorf("diagnoses named twice: %v; want two identifiers, the first as when named once (%v)", d, first["Condition"])
	}
	if again := ids(t, "9990000018^^^NHS^NH", "V1", "DG1|1||I10^Hypertension^I10||||A", "DG1|2||I10^Hypertension^I10||||F"); !slices.Equal(again["Condition"], twice["Condition"]) {
		t.Errorf("diagnoses named twice, again: %v, then %v", twice["Condition"], again["Condition"])
	}
}

// TestAdmissionType checks PV1-4: an NHS admission method goes in UK
// Core's extension, an HL7 table 0007 admission type or any other code
// in Encounter.type, so none is dropped.
func TestAdmissionType(t *testing.T) {
	tests := []struct {
		code, wantType string // wantType: system|code, or |text; "" for none
		method         bool
	}{
		{"21", "", true},
		{"E", systemV2AdmissionType + "|E", false},
		{"c", systemV2AdmissionType + "|C", false},
		{"EL", "|EL", false},
		{"", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			b := translate(t, DefaultDialect(), hl7(msh("A01"), pid("9990000018^^^NHS^NH", nil), pv1(map[int]string{2: "I", 4: tt.code, 19: "V1"})))
			enc, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
			got := ""
			if len(enc.Type) == 1 {
				if c := enc.Type[0].Coding; len(c) == 1 {
					got = deref(c[0].System) + "|" + deref(c[0].Code)
				} else {
					got = "|" + deref(enc.Type[0].Text)
				}
			}
			if got != tt.wantType || len(enc.Type) > 1 {
				t.Errorf("type %q (%d), want %q", got, len(enc.Type), tt.wantType)
			}
			method := enc.Hospitalization != nil && len(enc.Hospitalization.Extension) == 1
			if method != tt.method {
				t.Errorf("admission method extension %v, want %v", method, tt.method)
			}
		})
	}
}

// TestPlannedDates checks that a pre-admission's expected admission and
// discharge times (PV2-8, PV2-9) reach the Encounter.
func TestPlannedDates(t *testing.T) {
	b := translate(t, DefaultDialect(), hl7(msh("A05"), pid("9990000018^^^NHS^NH", nil), pv1(map[int]string{2: "P", 19: "V1"}),
		"PV2|||^Hip replacement|||||20240901080000|20240905"))
	enc, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
	got := map[string]string{}
	for _, x := range enc.Extension {
		if x.ValueDateTime != nil {
			got[x.Url] = *x.ValueDateTime
		}
	}
	want := map[string]string{extPlannedStartDate: "2024-09-01T08:00:00+01:00", extPlannedEndDate: "2024-09-05"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("planned dates (-want +got):\n%s", diff)
	}
}

// TestHospitalService checks PV1-10: a treatment function keeps its code
// in the text, a known coding system is coded.
func TestHospitalService(t *testing.T) {
	tests := []struct{ field, want string }{
		{"300^General Medicine^NHSTF", "|300 General Medicine"},
		{"GER", "|GER"},
		{"394802001^General medicine^SCT", "http://snomed.info/sct|394802001"},
		{"", "-"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			b := translate(t, DefaultDialect(), hl7(msh("A01"), pid("9990000018^^^NHS^NH", nil), pv1(map[int]string{2: "I", 10: tt.field, 19: "V1"})))
			enc, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
			got := "-"
			if st := enc.ServiceType; st != nil {
				if len(st.Coding) == 1 {
					got = deref(st.Coding[0].System) + "|" + deref(st.Coding[0].Code)
				} else {
					got = "|" + deref(st.Text)
				}
			}
			if got != tt.want {
				t.Errorf("serviceType %q, want %q", got, tt.want)
			}
		})
	}
}
