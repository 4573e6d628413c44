package fhir

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// modelProblem finds, in resource raw of the model type t, what the
// model's decode lets through or reports without a path: a decimal
// written as a JSON string ("72.5", which encoding/json reads into the
// models' json.Number), two choices of one element (valueQuantity and
// valueString: FHIR allows one, and a receiver would read one of them),
// a code outside the value set of an element with a required binding
// (which the decode refuses without a path), and, in what the models keep
// as raw JSON (contained resources, a
// Bundle's entries' resources), resources of the checked types that do
// not decode or have such problems. It returns the problem's path under
// path and what is wrong, never a value; ok is false when there is none.
func modelProblem(raw []byte, t reflect.Type, path string) (where, what string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return "", "", false // the decode reported it
	}
	return modelWalk(v, t, path, 0)
}

// maxModelDepth bounds modelWalk past any real FHIR structure (input
// depth is bounded at ingress as well).
const maxModelDepth = 128

var (
	// unmarshalerType is implemented (by pointer) by the models' code
	// types, those of elements with a required binding.
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	numberType      = reflect.TypeFor[json.Number]()
	rawType         = reflect.TypeFor[json.RawMessage]()
	// containedType is what modelWalk reads a resource's contained as.
	containedType = reflect.TypeFor[[]json.RawMessage]()
)

// modelWalk is modelProblem on the decoded value v.
func modelWalk(v any, t reflect.Type, path string, depth int) (string, string, bool) {
	if depth > maxModelDepth {
		return "", "", false
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == numberType:
		if _, isString := v.(string); isString {
			return path, "a decimal must be a JSON number, not a string", true
		}
		return "", "", false
	case t == rawType:
		return carriedProblem(v, path, depth)
	case t.Kind() == reflect.Int && reflect.PointerTo(t).Implements(unmarshalerType):
		// A code with a required binding: the models' decode refuses an
		// unknown one without saying where it is.
		s, isString := v.(string)
		if !isString {
			return "", "", false // the decode reports the JSON type
		}
		// The models compare the code's text between its quotes, unescaped
		// (json.Marshal would write "<" as \u003c).
		raw := []byte(`"` + s + `"`)
		if err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			return path, modelError(err), true
		}
		return "", "", false
	case t.Kind() == reflect.Slice:
		list, _ := v.([]any)
		for i, x := range list {
			if where, what, ok := modelWalk(x, t.Elem(), path+"["+strconv.Itoa(i)+"]", depth+1); ok {
				return where, what, true
			}
		}
		return "", "", false
	case t.Kind() != reflect.Struct:
		return "", "", false
	}
	obj, _ := v.(map[string]any)
	if len(obj) == 0 {
		return "", "", false
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if choices := choiceGroups(t); len(choices) > 0 {
		seen := map[string]bool{}
		for _, k := range keys {
			if base, ok := choices[k]; ok {
				if seen[base] {
					return path + "." + base + "[x]", "more than one choice of " + base + "[x] is given: FHIR allows one", true
				}
				seen[base] = true
			}
		}
	}
	fields := modelFields(t)
	_, isResource := obj["resourceType"]
	for _, k := range keys {
		ft, ok := fields[k]
		name := pathName(k)
		if !ok && k == "contained" && isResource {
			// The models have no contained element: its resources
			// are checked as raw ones.
			ft, ok, name = containedType, true, k
		}
		if !ok {
			continue // another check reports unknown elements
		}
		if where, what, ok := modelWalk(obj[k], ft, path+"."+name, depth+1); ok {
			return where, what, true
		}
	}
	return "", "", false
}

// carriedProblem checks a resource the models keep as raw JSON (v, at
// path): one of a checked type must decode into its model and pass
// modelWalk. Others are left as a Bundle's entries of unchecked types are.
func carriedProblem(v any, path string, depth int) (string, string, bool) {
	obj, ok := v.(map[string]any)
	if !ok {
		return "", "", false
	}
	rt, _ := obj["resourceType"].(string)
	chk, ok := checkers[rt]
	if !ok {
		return "", "", false
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return "", "", false
	}
	// The walk first, as it names the element where it can.
	if where, what, ok := modelWalk(obj, chk.typ, path, depth+1); ok {
		return where, what, true
	}
	if err := chk.decode(raw); err != nil {
		return path, "invalid " + rt + ": " + modelError(err), true
	}
	return "", "", false
}

// fieldCache holds modelFields' answers by type.
var fieldCache sync.Map

// modelFields returns a model struct type's fields by JSON name.
func modelFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	out := make(map[string]reflect.Type, t.NumField())
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			out[name] = f.Type
		}
	}
	fieldCache.Store(t, out)
	return out
}
