package rules

import (
	"encoding/json"

	"github.com/junction-fhir/junction/pkg/nhs"
)

// This file reads nhsNumber(bundle) from the plain maps and slices a
// decoded Bundle is made of, without making a CEL value of each entry,
// resource and identifier it passes (most of what a route's match
// expression allocated). It gives what patientNHSNumber gives for the
// same Bundle; a value of any other Go type makes it give up, and the
// CEL walk reads that Bundle instead.

// plainKind is how CEL sees a Go value found in a Bundle.
type plainKind int

const (
	// plainOther is a value whose CEL view plainNHSNumber does not
	// know: the caller falls back to the CEL walk.
	plainOther plainKind = iota
	// plainScalar is null, a boolean, a number or a string: never a CEL
	// map or list.
	plainScalar
	plainMap
	plainList
)

// kindOf returns v's plainKind.
func kindOf(v any) plainKind {
	switch v.(type) {
	case map[string]any:
		return plainMap
	case []any:
		return plainList
	case nil, bool, float64, string, json.Number:
		return plainScalar
	}
	return plainOther
}

// plainNHSNumber is patientNHSNumber of b, a Bundle carried depth
// Bundles down, read from its maps; ok is false when a value it reads is
// of a Go type other than those JSON decodes to.
func plainNHSNumber(b map[string]any, depth int) (n string, ok bool) {
	entries, ok := plainEntries(b)
	if !ok {
		return "", false
	}
	// Each pass reads the entries' resources as entryResources does.
	for _, e := range entries {
		r, ok := plainResource(e)
		if !ok {
			return "", false
		}
		if rt, ok := r["resourceType"].(string); ok && rt == "Patient" {
			// The first Patient, never empty, since it has a
			// resourceType.
			return plainIdentifierNHSNumber(r)
		}
		if kindOf(r["resourceType"]) == plainOther {
			return "", false
		}
	}
	if depth < maxCarriedBundles {
		for _, e := range entries {
			r, _ := plainResource(e)
			if rt, _ := r["resourceType"].(string); rt != "Bundle" {
				continue
			}
			if n, ok := plainNHSNumber(r, depth+1); !ok || n != "" {
				return n, ok
			}
		}
	}
	for _, e := range entries {
		r, _ := plainResource(e)
		for _, key := range [...]string{"subject", "patient"} {
			v, found := r[key]
			if !found {
				continue
			}
			if n, ok := plainReferenceNHSNumber(v); !ok || n != "" {
				return n, ok
			}
		}
	}
	return "", true
}

// plainAt returns m[key] when it is of kind want, or nil when it is
// missing or of another kind JSON decodes to; ok is false when it is of
// a Go type JSON does not decode to.
func plainAt(m map[string]any, key string, want plainKind) (v any, ok bool) {
	v, found := m[key]
	if !found {
		return nil, true
	}
	switch k := kindOf(v); {
	case k == plainOther:
		return nil, false
	case k != want:
		return nil, true
	}
	return v, true
}

// plainEntries returns b's entry list, or nil when it has none (or one
// that is not a list).
func plainEntries(b map[string]any) ([]any, bool) {
	v, ok := plainAt(b, "entry", plainList)
	list, _ := v.([]any)
	return list, ok
}

// plainResource returns the resource of the entry e when it is a map,
// or nil.
func plainResource(e any) (map[string]any, bool) {
	if kindOf(e) == plainOther {
		return nil, false
	}
	m, isMap := e.(map[string]any)
	if !isMap {
		return nil, true
	}
	v, ok := plainAt(m, "resource", plainMap)
	r, _ := v.(map[string]any)
	return r, ok
}

// plainIdentifierNHSNumber is identifierNHSNumber of p, a Patient.
func plainIdentifierNHSNumber(p map[string]any) (string, bool) {
	v, ok := plainAt(p, "identifier", plainList)
	ids, _ := v.([]any)
	for _, id := range ids {
		switch kindOf(id) {
		case plainOther:
			return "", false
		case plainMap:
			if n, ok := plainIdentifierValue(id.(map[string]any)); !ok || n != "" {
				return n, ok
			}
		}
	}
	return "", ok
}

// plainIdentifierValue is nhsIdentifierValue of id, an Identifier.
func plainIdentifierValue(id map[string]any) (string, bool) {
	sys, val := id["system"], id["value"]
	if kindOf(sys) == plainOther || kindOf(val) == plainOther {
		return "", false
	}
	if s, _ := sys.(string); s != nhs.SystemNHSNumber {
		return "", true
	}
	s, _ := val.(string)
	return s, true
}

// plainReferenceNHSNumber is referenceNHSNumber of v, a Reference.
func plainReferenceNHSNumber(v any) (string, bool) {
	if kindOf(v) == plainOther {
		return "", false
	}
	r, isMap := v.(map[string]any)
	if !isMap {
		return "", true
	}
	id, ok := plainAt(r, "identifier", plainMap)
	if !ok {
		return "", false
	}
	if id != nil {
		if n, ok := plainIdentifierValue(id.(map[string]any)); !ok || n != "" {
			return n, ok
		}
	}
	ref, ok := plainAt(r, "reference", plainScalar)
	if s, isString := ref.(string); isString {
		for _, n := range nhs.SearchedNumbers(s) {
			if n != "" {
				return n, true
			}
		}
	}
	return "", ok
}
