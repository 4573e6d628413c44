package route

import (
	"slices"
	"strings"

	"github.com/junction-fhir/junction/pkg/consent"
)

// sentPatients returns the patients whose data sent, what a redaction or
// the route's steps made of the translation bundle, carries: those it
// names by NHS number; those of bundle's entries (entryPatients, as
// consent.EntryNHSNumbers gives them) that it still holds, known by
// fullUrl or else type and id, whatever a replace step made of them (one
// that takes the NHS number out of a Patient still sends that patient's
// name, birth date and address); those of bundle's entries it refers to
// (an Observation whose Patient a step left out still says whose it
// is); and those of bundle's Patients whose identifiers it holds (a keep
// step rewrites a reference to a dropped Patient to the Patient's first
// identifier, a local one as often as not) or, after a replace step,
// whose names, birth dates, telecoms or addresses it holds (a Patient
// rebuilt from another's fields). A replace step's result that names no
// patient and holds and refers to no entry of bundle, yet holds entries,
// counts as about all of bundle's patients (bundlePatients): Junction
// cannot tell data taken out of a patient's record and rebuilt from data
// about no one, and a disclosure left out of a patient's report is the
// worse error. Those named by NHS number come first, in
// consent.BundleNHSNumbers's order, then the others, entry by entry.
func (r *Route) sentPatients(bundle map[string]any, entryPatients [][]string, bundlePatients []string, sent map[string]any) []string {
	named := consent.BundleNHSNumbers(sent)
	if entryPatients == nil {
		return named
	}
	in, _ := bundle["entry"].([]any)
	at := indexEntries(in)
	out, _ := sent["entry"].([]any)
	replaced := slices.ContainsFunc(r.steps, func(s step) bool { return s.replace != nil })
	values := patientValues(in, replaced)
	// Those named first, then those found otherwise, entry by entry.
	lists := [][]string{named}
	carried := false
	for _, e := range out {
		if i, ok := at.find(e); ok {
			lists, carried = append(lists, entryPatients[i]), true
		}
		at.referred(e, func(i int) { lists, carried = append(lists, entryPatients[i]), true })
		if len(values) > 0 {
			eachString(e, 0, func(s string) {
				if nums, ok := values[s]; ok {
					lists = append(lists, nums)
				}
			})
		}
	}
	if !carried && len(named) == 0 && len(out) > 0 && replaced {
		return bundlePatients
	}
	return consent.JoinNHSNumbers(lists...)
}

// keptPatients returns the NHS numbers of a Bundle of the entries at
// kept of bundle, whose entries name entryPatients
// (consent.EntryNHSNumbers), as consent.BundleNHSNumbers would find
// them, with those of the entries not kept that a kept one refers to: a
// keep step leaves references by type and id, which the destination
// resolves to the patient. Only entries not kept that name a patient
// are looked for, so a step dropping a MessageHeader costs no walk.
func keptPatients(bundle map[string]any, entryPatients [][]string, kept []int) []string {
	entries, _ := bundle["entry"].([]any)
	var dropped entryIndex
	if len(kept) < len(entries) {
		isKept := make([]bool, len(entries))
		for _, k := range kept {
			isKept[k] = true
		}
		for i, e := range entries {
			if isKept[i] || len(entryPatients[i]) == 0 {
				continue
			}
			if dropped == nil {
				dropped = entryIndex{}
			}
			dropped.add(e, i)
		}
	}
	lists := make([][]string, 0, len(kept))
	for _, k := range kept {
		lists = append(lists, entryPatients[k])
		if dropped != nil {
			dropped.referred(entries[k], func(i int) { lists = append(lists, entryPatients[i]) })
		}
	}
	return consent.JoinNHSNumbers(lists...)
}

// entryIndex maps what a Bundle's entries are known by (entryIdentities)
// to their indices.
type entryIndex map[string]int

// indexEntries returns the entryIndex of entries.
func indexEntries(entries []any) entryIndex {
	at := make(entryIndex, 2*len(entries))
	for i, e := range entries {
		at.add(e, i)
	}
	return at
}

// add indexes entry e, at index i.
func (at entryIndex) add(e any, i int) {
	for _, k := range entryIdentities(e) {
		at[k] = i
	}
}

// find returns the index of the entry e is, by fullUrl or else type
// and id.
func (at entryIndex) find(e any) (int, bool) {
	for _, k := range entryIdentities(e) {
		if i, ok := at[k]; ok {
			return i, true
		}
	}
	return 0, false
}

