package fhir

import (
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// The models hold almost every string by pointer, and an allocation per
// pointer was a large share of translation time. These builders make
// each small value, with the strings it points to, in one allocation.

// Ptr returns a pointer to a copy of v.
func Ptr[T any](v T) *T { return &v }

// Ptr2 returns pointers to copies of a and b, made in one allocation.
func Ptr2(a, b string) (*string, *string) {
	s := &[2]string{a, b}
	return &s[0], &s[1]
}

// Ptr3 returns pointers to copies of a, b and c, made in one allocation.
func Ptr3(a, b, c string) (*string, *string, *string) {
	s := &[3]string{a, b, c}
	return &s[0], &s[1], &s[2]
}

// NonEmpty returns p, or nil when *p is empty: optional elements made
// with Ptr2 or Ptr3.
func NonEmpty(p *string) *string {
	if *p == "" {
		return nil
	}
	return p
}

// Optional returns a pointer to s, or nil when s is empty.
func Optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// MetaProfile returns a Meta naming profile, made in one allocation.
func MetaProfile(profile string) *models.Meta {
	m := &struct {
		meta    models.Meta
		profile [1]string
	}{profile: [1]string{profile}}
	m.meta.Profile = m.profile[:]
	return &m.meta
}

// Ref returns a Reference to url of type typ, its strings made in one
// allocation.
func Ref(url, typ string) models.Reference {
	u, t := Ptr2(url, typ)
	return models.Reference{Reference: u, Type: t}
}

// Concept returns a CodeableConcept of one Coding, made in one
// allocation; an empty display is left out.
func Concept(system, code, display string) *models.CodeableConcept {
	c := &struct {
		cc     models.CodeableConcept
		coding [1]models.Coding
		s      [3]string
	}{s: [3]string{system, code, display}}
	c.coding[0] = models.Coding{System: &c.s[0], Code: &c.s[1], Display: NonEmpty(&c.s[2])}
	c.cc.Coding = c.coding[:]
	return &c.cc
}

// Concepts returns a slice of one CodeableConcept of one Coding, made in
// one allocation; an empty display is left out.
func Concepts(system, code, display string) []models.CodeableConcept {
	c := &struct {
		cc     [1]models.CodeableConcept
		coding [1]models.Coding
		s      [3]string
	}{s: [3]string{system, code, display}}
	c.coding[0] = models.Coding{System: &c.s[0], Code: &c.s[1], Display: NonEmpty(&c.s[2])}
	c.cc[0].Coding = c.coding[:]
	return c.cc[:]
}

// InstantFromHL7 converts an HL7 time of at least minute precision to a
// FHIR instant (an HL7 explicit null "" or anything shorter is not one).
func InstantFromHL7(raw string, loc *time.Location) (string, bool) {
	if len(raw) < 12 {
		return "", false
	}
	ts, err := DateTimeFromHL7(raw, loc)
	if err != nil || len(ts) < len("2006-01-02T15:04:05") {
		return "", false
	}
	return ts, true
}
