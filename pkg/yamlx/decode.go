// Package yamlx strictly decodes YAML configuration files into Go structs
// and reports every problem at once, each as "file:line:col: path: message",
// sorted by position.
//
// Struct fields are decoded by their `yaml:"name"` tag; fields without a
// tag, with the tag "-", or unexported are left alone, and `yaml:",inline"`
// merges the fields of an embedded struct. A `yamlx:"required"` tag makes a
// missing or null key an error; `yamlx:"nonnull"` makes a key written with
// no value (or null) an error, where leaving the key out is allowed but a
// forgotten value must not quietly mean the same; `yamlx:"nonempty"` makes
// an empty sequence or mapping an error. Unknown keys (with a suggestion when one is
// likely a typo), duplicate keys, a scalar where a mapping or sequence
// belongs, and values that do not fit the Go type are all errors. Values
// already set in the output are defaults: a key that is absent, or present
// with a null value, leaves them as they are.
//
// Besides strings, booleans, integers (range checked), floats, slices,
// pointers, maps with string keys and structs, it decodes time.Duration
// (from "30s", never a bare number), String (a string and where it was
// written), Node (a subtree kept for later), any (as map[string]any, []any
// and scalars), Unmarshaler and encoding.TextUnmarshaler.
//
// Aliases are resolved, with a limit on how many nodes they may expand to,
// and nesting is limited to a fixed depth, so hostile input cannot exhaust
// memory or the stack. Merge keys ("<<") are not supported.
package yamlx

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

const (
	maxDepth    = 200     // deepest nesting decoded
	maxExpanded = 100_000 // most nodes that aliases may expand to
	maxErrors   = 100     // decoding stops after this many errors
)

// Unmarshaler lets a type decode itself from a node. It appends every
// problem to errs, with positions taken from the node, and must not stop at
// the first. It is not called for a null value.
type Unmarshaler interface {
	UnmarshalYAMLx(n Node, errs *Errors)
}

var (
	nodeType        = reflect.TypeFor[Node]()
	stringType      = reflect.TypeFor[String]()
	durationType    = reflect.TypeFor[time.Duration]()
	unmarshalerType = reflect.TypeFor[Unmarshaler]()
	textType        = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// Decode strictly decodes the YAML in data, read from file, into out, which
// must be a non-nil pointer. Fields already set in out are defaults, kept
// when the YAML omits them. The input must hold exactly one non-empty
// document. It returns Errors when there is at least one problem.
func Decode(file string, data []byte, out any) error {
	d := newDecoder(file, newSource(data))
	if root := d.parse(data); root != nil {
		if isNull(root) {
			d.add(root, "empty document")
		} else {
			d.root(root, "", out)
		}
	}
	return d.errs.Err()
}

// DecodeFile reads the file at path and decodes it as Decode does; error
// positions name the file by path.
func DecodeFile(path string, out any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return Decode(path, data, out)
}

// source is the text a document was parsed from, kept to map positions of
// string values.
type source struct {
	data  []byte
	lines []int // byte offset at which each line starts
}

func newSource(data []byte) *source {
	data = bytes.TrimPrefix(data, []byte("\ufeff")) // yaml.v3 does not count a BOM
	s := &source{data: data, lines: []int{0}}
	for i, b := range data {
		if b == '\n' {
			s.lines = append(s.lines, i+1)
		}
	}
	return s
}

type decoder struct {
	file    string
	src     *source
	errs    Errors
	budget  int    // nodes that aliases may still expand to
	cursor  [3]int // line, column and offset in src last reached by locate
	stopped bool
}

func newDecoder(file string, src *source) *decoder {
	return &decoder{file: file, src: src, budget: maxExpanded}
}

// parse returns the first document of data, reporting syntax errors, an
// empty input and any second document.
func (d *decoder) parse(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.addAt(Pos{File: d.file, Line: 1, Col: 1}, "empty document")
		} else {
			d.syntax(err, data)
		}
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.syntax(err, data)
	case !isNull(&extra): // a trailing "---" alone is harmless
		d.add(&extra, "only one YAML document is allowed, found a second one")
	}
	return &doc
}

