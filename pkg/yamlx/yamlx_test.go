package yamlx

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// code is a TextUnmarshaler: three capital letters.
type code string

func (c *code) UnmarshalText(b []byte) error {
	if len(b) != 3 || strings.ToUpper(string(b)) != string(b) {
		return errors.New("must be three capital letters")
	}
	*c = code(b)
	return nil
}

// levels is an Unmarshaler: a sequence of known level names, each wrong one
// reported.
type levels map[string]bool

func (l *levels) UnmarshalYAMLx(n Node, errs *Errors) {
	var names []String
	n.DecodeTo(&names, errs)
	*l = levels{}
	for i, s := range names {
		switch s.Value {
		case "debug", "info", "warn":
			(*l)[s.Value] = true
		default:
			errs.Add(s.Pos, "%s[%d]: unknown level %q", n.Path, i, s.Value)
		}
	}
}

type listener struct {
	Listen string `yaml:"listen" yamlx:"required"`
	Port   int    `yaml:"port"`
}

type route struct {
	Name   string   `yaml:"name" yamlx:"required"`
	Match  String   `yaml:"match" yamlx:"nonnull"`
	Config Node     `yaml:"config"`
	To     []string `yaml:"to" yamlx:"nonempty"`
}

type common struct {
	Owner string `yaml:"owner"`
}

type config struct {
	common   `yaml:",inline"`
	Name     string              `yaml:"name"`
	Enabled  bool                `yaml:"enabled"`
	Workers  int8                `yaml:"workers"`
	Max      uint16              `yaml:"max"`
	Ratio    float64             `yaml:"ratio"`
	Timeout  time.Duration       `yaml:"timeout"`
	Tags     []string            `yaml:"tags"`
	Inputs   map[string]listener `yaml:"inputs"`
	Routes   []route             `yaml:"routes"`
	Extra    any                 `yaml:"extra"`
	Ptr      *listener           `yaml:"ptr"`
	Code     code                `yaml:"code"`
	Levels   levels              `yaml:"levels"`
	Match    String              `yaml:"match"`
	Untagged string
	Skipped  string `yaml:"-"`
}