// referred calls fn with the index of each entry that a reference in e
// names, by its fullUrl or by its type and id (relative or at the end
// of an absolute URL, a version left out).
func (at entryIndex) referred(e any, fn func(int)) {
	eachReference(e, 0, func(ref string) {
		if i, ok := at["url "+ref]; ok {
			fn(i)
			return
		}
		if j := strings.Index(ref, "/_history/"); j >= 0 {
			ref = ref[:j]
		}
		parts := strings.Split(ref, "/")
		if n := len(parts); n >= 2 {
			if i, ok := at["id "+parts[n-2]+"/"+parts[n-1]]; ok {
				fn(i)
			}
		}
	})
}

// entryIdentities returns what a Bundle entry is known by: its fullUrl,
// and its resource's type and id, when it has them.
func entryIdentities(e any) []string {
	em, _ := e.(map[string]any)
	var out []string
	if u, _ := em["fullUrl"].(string); u != "" {
		out = append(out, "url "+u)
	}
	res, _ := em["resource"].(map[string]any)
	rt, _ := res["resourceType"].(string)
	if id, _ := res["id"].(string); rt != "" && id != "" {
		out = append(out, "id "+rt+"/"+id)
	}
	return out
}

// maxWalkDepth bounds the walks of what is sent, past any real FHIR
// structure (input depth is bounded at ingress as well).
const maxWalkDepth = 64

// eachReference calls fn with every Reference.reference string in v.
func eachReference(v any, depth int, fn func(string)) {
	if depth > maxWalkDepth {
		return
	}
	switch x := v.(type) {
	case map[string]any:
		for k, child := range x {
			if s, ok := child.(string); ok && k == "reference" && s != "" && !strings.HasPrefix(s, "#") {
				fn(s)
				continue
			}
			eachReference(child, depth+1, fn)
		}
	case []any:
		for _, child := range x {
			eachReference(child, depth+1, fn)
		}
	}
}

// eachString calls fn with every string value in v.
func eachString(v any, depth int, fn func(string)) {
	if depth > maxWalkDepth {
		return
	}
	switch x := v.(type) {
	case string:
		fn(x)
	case map[string]any:
		for _, child := range x {
			eachString(child, depth+1, fn)
		}
	case []any:
		for _, child := range x {
			eachString(child, depth+1, fn)
		}
	}
}

// patientValues maps the values that identify the Patients of entries
// (entry resources, and those an entry's resource contains) that have
// NHS numbers to those NHS numbers: their identifiers' values and, when
// withDemographics is set, their names, birth dates, telecoms and addresses.
// Values shorter than two characters (an initial) are left out.
func patientValues(entries []any, withDemographics bool) map[string][]string {
	var out map[string][]string
	add := func(p map[string]any) {
		nums := consent.BundleNHSNumbers(p)
		if len(nums) == 0 {
			return
		}
		put := func(v any) {
			if s, _ := v.(string); len(s) >= 2 {
				if out == nil {
					out = map[string][]string{}
				}
				out[s] = consent.JoinNHSNumbers(out[s], nums)
			}
		}
		for _, id := range list(p["identifier"]) {
			put(id["value"])
		}
		if !withDemographics {
			return
		}
		put(p["birthDate"])
		for _, d := range demographics {
			for _, el := range list(p[d.element]) {
				for _, k := range d.values {
					put(el[k])
				}
				more, _ := el[d.list].([]any)
				for _, v := range more {
					put(v)
				}
			}
		}
	}
	for _, e := range entries {
		em, _ := e.(map[string]any)
		res, _ := em["resource"].(map[string]any)
		if res["resourceType"] == "Patient" {
			add(res)
		}
		for _, c := range list(res["contained"]) {
			if c["resourceType"] == "Patient" {
				add(c)
			}
		}
	}
	return out
}

// demographics are the elements of a Patient, besides its identifiers
// and birth date, whose values say who it is: each element's members
// holding a value, and the one holding a list of them.
var demographics = []struct {
	element string
	values  []string
	list    string
}{
	{"name", []string{"family", "text"}, "given"},
	{"telecom", []string{"value"}, ""},
	{"address", []string{"text", "postalCode"}, "line"},
}

// list returns the objects of a JSON array v.
func list(v any) []map[string]any {
	xs, _ := v.([]any)
	out := make([]map[string]any, 0, len(xs))
	for _, x := range xs {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}
