package config

import (
	"fmt"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/router"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// readmeSection returns README.md's Configuration section, up to the
// next section.
func readmeSection(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatalf("reading README: %v", err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	return sec
}

// readmeConfigBlocks returns the yaml blocks of README.md's Configuration
// section that are config files (not route files, which start with a
// comment naming one).
func readmeConfigBlocks(t *testing.T) []string {
	t.Helper()
	var blocks []string
	rest := readmeSection(t)
	for {
		_, after, ok := strings.Cut(rest, "```yaml\n")
		if !ok {
			return blocks
		}
		block, tail, ok := strings.Cut(after, "```")
		if !ok {
			t.Fatal("a yaml block of README.md's Configuration section is not closed")
		}
		rest = tail
		if strings.HasPrefix(block, "# routes/") {
			continue
		}
		blocks = append(blocks, block)
	}
}

// commentedSetting is a line of YAML written as a comment, such as
// "  # tls: {cert: file:...}" or "  #  - {name: ops-team, ...}": the
// README shows settings without a default, or examples of a list's
// items, that way.
var commentedSetting = regexp.MustCompile(`^(\s*)# ?(\s*(?:- \{.*|[a-z_]+: [\[{].*))$`)

// emptyList is a key given the empty list, before any comment.
var emptyList = regexp.MustCompile(`^(\s*[a-z_]+:) \[\](\s*#.*)?$`)

// uncomment turns the README's commented-out settings into YAML, keeping
// their indentation; a list shown empty with commented-out items gets
// those items.
func uncomment(block string) string {
	lines := strings.Split(block, "\n")
	lastKey := -1
	for i, l := range lines {
		m := commentedSetting.FindStringSubmatch(l)
		if m == nil {
			if strings.TrimSpace(l) != "" && !strings.HasPrefix(strings.TrimSpace(l), "#") {
				lastKey = i
			}
			continue
		}
		// "  # tls:" is the key "tls" at the indentation of "#".
		lines[i] = m[1] + m[2]
		if strings.HasPrefix(strings.TrimSpace(m[2]), "- ") && lastKey >= 0 {
			if e := emptyList.FindStringSubmatch(lines[lastKey]); e != nil {
				lines[lastKey] = e[1]
			}
		}
	}
	return strings.Join(lines, "\n")
}

// componentPath names a component's settings by direction and type, so
// that every input or destination of one type documents the same keys.
func componentPath(inbound bool, typ string) string {
	if inbound {
		return "input(" + typ + ")"
	}
	return "destination(" + typ + ")"
}

// leafMaps are settings whose keys are the user's (codes, authorities),
// not settings: the README need not list any.
var leafMaps = map[reflect.Type]bool{reflect.TypeOf(map[string]string{}): true}

// yamlPaths adds the key paths of the YAML node n, under path, to out;
// the entries of inputs and destinations under their component's path,
// and the names of consent's destinations and sources as "*".
func yamlPaths(n *yaml.Node, path string, out map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			yamlPaths(c, path, out)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			yamlPaths(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			switch {
			case path == "inputs" || path == "destinations":
				typ := ""
				if _, t := yamlx.MapEntry(v, "type"); t != nil {
					typ = t.Value
				}
				yamlPaths(v, componentPath(path == "inputs", typ), out)
				continue
			case path == "consent.destinations" || path == "consent.sources":
				yamlPaths(v, path+".*", out)
				continue
			}
			p := k
			if path != "" {
				p = path + "." + k
			}
			out[p] = true
			yamlPaths(v, p, out)
		}
	}
}

// structPaths adds the yaml key paths of type t, under path, to out.
func structPaths(t reflect.Type, path string, out map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	switch {
	case leafMaps[t]:
		return
	case t.Kind() == reflect.Map:
		structPaths(t.Elem(), path+".*", out)
		return
	case t.Kind() != reflect.Struct || t.PkgPath() == "time":
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case !f.IsExported() || name == "-":
			continue
		case opts == "inline":
			structPaths(f.Type, path, out)
			continue
		case name == "":
			// Untagged fields are not settings (Component's Type,
			// Settings and positions, decoded by hand).
			continue
		}
		p := name
		if path != "" {
			p = path + "." + name
		}
		out[p] = true
		structPaths(f.Type, p, out)
	}
}

