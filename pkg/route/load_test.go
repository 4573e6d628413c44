package route

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/rules"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// fakeCatalog knows a fixed set of sources and destinations.
type fakeCatalog struct{ sources, dests []string }

func (c fakeCatalog) HasSource(n string) bool {
	for _, s := range c.sources {
		if s == n {
			return true
		}
	}
	return false
}

func (c fakeCatalog) HasDestination(n string) bool {
	for _, d := range c.dests {
		if d == n {
			return true
		}
	}
	return false
}

// Names makes fakeCatalog a NameCatalog, so load errors suggest names.
func (c fakeCatalog) Names() (sources, destinations []string) { return c.sources, c.dests }

var testCatalog = fakeCatalog{sources: []string{"pas", "fhir"}, dests: []string{"fhir-store", "data-quality"}}

func testEnv(t testing.TB) *rules.Env {
	t.Helper()
	env, err := rules.NewEnv(rules.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// checkGolden compares got with the golden file, or rewrites it with
// -update.
func checkGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", golden, diff)
	}
}

// TestLoadErrorsGolden loads every broken route file in testdata/bad and
// compares every error it reports, as `file:line:col: message` lines,
// with the file's .golden.
func TestLoadErrorsGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad route files: %v", err)
	}
	env := testEnv(t)
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			r, err := Load(file, env, testCatalog)
			if err == nil {
				t.Fatalf("Load(%s) = route %s, want errors", file, r.Name)
			}
			var ye yamlx.Errors
			if !errors.As(err, &ye) {
				t.Fatalf("error is %T, want yamlx.Errors: %v", err, err)
			}
			for _, e := range ye {
				if e.Pos.File != file || e.Pos.Line == 0 || e.Pos.Col == 0 {
					t.Errorf("error without a full position: %v", e)
				}
			}
			checkGolden(t, strings.TrimSuffix(file, ".yaml")+".golden", err.Error()+"\n")
		})
	}
}

// posOf returns the position of the first occurrence of needle in file,
// 1-based, counting columns in runes.
func posOf(t *testing.T, file, needle string) yamlx.Pos {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(data), needle)
	if i < 0 {
		t.Fatalf("%q not in %s", needle, file)
	}
	before := string(data[:i])
	line := strings.Count(before, "\n") + 1
	col := len([]rune(before[strings.LastIndexByte(before, '\n')+1:])) + 1
	return yamlx.Pos{File: file, Line: line, Col: col}
}

// TestCELErrorPositions checks, independently of the golden files, that a
// CEL problem is reported where its token is written in the YAML: in plain,
// quoted and block scalars.
func TestCELErrorPositions(t *testing.T) {
	env := testEnv(t)
	tests := []struct {
		// token is where the error must be: the text after the first
		// occurrence of prefix in the file.
		file, prefix, token, msg string
	}{
		{"cel_plain.yaml", "nhsNumber(", "bundel", "undeclared reference to 'bundel'"},
		{"cel_plain.yaml", "msg.event == ", "A01", "undeclared reference to 'A01'"},
		{"cel_block.yaml", "msg.source == ", "pas", "undeclared reference to 'pas'"},
		{"cel_block.yaml", "!=\n      ", "MessageHeader", "undeclared reference to 'MessageHeader'"},
		{"cel_quoted.yaml", `\"A01\" && `, "é", "token recognition error"},
		{"cel_quoted.yaml", "''ADT^A01'' && ", "evnt", "undeclared reference to 'evnt'"},
		{"cel_syntax.yaml", `"A01" &&`, "", "mismatched input '<EOF>'"},
		{"all_at_once.yaml", "msg.event == ", "A01", "undeclared reference to 'A01'"},
		{"tests.yaml", `"Patient").active == `, "tru", "undeclared reference to 'tru'"},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.token, func(t *testing.T) {
			path := filepath.Join("testdata", "bad", tt.file)
			_, err := Load(path, env, testCatalog)
			var ye yamlx.Errors
			if !errors.As(err, &ye) {
				t.Fatalf("Load = %v, want yamlx.Errors", err)
			}
			want := posOf(t, path, tt.prefix+tt.token)
			want.Col += len([]rune(tt.prefix))
			if i := strings.LastIndexByte(tt.prefix, '\n'); i >= 0 {
				want = posOf(t, path, tt.prefix+tt.token)
				want.Line += strings.Count(tt.prefix, "\n")
				want.Col = len([]rune(tt.prefix[i+1:])) + 1
			}
			var found []string
			for _, e := range ye {
				if strings.Contains(e.Msg, tt.msg) {
					found = append(found, e.Pos.String())
				}
			}
			if diff := cmp.Diff([]string{want.String()}, found); diff != "" {
				t.Errorf("positions of %q (-want +got):\n%s\nall errors:\n%v", tt.msg, diff, err)
			}
		})
	}
}