// syntax reports a yaml.v3 parse error in data. yaml.v3 gives a line
// only, and none at all for errors on the first line. For its parser's
// errors (as against its scanner's) the line it gives counts from 0, so
// it is one short, and it is often where the block or bracket being
// read starts rather than where the problem is, which the message then
// says. One found at the end of the input may name the line after the
// last. For a tab in the indentation, and for a line indented wrongly
// inside a block, the true position is found by culprit.
func (d *decoder) syntax(err error, data []byte) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line, given := 1, false
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				line, msg, given = n, tail, true
			}
		}
	}
	if parserProblem(msg) && given {
		line++
	}
	if l, c, what, ok := culprit(err, data, line, msg); ok {
		d.addAt(Pos{File: d.file, Line: l, Col: c}, "syntax error: "+what)
		return
	}
	if parserProblem(msg) {
		msg += " (at or after this line)"
	}
	if last := lineCount(data); line > last {
		line = last
	}
	d.addAt(Pos{File: d.file, Line: line, Col: 1}, "syntax error: "+msg)
}

// culprit finds where in data the syntax error err, whose message is msg
// and which yaml.v3 placed at line, really is, for the errors whose line
// yaml.v3 gets wrong and the place can be found for: a tab in the
// indentation, which it places where the scalar before it starts, and an
// unexpected token in a block, which it places where the block starts.
// It parses ever longer prefixes of data: the shortest one that fails
// with the very same error ends at the problem, as yaml.v3 reads its
// input from the start and in order. It returns the line and column of
// the problem and the message to report there, or false when err is of
// another kind or the place cannot be found, and the line yaml.v3 gives
// must then do.
func culprit(err error, data []byte, line int, msg string) (l, c int, what string, ok bool) {
	data = bytes.TrimPrefix(data, []byte("\ufeff")) // as for newSource
	want := err.Error()
	fails := func(end int) bool { return parseError(data[:end]) == want }
	lines := lineStarts(data)
	if line < 1 || line > len(lines) {
		return 0, 0, "", false
	}
	from := lines[line-1]
	switch msg {
	case "found a tab character that violates indentation",
		"found a tab character where an indentation space is expected",
		"found character that cannot start any token":
		// The culprit is the first tab at or after the line given whose
		// prefix fails, and the prefix before it must not.
		var tabs []int
		for i := from; i < len(data); i++ {
			if data[i] == '\t' {
				tabs = append(tabs, i)
			}
		}
		j, _ := slices.BinarySearchFunc(tabs, true, func(i int, _ bool) int {
			if fails(i + 1) {
				return 1
			}
			return -1
		})
		if j == len(tabs) || fails(tabs[j]) {
			return 0, 0, "", false // not a tab, or not one found
		}
		l, c = position(data, lines, tabs[j])
		return l, c, msg + " (a tab: YAML indents with spaces only)", true
	case "did not find expected '-' indicator", "did not find expected key":
		// The culprit is on the first line at or after the start of the
		// block whose prefix, up to the line's end, fails.
		ends := slices.Concat(lines[line:], []int{len(data)})
		k, _ := slices.BinarySearchFunc(ends, true, func(end int, _ bool) int {
			if fails(end) {
				return 1
			}
			return -1
		})
		if k == len(ends) || fails(lines[line-1+k]) {
			return 0, 0, "", false
		}
		start := lines[line-1+k]
		for start < ends[k] && (data[start] == ' ' || data[start] == '\t') {
			start++
		}
		l, c = position(data, lines, start)
		return l, c, msg + " (is this line indented correctly?)", true
	}
	return 0, 0, "", false
}

// parseError returns the text of the error parse would get decoding data,
// or "" when it gets none.
func parseError(data []byte) string {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for range 2 {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return ""
			}
			return err.Error()
		}
	}
	return ""
}

// lineStarts returns the offset in data at which each line starts, lines
// ending as YAML ends them (CR, LF or CR LF).
func lineStarts(data []byte) []int {
	starts := []int{0}
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\r':
			if i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
			starts = append(starts, i+1)
		case '\n':
			starts = append(starts, i+1)
		}
	}
	return starts
}

// position returns the line and column, counting characters as yaml.v3
// does, of offset off in data, whose lines start at lines.
func position(data []byte, lines []int, off int) (line, col int) {
	line, _ = slices.BinarySearch(lines, off+1)
	return line, utf8.RuneCount(data[lines[line-1]:off]) + 1
}

// lineCount is how many lines data holds as YAML counts them (CR, LF and
// CR LF each end one), not counting line ends at its very end.
func lineCount(data []byte) int {
	data = bytes.TrimRight(data, "\r\n")
	n := 1
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\n':
			n++
		case '\r':
			n++
			if i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
		}
	}
	return n
}

// parserProblem reports whether msg is one of the problems yaml.v3's
// parser (not its scanner) reports.
func parserProblem(msg string) bool {
	switch msg {
	case "did not find expected ',' or ']'", "did not find expected ',' or '}'",
		"did not find expected '-' indicator", "did not find expected <document start>",
		"did not find expected <stream-start>", "did not find expected key",
		"did not find expected node content", "found duplicate %TAG directive",
		"found duplicate %YAML directive", "found incompatible YAML document",
		"found undefined tag handle":
		return true
	}
	return false
}

