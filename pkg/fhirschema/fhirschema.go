// Package fhirschema validates FHIR R4 JSON against the FHIR R4 JSON
// schema (fhir.schema.json, draft-06). It supports what that schema uses:
// $ref to local definitions, oneOf (resolved through the resourceType
// discriminator where every branch fixes resourceType), properties,
// additionalProperties false, required, type, pattern, enum, const and
// items. A schema is compiled once and is then safe for concurrent use.
//
// On top of the schema it applies the FHIR JSON rules the schema cannot
// express: no null values (but as an array's item, which lines a
// repeating primitive up with its extensions), no empty arrays and no
// empty objects. Primitive
// patterns are also applied to the literal text of JSON numbers, so an
// integer element holding 1.5 is reported.
//
// Issues name the element by path and the rule broken; they never quote
// the offending value, since it may be patient data.
package fhirschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
)

// Issue is one problem found in a document.
type Issue struct {
	// Path locates the element, FHIRPath-like:
	// Bundle.entry[1].resource(Patient).birthDate.
	Path string
	// Rule is a short, stable name of the rule broken, such as "pattern",
	// "unknown-element" or "required".
	Rule string
	// Msg explains the problem without quoting the value.
	Msg string
}

func (i Issue) String() string { return i.Path + ": " + i.Msg }

// Schema is a compiled FHIR JSON schema.
type Schema struct {
	root *node
	defs map[string]*node
}

// node is one compiled schema object.
type node struct {
	ref      string
	target   *node
	typ      string
	pattern  *regexp.Regexp
	patName  string
	enum     []any
	hasConst bool
	constVal any
	items    *node
	props    map[string]*node
	closed   bool
	required []string
	oneOf    []*node
	// byType maps a resourceType to its oneOf branch when every branch
	// is a $ref to a definition fixing resourceType.
	byType map[string]*node
	// resourceType is the const of properties.resourceType, if any.
	resourceType string
}

// Load reads and compiles the schema at path.
func Load(path string) (*Schema, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("fhirschema: %w", err)
	}
	return Compile(data)
}

// Compile compiles a FHIR JSON schema document.
func Compile(data []byte) (*Schema, error) {
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("fhirschema: parse schema: %w", err)
	}
	c := &compiler{defs: map[string]*node{}}
	defs, _ := raw["definitions"].(map[string]any)
	names := make([]string, 0, len(defs))
	for name := range defs {
		names = append(names, name)
	}
	sort.Strings(names)
	// Allocate first so references can point at nodes compiled later.
	for _, name := range names {
		c.defs[name] = &node{}
	}
	for _, name := range names {
		obj, ok := defs[name].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("fhirschema: definition %s is not an object", name)
		}
		n, err := c.compile(obj, name)
		if err != nil {
			return nil, err
		}
		*c.defs[name] = *n
	}
	root, err := c.compile(raw, "(root)")
	if err != nil {
		return nil, err
	}
	s := &Schema{root: root, defs: c.defs}
	if err := s.link(); err != nil {
		return nil, err
	}
	return s, nil
}

type compiler struct {
	defs map[string]*node
}

func (c *compiler) compile(obj map[string]any, where string) (*node, error) {
	n := &node{}
	for k, v := range obj {
		var err error
		switch k {
		case "$ref":
			s, _ := v.(string)
			name, ok := strings.CutPrefix(s, "#/definitions/")
			if !ok {
				return nil, fmt.Errorf("fhirschema: %s: unsupported $ref %q", where, s)
			}
			n.ref = name
		case "type":
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("fhirschema: %s: unsupported type %v", where, v)
			}
			n.typ = s
		case "pattern":
			s, _ := v.(string)
			n.pattern, err = regexp.Compile(s)
			if err != nil {
				return nil, fmt.Errorf("fhirschema: %s: pattern: %w", where, err)
			}
			n.patName = where
		case "enum":
			n.enum, _ = v.([]any)
		case "const":
			n.hasConst, n.constVal = true, v
		case "items":
			obj, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("fhirschema: %s: items is not an object", where)
			}
			n.items, err = c.compile(obj, where)
		case "properties":
			props, _ := v.(map[string]any)
			n.props = make(map[string]*node, len(props))
			for name, p := range props {
				obj, ok := p.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("fhirschema: %s.%s is not an object", where, name)
				}
				if n.props[name], err = c.compile(obj, where+"."+name); err != nil {
					return nil, err
				}
			}
		case "additionalProperties":
			if b, ok := v.(bool); ok && !b {
				n.closed = true
			}
		case "required":
			list, _ := v.([]any)
			for _, r := range list {
				if s, ok := r.(string); ok {
					n.required = append(n.required, s)
				}
			}
		case "oneOf":
			list, _ := v.([]any)
			for i, b := range list {
				obj, ok := b.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("fhirschema: %s.oneOf[%d] is not an object", where, i)
				}
				bn, err := c.compile(obj, where)
				if err != nil {
					return nil, err
				}
				n.oneOf = append(n.oneOf, bn)
			}
		case "description", "$schema", "id", "discriminator", "definitions":
			// Annotations, or handled elsewhere: the discriminator is
			// derived from the branches themselves.
		default:
			return nil, fmt.Errorf("fhirschema: %s: unsupported keyword %q", where, k)
		}
		if err != nil {
			return nil, err
		}
	}
	if rt, ok := n.props["resourceType"]; ok && rt.hasConst {
		n.resourceType, _ = rt.constVal.(string)
	}
	return n, nil
}