func TestLoadAllDuplicateNamesAndEveryFile(t *testing.T) {
	env := testEnv(t)
	_, err := LoadAll([]string{filepath.Join("testdata", "dup"), filepath.Join("testdata", "bad", "non_bool.yaml")}, env, testCatalog, LoadOptions{Strict: true})
	if err == nil {
		t.Fatal("LoadAll succeeded, want errors")
	}
	checkGolden(t, filepath.Join("testdata", "dup.golden"), err.Error()+"\n")
}

func TestLoadAllGood(t *testing.T) {
	env := testEnv(t)
	routes, err := LoadAll([]string{filepath.Join("testdata", "good")}, env, testCatalog, LoadOptions{})
	if err != nil {
		t.Fatalf("LoadAll: %v", err)
	}
	var names []string
	for _, r := range routes {
		names = append(names, r.Name)
	}
	if diff := cmp.Diff([]string{"good-fhir", "good-pas"}, names); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

// TestLoadAllExtensionsInAnyCase: a route file named .YAML or .Yml is
// loaded, not silently skipped; other files are.
func TestLoadAllExtensionsInAnyCase(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "good", "pas.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, route := range map[string]string{"upper.YAML": "upper", "mixed.Yml": "mixed", "notes.txt": "notes"} {
		body := strings.Replace(string(src), "name: good-pas", "name: "+route, 1)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	routes, err := LoadAll([]string{dir}, testEnv(t), testCatalog, LoadOptions{})
	if err != nil {
		t.Fatalf("LoadAll: %v", err)
	}
	var names []string
	for _, r := range routes {
		names = append(names, r.Name)
	}
	if diff := cmp.Diff([]string{"mixed", "upper"}, names); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

func TestLoadAllSameFileTwice(t *testing.T) {
	dir := filepath.Join("testdata", "good")
	routes, err := LoadAll([]string{dir, "./" + filepath.Join(dir, "pas.yaml")}, testEnv(t), testCatalog, LoadOptions{})
	if err != nil {
		t.Fatalf("LoadAll: %v", err)
	}
	if len(routes) != 2 {
		t.Errorf("%d routes, want 2", len(routes))
	}
}

func TestLoadAllMissingPath(t *testing.T) {
	_, err := LoadAll([]string{filepath.Join(t.TempDir(), "nope")}, testEnv(t), testCatalog, LoadOptions{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadAll = %v, want a not-exist error", err)
	}
	// A missing path does not hide the other files' errors.
	_, err = LoadAll([]string{filepath.Join(t.TempDir(), "nope"), filepath.Join("testdata", "bad", "non_bool.yaml")}, testEnv(t), testCatalog, LoadOptions{})
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "non_bool.yaml:") {
		t.Errorf("LoadAll = %v, want the missing path and non_bool.yaml's errors", err)
	}
}

func TestLoadCompiledRoute(t *testing.T) {
	r, err := Load(filepath.Join("testdata", "good", "pas.yaml"), testEnv(t), testCatalog)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	type summary struct {
		Name, Description, Source, Purpose string
		Default                            consent.Outcome
		Destinations                       []string
		Raw                                []bool
		Programs                           []string
		Steps, Tests                       int
	}
	got := summary{Name: r.Name, Description: r.Description, Source: r.Source, Purpose: r.Purpose, Default: r.Default, Steps: len(r.steps), Tests: len(r.Tests)}
	for _, d := range r.Destinations {
		got.Destinations = append(got.Destinations, d.Name)
		got.Raw = append(got.Raw, d.Raw)
	}
	for _, p := range r.Programs {
		got.Programs = append(got.Programs, p.Pos.String()+" "+p.Where)
	}
	file := filepath.Join("testdata", "good", "pas.yaml")
	want := summary{
		Name: "good-pas", Description: "A valid route used by the tests.", Source: "pas", Purpose: "direct-care", Default: consent.Permit,
		Destinations: []string{"fhir-store", "data-quality"}, Raw: []bool{false, true},
		Programs: []string{
			file + ":6:8 match",
			file + ":12:11 transform[0].keep",
			file + ":15:11 destinations[0].when",
		},
		Steps: 1, Tests: 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLoadUnreadable(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), testEnv(t), testCatalog)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load = %v, want a not-exist error", err)
	}
}

func TestLoadWithoutCatalog(t *testing.T) {
	// A nil catalog checks no references (used by tools without a config).
	if _, err := Load(filepath.Join("testdata", "good", "pas.yaml"), testEnv(t), nil); err != nil {
		t.Errorf("Load: %v", err)
	}
}

func TestTakes(t *testing.T) {
	tests := []struct {
		name        string
		events      []string
		messageType string
		event       string
		want        bool
	}{
		{"no events take all", nil, "ADT^A02", "A02", true},
		{"full type", []string{"ADT^A01"}, "ADT^A01", "A01", true},
		{"full type, event from type", []string{"ADT^A01"}, "ADT^A01", "", true},
		{"short event", []string{"A01"}, "ADT^A01", "A01", true},
		{"short event from type", []string{"A01"}, "ADT^A01", "", true},
		{"short event from translation", []string{"A01"}, "ADT", "A01", true},
		{"other event", []string{"ADT^A01", "A03"}, "ADT^A02", "A02", false},
		{"other type same event", []string{"ORM^A01"}, "ADT^A01", "A01", false},
		{"FHIR resource type", []string{"Bundle"}, "Bundle", "", true},
		{"FHIR other type", []string{"Bundle"}, "Patient", "", false},
		{"no type", []string{"A01"}, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Route{}
			if tt.events != nil {
				r.events = map[string]bool{}
				for _, e := range tt.events {
					r.events[e] = true
				}
			}
			if got := r.Takes(tt.messageType, tt.event); got != tt.want {
				t.Errorf("Takes(%q, %q) = %v, want %v", tt.messageType, tt.event, got, tt.want)
			}
		})
	}
}

