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
// "reference" is one of dropped) from v, a JSON-shaped value: from an
// array the element goes, from an object the key. It returns v, or the
// shortened array when v is one. What points at a resource no longer
// sent would otherwise dangle (bdl-7's sibling rule for resolvable
// references in a transaction).
func DropReferences(v any, dropped map[string]bool) any {
	isDropped := func(x any) bool {
		m, ok := x.(map[string]any)
		if !ok {
			return false
		}
		ref, _ := m["reference"].(string)
		return ref != "" && dropped[ref]
	}
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if isDropped(x) {
				delete(t, k)
				continue
			}
			t[k] = DropReferences(x, dropped)
		}
		return t
	case []any:
		out := t[:0]
		for _, x := range t {
			if isDropped(x) {
				continue
			}
			out = append(out, DropReferences(x, dropped))
		}
		return out
	}
	return v
}
