package route

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// bundleProblem says what keeps b, the result of a replace step, from
// being a FHIR Bundle a destination can take: a resourceType other than
// Bundle, an entry with neither a resource nor a request or response
// (bdl-5), a resource with no resourceType, or what FHIR JSON
// forbids (null but as an array's item, an empty string, object or
// array, a string holding a control character). It returns "" for a
// Bundle without them. The answer names the element by its path and
// never quotes a value, so it can go into a dead letter's reason.
func bundleProblem(b map[string]any) string {
	if rt, _ := b["resourceType"].(string); rt != "Bundle" {
		if rt == "" {
			return `resourceType: missing or not a string; a replace step makes a whole Bundle ("resourceType": "Bundle")`
		}
		return `resourceType: not "Bundle"; a replace step makes a whole Bundle, whose entries carry the resources`
	}
	if entries, ok := b["entry"].([]any); ok {
		for i, e := range entries {
			em, _ := e.(map[string]any)
			res, ok := em["resource"].(map[string]any)
			if _, has := em["resource"]; !has && (em["request"] != nil || em["response"] != nil) {
				// A transaction's DELETE or a batch's GET carries a
				// request alone (bdl-5).
				continue
			}
			if !ok {
				return fmt.Sprintf("entry[%d].resource: missing or not an object", i)
			}
			if rt, _ := res["resourceType"].(string); rt == "" {
				return fmt.Sprintf("entry[%d].resource.resourceType: missing or not a string", i)
			}
		}
	}
	return jsonProblem("", b)
}

// jsonProblem finds what FHIR JSON forbids in v, at path, as
// bundleProblem describes.
func jsonProblem(path string, v any) string {
	at := func(p string) string {
		if path == "" {
			return p
		}
		return path + p
	}
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			return at(": an empty object; FHIR JSON has none (leave the element out)")
		}
		// Sorted, so that the problem reported is the same each time.
		for _, k := range slices.Sorted(maps.Keys(x)) {
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			if x[k] == nil {
				return sub + ": null; FHIR JSON has none but as an array's item (leave the element out)"
			}
			if p := jsonProblem(sub, x[k]); p != "" {
				return p
			}
		}
	case []any:
		if len(x) == 0 {
			return at(": an empty array; FHIR JSON has none (leave the element out)")
		}
		for i, el := range x {
			if el == nil {
				continue // lines a repeating primitive up with its extensions
			}
			if p := jsonProblem(path+"["+strconv.Itoa(i)+"]", el); p != "" {
				return p
			}
		}
	case string:
		if x == "" {
			return at(": an empty string; FHIR JSON has none (leave the element out)")
		}
		if strings.IndexFunc(x, func(r rune) bool { return r < 0x20 && r != '\t' && r != '\n' && r != '\r' }) >= 0 {
			return at(": a string holding a control character, which FHIR strings may not")
		}
	}
	return ""
}