func FuzzLoad(f *testing.F) {
	for _, dir := range []string{"bad", "good", "dup"} {
		files, _ := filepath.Glob(filepath.Join("testdata", dir, "*.y*ml"))
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil {
				f.Add(b)
			}
		}
	}
	shipped, _ := filepath.Glob(filepath.Join("..", "..", "routes", "*.yaml"))
	for _, file := range shipped {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	// Hostile shapes (see TestHostileRouteFiles); the corpora hold no
	// route files.
	for _, expr := range []string{
		strings.Repeat("[", 40) + strings.Repeat("]", 40) + " == []",
		`msg.id.replace("", msg.id).size() > 0`,
		strings.Repeat("[1].all(x, ", 12) + "true" + strings.Repeat(")", 12),
		`"a" // ((((` + "\n" + ` == "a"`,
	} {
		f.Add([]byte(hostileRoute(expr)))
	}
	f.Add([]byte("name: x\nsource:\n  adapter: pas\n  events: [&a A01, *a, *a]\nmatch: *a\nconsent: {purpose: direct-care, legal_basis: direct-care, default: permit}\ndestinations: [{name: fhir-store}]\n"))
	env := testEnv(f)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := Load(path, env, testCatalog)
		if err != nil {
			var ye yamlx.Errors
			if !errors.As(err, &ye) {
				t.Fatalf("error is %T, want yamlx.Errors: %v", err, err)
			}
			return
		}
		if r.Name == "" || len(r.Destinations) == 0 {
			t.Fatalf("loaded route without a name or destinations: %+v", r)
		}
	})
}

// eventCatalog is a fakeCatalog whose pas input says what it translates.
type eventCatalog struct{ fakeCatalog }

func (eventCatalog) SourceEvents(name string) ([]string, bool) {
	if name == "pas" {
		return []string{"ADT^A01", "ADT^A03"}, true
	}
	return nil, false
}