// proseDocumented are settings the Configuration section describes in
// its text rather than in a YAML block, with the text that does: each
// must appear there.
var proseDocumented = map[string]string{
	"input(pas).dialect.sex_codes":             "`sex_codes`",
	"input(pas).dialect.cancel_admit_status":   "`cancel_admit_status`",
	"input(pas).dialect.marital_status_codes":  "`marital_status_codes`",
	"input(pathology).lab":                     "`lab: {local_code_system,",
	"input(pathology).lab.local_code_system":   "`lab: {local_code_system,",
	"input(pathology).lab.placer_order_system": "placer_order_system, filler_order_system,",
	"input(pathology).lab.filler_order_system": "placer_order_system, filler_order_system,",
	"input(pathology).lab.result_key_system":   "result_key_system, code_maps, coding_systems}`",
	"input(pathology).lab.code_maps":           "result_key_system, code_maps, coding_systems}`",
	"input(pathology).lab.coding_systems":      "result_key_system, code_maps, coding_systems}`",
	// In the Patient index section.
	"destination(optout-list).type": "an `optout-list` destination (no settings",
}

// sameAs are the component settings the Configuration section documents
// as another component's ("takes the same listener settings as pas"),
// with the text that says so: a path under the first prefix is
// documented when the same path under the second is.
var sameAs = []struct{ from, to, text string }{
	{"input(pathology).", "input(pas).", "takes the same listener settings and `dialect` as `pas`"},
	{"destination(pathology).", "destination(mllp).", "with the MLLP destination's settings"},
	{"destination(*).retry", "destination(fhir).retry", "Every destination takes `retry`"},
}

// documentedPaths returns the settings README.md's Configuration section
// documents: the keys of its config blocks (commented-out ones too).
func documentedPaths(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, block := range readmeConfigBlocks(t) {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(uncomment(block)), &doc); err != nil {
			t.Fatalf("a README config block, its commented settings included, does not parse: %v\n%s", err, uncomment(block))
		}
		yamlPaths(&doc, "", out)
	}
	return out
}

// codePaths returns every setting the code takes: the core config's and
// each compiled-in adapter's, by component path.
func codePaths() map[string]bool {
	out := map[string]bool{}
	structPaths(reflect.TypeOf(Config{}), "", out)
	for _, f := range all.Factories() {
		_, inbound := f.(adapter.InboundFactory)
		p := componentPath(inbound, f.Type())
		out[p+".type"] = true
		structPaths(reflect.TypeOf(f.NewConfig()), p, out)
		if !inbound {
			out[p+".retry"] = true
			structPaths(reflect.TypeOf(router.Retry{}), p+".retry", out)
		}
	}
	// Decoded by hand (Component.UnmarshalYAMLx), so not from tags.
	delete(out, "inputs")
	delete(out, "destinations")
	return out
}

// TestREADMEDocumentsEveryKey keeps README.md's config reference whole:
// every setting the config and the compiled-in adapters decode is in one
// of the Configuration section's YAML blocks, or described in its text.
// (TestLoadREADMEExample checks the other way: every key documented
// decodes.)
func TestREADMEDocumentsEveryKey(t *testing.T) {
	sec := readmeSection(t)
	flat := strings.Join(strings.Fields(sec), " ")
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatalf("reading README: %v", err)
	}
	whole := strings.Join(strings.Fields(string(b)), " ")
	doc := documentedPaths(t)
	for _, s := range sameAs {
		if !strings.Contains(flat, s.text) {
			t.Errorf("README's Configuration section no longer says %q", s.text)
		}
	}
	var documented func(p string) bool
	documented = func(p string) bool {
		if doc[p] {
			return true
		}
		if text, ok := proseDocumented[p]; ok {
			return strings.Contains(whole, strings.Join(strings.Fields(text), " "))
		}
		for _, s := range sameAs {
			from := s.from
			if typ, rest, ok := strings.Cut(from, "(*)"); ok {
				// Any component type.
				if !strings.HasPrefix(p, typ+"(") {
					continue
				}
				_, after, ok := strings.Cut(p, ")")
				if !ok || !strings.HasPrefix(after, rest) {
					continue
				}
				if documented(s.to + strings.TrimPrefix(after, rest)) {
					return true
				}
				continue
			}
			if after, ok := strings.CutPrefix(p, from); ok && documented(s.to+after) {
				return true
			}
		}
		return false
	}
	var missing []string
	for p := range codePaths() {
		if !documented(p) {
			missing = append(missing, p)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("settings the code takes that README.md's Configuration section does not document:\n  %s", strings.Join(missing, "\n  "))
	}
}