func (d *decoder) root(n *yaml.Node, path string, out any) {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		d.add(n, "yamlx: cannot decode into %T, need a non-nil pointer", out)
		return
	}
	d.decode(n, v.Elem(), path, 0)
}

func (d *decoder) pos(n *yaml.Node) Pos {
	return Pos{File: d.file, Line: n.Line, Col: n.Column}
}

func (d *decoder) addAt(p Pos, msg string) {
	if d.stopped {
		return
	}
	if len(d.errs) >= maxErrors {
		msg, d.stopped = fmt.Sprintf("too many errors, stopped after %d", maxErrors), true
	}
	d.errs = append(d.errs, &Error{Pos: p, Msg: msg})
}

// add reports a problem at n whose message names its own context.
func (d *decoder) add(n *yaml.Node, format string, args ...any) {
	d.addAt(d.pos(n), fmt.Sprintf(format, args...))
}

// failf reports a problem with the value n at path.
func (d *decoder) failf(n *yaml.Node, path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	d.addAt(d.pos(n), msg)
}

func (d *decoder) mismatch(n *yaml.Node, path, want string) {
	d.failf(n, path, "expected %s, got %s", want, describe(n))
}

// describe names what the user wrote, quoting scalars.
func describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a sequence"
	case isNull(n):
		return "null"
	}
	s := n.Value
	if r := []rune(s); len(r) > 60 {
		s = string(r[:60]) + "..."
	}
	return strconv.Quote(s)
}

func isNull(n *yaml.Node) bool {
	if n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return true
		}
		n = n.Content[0]
	}
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// resolve unwraps documents and follows aliases, charging the expanded size
// of each alias target to the budget. It returns nil when there is nothing
// to decode.
func (d *decoder) resolve(n *yaml.Node, path string) *yaml.Node {
	for n != nil {
		switch n.Kind {
		case yaml.DocumentNode:
			if len(n.Content) == 0 {
				return nil
			}
			n = n.Content[0]
		case yaml.AliasNode:
			d.charge(n.Alias, 0)
			if d.budget < 0 {
				d.failf(n, path, "aliases expand to more than %d nodes", maxExpanded)
				d.stopped = true
				return nil
			}
			n = n.Alias
		default:
			return n
		}
	}
	return nil
}

// charge subtracts the number of nodes in n, aliases expanded, from the
// budget, stopping as soon as it runs out.
func (d *decoder) charge(n *yaml.Node, depth int) {
	d.budget--
	if n == nil || d.budget < 0 || depth > maxDepth {
		return
	}
	if n.Kind == yaml.AliasNode {
		d.charge(n.Alias, depth+1)
	}
	for _, c := range n.Content {
		if d.charge(c, depth+1); d.budget < 0 {
			return
		}
	}
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, depth int) {
	if d.stopped {
		return
	}
	if depth > maxDepth {
		d.failf(n, path, "nested more than %d levels deep", maxDepth)
		return
	}
	if n = d.resolve(n, path); n == nil || isNull(n) && v.Type() != nodeType {
		return
	}
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}
	t := v.Type()
	switch {
	case t == nodeType:
		v.Set(reflect.ValueOf(Node{Node: n, File: d.file, Path: path, src: d.src}))
	case reflect.PointerTo(t).Implements(unmarshalerType) && v.CanAddr():
		u := v.Addr().Interface().(Unmarshaler)
		u.UnmarshalYAMLx(Node{Node: n, File: d.file, Path: path, src: d.src}, &d.errs)
	case t == stringType:
		if n.Kind != yaml.ScalarNode {
			d.mismatch(n, path, "a string")
			return
		}
		v.Set(reflect.ValueOf(String{Value: n.Value, Pos: d.pos(n), m: d.locate(n)}))
	case t == durationType:
		dur, err := time.ParseDuration(n.Value)
		if err != nil || n.Kind != yaml.ScalarNode {
			d.mismatch(n, path, "a duration such as 30s")
			return
		}
		v.SetInt(int64(dur))
	case reflect.PointerTo(t).Implements(textType) && v.CanAddr():
		if n.Kind != yaml.ScalarNode {
			d.mismatch(n, path, "a scalar")
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.failf(n, path, "invalid value %s: %v", describe(n), err)
		}
	default:
		d.decodeKind(n, v, path, depth)
	}
}

