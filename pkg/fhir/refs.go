package fhir

// EntryRefs returns the references by which other resources in a Bundle
// may point at the resource of entry (a Bundle entry as JSON-shaped maps):
// its fullUrl and, when the resource has an id, Type/id.
func EntryRefs(entry map[string]any) []string {
	var refs []string
	if u, _ := entry["fullUrl"].(string); u != "" {
		refs = append(refs, u)
	}
	res, _ := entry["resource"].(map[string]any)
	rt, _ := res["resourceType"].(string)
	if id, _ := res["id"].(string); rt != "" && id != "" {
		refs = append(refs, rt+"/"+id)
	}
	return refs
}

// DropReferences removes, in place, every Reference (an object whose
// "reference" is one of dropped) from v, a JSON-shaped value, as
// RewriteReferences does.
func DropReferences(v any, dropped map[string]bool) any {
	repl := make(map[string]map[string]any, len(dropped))
	for ref := range dropped {
		repl[ref] = nil
	}
	return RewriteReferences(v, repl)
}

// RewriteReferences rewrites, in place, every Reference in v (a
// JSON-shaped value) whose "reference" is a key of repl: with a non-nil
// replacement it becomes a copy of that, keeping its display; with nil it
// is removed: from an array the element, and from an object the key, or,
// when the object is an element of an array that exists for that
// reference (see elementFor: Encounter.diagnosis, an extension), the whole
// element, which without it would be incomplete or invalid (a diagnosis
// with only a rank). A resource in an array (contained) keeps its place. An array or
// object that a removal leaves empty is removed in turn, since FHIR JSON
// has no empty arrays or objects. It returns v, or the shortened array
// when v is one.
func RewriteReferences(v any, repl map[string]map[string]any) any {
	out, _, _ := rewriteRefs(v, repl)
	return out
}

// rewriteRefs is RewriteReferences, also reporting whether v is left
// empty by a removal, and whether v, an object, lost a Reference of its
// own (not one nested deeper).
func rewriteRefs(v any, repl map[string]map[string]any) (any, bool, bool) {
	switch t := v.(type) {
	case map[string]any:
		removed, cut := false, false
		for k, x := range t {
			if r, ok := replacement(x, repl); ok {
				if r == nil {
					delete(t, k)
					removed = true
					cut = cut || elementFor[k]
				} else {
					t[k] = r
				}
				continue
			}
			nx, empty, _ := rewriteRefs(x, repl)
			if empty {
				delete(t, k)
				removed = true
				continue
			}
			t[k] = nx
		}
		return t, removed && len(t) == 0, cut
	case []any:
		out := t[:0]
		removed := false
		for _, x := range t {
			if r, ok := replacement(x, repl); ok {
				if r == nil {
					removed = true
				} else {
					out = append(out, r)
				}
				continue
			}
			nx, empty, cut := rewriteRefs(x, repl)
			if empty || cut && !isResource(nx) {
				removed = true
				continue
			}
			out = append(out, nx)
		}
		return out, removed && len(out) == 0, false
	}
	return v, false, false
}

// elementFor names the keys whose Reference is what their repeating
// element is for (Encounter.diagnosis.condition, .location.location,
// .participant.individual, List.entry.item, an extension's
// valueReference, Provenance.agent.who and .entity.what, a participant's
// actor): the element goes with it. Elsewhere a Reference is a detail of
// its element (Identifier.assigner, Patient.contact.organization) and
// goes alone.
var elementFor = map[string]bool{
	"condition": true, "location": true, "individual": true, "item": true,
	"valueReference": true, "who": true, "what": true, "actor": true,
}

// isResource reports whether v is a resource (an object with a
// resourceType).
func isResource(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	_, ok = m["resourceType"]
	return ok
}

// replacement returns what Reference x becomes under repl, and whether x
// is a Reference repl names.
func replacement(x any, repl map[string]map[string]any) (map[string]any, bool) {
	m, ok := x.(map[string]any)
	if !ok {
		return nil, false
	}
	ref, _ := m["reference"].(string)
	r, found := repl[ref]
	if ref == "" || !found {
		return nil, false
	}
	if r == nil {
		return nil, true
	}
	out := make(map[string]any, len(r)+1)
	for k, v := range r {
		out[k] = v
	}
	if d, ok := m["display"]; ok {
		out["display"] = d
	}
	return out, true
}

// RefersTo reports whether v, a JSON-shaped value, holds a Reference
// whose "reference" match accepts.
func RefersTo(v any, match func(ref string) bool) bool {
	switch t := v.(type) {
	case map[string]any:
		if r, _ := t["reference"].(string); r != "" && match(r) {
			return true
		}
		for _, x := range t {
			if RefersTo(x, match) {
				return true
			}
		}
	case []any:
		for _, x := range t {
			if RefersTo(x, match) {
				return true
			}
		}
	}
	return false
}