// link resolves references and builds the resourceType discriminators.
func (s *Schema) link() error {
	var errs []error
	seen := map[*node]bool{}
	var walk func(n *node)
	walk = func(n *node) {
		if n == nil || seen[n] {
			return
		}
		seen[n] = true
		if n.ref != "" {
			n.target = s.defs[n.ref]
			if n.target == nil {
				errs = append(errs, fmt.Errorf("fhirschema: $ref to missing definition %s", n.ref))
			}
		}
		walk(n.items)
		for _, p := range n.props {
			walk(p)
		}
		for _, b := range n.oneOf {
			walk(b)
		}
	}
	names := make([]string, 0, len(s.defs))
	for name := range s.defs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		walk(s.defs[name])
	}
	walk(s.root)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for n := range seen {
		if len(n.oneOf) == 0 {
			continue
		}
		by := map[string]*node{}
		for _, b := range n.oneOf {
			t := b.target
			if b.ref == "" || t == nil || t.resourceType == "" {
				by = nil
				break
			}
			by[t.resourceType] = b
		}
		n.byType = by
	}
	return nil
}

// Validate validates a JSON document (a resource of any type) and returns
// its issues, or nil when it is valid. A document that is not JSON gives
// one issue with rule "json".
func (s *Schema) Validate(doc []byte) []Issue {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return []Issue{{Path: "(document)", Rule: "json", Msg: "not valid JSON"}}
	}
	if dec.More() {
		return []Issue{{Path: "(document)", Rule: "json", Msg: "more than one JSON value"}}
	}
	return s.ValidateValue(v)
}

// ValidateValue validates a decoded JSON value (maps, slices, strings,
// bools, float64 or json.Number) against the schema's root: a resource
// chosen by its resourceType.
func (s *Schema) ValidateValue(v any) []Issue {
	var out []Issue
	s.check(v, s.root, rootPath(v), &out)
	return out
}

// ValidateDefinition validates v against one named definition, such as
// "Patient" or "HumanName".
func (s *Schema) ValidateDefinition(v any, def string) ([]Issue, error) {
	n, ok := s.defs[def]
	if !ok {
		return nil, fmt.Errorf("fhirschema: no definition %q", def)
	}
	var out []Issue
	s.check(v, n, def, &out)
	return out, nil
}

func rootPath(v any) string {
	if obj, ok := v.(map[string]any); ok {
		if rt, ok := obj["resourceType"].(string); ok && safeName(rt) {
			return rt
		}
	}
	return "(document)"
}

// safeName reports whether s looks like a FHIR name and can be put in a
// path without quoting input.
func safeName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func add(out *[]Issue, path, rule, format string, args ...any) {
	*out = append(*out, Issue{Path: path, Rule: rule, Msg: fmt.Sprintf(format, args...)})
}

func (s *Schema) check(v any, n *node, path string, out *[]Issue) {
	if v == nil {
		add(out, path, "null", "null is not allowed in FHIR JSON")
		return
	}
	if n.target != nil {
		s.check(v, n.target, path, out)
	}
	if len(n.oneOf) > 0 {
		s.checkOneOf(v, n, path, out)
	}
	if n.typ != "" && !s.checkType(v, n, path, out) {
		return
	}
	if n.hasConst && !equal(v, n.constVal) {
		add(out, path, "const", "must be the fixed value of this element")
	}
	if n.enum != nil {
		found := false
		for _, e := range n.enum {
			if equal(v, e) {
				found = true
				break
			}
		}
		if !found {
			add(out, path, "enum", "is not one of the allowed codes")
		}
	}
	if n.items != nil {
		if arr, ok := v.([]any); ok {
			for i, item := range arr {
				if item == nil {
					// An array's item may be null: FHIR JSON lines a
					// repeating primitive's values up with their
					// extensions (given and _given) that way.
					continue
				}
				s.check(item, n.items, fmt.Sprintf("%s[%d]", path, i), out)
			}
		}
	}
	if n.props != nil || n.closed || n.required != nil {
		s.checkObject(v, n, path, out)
	}
}