// decodeKind decodes by the kind of v.
func (d *decoder) decodeKind(n *yaml.Node, v reflect.Value, path string, depth int) {
	t := v.Type()
	switch k := t.Kind(); {
	case k == reflect.Struct:
		d.decodeStruct(n, v, path, depth)
	case k == reflect.Map:
		d.decodeMap(n, v, path, depth)
	case k == reflect.Slice:
		d.decodeSlice(n, v, path, depth)
	case k == reflect.Interface && t.NumMethod() == 0:
		d.decodeAny(n, v, path, depth)
	case k == reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.mismatch(n, path, "a string")
			return
		}
		v.SetString(n.Value)
	case k == reflect.Bool: // here and below, a collection's empty Value fails to parse
		b, ok := parseBool(n.Value)
		if !ok {
			d.mismatch(n, path, "a boolean")
			return
		}
		v.SetBool(b)
	case v.CanInt() || v.CanUint():
		if want := setInteger(v, n.Value); want != "" {
			d.mismatch(n, path, want)
		}
	case v.CanFloat():
		f, err := strconv.ParseFloat(n.Value, t.Bits())
		if err != nil {
			d.mismatch(n, path, "a number")
			return
		}
		v.SetFloat(f)
	default:
		d.failf(n, path, "yamlx: cannot decode into Go type %s", t)
	}
}

// entries returns the key/value pairs of mapping n, reporting keys that are
// not scalars, merge keys and duplicates.
func (d *decoder) entries(n *yaml.Node, path string) [][2]*yaml.Node {
	var out [][2]*yaml.Node
	first := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		switch {
		case k.Kind != yaml.ScalarNode:
			d.failf(k, path, "expected a string key, got %s", describe(k))
		case k.ShortTag() == "!!merge":
			d.failf(k, path, "merge keys (<<) are not supported")
		case first[k.Value] != nil:
			d.add(k, "duplicate key %q%s (first defined at line %d)", k.Value, in(path), first[k.Value].Line)
		default:
			first[k.Value] = k
			out = append(out, [2]*yaml.Node{k, n.Content[i+1]})
		}
	}
	return out
}

func in(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

type field struct {
	name     string
	index    []int
	required bool
	// nonnull and nonempty: see the package comment.
	nonnull, nonempty bool
}

// structFields lists the decodable fields of struct type t in order,
// including those of inlined structs.
func structFields(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("yaml")
		if !ok || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if slices.Contains(strings.Split(opts, ","), "inline") {
			if sf.Type.Kind() == reflect.Struct {
				for _, f := range structFields(sf.Type) {
					f.index = append([]int{i}, f.index...)
					out = append(out, f)
				}
			}
			continue
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		xopts := strings.Split(sf.Tag.Get("yamlx"), ",")
		out = append(out, field{name: name, index: []int{i}, required: slices.Contains(xopts, "required"),
			nonnull: slices.Contains(xopts, "nonnull"), nonempty: slices.Contains(xopts, "nonempty")})
	}
	return out
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.MappingNode {
		d.mismatch(n, path, "a mapping")
		return
	}
	fields := structFields(v.Type())
	set := map[string]bool{}
	// suggested holds the fields an unknown key was taken for a typo of:
	// their being missing goes without saying.
	suggested := map[string]bool{}
	for _, kv := range d.entries(n, path) {
		i := slices.IndexFunc(fields, func(f field) bool { return f.name == kv[0].Value })
		if i < 0 {
			suggested[d.unknownField(kv[0], path, fields)] = true
			continue
		}
		f := fields[i]
		if !isNull(kv[1]) {
			set[f.name] = true
		}
		// (An alias is checked as what it names when decoded, not here.)
		switch val := kv[1]; {
		case f.nonnull && isNull(val):
			d.failf(val, join(path, f.name), "no value: give one, or leave the key out")
			continue
		case f.nonempty && (val.Kind == yaml.SequenceNode || val.Kind == yaml.MappingNode) && len(val.Content) == 0:
			d.failf(val, join(path, f.name), "must not be empty")
			continue
		}
		d.decode(kv[1], v.FieldByIndex(f.index), join(path, f.name), depth+1)
	}
	for _, f := range fields {
		if f.required && !set[f.name] && !suggested[f.name] {
			d.add(n, "missing required field %q%s", f.name, in(path))
		}
	}
}

// unknownField reports key, which names none of fields, and returns the
// field it is likely a typo of ("" for none).
func (d *decoder) unknownField(key *yaml.Node, path string, fields []field) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	msg := fmt.Sprintf("unknown field %q%s", key.Value, in(path))
	s := Suggest(key.Value, names)
	switch {
	case s != "":
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	case len(names) == 0:
		msg += " (no fields are allowed here)"
	default:
		msg += " (allowed: " + strings.Join(names, ", ") + ")"
	}
	d.addAt(d.pos(key), msg)
	return s
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string, depth int) {
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		d.failf(n, path, "yamlx: cannot decode into Go type %s, map keys must be strings", t)
		return
	}
	if n.Kind != yaml.MappingNode {
		d.mismatch(n, path, "a mapping")
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(t))
	}
	for _, kv := range d.entries(n, path) {
		k := reflect.ValueOf(kv[0].Value).Convert(t.Key())
		elem := reflect.New(t.Elem()).Elem()
		if old := v.MapIndex(k); old.IsValid() {
			elem.Set(old)
		}
		d.decode(kv[1], elem, join(path, kv[0].Value), depth+1)
		v.SetMapIndex(k, elem)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.SequenceNode {
		d.mismatch(n, path, "a sequence")
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, c := range n.Content {
		d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i), depth+1)
	}
	v.Set(s)
}