// TestLoadUnknownEvents checks that a route naming an event its source
// never translates is refused where the event is written, every one of
// them, while a source that does not say takes any event.
func TestLoadUnknownEvents(t *testing.T) {
	tests := []struct {
		name, source, events string
		want                 []string
		unwanted             string // in no error
	}{
		{"known full and short", "pas", "[ADT^A01, A03]", nil, ""},
		{"typo and unknown", "pas", "[ADT^A1, A01, XYZ, ORU^R01]", []string{
			`:4:12: source.events: input "pas" never translates "ADT^A1"; it translates ADT^A01, ADT^A03`,
			`:4:25: source.events: input "pas" never translates "XYZ"`,
			`:4:30: source.events: input "pas" never translates "ORU^R01"; it translates ADT^A01, ADT^A03 (to route ORU^R01 untranslated, list it in the input's relay setting, with payload: raw)`,
		}, ""},
		{"a type the feed may send", "pas", "[SIU^S12, MDM^*]", []string{
			`:4:12: source.events: input "pas" never translates "SIU^S12"; it translates ADT^A01, ADT^A03 (to route SIU^S12 untranslated, list it in the input's relay setting, with payload: raw)`,
			`:4:21: source.events: input "pas" never translates "MDM^*"; it translates ADT^A01, ADT^A03 (to route MDM^* untranslated`,
		}, ""},
		{"a typo is not offered relay", "pas", "[ADT^A1, XYZ]", []string{`:4:12: source.events: input "pas" never translates "ADT^A1"`}, "relay setting"},
		{"source that does not say", "fhir", "[Bundle, Patient]", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, err := loadEventsRoute(t, tt.source, tt.events, "")
			wantLoadErrors(t, err, path, tt.want)
			if tt.unwanted != "" && err != nil && strings.Contains(err.Error(), tt.unwanted) {
				t.Errorf("error holds %q:\n%v", tt.unwanted, err)
			}
		})
	}
}

// TestLoadEventLiterals checks which comparisons of msg.event and
// msg.type with a literal are refused for never holding: one an HL7 v2
// route's events leave out is, while a FHIR route naming message types
// (Bundle, Patient) takes any event of them, such as a Bundle's type.
func TestLoadEventLiterals(t *testing.T) {
	tests := []struct {
		name, source, events, match string
		want                        []string
	}{
		{"an event the route takes", "pas", "[ADT^A01, A03]", `msg.event in ["A01", "A03"] && msg.type != ""`, nil},
		{"an event the route leaves out", "pas", "[ADT^A01]", `msg.event == "A02"`, []string{`:5:22: match: msg.event is never "A02" here`}},
		{"a posted Bundle's type", "fhir", "[Bundle, Patient]", `msg.event == "transaction" || msg.event == "Patient"`, nil},
		{"a FHIR route's type", "fhir", "[Bundle]", `msg.type == "Bundle"`, nil},
		{"a FHIR type the route leaves out", "fhir", "[Bundle]", `msg.type == "Patient"`, []string{`:5:21: match: msg.type is never "Patient" here`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, err := loadEventsRoute(t, tt.source, tt.events, "match: '"+tt.match+"'\n")
			wantLoadErrors(t, err, path, tt.want)
		})
	}
}

// TestServeLetsEventLiteralsPass checks that what lint refuses of a
// comparison with an event the route does not take, or a destination it
// has not, does not stop serve's load: an extra entry of an in list is
// harmless, and an engine upgraded should not refuse to start over it.
func TestServeLetsEventLiteralsPass(t *testing.T) {
	src := "name: r\nsource:\n  adapter: pas\n  events: [ADT^A01, ADT^A03]\nmatch: 'msg.event in [\"A01\", \"A02\", \"A03\"]'\n" +
		"consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\n" +
		"destinations:\n  - name: fhir-store\n    when: 'destination.name != \"archive\"'\n"
	path := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, testEnv(t), eventCatalog{testCatalog})
	wantLoadErrors(t, err, path, []string{`:5:30: match: msg.event is never "A02" here`, `:12:32: destinations[0].when: destination.name is never "archive"`})
	if _, err := LoadAll([]string{path}, testEnv(t), eventCatalog{testCatalog}, LoadOptions{}); err != nil {
		t.Errorf("serve's load refused the route: %v", err)
	}
}

