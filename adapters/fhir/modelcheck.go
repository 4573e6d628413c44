package fhir

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// modelProblem finds, in resource raw of the model type t, what the
// model's decode lets through or reports without a path: a decimal
// written as a JSON string ("72.5", which encoding/json reads into the
// models' json.Number), two choices of one element (valueQuantity and
// valueString: FHIR allows one, and a receiver would read one of them),
// a code outside the value set of an element with a required binding
// (which the decode refuses without a path), a date, dateTime or instant
// not written as FHIR writes them (dateElement), and, in what the models keep
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
			if want := foldedField(t, k); want != "" {
				// encoding/json, and so the models, would read it as
				// the element; FHIR, and a destination, would not.
				return path + "." + want, "the element " + want + " is written " + elementName(k) + ": FHIR element names are case-sensitive", true
			}
			continue // another check reports unknown elements
		}
		if str, isString := obj[k].(string); isString && dateElement(t, k) {
			if !fhirDateTime.MatchString(str) {
				return path + "." + name, "not a FHIR date or dateTime: YYYY, YYYY-MM, YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss with a time zone (Z or +01:00)", true
			}
			if !calendarDay(str) {
				return path + "." + name, "not a day of the calendar (FHIR dates shall be valid dates)", true
			}
		}
		if where, what, ok := modelWalk(obj[k], ft, path+"."+name, depth+1); ok {
			return where, what, true
		}
	}
	return "", "", false
}

// fhirDateTime matches FHIR R4's dateTime, of which date and instant are
// narrower forms: a year, year and month, date, or date and time to the
// second (or finer) with a time zone.
var fhirDateTime = regexp.MustCompile(`^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?$`)

// calendarDay reports whether the day of s, a value fhirDateTime
// matches, is in its month (the pattern allows 31 in every month and 29
// in every February); a year or year and month alone is.
func calendarDay(s string) bool {
	if len(s) < len("2006-01-02") {
		return true
	}
	_, err := time.Parse(time.DateOnly, s[:len("2006-01-02")])
	return err == nil
}

// periodType is the model of FHIR's Period, whose start and end are
// dateTimes.
var periodType = reflect.TypeFor[models.Period]()

// dateElement reports whether the element k of the model type t holds a
// date, dateTime or instant: a Period's start and end, a choice or element
// named for one (valueDateTime, birthDate, recordedDate, valueInstant),
// and the elements of those types named otherwise (date, issued,
// lastUpdated, timestamp, authoredOn, recorded). The models keep them as
// strings, so the decode checks nothing of their form, and a date written
// as a sender's locale writes it (01/02/1970) would reach a destination
// that refuses it, or reads it another way, after the sender was told it
// was taken.
func dateElement(t reflect.Type, k string) bool {
	if t == periodType {
		return k == "start" || k == "end"
	}
	if strings.HasSuffix(k, "Date") || strings.HasSuffix(k, "DateTime") || strings.HasSuffix(k, "Instant") {
		return true
	}
	switch k {
	case "date", "dateTime", "issued", "lastUpdated", "timestamp", "authoredOn", "recorded":
		return true
	}
	return false
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

// foldedCache holds, by model type, its fields' JSON names by their lower
// case.
var foldedCache sync.Map

// foldedField returns the JSON name of the field of the model type t
// that k, not itself one, names in another case ("birthdate" for
// birthDate), or "". Keys of a primitive's extensions ("_birthdate") are
// read the same way.
func foldedField(t reflect.Type, k string) string {
	m, ok := foldedCache.Load(t)
	if !ok {
		names := make(map[string]string, t.NumField())
		for name := range modelFields(t) {
			names[strings.ToLower(name)] = name
		}
		m, _ = foldedCache.LoadOrStore(t, names)
	}
	names := m.(map[string]string)
	if base, ext := strings.CutPrefix(k, "_"); ext {
		if want := names[strings.ToLower(base)]; want != "" && want != base {
			return "_" + want
		}
		return ""
	}
	return names[strings.ToLower(k)]
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
