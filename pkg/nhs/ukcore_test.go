package nhs

import (
	"encoding/xml"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// junctionURLPrefix is where Junction publishes the URLs it defines.
const junctionURLPrefix = "https://junction-fhir.github.io/"

// declaredURLs returns the string constants declared in ukcore.go, by
// name, so that every URL added there is checked without a list to keep.
func declaredURLs(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "ukcore.go", nil, 0)
	if err != nil {
		t.Fatalf("parse ukcore.go: %v", err)
	}
	out := map[string]string{}
	for _, decl := range f.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("ukcore.go: %s is not a string literal", name.Name)
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatalf("ukcore.go: %s: %v", name.Name, err)
				}
				out[name.Name] = v
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("ukcore.go declares no constants")
	}
	return out
}

// definition is what TestUKCoreURLs needs of a UK Core conformance
// resource: its kind (the XML root), canonical URL and, for a
// StructureDefinition, the type it constrains.
type definition struct {
	XMLName xml.Name
	URL     struct {
		Value string `xml:"value,attr"`
	} `xml:"url"`
	Type struct {
		Value string `xml:"value,attr"`
	} `xml:"type"`
}

// ukCoreIndex reads the corpus: the conformance resources of
// structuredefinitions and codesystems by canonical URL, and the text of
// every XML file (identifier systems occur only in examples).
func ukCoreIndex(t *testing.T, dir string) (map[string]definition, string) {
	t.Helper()
	defs := map[string]definition{}
	var all strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".xml") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		all.Write(b)
		switch filepath.Base(filepath.Dir(p)) {
		case "structuredefinitions", "codesystems":
			var def definition
			if err := xml.Unmarshal(b, &def); err != nil {
				t.Errorf("parse %s: %v", p, err)
				return nil
			}
			defs[def.URL.Value] = def
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk corpus: %v", err)
	}
	return defs, all.String()
}

// TestUKCoreURLs checks every URL constant of ukcore.go against the UK
// Core corpus, by the kind its name starts with: a Profile must be a
// StructureDefinition of a resource, an Ext a StructureDefinition of an
// Extension, a CodeSystem a CodeSystem, a System an identifier system UK
// Core uses; a Junction URL must be under Junction's own domain and
// nowhere in UK Core.
func TestUKCoreURLs(t *testing.T) {
	urls := declaredURLs(t)
	defs, text := ukCoreIndex(t, ukCore(t))
	names := make([]string, 0, len(urls))
	for name := range urls {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		u := urls[name]
		t.Run(name, func(t *testing.T) {
			def, found := defs[u]
			switch {
			case strings.HasPrefix(name, "Junction"):
				if !strings.HasPrefix(u, junctionURLPrefix) {
					t.Errorf("%s is Junction-defined but not under %s", u, junctionURLPrefix)
				}
				if found || strings.Contains(text, u) {
					t.Errorf("%s is Junction-defined but occurs in UK Core", u)
				}
			case strings.HasPrefix(name, "Profile"):
				if !found || def.XMLName.Local != "StructureDefinition" || def.Type.Value == "Extension" {
					t.Errorf("%s is not a UK Core profile (found %v, %s of %q)", u, found, def.XMLName.Local, def.Type.Value)
				}
			case strings.HasPrefix(name, "Ext"):
				if !found || def.XMLName.Local != "StructureDefinition" || def.Type.Value != "Extension" {
					t.Errorf("%s is not a UK Core extension (found %v, %s of %q)", u, found, def.XMLName.Local, def.Type.Value)
				}
			case strings.HasPrefix(name, "CodeSystem"):
				if !found || def.XMLName.Local != "CodeSystem" {
					t.Errorf("%s is not a UK Core code system (found %v, %s)", u, found, def.XMLName.Local)
				}
			case strings.HasPrefix(name, "System"):
				if !strings.Contains(text, `"`+u+`"`) {
					t.Errorf("identifier system %s does not occur in UK Core", u)
				}
			default:
				t.Errorf("%s: name has no kind prefix (System, Profile, Ext, CodeSystem, Junction)", name)
			}
		})
	}
}