func (s *Schema) checkType(v any, n *node, path string, out *[]Issue) bool {
	switch n.typ {
	case "string":
		str, ok := v.(string)
		if !ok {
			add(out, path, "type", "must be a JSON string")
			return false
		}
		if n.pattern != nil && !n.pattern.MatchString(str) {
			add(out, path, "pattern", "does not match the pattern of %s", n.patName)
		}
	case "number":
		lit, ok := numberText(v)
		if !ok {
			add(out, path, "type", "must be a JSON number")
			return false
		}
		if n.pattern != nil && !n.pattern.MatchString(lit) {
			add(out, path, "pattern", "does not match the pattern of %s", n.patName)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			add(out, path, "type", "must be a JSON boolean")
			return false
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			add(out, path, "type", "must be a JSON array")
			return false
		}
		if len(arr) == 0 {
			add(out, path, "empty", "empty arrays are not allowed in FHIR JSON")
		}
	case "object":
		if _, ok := v.(map[string]any); !ok {
			add(out, path, "type", "must be a JSON object")
			return false
		}
	}
	return true
}

func numberText(v any) (string, bool) {
	switch x := v.(type) {
	case json.Number:
		return string(x), true
	case float64:
		b, _ := json.Marshal(x)
		return string(b), true
	case int:
		return fmt.Sprint(x), true
	}
	return "", false
}

func (s *Schema) checkOneOf(v any, n *node, path string, out *[]Issue) {
	if n.byType != nil {
		obj, ok := v.(map[string]any)
		if !ok {
			add(out, path, "type", "must be a JSON object holding a resource")
			return
		}
		rt, ok := obj["resourceType"].(string)
		if !ok {
			add(out, path, "resourceType", "has no resourceType")
			return
		}
		b, ok := n.byType[rt]
		if !ok {
			add(out, path, "resourceType", "resourceType is not a FHIR R4 resource type")
			return
		}
		s.check(v, b, path, out)
		return
	}
	matched := 0
	var first []Issue
	for i, b := range n.oneOf {
		var o []Issue
		s.check(v, b, path, &o)
		if len(o) == 0 {
			matched++
		} else if i == 0 {
			first = o
		}
	}
	switch {
	case matched == 0:
		*out = append(*out, first...)
		add(out, path, "oneOf", "matches none of the allowed forms")
	case matched > 1:
		add(out, path, "oneOf", "matches more than one of the allowed forms")
	}
}

func (s *Schema) checkObject(v any, n *node, path string, out *[]Issue) {
	obj, ok := v.(map[string]any)
	if !ok {
		if n.typ == "" {
			add(out, path, "type", "must be a JSON object")
		}
		return
	}
	if len(obj) == 0 {
		add(out, path, "empty", "empty objects are not allowed in FHIR JSON")
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p, ok := n.props[k]
		if !ok {
			if n.closed {
				name := k
				if !safeName(k) {
					name = "(a key that is not a FHIR name)"
				}
				add(out, path+"."+name, "unknown-element", "is not an element of this type")
			}
			continue
		}
		child := path + "." + k
		if k == "resource" || k == "contained" || k == "outcome" || k == "return" {
			child = resourcePath(child, obj[k])
		}
		s.check(obj[k], p, child, out)
	}
	for _, r := range n.required {
		if _, ok := obj[r]; !ok {
			add(out, path+"."+r, "required", "is required")
		}
	}
}

// resourcePath appends (Type) to the path of an element holding a
// resource, so issues inside bundles name the resource.
func resourcePath(path string, v any) string {
	if obj, ok := v.(map[string]any); ok {
		if rt, ok := obj["resourceType"].(string); ok && safeName(rt) {
			return path + "(" + rt + ")"
		}
	}
	return path
}

func equal(a, b any) bool {
	if an, ok := a.(json.Number); ok {
		bf, ok := b.(float64)
		if !ok {
			return false
		}
		af, err := an.Float64()
		return err == nil && af == bf
	}
	switch bv := b.(type) {
	case string, bool, float64:
		return a == bv
	}
	aj, _ := json.Marshal(a)
	bj, _ := json.Marshal(b)
	return bytes.Equal(aj, bj)
}