// loadEventsRoute writes and loads, with eventCatalog, a route of
// source taking events, with the lines extra after them, and returns its
// path and the load error.
func loadEventsRoute(t *testing.T, source, events, extra string) (string, error) {
	t.Helper()
	src := "name: r\nsource:\n  adapter: " + source + "\n  events: " + events + "\n" + extra +
		"consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\n" +
		"destinations:\n  - name: fhir-store\n"
	path := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, testEnv(t), eventCatalog{testCatalog})
	return path, err
}

// wantLoadErrors checks that err, from loading the route file at path,
// is nil when want is empty and otherwise holds each of want, a
// position in path and its message.
func wantLoadErrors(t *testing.T, err error, path string, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatal("Load accepted the route")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), path+w) {
			t.Errorf("error does not hold %q:\n%v", path+w, err)
		}
	}
}

// relayCatalog is an eventCatalog whose pas input also relays orders and
// every scheduling event untranslated.
type relayCatalog struct{ eventCatalog }

func (relayCatalog) SourceRelays(name string) []string {
	if name == "pas" {
		return []string{"ORM^O01", "SIU^*", "ADT^*"}
	}
	return nil
}

// TestLoadRelayedEvents checks the events of a route on an input that
// relays types untranslated: named in full they are taken, every
// destination must then send them raw, and the rest are refused where
// they are written.
func TestLoadRelayedEvents(t *testing.T) {
	tests := []struct {
		name, events, payload string
		want                  []string
	}{
		{"relayed, raw", "[ORM^O01, SIU^S12, ADT^A17]", "raw", nil},
		{"every event of a relayed type", "[SIU^*]", "raw", nil},
		{"translated only, as FHIR", "[ADT^A01, A03]", "fhir", nil},
		{"every ADT event, raw", "[ADT^*]", "raw", nil},
		{"relayed, as FHIR", "[ADT^A01, ORM^O01]", "fhir", []string{
			`:11:14: destinations[0]: the route takes message types input "pas" relays untranslated, so it sends them as they came: set payload: raw`,
		}},
		{"every ADT event, as FHIR", "[ADT^*]", "fhir", []string{`:11:14: destinations[0]: the route takes message types input "pas" relays`}},
		{"neither", "[ORM^O02, A17, OML^*, X^*]", "raw", []string{
			`:4:12: source.events: input "pas" neither translates nor relays "ORM^O02"; it translates ADT^A01, ADT^A03, and relays ORM^O01, SIU^*, ADT^*`,
			`:4:21: source.events: input "pas" never translates "A17"; it translates ADT^A01, ADT^A03, and relays ORM^O01, SIU^*, ADT^* (name a relayed type in full, such as ADT^A17)`,
			`:4:26: source.events: input "pas" neither translates nor relays "OML^*"`,
			`:4:33: source.events: "X^*": TYPE^* takes a three-character message type, such as SIU^*`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "name: r\nsource:\n  adapter: pas\n  events: " + tt.events + "\n" +
				"consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\n" +
				"destinations:\n  - name: fhir-store\n    payload: " + tt.payload + "\n"
			path := filepath.Join(t.TempDir(), "r.yaml")
			if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadAll([]string{path}, testEnv(t), relayCatalog{eventCatalog{testCatalog}}, LoadOptions{Strict: true})
			wantLoadErrors(t, err, path, tt.want)
		})
	}
}

// v2OnlyCatalog is a relayCatalog whose data-quality destination takes
// HL7 v2 only, as an MLLP destination does.
type v2OnlyCatalog struct{ relayCatalog }

func (v2OnlyCatalog) PayloadTaken(dest, _ string, raw bool) (string, bool, bool) {
	if dest != "data-quality" {
		return "", true, true
	}
	if raw {
		return "application/hl7-v2", true, false
	}
	return "application/fhir+json", false, true
}