// errText returns the error's text, or "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestDecodeErrors(t *testing.T) {
	deep := strings.Repeat("[", 300) + strings.Repeat("]", 300)
	tests := []struct {
		name, yaml, want string
	}{
		// The required field the typo was taken for is not also reported
		// missing; one nothing was taken for is.
		{"unknown field with suggestion", "inputs:\n  pas:\n    listn: x\n",
			`c.yaml:3:5: unknown field "listn" in inputs.pas (did you mean "listen"?)`},
		{"unknown field far from the required one", "inputs:\n  pas:\n    zzzzzz: x\n",
			`c.yaml:3:5: unknown field "zzzzzz" in inputs.pas (allowed: listen, port)` + "\n" +
				`c.yaml:3:5: missing required field "listen" in inputs.pas`},
		{"unknown field lists allowed", "routes:\n- name: a\n  zzz: 1\n",
			`c.yaml:3:3: unknown field "zzz" in routes[0] (allowed: name, match, config, to)`},
		{"unknown field at top level", "ownr: a\n",
			`c.yaml:1:1: unknown field "ownr" (did you mean "owner"?)`},
		{"untagged and skipped fields are unknown", "untagged: a\nSkipped: b\n",
			`c.yaml:1:1: unknown field "untagged" (allowed: owner, name, enabled, workers, max, ratio, timeout, tags, inputs, routes, extra, ptr, code, levels, match)` + "\n" +
				`c.yaml:2:1: unknown field "Skipped" (allowed: owner, name, enabled, workers, max, ratio, timeout, tags, inputs, routes, extra, ptr, code, levels, match)`},
		{"duplicate key", "name: a\nname: b\n",
			`c.yaml:2:1: duplicate key "name" (first defined at line 1)`},
		{"duplicate map key", "inputs:\n  a: {listen: x}\n  a: {listen: y}\n",
			`c.yaml:3:3: duplicate key "a" in inputs (first defined at line 2)`},
		{"required missing", "routes:\n- match: x\n",
			`c.yaml:2:3: missing required field "name" in routes[0]`},
		{"required null", "routes:\n- name:\n",
			`c.yaml:2:3: missing required field "name" in routes[0]`},
		{"nonnull without a value", "routes:\n- name: a\n  match:\n",
			`c.yaml:3:9: routes[0].match: no value: give one, or leave the key out`},
		{"nonnull null", "routes:\n- name: a\n  match: ~\n",
			`c.yaml:3:10: routes[0].match: no value: give one, or leave the key out`},
		{"nonempty empty", "routes:\n- name: a\n  to: []\n",
			`c.yaml:3:7: routes[0].to: must not be empty`},
		{"boolean", "enabled: yes please\n",
			`c.yaml:1:10: enabled: expected a boolean, got "yes please"`},
		{"string from mapping", "name: {a: 1}\n",
			`c.yaml:1:7: name: expected a string, got a mapping`},
		{"struct from sequence", "ptr: [1]\n",
			`c.yaml:1:6: ptr: expected a mapping, got a sequence`},
		{"sequence from scalar", "tags: a\n",
			`c.yaml:1:7: tags: expected a sequence, got "a"`},
		{"map from scalar", "inputs: 3\n",
			`c.yaml:1:9: inputs: expected a mapping, got "3"`},
		{"int range", "workers: 300\n",
			`c.yaml:1:10: workers: expected an integer between -128 and 127, got "300"`},
		{"uint negative", "max: -1\n",
			`c.yaml:1:6: max: expected an integer between 0 and 65535, got "-1"`},
		{"not an integer", "workers: 1.5\n",
			`c.yaml:1:10: workers: expected an integer, got "1.5"`},
		{"integer from sequence", "workers: [1]\n",
			`c.yaml:1:10: workers: expected an integer, got a sequence`},
		{"number", "ratio: abc\n",
			`c.yaml:1:8: ratio: expected a number, got "abc"`},
		{"duration as integer", "timeout: 30\n",
			`c.yaml:1:10: timeout: expected a duration such as 30s, got "30"`},
		{"duration as mapping", "timeout: {s: 1}\n",
			`c.yaml:1:10: timeout: expected a duration such as 30s, got a mapping`},
		{"text unmarshaler", "code: abcd\n",
			`c.yaml:1:7: code: invalid value "abcd": must be three capital letters`},
		{"text unmarshaler from mapping", "code: {}\n",
			`c.yaml:1:7: code: expected a scalar, got a mapping`},
		{"String from sequence", "match: [a]\n",
			`c.yaml:1:8: match: expected a string, got a sequence`},
		{"unmarshaler reports every problem", "levels: [info, loud, quiet]\n",
			`c.yaml:1:16: levels[1]: unknown level "loud"` + "\n" +
				`c.yaml:1:22: levels[2]: unknown level "quiet"`},
		{"unmarshaler sees strict decode errors", "levels: info\n",
			`c.yaml:1:9: levels: expected a sequence, got "info"`},
		{"long value is shortened", "enabled: " + strings.Repeat("x", 70) + "\n",
			`c.yaml:1:10: enabled: expected a boolean, got "` + strings.Repeat("x", 60) + `..."`},
		{"second document", "name: a\n---\nname: b\n",
			`c.yaml:2:1: only one YAML document is allowed, found a second one`},
		{"trailing document marker", "name: a\n---\n", ""},
		{"empty file", "", `c.yaml:1:1: empty document`},
		{"only comments", "# nothing\n", `c.yaml:1:1: empty document`},
		{"null document", "---\n~\n", `c.yaml:1:1: empty document`},
		{"syntax error with line", "name: a\ntags: [\n",
			`c.yaml:2:1: syntax error: did not find expected node content (at or after this line)`},
		{"syntax error on first line", "a: b: c\n",
			`c.yaml:1:1: syntax error: mapping values are not allowed in this context`},
		{"syntax error in second document", "name: a\n---\n[\n",
			`c.yaml:3:1: syntax error: did not find expected node content (at or after this line)`},
		// yaml.v3's parser gives lines from 0, its scanner from 1.
		{"unclosed brace", "log:\n  level: info\nhttp:\n  listen: x\nrouter: {batch: 64\nshutdown_timeout: 30s\n",
			`c.yaml:5:1: syntax error: did not find expected ',' or '}' (at or after this line)`},
		{"unclosed bracket", "a: 1\nb: 2\nc: [1, 2\nd: 4\n",
			`c.yaml:3:1: syntax error: did not find expected ',' or ']' (at or after this line)`},
		{"unclosed bracket on the first line", "routes: [a, b\nlog:\n  level: info\n",
			`c.yaml:2:1: syntax error: did not find expected ',' or ']' (at or after this line)`},
		{"indented too little", "a: 1\nb:\n  - x\n y: 2\n",
			`c.yaml:4:2: syntax error: did not find expected key (is this line indented correctly?)`},
		// yaml.v3 names where the block being read starts; the line that
		// breaks it is found.
		{"nested block", "a:\n  b:\n    c: 1\n   d: 2\n",
			`c.yaml:4:4: syntax error: did not find expected key (is this line indented correctly?)`},
		{"CR line ends", "a: 1\rb: 2\rc: [1, 2\r",
			`c.yaml:3:1: syntax error: did not find expected ',' or ']' (at or after this line)`},
		{"indented too much", "a: 1\nb: 2\n  c: 3\n",
			`c.yaml:3:1: syntax error: mapping values are not allowed in this context`},
		{"bad character", "a: 1\nb: 2\nc: @x\n",
			`c.yaml:3:1: syntax error: found character that cannot start any token`},
		{"merge key", "<<: {name: a}\n",
			`c.yaml:1:1: merge keys (<<) are not supported`},
		{"non-string key", "inputs:\n  ? [a]\n  : {listen: x}\n",
			`c.yaml:2:5: inputs: expected a string key, got a sequence`},
		{"scalar root", "hello\n",
			`c.yaml:1:1: expected a mapping, got "hello"`},
		{"too deep", "extra: " + deep + "\n",
			fmt.Sprintf("c.yaml:1:%d: extra%s: nested more than 200 levels deep", 8+maxDepth, strings.Repeat("[0]", maxDepth))},
		{"alias cycle", "extra: &x [*x]\n",
			fmt.Sprintf("c.yaml:1:12: extra%s: nested more than 200 levels deep", strings.Repeat("[0]", maxDepth))},
		{"alias bomb", bomb(),
			`c.yaml:3:17: extra.a4[1][0][5][1]: aliases expand to more than 100000 nodes`},
		{"errors sorted by position", "routes:\n- match: x\n  zzz: 1\nworkers: x\nenabled: 2\n",
			`c.yaml:2:3: missing required field "name" in routes[0]` + "\n" +
				`c.yaml:3:3: unknown field "zzz" in routes[0] (allowed: name, match, config, to)` + "\n" +
				`c.yaml:4:10: workers: expected an integer, got "x"` + "\n" +
				`c.yaml:5:10: enabled: expected a boolean, got "2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg config
			err := Decode("c.yaml", []byte(tt.yaml), &cfg)
			if diff := cmp.Diff(tt.want, errText(err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			if err != nil {
				var errs Errors
				if !errors.As(err, &errs) {
					t.Errorf("error is %T, want Errors", err)
				}
			}
		})
	}
}

// TestSyntaxPositions checks the errors whose place yaml.v3 gets wrong: a
// tab in the indentation, and a line indented wrongly inside a block.
func TestSyntaxPositions(t *testing.T) {
	const tabErr = "syntax error: found a tab character that violates indentation (a tab: YAML indents with spaces only)"
	route := "name: adt\n" + // a route file with its 18th line mis-indented
		"source:\n" +
		"  adapter: pas\n" +
		"  events: [A01, A08]\n" +
		"consent:\n" +
		"  basis: direct-care\n" +
		"steps:\n" +
		"  - map: patient\n" +
		"  - map: encounter\n" +
		"# where it goes\n" +
		"\n" +
		"destinations:\n" +
		"  - name: fhir\n" +
		"    url: https://fhir.example/r4\n" +
		"  - name: archive\n" +
		"    url: file:///var/archive\n" +
		"    format: ndjson\n" +
		"   paylod: raw\n" +
		"log: info\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"tab in a nested mapping", "a:\n  b: x\n\tc: y\n", "c.yaml:3:1: " + tabErr},
		{"tab on line 10 of a route", "name: adt\nsource:\n  adapter: pas\nsteps:\n  - map: patient\n" +
			"destinations:\n  - name: fhir\n    url: x\n    format: json\n\tpayload: raw\n",
			"c.yaml:10:1: " + tabErr},
		{"tab on the last line of six", "a: 1\nb:\n  c: 2\n  d: 3\n  e: 4\n\tf: 5\n", "c.yaml:6:1: " + tabErr},
		{"tab on the last line without a line end", "a:\n  b: x\n\tc: y", "c.yaml:3:1: " + tabErr},
		{"tab on the second line after a sequence entry", "- foo\n\tbar\n", "c.yaml:2:1: " + tabErr},
		{"tab after spaces", "a:\n  b: ü\n  \tc: y\n", "c.yaml:3:3: " + tabErr},
		{"tab on the first line", "\tname: x\n",
			"c.yaml:1:1: syntax error: found character that cannot start any token (a tab: YAML indents with spaces only)"},
		{"tab after spaces on the first line", "  \tname: x\n",
			"c.yaml:1:3: syntax error: found character that cannot start any token (a tab: YAML indents with spaces only)"},
		{"tab after a sequence entry", "- \tx\n",
			"c.yaml:1:3: syntax error: found character that cannot start any token (a tab: YAML indents with spaces only)"},
		{"tab in a quoted string is not blamed", "a: \"x\ty\"\nb:\n  c: d\n\te: f\n", "c.yaml:4:1: " + tabErr},
		{"tab starting a quoted string's line is not blamed", "a: \"x\n\ty\"\nb:\n  c: d\n\te: f\n", "c.yaml:5:1: " + tabErr},
		{"tab in a block scalar is not blamed", "a:\n  b: |\n    x\n    \tz\n  c: x\n\te: f\n", "c.yaml:6:1: " + tabErr},
		{"tab in a multi-line plain scalar is not blamed", "a:\n  b: x\n    y\n     \tz\n\tc: y\n", "c.yaml:5:1: " + tabErr},
		{"tab indenting a block scalar", "a:\n  b: |\n    x\n\ty\n",
			"c.yaml:4:1: syntax error: found a tab character where an indentation space is expected (a tab: YAML indents with spaces only)"},
		{"tab in a flow sequence", "a: [x,\n\ty\n\t]\n", "c.yaml:3:1: " + tabErr},
		{"tab with CR line ends", "a:\r  b: x\r\tc: y\r", "c.yaml:3:1: " + tabErr},
		{"tab after a byte order mark", "\ufeffa:\n  b: x\n\tc: y\n", "c.yaml:3:1: " + tabErr},
		{"tab in a second document", "x: 1\n---\na:\n  b: x\n\tc: y\n", "c.yaml:5:1: " + tabErr},
		{"bad character before a tab", "a: 1\nb: 2\nc: @x\t\n",
			"c.yaml:3:1: syntax error: found character that cannot start any token"},
		{"key indented too far back in a sequence item", route,
			"c.yaml:18:4: syntax error: did not find expected '-' indicator (is this line indented correctly?)"},
		{"key outdented in a sequence item", "a:\n  - b: 1\n    c: 2\n  d: 3\n",
			"c.yaml:4:3: syntax error: did not find expected '-' indicator (is this line indented correctly?)"},
		{"sequence entry in a mapping after a comment", "a:\n  b: 1\n  # c\n\n  - x\n",
			"c.yaml:5:3: syntax error: did not find expected key (is this line indented correctly?)"},
		{"key between two levels", "a:\n  b: 1\n c:\n",
			"c.yaml:3:2: syntax error: did not find expected key (is this line indented correctly?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out map[string]any
			err := Decode("c.yaml", []byte(tt.yaml), &out)
			if diff := cmp.Diff(tt.want, errText(err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// bomb returns a "billion laughs" document whose aliases expand to 10^10
// nodes.
func bomb() string {
	var b strings.Builder
	b.WriteString("extra:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&b, "  a%d: &a%d [", i, i)
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}

	return b.String()
}

func TestDecodeValues(t *testing.T) {
	in := `
owner: team
name: pas
enabled: true
workers: -0x10
max: 65535
ratio: 0.5
timeout: 1h30m
tags: &tags [a, b]
inputs:
  pas: {listen: ":2575"}
routes:
  - name: r1
    match: msg.type == "ADT"
    config: {url: "http://x"}
extra:
  list: *tags
  n: 3
  f: 1.5
  ok: false
  nothing: null
ptr: {listen: x}
code: ABC
levels: [debug, warn]
`
	var got config
	if err := Decode("c.yaml", []byte(in), &got); err != nil {
		t.Fatal(err)
	}
	want := config{
		common:  common{Owner: "team"},
		Name:    "pas",
		Enabled: true,
		Workers: -16,
		Max:     65535,
		Ratio:   0.5,
		Timeout: 90 * time.Minute,
		Tags:    []string{"a", "b"},
		Inputs:  map[string]listener{"pas": {Listen: ":2575"}},
		Routes: []route{{
			Name:   "r1",
			Match:  String{Value: `msg.type == "ADT"`, Pos: Pos{File: "c.yaml", Line: 14, Col: 12}},
			Config: mustNode(t, `{url: "http://x"}`),
		}},
		Extra: map[string]any{
			"list": []any{"a", "b"}, "n": 3, "f": 1.5, "ok": false, "nothing": nil,
		},
		Ptr:    &listener{Listen: "x"},
		Code:   "ABC",
		Levels: levels{"debug": true, "warn": true},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(config{})); diff != "" {
		t.Errorf("decoded (-want +got):\n%s", diff)
	}
}

func mustNode(t *testing.T, text string) Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	return Node{Node: doc.Content[0]}
}

func TestDefaultsKept(t *testing.T) {
	got := config{
		Name:    "default",
		Timeout: 30 * time.Second,
		Tags:    []string{"x"},
		Inputs:  map[string]listener{"keep": {Listen: "k", Port: 1}, "pas": {Listen: "old", Port: 2575}},
		Ptr:     &listener{Listen: "p", Port: 9},
	}
	in := "enabled: true\nname:\ninputs:\n  pas: {listen: new}\nptr: {listen: q}\n"
	if err := Decode("c.yaml", []byte(in), &got); err != nil {
		t.Fatal(err)
	}
	want := config{
		Name:    "default",
		Enabled: true,
		Timeout: 30 * time.Second,
		Tags:    []string{"x"},
		Inputs:  map[string]listener{"keep": {Listen: "k", Port: 1}, "pas": {Listen: "new", Port: 2575}},
		Ptr:     &listener{Listen: "q", Port: 9},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(config{})); diff != "" {
		t.Errorf("decoded (-want +got):\n%s", diff)
	}
}

func TestStringPosAt(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		value   string
		pos     Pos
		offsets []int
		want    []Pos
	}{
		{"plain", "match: a == b\n", "a == b", Pos{"f", 1, 8},
			[]int{0, 5, 6}, []Pos{{"f", 1, 8}, {"f", 1, 13}, {"f", 1, 14}}},
		{"plain multibyte", "match: é == b\n", "é == b", Pos{"f", 1, 8},
			[]int{0, 6}, []Pos{{"f", 1, 8}, {"f", 1, 13}}},
		{"plain multi-line", "match: a &&\n  b\n", "a && b", Pos{"f", 1, 8},
			[]int{2, 5}, []Pos{{"f", 1, 10}, {"f", 2, 3}}},
		{"anchored", "match: &m x\n", "x", Pos{"f", 1, 8},
			[]int{0}, []Pos{{"f", 1, 11}}},
		{"double-quoted", `match: "a \"b\" \u00e9 c"` + "\n", `a "b" é c`, Pos{"f", 1, 8},
			[]int{0, 2, 3, 6, 9}, []Pos{{"f", 1, 9}, {"f", 1, 11}, {"f", 1, 13}, {"f", 1, 17}, {"f", 1, 24}}},
		{"double-quoted continued", "match: \"a\\\n  b\"\n", "ab", Pos{"f", 1, 8},
			[]int{0, 1}, []Pos{{"f", 1, 9}, {"f", 2, 3}}},
		{"single-quoted", "match: 'it''s'\n", "it's", Pos{"f", 1, 8},
			[]int{0, 2, 3}, []Pos{{"f", 1, 9}, {"f", 1, 11}, {"f", 1, 13}}},
		{"literal block", "match: |\n  a &&\n    b\n", "a &&\n  b\n", Pos{"f", 1, 8},
			[]int{0, 3, 7, 8}, []Pos{{"f", 2, 3}, {"f", 2, 6}, {"f", 3, 5}, {"f", 3, 6}}},
		{"literal block leading blank line", "match: |-  # note\n\n   x\n", "\nx", Pos{"f", 1, 8},
			[]int{1}, []Pos{{"f", 3, 4}}},
		{"folded block", "match: >-\n  a &&\n  b\n", "a && b", Pos{"f", 1, 8},
			[]int{0, 5}, []Pos{{"f", 2, 3}, {"f", 3, 3}}},
		{"offset clamped", "match: ab\n", "ab", Pos{"f", 1, 8},
			[]int{-3, 99}, []Pos{{"f", 1, 8}, {"f", 1, 10}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got config
			if err := Decode("f", []byte(tt.yaml), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(String{Value: tt.value, Pos: tt.pos}, got.Match); diff != "" {
				t.Errorf("String (-want +got):\n%s", diff)
			}
			var pos []Pos
			for _, off := range tt.offsets {
				pos = append(pos, got.Match.PosAt(off))
			}
			if diff := cmp.Diff(tt.want, pos); diff != "" {
				t.Errorf("PosAt(%v) (-want +got):\n%s", tt.offsets, diff)
			}
		})
	}
}

func TestStringPosAtHandBuilt(t *testing.T) {
	s := String{Value: "ab\ncd", Pos: Pos{File: "f", Line: 4, Col: 5}}
	got := []Pos{s.PosAt(1), s.PosAt(4)}
	want := []Pos{{"f", 4, 6}, {"f", 5, 2}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("PosAt (-want +got):\n%s", diff)
	}
}

type adapterConfig struct {
	URL     string        `yaml:"url" yamlx:"required"`
	Timeout time.Duration `yaml:"timeout"`
	Filter  String        `yaml:"filter"`
}

func TestNodeDeferredDecode(t *testing.T) {
	in := "routes:\n  - name: a\n    config:\n      url: http://x\n      filter: |\n        x > 1\n  - name: b\n    config:\n      timeout: 5\n      bogus: 1\n  - name: c\n    config:\n  - name: d\n"
	var cfg config
	if err := Decode("r.yaml", []byte(in), &cfg); err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes

	var a adapterConfig
	if err := r[0].Config.Decode(&a); err != nil {
		t.Fatalf("decode route a: %v", err)
	}
	if diff := cmp.Diff(adapterConfig{URL: "http://x", Filter: String{Value: "x > 1\n", Pos: Pos{"r.yaml", 5, 15}}}, a); diff != "" {
		t.Errorf("route a (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Pos{"r.yaml", 6, 13}, a.Filter.PosAt(4)); diff != "" {
		t.Errorf("PosAt in deferred String (-want +got):\n%s", diff)
	}

	var b adapterConfig
	wantB := `r.yaml:9:7: missing required field "url" in routes[1].config` + "\n" +
		`r.yaml:9:16: routes[1].config.timeout: expected a duration such as 30s, got "5"` + "\n" +
		`r.yaml:10:7: unknown field "bogus" in routes[1].config (allowed: url, timeout, filter)`
	if diff := cmp.Diff(wantB, errText(r[1].Config.Decode(&b))); diff != "" {
		t.Errorf("route b errors (-want +got):\n%s", diff)
	}

	// A Child keeps the file, extends the path and still places Strings exactly.
	filter := r[0].Config.Node.Content[3]
	var f String
	child := r[0].Config.Child(filter, "filter")
	wantF := `r.yaml:5:15: routes[0].config.filter: expected an integer, got "x > 1\n"`
	if diff := cmp.Diff(wantF, errText(child.Decode(new(int)))); diff != "" {
		t.Errorf("child errors (-want +got):\n%s", diff)
	}
	if err := child.Decode(&f); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Pos{"r.yaml", 6, 13}, f.PosAt(4)); diff != "" {
		t.Errorf("PosAt in child String (-want +got):\n%s", diff)
	}

	got := []any{r[0].Config.IsZero(), r[2].Config.IsZero(), r[3].Config.IsZero(), r[0].Config.Pos(), r[3].Config.Pos()}
	want := []any{false, true, true, Pos{"r.yaml", 4, 7}, Pos{}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("IsZero and Pos (-want +got):\n%s", diff)
	}
	if err := r[3].Config.Decode(&b); err != nil {
		t.Errorf("decoding an absent node: %v", err)
	}
	if err := r[0].Config.Decode(b); err == nil {
		t.Error("decoding into a non-pointer succeeded")
	}
}

func TestNodeEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"{a: 1}", "{a: 1}", true},
		{"{a: 1}", "\n\n  {a: 1}", true},
		{"{a: 1}", "{a: 2}", false},
		{"[1]", "{a: 1}", false},
		{"~", "", true},
		{"~", "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+" vs "+tt.b, func(t *testing.T) {
			var x, y struct {
				N Node `yaml:"n"`
			}
			if err := Decode("a", []byte("n: "+tt.a), &x); err != nil {
				t.Fatal(err)
			}
			if err := Decode("b", []byte("n: "+tt.b), &y); err != nil {
				t.Fatal(err)
			}
			if got := x.N.Equal(y.N); got != tt.want {
				t.Errorf("Equal = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	var errs Errors
	if errs.Err() != nil {
		t.Fatal("empty Errors gave a non-nil error")
	}
	errs.Add(Pos{File: "b.yaml", Line: 1, Col: 1}, "third %d", 3)
	errs.Add(Pos{File: "a.yaml", Line: 2, Col: 5}, "second")
	errs.Add(Pos{File: "a.yaml", Line: 2, Col: 1}, "first")
	errs.Add(Pos{}, "no position")
	errs.Add(Pos{Line: 7}, "line only")
	want := "no position\n7: line only\na.yaml:2:1: first\na.yaml:2:5: second\nb.yaml:1:1: third 3"
	if diff := cmp.Diff(want, errText(errs.Err())); diff != "" {
		t.Errorf("Err (-want +got):\n%s", diff)
	}
}

func TestInvalidTarget(t *testing.T) {
	var cfg config
	tests := []struct {
		name string
		out  any
		want string
	}{
		{"nil", nil, "f:1:1: yamlx: cannot decode into <nil>, need a non-nil pointer"},
		{"struct value", cfg, "f:1:1: yamlx: cannot decode into yamlx.config, need a non-nil pointer"},
		{"unsupported kind", &struct {
			C chan int `yaml:"name"`
		}{}, "f:1:7: name: yamlx: cannot decode into Go type chan int"},
		{"non-string map key", &struct {
			M map[int]string `yaml:"name"`
		}{}, "f:1:7: name: yamlx: cannot decode into Go type map[int]string, map keys must be strings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, errText(Decode("f", []byte("name: x\n"), tt.out))); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTooManyErrors(t *testing.T) {
	var b strings.Builder
	for i := range maxErrors + 20 {
		fmt.Fprintf(&b, "bad%d: 1\n", i)
	}
	err := Decode("f", []byte(b.String()), &config{})
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got %v, want Errors", err)
	}
	if got, want := len(errs), maxErrors+1; got != want {
		t.Errorf("got %d errors, want %d", got, want)
	}
	if got, want := errs[len(errs)-1].Msg, "too many errors, stopped after 100"; got != want {
		t.Errorf("last error %q, want %q", got, want)
	}
}

// TestGolden decodes each testdata/*.yaml file and compares every error
// reported with testdata/*.golden; run with -update to rewrite them.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			var cfg config
			got := errText(DecodeFile(file, &cfg)) + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeFileMissing(t *testing.T) {
	err := DecodeFile(filepath.Join(t.TempDir(), "none.yaml"), &config{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want an error wrapping os.ErrNotExist", err)
	}
}

func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(bomb()))
	f.Add([]byte("match: \"a\\x41\\u00e9\\U0001F600\\\n b\"\nroutes: [{name: a, match: '''x''', config: {a: &a [1]}}]\n"))
	f.Add([]byte("match: >\n  a\n\n  b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var cfg config
		err := Decode("fuzz.yaml", data, &cfg)
		if err != nil && err.Error() == "" {
			t.Error("error with empty text")
		}
		for i := -1; i <= len(cfg.Match.Value)+1; i++ {
			cfg.Match.PosAt(i)
		}
		for _, r := range cfg.Routes {
			var out struct {
				Any any    `yaml:"any"`
				S   String `yaml:"s"`
			}
			_ = r.Config.Decode(&out)
			_ = r.Config.Equal(r.Config)
			out.S.PosAt(len(out.S.Value) / 2)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	data, err := os.ReadFile("testdata/valid.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		var cfg config
		if err := Decode("valid.yaml", data, &cfg); err != nil {
			b.Fatal(err)
		}
	}
}

func TestNodePosOf(t *testing.T) {
	in := "inputs:\n  pas:\n    listen: 127.0.0.1:2575\n    tls:\n      cert: file:a\n    hosts:\n      - a\n      - b\n"
	var doc struct {
		Inputs map[string]Node `yaml:"inputs"`
	}
	if err := Decode("c.yaml", []byte(in), &doc); err != nil {
		t.Fatal(err)
	}
	n := doc.Inputs["pas"]
	for _, tc := range []struct {
		path string
		want Pos
	}{
		{"listen", Pos{"c.yaml", 3, 13}},
		{"tls.cert", Pos{"c.yaml", 5, 13}},
		{"tls.key", Pos{"c.yaml", 4, 5}}, // absent: its parent's key
		{"hosts[1]", Pos{"c.yaml", 8, 9}},
		{"hosts[1].name", Pos{"c.yaml", 8, 9}}, // under a scalar: the element
		{"hosts[5]", Pos{"c.yaml", 6, 5}},      // past the end: the sequence's key
		{"max_connections", Pos{"c.yaml", 3, 5}},
		{"", Pos{"c.yaml", 3, 5}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, n.PosOf(tc.path)); diff != "" {
				t.Errorf("PosOf(%q) (-want +got):\n%s", tc.path, diff)
			}
		})
	}
	if got := (Node{File: "c.yaml"}).PosOf("listen"); got != (Pos{File: "c.yaml"}) {
		t.Errorf("PosOf on an absent node = %v", got)
	}
}

func TestIsPath(t *testing.T) {
	for path, want := range map[string]bool{
		"listen": true, "tls.client_ca": true, "hosts[2]": true, "a.b[0].c_1": true, "destinations.fhir-store.retry": true,
		"": false, "Listen": false, "tls..key": false, "max connections": false, "1st": false, "-x": false,
	} {
		if got := IsPath(path); got != want {
			t.Errorf("IsPath(%q) = %v, want %v", path, got, want)
		}
	}
}