// readmeExamples are the settings of README.md's main config block whose
// values are examples, not defaults (the rest are the defaults), by
// component name.
var readmeExamples = map[string][]string{
	"pas":        {"tls", "dialect.location_identifier_system"},
	"ehr":        {"url", "authorization"},
	"ris":        {"address", "tls"},
	"fhir-store": {"dir"}, // the default destination's, checked by TestDefault
}

// clearSetting zeroes the setting at the yaml key path in the struct v
// points to.
func clearSetting(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	key, rest, _ := strings.Cut(path, ".")
	typ := v.Type()
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" {
			if _, ok := findSetting(f.Type, key); ok {
				clearSetting(t, v.Field(i), path)
				return
			}
			continue
		}
		if name != key {
			continue
		}
		if rest == "" {
			v.Field(i).SetZero()
		} else {
			clearSetting(t, v.Field(i), rest)
		}
		return
	}
	t.Fatalf("no setting %q in %v", key, typ)
}

// findSetting reports whether struct type t (or one it inlines) has the
// setting key.
func findSetting(t reflect.Type, key string) (reflect.StructField, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" {
			if g, ok := findSetting(f.Type, key); ok {
				return g, true
			}
		} else if name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// TestREADMEShowsAdapterDefaults: the values README.md's config block
// gives each input's and destination's settings are the adapter's
// defaults, but for those it marks as examples.
func TestREADMEShowsAdapterDefaults(t *testing.T) {
	c, err := Load(writeConfig(t, readmeConfig(t)))
	if err != nil {
		t.Fatalf("README example does not load:\n%v", err)
	}
	for _, sec := range []struct {
		inbound bool
		m       map[string]*Component
	}{{true, c.Inputs}, {false, c.Destinations}} {
		for name, comp := range sec.m {
			t.Run(name, func(t *testing.T) {
				f := factoryFor(comp.Type, sec.inbound)
				if f == nil {
					t.Fatalf("no compiled-in adapter of type %q", comp.Type)
				}
				got, want := f.NewConfig(), f.NewConfig()
				if err := comp.Settings.Decode(got); err != nil {
					t.Fatalf("settings do not decode:\n%v", err)
				}
				for _, p := range readmeExamples[name] {
					clearSetting(t, reflect.ValueOf(got), p)
					clearSetting(t, reflect.ValueOf(want), p)
				}
				if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmp.Exporter(func(reflect.Type) bool { return true })); diff != "" {
					t.Errorf("README's values differ from the adapter's defaults (-default +readme):\n%s", diff)
				}
			})
		}
	}
}

// TestREADMEConfigBlocksDecode: every config block of README.md's
// Configuration section, not only the main one, decodes strictly, the
// inputs and destinations with their adapter's own config, and
// validates.
func TestREADMEConfigBlocksDecode(t *testing.T) {
	for i, block := range readmeConfigBlocks(t) {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			c, err := Load(writeConfig(t, block))
			if err != nil {
				t.Fatalf("README config block does not load:\n%v\n%s", err, block)
			}
			for _, sec := range []struct {
				inbound bool
				m       map[string]*Component
			}{{true, c.Inputs}, {false, c.Destinations}} {
				for name, comp := range sec.m {
					f := factoryFor(comp.Type, sec.inbound)
					if f == nil {
						t.Fatalf("%s: no compiled-in adapter of type %q", name, comp.Type)
					}
					conf := f.NewConfig()
					if err := comp.Settings.Decode(conf); err != nil {
						t.Errorf("%s: settings do not decode:\n%v", name, err)
						continue
					}
					if v, ok := conf.(adapter.Validator); ok {
						if errs := v.Validate(); len(errs) > 0 {
							t.Errorf("%s: settings do not validate: %v", name, errStrings(errs))
						}
					}
				}
			}
		})
	}
}