// TestLoadRelayedToV2Destination checks that a relay route sending FHIR
// to a destination that takes HL7 v2 only gets one error there, the
// relay's, not a second about the content type.
func TestLoadRelayedToV2Destination(t *testing.T) {
	src := "name: r\nsource:\n  adapter: pas\n  events: [ORM^O01]\n" +
		"consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\n" +
		"destinations:\n  - name: data-quality\n"
	path := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadAll([]string{path}, testEnv(t), v2OnlyCatalog{relayCatalog{eventCatalog{testCatalog}}}, LoadOptions{Strict: true})
	var ye yamlx.Errors
	if !errors.As(err, &ye) || len(ye) != 1 || !strings.Contains(err.Error(), "set payload: raw") {
		t.Errorf("errors %v, want the relay's alone", err)
	}
}

// TestTakesRelayed checks which message types a route on a relaying input
// takes: one naming no events takes every translated type and no relayed
// one; "TYPE^*" takes every event of the type.
func TestTakesRelayed(t *testing.T) {
	load := func(events string) *Route {
		t.Helper()
		src := "name: r\nsource:\n  adapter: pas\n" + events +
			"consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\n" +
			"destinations:\n  - name: fhir-store\n    payload: raw\n"
		path := filepath.Join(t.TempDir(), "r.yaml")
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Load(path, testEnv(t), relayCatalog{eventCatalog{testCatalog}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	all, siu, adt := load(""), load("  events: [SIU^*]\n"), load("  events: [ADT^*]\n")
	tests := []struct {
		typ           string
		all, siu, adt bool
	}{
		{"ADT^A01", true, false, true},
		{"ADT^A17", false, false, true},
		{"ORM^O01", false, false, false},
		{"SIU^S12", false, true, false},
		{"SIU^S26", false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			if got := [3]bool{all.Takes(tt.typ, ""), siu.Takes(tt.typ, ""), adt.Takes(tt.typ, "")}; got != [3]bool{tt.all, tt.siu, tt.adt} {
				t.Errorf("no events, SIU^*, ADT^* take it: %v, want %v", got, [3]bool{tt.all, tt.siu, tt.adt})
			}
		})
	}
}

// TestLoadAllServeLeavesLintChecks checks that serving (LoadOptions not
// strict) does not refuse a route over its tests or a repeated event,
// which lint reports.
func TestLoadAllServeLeavesLintChecks(t *testing.T) {
	dir := t.TempDir()
	src := routeHead[:len(routeHead)-1] + "\n  events: [A01, ADT^A01, A01]\n" + permit + "destinations:\n  - name: fhir-store\n" +
		"tests:\n  - name: one\n    input: {file: missing.hl7}\n    expect: {error: no.such.code, fhir: {nowhere: x.json}}\n" +
		"  - name: one\n    input: {inline: x}\n    expect: {filtered: true}\n"
	path := filepath.Join(dir, "route.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAll([]string{path}, testEnv(t), testCatalog, LoadOptions{}); err != nil {
		t.Errorf("serving refuses the route:\n%v", err)
	}
	_, err := LoadAll([]string{path}, testEnv(t), testCatalog, LoadOptions{Strict: true})
	var ye yamlx.Errors
	if !errors.As(err, &ye) || len(ye) != 7 {
		t.Errorf("lint gives %d errors, want 7 (repeated and overlapping events, test input, code, golden beside an error, golden key, test name):\n%v", len(ye), err)
	}
}

// TestLoadEveryEventOverlaps checks that strict loading refuses an event
// of a type beside "TYPE^*" for that type in either order, where the
// later of the two is written.
func TestLoadEveryEventOverlaps(t *testing.T) {
	tests := []struct {
		name, events string
		want         []string
	}{
		{"every event first", "[ADT^*, ADT^A01]", []string{`:4:19: source.events: "ADT^A01" overlaps "ADT^*"; list one of them`}},
		{"every event last", "[ADT^A01, ADT^*]", []string{`:4:21: source.events: "ADT^*" overlaps "ADT^A01"; list one of them`}},
		{"another type", "[ADT^A01, SIU^*]", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "name: r\nsource:\n  adapter: pas\n  events: " + tt.events + "\n" +
				"consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\n" +
				"destinations:\n  - name: fhir-store\n"
			path := filepath.Join(t.TempDir(), "r.yaml")
			if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadAll([]string{path}, testEnv(t), nil, LoadOptions{Strict: true})
			wantLoadErrors(t, err, path, tt.want)
		})
	}
}
