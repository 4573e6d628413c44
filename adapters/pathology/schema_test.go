package pathology

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
)

// fhirSchema checks JSON against the definitions of the FHIR R4 JSON
// schema: every element exists where it is put, has the right JSON type,
// an enumerated code and a primitive pattern, and required elements are
// present. It follows $ref, and a ResourceList by the resourceType.
type fhirSchema struct {
	defs map[string]map[string]any
	mu   sync.Mutex
	res  map[string]*regexp.Regexp
}

var (
	schemaOnce sync.Once
	schemaVal  *fhirSchema
	schemaErr  error
)

// loadFHIRSchema returns the schema, or nil after logging why when the
// corpus is absent.
func loadFHIRSchema(t testing.TB) *fhirSchema {
	t.Helper()
	path := filepath.Join(corporaDir, "fhir-r4-schema", "fhir.schema.json")
	schemaOnce.Do(func() {
		raw, err := os.ReadFile(path)
		if err != nil {
			schemaErr = err
			return
		}
		var doc struct {
			Definitions map[string]map[string]any `json:"definitions"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			schemaErr = fmt.Errorf("parse schema: %w", err)
			return
		}
		schemaVal = &fhirSchema{defs: doc.Definitions, res: map[string]*regexp.Regexp{}}
	})
	if schemaVal == nil {
		if os.IsNotExist(schemaErr) {
			t.Logf("FHIR R4 JSON schema not present at %s; skipping the schema check", path)
			return nil
		}
		t.Fatalf("FHIR schema: %v", schemaErr)
	}
	return schemaVal
}

func (s *fhirSchema) check(v any, def, path string) []string {
	d, ok := s.defs[def]
	if !ok {
		return []string{path + ": no definition " + def}
	}
	return s.node(v, d, path)
}

func (s *fhirSchema) node(v any, n map[string]any, path string) []string {
	if ref, ok := n["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/definitions/")
		if name == "ResourceList" {
			rt, _ := v.(map[string]any)["resourceType"].(string)
			return s.check(v, rt, path+"("+rt+")")
		}
		return s.check(v, name, path)
	}
	if c, ok := n["const"]; ok && v != c {
		return []string{fmt.Sprintf("%s: %v, want %v", path, v, c)}
	}
	if enum, ok := n["enum"].([]any); ok {
		for _, e := range enum {
			if e == v {
				return nil
			}
		}
		return []string{fmt.Sprintf("%s: %v is not one of the codes", path, v)}
	}
	if items, ok := n["items"].(map[string]any); ok {
		arr, ok := v.([]any)
		if !ok || len(arr) == 0 {
			return []string{path + ": want a non-empty array"}
		}
		var out []string
		for i, it := range arr {
			out = append(out, s.node(it, items, fmt.Sprintf("%s[%d]", path, i))...)
		}
		return out
	}
	if props, ok := n["properties"].(map[string]any); ok {
		obj, ok := v.(map[string]any)
		if !ok {
			return []string{path + ": want an object"}
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var out []string
		for _, k := range keys {
			p, ok := props[k].(map[string]any)
			if !ok {
				out = append(out, path+"."+k+": no such element")
				continue
			}
			out = append(out, s.node(obj[k], p, path+"."+k)...)
		}
		req, _ := n["required"].([]any)
		for _, r := range req {
			if _, ok := obj[r.(string)]; !ok {
				out = append(out, fmt.Sprintf("%s.%v: required", path, r))
			}
		}
		return out
	}
	switch n["type"] {
	case "string":
		str, ok := v.(string)
		if !ok {
			return []string{path + ": want a string"}
		}
		if p, ok := n["pattern"].(string); ok {
			if re := s.regexp(p); re != nil && !re.MatchString(str) {
				return []string{fmt.Sprintf("%s: %q does not match %s", path, str, p)}
			}
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return []string{path + ": want a boolean"}
		}
	case "number":
		if _, ok := v.(float64); !ok {
			return []string{path + ": want a number"}
		}
	}
	return nil
}

func (s *fhirSchema) regexp(p string) *regexp.Regexp {
	s.mu.Lock()
	defer s.mu.Unlock()
	re, ok := s.res[p]
	if !ok {
		re, _ = regexp.Compile(p) // nil when RE2 cannot express it
		s.res[p] = re
	}
	return re
}

// TestSchemaCheckerFails makes sure the checker catches each kind of
// error it claims to.
func TestSchemaCheckerFails(t *testing.T) {
	s := loadFHIRSchema(t)
	if s == nil {
		t.Skip("FHIR R4 JSON schema absent")
	}
	tests := []struct{ name, json, want string }{
		{"unknown element", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueAttachment":{}}`, "no such element"},
		{"bad code", `{"resourceType":"Observation","status":"done","code":{"text":"x"}}`, "not one of the codes"},
		{"bad dateTime", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"effectiveDateTime":"2024-13-01"}`, "does not match"},
		{"missing code", `{"resourceType":"Observation","status":"final"}`, "code: required"},
		{"decimal as string", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":"1"}}`, "want a number"},
		{"bad instant", `{"resourceType":"DiagnosticReport","status":"final","code":{"text":"x"},"issued":"2024-01-01"}`, "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v map[string]any
			if err := json.Unmarshal([]byte(tt.json), &v); err != nil {
				t.Fatal(err)
			}
			rt := v["resourceType"].(string)
			if got := strings.Join(s.check(v, rt, rt), "\n"); !strings.Contains(got, tt.want) {
				t.Errorf("problems %q, want one containing %q", got, tt.want)
			}
		})
	}
}
