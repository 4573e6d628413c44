package pas

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
)

const schemaPath = "../../../shared/corpora/fhir-r4-schema/fhir.schema.json"

// schema is a light reader of the FHIR R4 JSON schema: enough to check
// that every element a translation emits exists where it is put, with the
// right JSON type, enumerated code and primitive pattern.
type schema struct {
	defs     map[string]map[string]any
	mu       sync.Mutex
	patterns map[string]*regexp.Regexp
}

var (
	schemaOnce   sync.Once
	loadedSchema *schema
	schemaErr    error
)

// loadSchema returns the schema, or nil (after logging why) when the
// corpus is absent.
func loadSchema(t testing.TB) *schema {
	t.Helper()
	schemaOnce.Do(func() {
		raw, err := os.ReadFile(schemaPath)
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
		loadedSchema = &schema{defs: doc.Definitions, patterns: map[string]*regexp.Regexp{}}
	})
	if loadedSchema == nil {
		if os.IsNotExist(schemaErr) {
			t.Logf("FHIR R4 JSON schema not present at %s; skipping the schema check", schemaPath)
			return nil
		}
		t.Fatalf("FHIR schema: %v", schemaErr)
	}
	return loadedSchema
}

func (s *schema) pattern(p string) *regexp.Regexp {
	s.mu.Lock()
	defer s.mu.Unlock()
	re, ok := s.patterns[p]
	if !ok {
		re, _ = regexp.Compile(p) // nil when RE2 cannot express it
		s.patterns[p] = re
	}
	return re
}

// check validates v against definition def and returns the problems, each
// prefixed with its path.
func (s *schema) check(v any, def, path string) []string {
	d, ok := s.defs[def]
	if !ok {
		return []string{path + ": no definition " + def}
	}
	return s.checkNode(v, d, path)
}

func (s *schema) checkNode(v any, node map[string]any, path string) []string {
	if ref, ok := node["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/definitions/")
		if name == "ResourceList" {
			obj, _ := v.(map[string]any)
			rt, _ := obj["resourceType"].(string)
			return s.check(v, rt, path+"("+rt+")")
		}
		return s.check(v, name, path)
	}
	if c, ok := node["const"]; ok && v != c {
		return []string{fmt.Sprintf("%s: %v, want %v", path, v, c)}
	}
	if enum, ok := node["enum"].([]any); ok {
		for _, e := range enum {
			if e == v {
				return nil
			}
		}
		return []string{fmt.Sprintf("%s: %v is not one of the codes", path, v)}
	}
	if items, ok := node["items"].(map[string]any); ok {
		arr, ok := v.([]any)
		if !ok || len(arr) == 0 {
			return []string{path + ": want a non-empty array"}
		}
		var out []string
		for i, item := range arr {
			out = append(out, s.checkNode(item, items, fmt.Sprintf("%s[%d]", path, i))...)
		}
		return out
	}
	if props, ok := node["properties"].(map[string]any); ok {
		obj, ok := v.(map[string]any)
		if !ok {
			return []string{path + ": want an object"}
		}
		var out []string
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p, ok := props[k].(map[string]any)
			if !ok {
				out = append(out, path+"."+k+": no such element")
				continue
			}
			out = append(out, s.checkNode(obj[k], p, path+"."+k)...)
		}
		if req, ok := node["required"].([]any); ok {
			for _, r := range req {
				if _, ok := obj[r.(string)]; !ok {
					out = append(out, fmt.Sprintf("%s.%v: required", path, r))
				}
			}
		}
		return out
	}
	switch node["type"] {
	case "string":
		str, ok := v.(string)
		if !ok {
			return []string{path + ": want a string"}
		}
		if p, ok := node["pattern"].(string); ok {
			if re := s.pattern(p); re != nil && !re.MatchString(str) {
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

// TestSchemaCheckerCatchesErrors makes sure the checker can fail.
func TestSchemaCheckerCatchesErrors(t *testing.T) {
	s := loadSchema(t)
	if s == nil {
		t.Skip("FHIR R4 JSON schema not present at " + schemaPath)
	}
	tests := []struct {
		name string
		json string
		want string
	}{
		{"unknown element", `{"resourceType":"Patient","nickname":"x"}`, "no such element"},
		{"bad code", `{"resourceType":"Patient","gender":"m"}`, "not one of the codes"},
		{"bad date", `{"resourceType":"Patient","birthDate":"1970-13-01"}`, "does not match"},
		{"nested", `{"resourceType":"Patient","name":[{"family":"X","givn":["Y"]}]}`, "Patient.name[0].givn"},
		{"missing class", `{"resourceType":"Encounter","status":"finished"}`, "class: required"},
		{"wrong type", `{"resourceType":"Patient","active":"yes"}`, "want a boolean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v map[string]any
			if err := json.Unmarshal([]byte(tt.json), &v); err != nil {
				t.Fatal(err)
			}
			probs := s.check(v, v["resourceType"].(string), v["resourceType"].(string))
			if !strings.Contains(strings.Join(probs, "\n"), tt.want) {
				t.Errorf("problems %q, want one containing %q", probs, tt.want)
			}
		})
	}
	var ok map[string]any
	_ = json.Unmarshal([]byte(`{"resourceType":"Patient","gender":"male","birthDate":"1970-01-01","name":[{"family":"X"}]}`), &ok)
	if probs := s.check(ok, "Patient", "Patient"); len(probs) > 0 {
		t.Errorf("valid Patient rejected: %q", probs)
	}
}