// decodeAny decodes into an empty interface as map[string]any, []any, bool,
// int, float64 or string.
func (d *decoder) decodeAny(n *yaml.Node, v reflect.Value, path string, depth int) {
	var out reflect.Value
	switch n.Kind {
	case yaml.MappingNode:
		out = reflect.New(reflect.TypeFor[map[string]any]()).Elem()
		d.decodeMap(n, out, path, depth)
	case yaml.SequenceNode:
		out = reflect.New(reflect.TypeFor[[]any]()).Elem()
		d.decodeSlice(n, out, path, depth)
	default:
		out = reflect.ValueOf(scalarValue(n))
	}
	v.Set(out)
}

// scalarValue returns a bool, int or float64 for a scalar that YAML resolves
// as one, and the string as written otherwise.
func scalarValue(n *yaml.Node) any {
	switch n.ShortTag() {
	case "!!bool":
		if b, ok := parseBool(n.Value); ok {
			return b
		}
	case "!!int":
		if i, err := strconv.ParseInt(n.Value, intBase(n.Value), strconv.IntSize); err == nil {
			return int(i)
		}
	case "!!float":
		if f, err := strconv.ParseFloat(n.Value, 64); err == nil {
			return f
		}
	}
	return n.Value
}

func parseBool(s string) (value, ok bool) {
	switch s {
	case "true", "True", "TRUE":
		return true, true
	case "false", "False", "FALSE":
		return false, true
	}
	return false, false
}

// intBase returns the base for an integer written in YAML: decimal unless
// it has a 0x, 0o or 0b prefix.
func intBase(s string) int {
	s = strings.TrimLeft(s, "+-")
	if len(s) > 1 && s[0] == '0' && strings.ContainsRune("xXoObB", rune(s[1])) {
		return 0
	}
	return 10
}

// setInteger sets integer v from s, or returns what was expected instead.
func setInteger(v reflect.Value, s string) (want string) {
	bits, base := v.Type().Bits(), intBase(s)
	if v.CanInt() {
		i, err := strconv.ParseInt(s, base, bits)
		if err == nil {
			v.SetInt(i)
			return ""
		}
		hi := int64(^uint64(0) >> (65 - bits))
		want = fmt.Sprintf("an integer between %d and %d", -hi-1, hi)
	} else {
		u, err := strconv.ParseUint(s, base, bits)
		if err == nil {
			v.SetUint(u)
			return ""
		}
		want = fmt.Sprintf("an integer between 0 and %d", ^uint64(0)>>(64-bits))
	}
	if _, err := strconv.ParseInt(s, base, 64); err != nil && !errors.Is(err, strconv.ErrRange) {
		return "an integer"
	}
	return want
}

// Suggest returns the name closest to key when key looks like a typo of it:
// the same ignoring case, or within an edit distance of about a third of
// its length; "" when none does.
func Suggest(key string, names []string) string {
	best, bestDist := "", -1
	for _, name := range names {
		dist := editDistance(strings.ToLower(key), strings.ToLower(name))
		if bestDist < 0 || dist < bestDist {
			best, bestDist = name, dist
		}
	}
	if bestDist < 0 || bestDist > max(1, len([]rune(best))/3, len([]rune(key))/3) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b in runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := range ra {
		cur[0] = i + 1
		for j := range rb {
			cost := 1
			if ra[i] == rb[j] {
				cost = 0
			}
			cur[j+1] = min(prev[j+1]+1, cur[j]+1, prev[j]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
