package route

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/jsonmap"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/rules"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// Catalog tells the loader which sources and destinations exist, so a route
// naming an unknown one is an error at load.
type Catalog interface {
	HasSource(name string) bool
	HasDestination(name string) bool
}

// NameCatalog is a Catalog that lists its names, so that a route naming
// one it lacks is told the one it likely meant.
type NameCatalog interface {
	Catalog
	Names() (sources, destinations []string)
}

// suggestion returns ` (did you mean "x"?)` for a name cat lacks, when
// cat lists a likely one among its sources (or destinations), else "".
func suggestion(cat Catalog, name string, destination bool) string {
	nc, ok := cat.(NameCatalog)
	if !ok {
		return ""
	}
	names, dests := nc.Names()
	if destination {
		names = dests
	}
	if s := yamlx.Suggest(name, names); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return ""
}

// InternalCatalog is a Catalog that knows which destinations keep what
// they are given inside Junction (the consent store, the opt-out list):
// delivering to them discloses nothing, so no consent is asked for them.
type InternalCatalog interface {
	Catalog
	InternalDestination(name string) bool
}

// EventCatalog is a Catalog that knows which message types a source
// translates, such as "ADT^A01", so that a route naming one it never will
// is refused at load.
type EventCatalog interface {
	Catalog
	// SourceEvents returns the message types source translates, and
	// false when it does not say (any type may come).
	SourceEvents(source string) ([]string, bool)
}

// RelayCatalog is an EventCatalog whose sources may also take message
// types they relay untranslated (an HL7 v2 input's relay setting). A route
// takes those only when its events name them, and then must send every
// destination the input unchanged (payload: raw): the minimal translation
// a relayed message gets is for routing, not for sending.
type RelayCatalog interface {
	EventCatalog
	// SourceRelays returns the patterns of the types source relays, such
	// as "ORM^O01" or "SIU^*" (hl7v2.TypeMatches).
	SourceRelays(source string) []string
}

// PayloadCatalog is a Catalog that knows what each destination takes, so
// that a route sending one a payload it cannot send (FHIR to an MLLP
// destination) is refused at load rather than dead-lettering every
// message.
type PayloadCatalog interface {
	Catalog
	// PayloadTaken returns the content type a route on source sends to
	// destination dest (raw: the input unchanged), or "" when it is not
	// known, and whether the destination takes it and would take the
	// other payload kind.
	PayloadTaken(dest, source string, raw bool) (contentType string, taken, otherTaken bool)
}

// knownEvent reports whether event, in full form ("ADT^A01") or as the
// trigger alone ("A01"), is one of known (full forms).
// An event written "TYPE^*" is known when a known type has that TYPE.
func knownEvent(known []string, event string) bool {
	for _, k := range known {
		if k == event || hl7v2.TypeMatches(event, k) {
			return true
		}
		if _, trigger, ok := strings.Cut(k, "^"); ok && !strings.Contains(event, "^") && trigger == event {
			return true
		}
	}
	return false
}

// relayedEvent reports whether a route's event, written in full ("ORM^O01"
// or "ORM^*"), takes a message type that relay (patterns) names and known
// (the types translated) does not list.
func relayedEvent(relay, known []string, event string) bool {
	typ, ev, ok := strings.Cut(event, "^")
	if !ok {
		return false
	}
	for _, p := range relay {
		if ev == "*" {
			if strings.HasPrefix(p, typ+"^") {
				return true
			}
		} else if hl7v2.TypeMatches(p, event) && !slices.Contains(known, event) {
			return true
		}
	}
	return false
}

// relayExample returns how to write trigger, a route event given without
// its type, as a relayed type in full: the relay pattern with that event,
// else TYPE with it from a "TYPE^*" pattern (one of a type the input
// translates, such as ADT, first), else the first pattern.
func relayExample(relay, known []string, trigger string) string {
	for _, p := range relay {
		if _, ev, _ := strings.Cut(p, "^"); ev == trigger {
			return p
		}
	}
	wild := ""
	for _, p := range relay {
		if typ, ok := strings.CutSuffix(p, "^*"); ok {
			if knownEvent(known, p) {
				return typ + "^" + trigger
			}
			if wild == "" {
				wild = typ + "^" + trigger
			}
		}
	}
	if wild != "" {
		return wild
	}
	return relay[0]
}

// Route is a compiled route.
type Route struct {
	Name        string
	Description string
	// File is the path the route was loaded from.
	File   string
	Source string
	// Purpose and LegalBasis are the route's declared purpose of use and
	// legal basis for disclosure, checked with consent.CheckRoute.
	Purpose    string
	LegalBasis string
	// SkipConsent is the declared statutory skip of the Consent gate.
	SkipConsent bool
	Default     consent.Outcome
	events      map[string]bool
	// relays says events names a type the source relays untranslated
	// (RelayCatalog); relayed, when the source relays any, reports a
	// message type as one, so a route naming no events does not take it.
	relays  bool
	relayed func(messageType string) bool
	match   *rules.Program
	steps   []step
	// Destinations in file order.
	Destinations []Destination
	// Tests as written, for `junction test`.
	Tests []TestSpec
	// Programs lists every compiled expression with its position, for lint.
	Programs []Compiled

	namePos yamlx.Pos
}

// Compiled is one compiled expression and where it was written.
type Compiled struct {
	Where   string
	Pos     yamlx.Pos
	Program *rules.Program
}

// ExprError is an expression's evaluation failing for a message: which
// expression (Where, such as "match"), and where in its route file it is
// written, for `junction test` to point at.
type ExprError struct {
	Where string
	Pos   yamlx.Pos
	Err   error
}

func (e *ExprError) Error() string { return e.Err.Error() }
func (e *ExprError) Unwrap() error { return e.Err }

// exprError wraps err, from evaluating program p, as an ExprError when p
// is one of the route's compiled expressions.
func (r *Route) exprError(p *rules.Program, err error) error {
	for _, c := range r.Programs {
		if c.Program == p {
			return &ExprError{Where: c.Where, Pos: c.Pos, Err: err}
		}
	}
	return err
}

// Destination is one compiled destination of a route.
type Destination struct {
	Name string
	when *rules.Program
	// Raw sends the original input unchanged.
	Raw bool
	// Internal marks a destination inside Junction (InternalCatalog).
	Internal bool
}

type step struct {
	keep    *rules.Program
	replace *rules.Program
}

// Limits on one route file and its expressions. Compiling CEL costs far
// more than reading it (a 16 KiB list literal takes about 0.1-0.4 s and
// 25 MB), so the total is bounded as well as each expression.
const (
	maxFileBytes            = 1 << 20
	maxExpressions          = 500
	maxExpressionBytes      = 16 << 10
	maxTotalExpressionBytes = 64 << 10
)

// variableScope says which expressions have variable v set, for those it
// is not.
func variableScope(v string) string {
	switch v {
	case rules.VarResource:
		return "only keep steps have it (the entry being tested)"
	case rules.VarDestination:
		return "only destination when conditions, transform steps and test asserts have it"
	}
	return "not in this kind of expression"
}

// Load reads, decodes and compiles one route file, with lint's checks
// (LoadOptions.Strict) but for test input files. All problems, those of
// decoding and those of what did decode, are returned together as
// yamlx.Errors sorted by position.
func Load(path string, env *rules.Env, cat Catalog) (*Route, error) {
	r, err := load(path, env, cat, true)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// load is Load that returns, with a file's errors, the route as far as it
// compiled (nil when the file could not be read), so that LoadAll can
// check what spans files (names) of a file with errors too.
func load(path string, env *rules.Env, cat Catalog, strict bool) (*Route, error) {
	data, err := readLimited(path, maxFileBytes)
	if err != nil {
		return nil, err
	}
	var f File
	decErr := yamlx.Decode(path, data, &f)
	var errs yamlx.Errors
	if decErr != nil && !errors.As(decErr, &errs) {
		return nil, decErr
	}
	// Compile what decoded even when decoding failed, so that a file's CEL
	// and references are checked in the same run as its structure. Parts
	// that failed to decode are left zero, and compile skips zero parts.
	r, err := compile(path, &f, env, cat, strict)
	if err != nil {
		var ce yamlx.Errors
		if !errors.As(err, &ce) {
			return nil, err
		}
		errs = append(errs, ce...)
	}
	return r, errs.Err()
}

// readLimited reads the file at path, refusing one larger than limit
// bytes (a route file is a few KiB; a device or a huge file is a mistake
// or an attack) with a yamlx error naming the file.
func readLimited(path string, limit int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading route file: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading route file: %w", err)
	}
	if int64(len(data)) > limit {
		var errs yamlx.Errors
		errs.Add(yamlx.Pos{File: path}, "route file larger than %d bytes", limit)
		return nil, errs.Err()
	}
	return data, nil
}

// LoadOptions asks LoadAll for checks that serving does not need.
type LoadOptions struct {
	// Strict adds lint's checks: the route's tests (input files readable,
	// names unique, expected fault codes known, golden files keyed by the
	// route's destinations) and events listed twice. Serve leaves them
	// out, so that a deployment does not refuse to start over a route's
	// tests (which it may not even ship) or a harmless repetition.
	Strict bool
	// PathPos, when set, says where the i-th path given to LoadAll is
	// written (the config file's routes[i]), so that a path that cannot
	// be read is reported there; the zero Pos for one not written in a
	// file (given on the command line).
	PathPos func(i int) yamlx.Pos
}

// LoadAll loads every .yaml and .yml file (in any case) in the given files or
// directories, reporting every error from every file at once, and rejects
// two routes with one name, whether or not their files have other errors.
func LoadAll(paths []string, env *rules.Env, cat Catalog, opts LoadOptions) ([]*Route, error) {
	var files []string
	var other []error
	var errs yamlx.Errors
	// pathErr reports a path that cannot be read with the other files'
	// errors, not instead of them; at the config's routes[i] when the
	// path is written there.
	pathErr := func(i int, err error) {
		if opts.PathPos != nil {
			if pos := opts.PathPos(i); pos.Line > 0 {
				errs.Add(pos, "routes[%d]: %v", i, err)
				return
			}
		}
		other = append(other, fmt.Errorf("route path: %w", err))
	}
	for i, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			pathErr(i, err)
			continue
		}
		if !st.IsDir() {
			files = append(files, filepath.Clean(p))
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			pathErr(i, err)
			continue
		}
		for _, e := range entries {
			// .YAML and .Yml too: a file skipped for its name's case
			// would be a route silently not loaded.
			if ext := strings.ToLower(filepath.Ext(e.Name())); !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	sort.Strings(files)
	files = slices.Compact(files) // a file named directly and by its directory
	var routes []*Route
	seen := map[string]yamlx.Pos{}
	for _, file := range files {
		r, err := load(file, env, cat, opts.Strict)
		if err != nil {
			var ye yamlx.Errors
			if errors.As(err, &ye) {
				errs = append(errs, ye...)
			} else {
				other = append(other, err)
			}
		}
		if r == nil {
			continue
		}
		ok := err == nil
		if r.Name != "" {
			if prev, dup := seen[r.Name]; dup {
				errs.Add(r.namePos, "route name %q is already used at %s", r.Name, prev)
				ok = false
			} else {
				seen[r.Name] = r.namePos
			}
		}
		if opts.Strict {
			if te := r.checkTestInputs(); len(te) > 0 {
				errs = append(errs, te...)
				ok = false
			}
		}
		if ok {
			routes = append(routes, r)
		}
	}
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return posLess(errs[i].Pos, errs[j].Pos) })
		other = append([]error{errs}, other...)
	}
	if len(other) > 0 {
		return nil, errors.Join(other...)
	}
	return routes, nil
}

func posLess(a, b yamlx.Pos) bool {
	if a.File != b.File {
		return a.File < b.File
	}
	if a.Line != b.Line {
		return a.Line < b.Line
	}
	return a.Col < b.Col
}

// validName is what names may hold: they become NATS subject tokens and
// consumer names.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// compile builds the route from a decoded file, with lint's checks when
// strict (see LoadOptions). With errors it returns them and the route as
// far as it compiled.
func compile(path string, f *File, env *rules.Env, cat Catalog, strict bool) (*Route, error) {
	var errs yamlx.Errors
	r := &Route{Name: f.Name.Value, Description: f.Description, File: path, Source: f.Source.Adapter.Value, Tests: f.Tests, Purpose: f.Consent.Purpose.Value, LegalBasis: f.Consent.LegalBasis.Value, SkipConsent: f.Consent.SkipConsentGate, namePos: f.Name.Pos}
	// at returns the first known position, or the file alone.
	at := func(ps ...yamlx.Pos) yamlx.Pos {
		for _, p := range ps {
			if p.Line != 0 {
				return p
			}
		}
		return yamlx.Pos{File: path}
	}
	if f.Name.Pos.Line != 0 && !validName(r.Name) {
		errs.Add(f.Name.Pos, "name: %q must be 1 to 64 letters, digits, '-' or '_'", r.Name)
	}
	if cat != nil && r.Source != "" && !cat.HasSource(r.Source) {
		errs.Add(f.Source.Adapter.Pos, "source.adapter: no input named %q in the config%s", r.Source, suggestion(cat, r.Source, false))
	}
	var known, relay []string
	knownOK := false
	if ec, ok := cat.(EventCatalog); ok && r.Source != "" {
		known, knownOK = ec.SourceEvents(r.Source)
		if rc, ok := cat.(RelayCatalog); ok && knownOK {
			relay = rc.SourceRelays(r.Source)
		}
	}
	if len(relay) > 0 {
		r.relayed = func(messageType string) bool {
			return !slices.Contains(known, messageType) && slices.ContainsFunc(relay, func(p string) bool { return hl7v2.TypeMatches(p, messageType) })
		}
	}
	if len(f.Source.Events) > 0 {
		r.events = map[string]bool{}
		for _, e := range f.Source.Events {
			if e.Pos.Line == 0 {
				continue // did not decode; already reported
			}
			if strings.TrimSpace(e.Value) == "" {
				errs.Add(e.Pos, "source.events: empty event")
				continue
			}
			typ, ev, typed := strings.Cut(e.Value, "^")
			if typed && ev == "*" && !hl7v2.ValidTypePattern(e.Value) {
				errs.Add(e.Pos, "source.events: %q: TYPE^* takes a three-character message type, such as SIU^*", e.Value)
				continue
			}
			if strict {
				switch t := eventTypeOf(r.events, e.Value); {
				case r.events[e.Value]:
					errs.Add(e.Pos, "source.events: %q is listed twice", e.Value)
				case typed && r.events[ev]:
					errs.Add(e.Pos, "source.events: %q overlaps %q; list one of them", e.Value, ev)
				case typed && ev != "*" && r.events[typ+"^*"]:
					errs.Add(e.Pos, "source.events: %q overlaps %q; list one of them", e.Value, typ+"^*")
				case typed && ev == "*" && eventOfType(r.events, typ) != "":
					errs.Add(e.Pos, "source.events: %q overlaps %q; list one of them", e.Value, eventOfType(r.events, typ))
				case t != "":
					errs.Add(e.Pos, "source.events: %q overlaps %q; list one of them", e.Value, t)
				}
			}
			r.events[e.Value] = true
			if !knownOK {
				continue
			}
			switch relayed := relayedEvent(relay, known, e.Value); {
			case relayed:
				r.relays = true
			case knownEvent(known, e.Value):
			case len(relay) > 0 && !typed:
				errs.Add(e.Pos, "source.events: input %q never translates %q; it translates %s, and relays %s (name a relayed type in full, such as %s)", r.Source, e.Value, strings.Join(known, ", "), strings.Join(relay, ", "), relayExample(relay, known, e.Value))
			case len(relay) > 0:
				errs.Add(e.Pos, "source.events: input %q neither translates nor relays %q; it translates %s, and relays %s", r.Source, e.Value, strings.Join(known, ", "), strings.Join(relay, ", "))
			case hl7v2.ValidTypePattern(e.Value):
				// A type in full may be one the feed sends that Junction
				// does not map: say how to take it as it is.
				errs.Add(e.Pos, "source.events: input %q never translates %q; it translates %s (to route %s untranslated, list it in the input's relay setting, with payload: raw)", r.Source, e.Value, strings.Join(known, ", "), e.Value)
			default:
				errs.Add(e.Pos, "source.events: input %q never translates %q; it translates %s", r.Source, e.Value, strings.Join(known, ", "))
			}
		}
	}
	compiled, total := 0, 0
	// prog compiles s; unset are variables this kind of expression never
	// has set, whose reads would fail for every message.
	prog := func(where string, s yamlx.String, kind rules.Kind, unset ...string) *rules.Program {
		if strings.TrimSpace(s.Value) == "" {
			errs.Add(s.Pos, "%s: empty expression", where)
			return nil
		}
		// Bound the work one file can ask of the compiler (YAML aliases
		// can multiply expressions), so lint and start stay quick.
		if len(s.Value) > maxExpressionBytes {
			errs.Add(s.Pos, "%s: expression is %d bytes; the limit is %d", where, len(s.Value), maxExpressionBytes)
			return nil
		}
		if compiled++; compiled > maxExpressions {
			if compiled == maxExpressions+1 {
				errs.Add(s.Pos, "%s: more than %d expressions in one route file", where, maxExpressions)
			}
			return nil
		}
		if total > maxTotalExpressionBytes {
			return nil // reported once already
		}
		if total += len(s.Value); total > maxTotalExpressionBytes {
			errs.Add(s.Pos, "%s: the expressions of one route file may hold %d bytes in all; split the route", where, maxTotalExpressionBytes)
			return nil
		}
		p, err := env.Compile(s.Value, kind)
		if err != nil {
			var ce *rules.CompileError
			if errors.As(err, &ce) {
				for _, is := range ce.Issues {
					pos := s.Pos
					if is.Offset >= 0 {
						// An error at the end (such as a missing
						// operand) is placed just after the last
						// character, not past a block scalar's final
						// line break.
						pos = s.PosAt(min(is.Offset, len(strings.TrimRight(s.Value, " \t\r\n"))))
					}
					errs.Add(pos, "%s: %s", where, is.Msg)
				}
			} else {
				errs.Add(s.Pos, "%s: %v", where, err)
			}
			return nil
		}
		refused := false
		for _, v := range unset {
			if off, ok := p.Reads(v); ok {
				errs.Add(s.PosAt(off), "%s: %s is not set here: %s", where, v, variableScope(v))
				refused = true
			}
		}
		if refused {
			return nil
		}
		// A comparison with an event the route does not take is never
		// true: a when that sends nothing, or a match that filters all.
		// Lint refuses it; serve lets it pass, so that a harmless extra
		// entry of an in list does not stop an engine from starting.
		for _, l := range p.KeyLiterals() {
			if !strict {
				break
			}
			switch {
			case l.Key == "destination.name":
				if !slices.ContainsFunc(f.Destinations, func(d DestinationSpec) bool { return d.Name.Value == l.Value }) {
					errs.Add(s.PosAt(l.Offset), "%s: destination.name is never %q: the route's destinations are %s", where, l.Value, destinationNames(f.Destinations))
				}
			case !r.takesLiteral(l.Key, l.Value):
				errs.Add(s.PosAt(l.Offset), "%s: msg.%s is never %q here: source.events (%s) does not take it", where, l.Key, l.Value, strings.Join(slices.Sorted(maps.Keys(r.events)), ", "))
			}
		}
		r.Programs = append(r.Programs, Compiled{Where: where, Pos: s.Pos, Program: p})
		return p
	}
	if f.Match.Value != "" || f.Match.Pos.Line != 0 {
		r.match = prog("match", f.Match, rules.Bool, rules.VarResource, rules.VarDestination)
	}
	checkConsent(&errs, f.Consent)
	if f.Consent.Default.Pos.Line != 0 {
		o, err := consent.ParseOutcome(f.Consent.Default.Value)
		if err != nil {
			errs.Add(f.Consent.Default.Pos, "consent.default: %v", err)
		}
		r.Default = o
	}
	for i, s := range f.Transform {
		where := fmt.Sprintf("transform[%d]", i)
		set := 0
		var st step
		if s.Keep.Pos.Line != 0 {
			set++
			st.keep = prog(where+".keep", s.Keep, rules.Bool)
		}
		if s.Replace.Pos.Line != 0 {
			set++
			st.replace = prog(where+".replace", s.Replace, rules.Map, rules.VarResource)
		}
		if set != 1 {
			errs.Add(at(s.Keep.Pos, s.Pos), "%s: exactly one of keep or replace must be set", where)
		}
		r.steps = append(r.steps, st)
	}
	dests := map[string]bool{}
	for i, d := range f.Destinations {
		where := fmt.Sprintf("destinations[%d]", i)
		cd := Destination{Name: d.Name.Value}
		if cd.Name != "" && dests[cd.Name] {
			errs.Add(d.Name.Pos, "%s.name: destination %q listed twice", where, cd.Name)
		}
		dests[cd.Name] = true
		if cat != nil && cd.Name != "" && !cat.HasDestination(cd.Name) {
			errs.Add(d.Name.Pos, "%s.name: no destination named %q in the config%s", where, cd.Name, suggestion(cat, cd.Name, true))
		}
		if ic, ok := cat.(InternalCatalog); ok && cd.Name != "" {
			cd.Internal = ic.InternalDestination(cd.Name)
		}
		if d.When.Pos.Line != 0 {
			cd.when = prog(where+".when", d.When, rules.Bool, rules.VarResource)
		}
		switch d.Payload.Value {
		case "", "fhir":
			if r.relays {
				errs.Add(at(d.Payload.Pos, d.Name.Pos), "%s: the route takes message types input %q relays untranslated, so it sends them as they came: set payload: raw (to send translated types as FHIR, use another route)", where, r.Source)
			}
		case "raw":
			cd.Raw = true
		default:
			errs.Add(d.Payload.Pos, "%s.payload: must be fhir or raw, got %q", where, d.Payload.Value)
		}
		if pc, ok := cat.(PayloadCatalog); ok && cd.Name != "" && r.Source != "" && (cd.Raw || !r.relays) {
			// (A relay route's fhir payload is refused above already.)
			if ct, taken, other := pc.PayloadTaken(cd.Name, r.Source, cd.Raw); ct != "" && !taken {
				kind, hint := "fhir", ""
				if cd.Raw {
					kind = "raw"
				}
				switch {
				case other && cd.Raw:
					hint = ": leave payload out (or fhir) to send the translation"
				case other:
					hint = ": set payload: raw to send the input unchanged"
				}
				errs.Add(at(d.Payload.Pos, d.Name.Pos), "%s: destination %q does not take %s, which payload %s sends from input %q%s", where, cd.Name, ct, kind, r.Source, hint)
			}
		}
		r.Destinations = append(r.Destinations, cd)
	}
	testNames := map[string]bool{}
	for i, t := range f.Tests {
		where := fmt.Sprintf("tests[%d]", i)
		if n := t.Name.Value; n != "" && strict {
			if testNames[n] {
				errs.Add(t.Name.Pos, "%s.name: %q is used by another test of this route", where, n)
			}
			testNames[n] = true
		}
		// A missing input is a decoding error; a given one needs exactly
		// one of file and inline.
		switch {
		case t.Input.Pos.Line == 0:
		case t.Input.File.Value == "" && t.Input.Inline.Value == "" && t.Input.Inline.Pos.Line != 0:
			errs.Add(t.Input.Inline.Pos, "%s.input.inline: empty; give the message to route", where)
		case (t.Input.File.Value == "") == (t.Input.Inline.Value == ""):
			errs.Add(at(t.Input.File.Pos, t.Input.Pos), "%s.input: exactly one of file or inline must be set", where)
		}
		for _, d := range append(append([]yamlx.String{}, t.Expect.Deliver...), t.Expect.Denied...) {
			if !dests[d.Value] {
				errs.Add(d.Pos, "%s.expect: %q is not a destination of this route", where, d.Value)
			}
		}
		for j, a := range t.Expect.Assert {
			prog(fmt.Sprintf("%s.expect.assert[%d]", where, j), a, rules.Bool, rules.VarResource)
		}
		if p := t.Patient; strict && p != nil {
			// A key no record has would let a route reading it pass its
			// tests and fail every message.
			for _, k := range slices.Sorted(maps.Keys(p.Record)) {
				if !slices.Contains(rules.PatientKeys(), k) {
					errs.Add(at(p.KeyPos[k], p.Pos), "%s.patient: a patient index record has no key %q (it has %s)", where, k, strings.Join(rules.PatientKeys(), ", "))
				}
			}
		}
		if t.OptOuts != nil && strict {
			for j, n := range *t.OptOuts {
				if !nhs.ValidNumber(nhs.Normalize(n.Value)) {
					// The number itself is left out: it may be a patient's.
					errs.Add(n.Pos, "%s.opt_outs[%d]: not a valid NHS number (ten digits with a correct check digit)", where, j)
				}
			}
		}
		if e := t.Expect.Error; strict && e.Value != "" && !slices.Contains(fault.Codes(), fault.Code(e.Value)) {
			errs.Add(e.Pos, "%s.expect.error: %q is not a fault code; have %s", where, e.Value, faultCodeList())
		}
		if also := besideError(t.Expect); strict && len(also) > 0 {
			errs.Add(t.Expect.Error.Pos, "%s.expect.error: routing that fails sends the message nowhere, so the test cannot also check %s; give those another test", where, strings.Join(also, ", "))
		} else if strict && len(t.Expect.Assert) > 0 && len(t.Expect.Deliver) == 0 {
			// Asserts run on each delivery: with none they would pass
			// without running.
			errs.Add(t.Expect.Assert[0].Pos, "%s.expect.assert: asserts are checked on each delivery, and the test expects none (deliver is empty), so they would pass without running", where)
		}
		for _, name := range slices.Sorted(maps.Keys(t.Expect.FHIR)) {
			switch g := t.Expect.FHIR[name]; {
			case !strict:
			case !dests[name]:
				errs.Add(g.Pos, "%s.expect.fhir: %q is not a destination of this route", where, name)
			case g.Value == "":
				errs.Add(g.Pos, "%s.expect.fhir.%s: give the golden file's path", where, name)
			}
		}
	}
	return r, errs.Err()
}

// besideError names the expectations that x sets beside an expected
// error, which RunTests would not check: routing that fails delivers
// nothing, filters nothing and is denied nowhere, so a test expecting
// both could only pass without checking them.
func besideError(x ExpectSpec) []string {
	if x.Error.Value == "" {
		return nil
	}
	var also []string
	for _, e := range []struct {
		name string
		set  bool
	}{
		{"deliver", len(x.Deliver) > 0},
		{"filtered", x.Filtered},
		{"denied", len(x.Denied) > 0},
		{"assert", len(x.Assert) > 0},
		{"fhir", len(x.FHIR) > 0},
	} {
		if e.set {
			also = append(also, e.name)
		}
	}
	return also
}

// destinationNames lists the names of ds, quoted, for an error.
func destinationNames(ds []DestinationSpec) string {
	names := make([]string, 0, len(ds))
	for _, d := range ds {
		names = append(names, strconv.Quote(d.Name.Value))
	}
	return strings.Join(names, ", ")
}

// takesLiteral reports whether msg.key (event or type) can be value for
// a message the route takes: always, for a route that names no events,
// and msg.event always for one naming a message type alone (a FHIR
// input's Bundle or Patient, whose event is the Bundle's type or the
// resource's).
func (r *Route) takesLiteral(key, value string) bool {
	if r.events == nil {
		return true
	}
	if key == "type" {
		return r.Takes(value, "")
	}
	for e := range r.events {
		_, ev, typed := strings.Cut(e, "^")
		if e == value || typed && (ev == value || ev == "*") || !typed && !isEventCode(e) {
			return true
		}
	}
	return false
}

// isEventCode reports whether e has the form of an HL7 v2 trigger event
// code (A01, R01): an upper-case letter and two digits.
func isEventCode(e string) bool {
	return len(e) == 3 && e[0] >= 'A' && e[0] <= 'Z' && e[1] >= '0' && e[1] <= '9' && e[2] >= '0' && e[2] <= '9'
}

// eventTypeOf returns the "TYPE^EVENT" in events that already takes the
// bare event ev, or "".
func eventTypeOf(events map[string]bool, ev string) string {
	if strings.Contains(ev, "^") {
		return ""
	}
	for e := range events {
		if _, x, ok := strings.Cut(e, "^"); ok && x == ev {
			return e
		}
	}
	return ""
}

// eventOfType returns one of events, in full form, of the message type
// typ ("ADT^A01" for "ADT"), the first in sorted order, or "" when none
// is.
func eventOfType(events map[string]bool, typ string) string {
	found := ""
	for e := range events {
		if t, _, ok := strings.Cut(e, "^"); ok && t == typ && (found == "" || e < found) {
			found = e
		}
	}
	return found
}

// faultCodeList lists the fault codes a route test may expect.
func faultCodeList() string {
	var names []string
	for _, c := range fault.Codes() {
		names = append(names, string(c))
	}
	return strings.Join(names, ", ")
}

// checkConsent checks the route's purpose, legal basis and Consent skip
// with consent.CheckRoute, reporting each problem where it is written.
// Values that did not decode (missing keys) are already reported.
func checkConsent(errs *yamlx.Errors, c ConsentSpec) {
	purpose, basis := c.Purpose, c.LegalBasis
	ok := true
	if purpose.Pos.Line != 0 {
		if strings.TrimSpace(purpose.Value) == "" {
			errs.Add(purpose.Pos, "consent.purpose: must not be empty")
			ok = false
		} else if _, err := consent.ParsePurpose(purpose.Value); err != nil {
			errs.Add(purpose.Pos, "consent.purpose: %v", err)
			ok = false
		}
	} else {
		ok = false
	}
	if basis.Pos.Line != 0 {
		if strings.TrimSpace(basis.Value) == "" {
			errs.Add(basis.Pos, "consent.legal_basis: must not be empty")
			ok = false
		} else if _, err := consent.ParseLegalBasis(basis.Value); err != nil {
			errs.Add(basis.Pos, "consent.legal_basis: %v", err)
			ok = false
		}
	} else {
		ok = false
	}
	if !ok {
		return
	}
	if err := consent.CheckRoute(purpose.Value, basis.Value, false); err != nil {
		errs.Add(basis.Pos, "consent.legal_basis: %v", err)
	}
	if c.SkipConsentGate {
		if err := consent.CheckSkip(basis.Value); err != nil {
			errs.Add(c.SkipPos, "consent.skip_consent_gate: %v", err)
		}
	}
}

// Uses reports whether any of the route's expressions refers to the CEL
// variable name (see rules.Program.Uses).
func (r *Route) Uses(name string) bool {
	for _, c := range r.Programs {
		if c.Program != nil && c.Program.Uses(name) {
			return true
		}
	}
	return false
}

// decide asks decider about destination d, except for a destination
// inside Junction (the consent store, the opt-out list), which discloses
// nothing: the patient's own Consent on its way to the store is not a
// disclosure for that patient's refusal to block.
func (r *Route) decide(ctx context.Context, decider consent.Decider, d Destination, tr *adapter.Translation, in Input, bundle map[string]any, patients []string) (consent.Decision, error) {
	if d.Internal {
		return consent.Decision{Outcome: consent.Permit, Reason: "internal destination: nothing is disclosed", Rule: "internal"}, nil
	}
	dec, err := decider.Decide(ctx, consent.Request{
		Route: r.Name, Purpose: r.Purpose, LegalBasis: r.LegalBasis, SkipConsent: r.SkipConsent,
		Destination: d.Name, PatientKey: consentKey(tr.PatientKey, in.Patient), Bundle: bundle, BundlePatients: patients, Default: r.Default,
		// Restricted (S-flag) by the patient index; a Patient
		// labelled R in the bundle counts as well.
		Restricted: in.Restricted,
		// A raw payload goes as it came, with whatever its translation
		// does not map (Z segments, an ADT's OBX); a relayed message's
		// translation shows only its header and patients.
		Opaque:        tr.Relayed || d.Raw,
		OtherPatients: in.OtherPatients, UnidentifiedPatient: in.UnidentifiedPatient,
	})
	if err != nil {
		// The decider's store was unavailable: the message is tried
		// again later, never sent undecided nor dead-lettered for it.
		if fault.As(err) == nil {
			err = fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "consent decision unavailable", err)
		}
		return consent.Decision{}, fmt.Errorf("route %s consent for %s: %w", r.Name, d.Name, err)
	}
	return dec, nil
}

// stepsReadUnredacted reports whether a replace step reads the raw v2
// message or the patient index entry, which a consent redaction does not
// reach. (A keep step only drops entries of the redacted bundle, so what
// it reads cannot reach the output.)
func (r *Route) stepsReadUnredacted() bool {
	for _, st := range r.steps {
		if p := st.replace; p != nil && (p.Uses(rules.VarV2) || p.Uses(rules.VarPatient)) {
			return true
		}
	}
	return false
}

// Takes reports whether the route takes messages of this type. Events may
// be written as "ADT^A01" or "A01".
//
// A route naming no events takes every type the source translates, but
// none it relays untranslated (RelayCatalog); "TYPE^*" takes every event
// of TYPE.
func (r *Route) Takes(messageType, event string) bool {
	if r.events == nil {
		return r.relayed == nil || !r.relayed(messageType)
	}
	typ, ev, typed := strings.Cut(messageType, "^")
	if event == "" {
		event = ev
	}
	return r.events[messageType] || (event != "" && r.events[event]) || (typed && ev != "" && r.events[typ+"^*"])
}

// Relayed reports whether messageType ("ORM^O01") is one the route's
// source relays untranslated rather than translates.
func (r *Route) Relayed(messageType string) bool {
	return r.relayed != nil && r.relayed(messageType)
}

// NamesRelayed reports whether the route takes some message type that
// pattern ("MFN^*", "ORM^O01"), an entry of its source's relay setting,
// relays: its events name such a type, or every event of its type.
func (r *Route) NamesRelayed(pattern string) bool {
	if !r.relays || r.relayed == nil {
		return false
	}
	ptyp, _, _ := strings.Cut(pattern, "^")
	for e := range r.events {
		if typ, ev, _ := strings.Cut(e, "^"); ev == "*" {
			if typ == ptyp {
				return true
			}
		} else if r.relayed(e) && hl7v2.TypeMatches(pattern, e) {
			return true
		}
	}
	return false
}

// NotTakenRecord is the audit record for a message type the route does not
// take. Such messages are not translated by this route.
func (r *Route) NotTakenRecord(env *envelope.Envelope) audit.Record {
	return audit.Record{Time: time.Now().UTC(), MessageID: env.ID, Event: audit.Filtered, Source: env.Source, Route: r.Name, Outcome: "not-taken", Reason: "message type not taken by this route", Rule: "source.events"}
}

// Delivery is one payload for one destination.
type Delivery struct {
	Destination string
	ContentType string
	Body        []byte
	// Classes are the data classes of Body for the audit trail: the
	// sorted distinct resource types of a FHIR bundle, or the message
	// type of a raw payload.
	Classes []string
	// Patients are the NHS numbers of the patients whose data Body
	// carries (consent.BundleNHSNumbers of what is sent, with those of
	// the translation it holds or refers to without naming them by NHS
	// number: see sentPatients; of the whole translation for a raw
	// payload), so that each of them is told of the disclosure. Never
	// logged.
	Patients []string
}

// Result is what a route decided for one message.
type Result struct {
	// Taken is false when the route does not take this message type.
	Taken bool
	// Matched is the match expression's verdict.
	Matched bool
	// Deliveries are the permitted, selected destinations with payloads.
	Deliveries []Delivery
	// Denied lists destinations consent refused.
	Denied []string
	// Records are the audit records of the route's decisions.
	Records []audit.Record
	// Patients are the NHS numbers on the translation's Patients, whom
	// the consent decisions were about (consent.BundleNHSNumbers), when
	// the route matched. Never logged.
	Patients []string
}

// Input is one message as a route sees it.
type Input struct {
	Env *envelope.Envelope
	Tr  *adapter.Translation
	// Patient is the patient index entry, if any.
	Patient map[string]any
	// Restricted reports that the patient index marks the patient
	// restricted (S-flag).
	Restricted bool
	// OtherPatients and UnidentifiedPatient are the patients the
	// translation does not name by the NHS number the patient index
	// knows them by (consent.Request): a relayed message's further
	// patients named by a local identifier alone, and the survivor of a
	// merged NHS number the message gives; and whether one is known to
	// nobody.
	OtherPatients       []string
	UnidentifiedPatient bool
}

// MsgVars returns the msg variable for env.
func MsgVars(env *envelope.Envelope, event string) map[string]any {
	return map[string]any{
		"id":           env.ID,
		"source":       env.Source,
		"type":         env.MessageType,
		"event":        event,
		"control_id":   env.ControlID,
		"sender":       env.Sender,
		"received":     env.ReceivedAt,
		"content_type": env.ContentType,
	}
}

// MaxPatients is the most patients (distinct NHS numbers) a matched
// message may be about: a larger one fails its route, as a permanent
// fault (see envelope.MaxPatients; the FHIR input refuses one at once).
// The consent engine denies a bundle of more than consent.MaxPatients
// earlier.
const MaxPatients = envelope.MaxPatients

// Process runs match, consent per destination, and transform for one
// translated message. It does no I/O other than asking decider. An error is
// a permanent fault for this message (the caller dead-letters it).
func (r *Route) Process(ctx context.Context, in Input, decider consent.Decider) (*Result, error) {
	env, tr := in.Env, in.Tr
	res := &Result{}
	now := time.Now().UTC()
	rec := func(ev audit.Event, dest, outcome, reason, rule string) audit.Record {
		x := audit.Record{Time: now, MessageID: env.ID, Event: ev, Source: env.Source, Route: r.Name, Destination: dest, Outcome: outcome, Reason: reason, Rule: rule}
		if ev == audit.Consent {
			x.Purpose, x.LegalBasis = r.Purpose, r.LegalBasis
		}
		return x
	}
	if !r.Takes(env.MessageType, tr.Event) || tr.Relayed && !r.relays {
		// A relayed message reaches only a route naming its type (whose
		// destinations take it raw), whatever the catalog knew at load.
		res.Records = append(res.Records, r.NotTakenRecord(env))
		return res, nil
	}
	res.Taken = true
	bundle := tr.Parsed
	if bundle == nil {
		var err error
		if bundle, err = jsonmap.Decode(tr.Bundle); err != nil {
			return nil, fault.Wrap(fault.Permanent, fault.CodeTranslate, "translated bundle is not JSON", err)
		}
	}
	v2, _ := tr.V2.(rules.V2Message)
	vars := &rules.Vars{Bundle: bundle, V2: v2, Patient: in.Patient}
	if r.Uses(rules.VarMsg) {
		// Made only for a route that reads it: nothing else does.
		vars.Msg = MsgVars(env, tr.Event)
	}
	// The message's evaluations, one after another, share one timer
	// (rules.WithTimer); consent is asked with ctx itself.
	ectx, stopTimer := rules.WithTimer(ctx)
	defer stopTimer()
	if r.match != nil {
		ok, err := r.match.EvalBool(ectx, vars)
		if err != nil {
			return nil, fmt.Errorf("route %s match: %w", r.Name, r.exprError(r.match, err))
		}
		if !ok {
			res.Records = append(res.Records, rec(audit.Filtered, "", "filtered", "match expression was false", "match"))
			return res, nil
		}
	}
	res.Matched = true
	res.Records = append(res.Records, rec(audit.Matched, "", "matched", "", "match"))
	// Patients the translation does not name by the NHS number the
	// patient index knows them by: told of the disclosure too.
	// Found entry by entry once, for the consent decisions and for what
	// each destination is sent.
	entryPatients := consent.EntryNHSNumbers(bundle)
	bundlePatients := consent.JoinNHSNumbers(entryPatients...)
	if entryPatients == nil {
		bundlePatients = consent.BundleNHSNumbers(bundle)
	}
	res.Patients = withOthers(slices.Clip(bundlePatients), in.OtherPatients)
	if n := len(res.Patients); n > MaxPatients {
		// Each payload carries its patients' keyed hashes to the
		// delivery stage in store headers, which JetStream bounds.
		return nil, fault.Newf(fault.CodeTooLarge, "route %s: the message is about %d patients, more than %d; send one message per patient", r.Name, n, MaxPatients)
	}
	for _, d := range r.Destinations {
		dvars := *vars
		dvars.Destination = map[string]any{"name": d.Name}
		if d.when != nil {
			ok, err := d.when.EvalBool(ectx, &dvars)
			if err != nil {
				return nil, fmt.Errorf("route %s destination %s when: %w", r.Name, d.Name, r.exprError(d.when, err))
			}
			if !ok {
				res.Records = append(res.Records, rec(audit.Filtered, d.Name, "not-selected", "destination condition was false", "when"))
				continue
			}
		}
		dec, err := r.decide(ctx, decider, d, tr, in, bundle, bundlePatients)
		if err != nil {
			return nil, err
		}
		outcome, reason := dec.Outcome, dec.Reason
		switch {
		case outcome == consent.Redact && d.Raw:
			// Raw HL7 cannot be redacted: what may not all go does not go.
			outcome, reason = consent.Deny, "raw payload cannot be redacted: "+dec.Reason
		case outcome == consent.Redact && r.stepsReadUnredacted():
			// The v2 message and the patient variable are not redacted:
			// a transform reading them could put back what consent took
			// out.
			outcome, reason = consent.Deny, "a replace step reads v2 or patient, which consent cannot redact: "+dec.Reason
		case outcome == consent.Redact && len(dec.Resources) == 0:
			// A redaction that does not say what to remove cannot be made.
			outcome, reason = consent.Deny, "redaction without per-resource verdicts: "+dec.Reason
		}
		if dec.ConsentSkipped {
			reason += " (statutory route: consent gate skipped)"
		}
		res.Records = append(res.Records, rec(audit.Consent, d.Name, string(outcome), reason, dec.Rule))
		res.Records = append(res.Records, resourceRecords(rec, d.Name, dec)...)
		if outcome != consent.Permit && outcome != consent.Redact {
			res.Denied = append(res.Denied, d.Name)
			continue
		}
		if d.Raw {
			res.Deliveries = append(res.Deliveries, Delivery{Destination: d.Name, ContentType: env.ContentType, Body: env.Raw, Classes: rawClasses(env.MessageType), Patients: res.Patients})
			continue
		}
		body, src := tr.Bundle, bundle
		if outcome == consent.Redact {
			if src, err = consent.Apply(bundle, dec); err != nil {
				return nil, fault.Wrap(fault.Permanent, fault.CodeInternal, "applying consent redactions", err)
			}
			dvars.Bundle = src
			if body, err = jsonmap.Append(make([]byte, 0, len(tr.Bundle)), src); err != nil {
				return nil, fault.Wrap(fault.Permanent, fault.CodeInternal, "redacted bundle is not JSON", err)
			}
		}
		// kept, when not nil, lists the entries of bundle that a
		// transform's result holds, unchanged: those whose patients are
		// known already.
		var kept []int
		if len(r.steps) > 0 {
			var from []int
			if outcome == consent.Permit && entryPatients != nil {
				from = allIndices(len(entryPatients))
			}
			out, outKept, err := r.transform(ectx, &dvars, src, from)
			if err != nil {
				return nil, fmt.Errorf("route %s transform for %s: %w", r.Name, d.Name, err)
			}
			body, err = jsonmap.Append(make([]byte, 0, len(tr.Bundle)), out)
			if err != nil {
				return nil, fault.Wrap(fault.Permanent, fault.CodeRuleEval, "transform result is not JSON", err)
			}
			src, kept = out, outKept
			res.Records = append(res.Records, rec(audit.Transformed, d.Name, "ok", fmt.Sprintf("%d steps", len(r.steps)), "transform"))
		}
		patients := res.Patients
		if outcome == consent.Redact || len(r.steps) > 0 {
			// What is sent may hold fewer patients than the translation;
			// those it does not name by NHS number are in it as the
			// message's are.
			if kept != nil {
				patients = withOthers(keptPatients(bundle, entryPatients, kept), in.OtherPatients)
			} else {
				patients = withOthers(r.sentPatients(bundle, entryPatients, bundlePatients, src), in.OtherPatients)
			}
		}
		res.Deliveries = append(res.Deliveries, Delivery{Destination: d.Name, ContentType: envelope.ContentTypeFHIR, Body: body, Classes: bundleClasses(src), Patients: patients})
	}
	return res, nil
}

// allIndices returns 0 to n-1.
func allIndices(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// withOthers returns the NHS numbers nums with the valid ones of others
// not among them added.
func withOthers(nums, others []string) []string {
	for _, n := range others {
		if n = nhs.Normalize(n); nhs.ValidNumber(n) && !slices.Contains(nums, n) {
			nums = append(nums, n)
		}
	}
	return nums
}

// consentKey is the patient key consent decides by: the translation's
// key, or, when that is not an NHS number (a local identifier), the NHS
// number the patient index knows for the patient, if any.
func consentKey(key string, patient map[string]any) string {
	if nhs.ValidNumber(nhs.Normalize(key)) {
		return key
	}
	if n, _ := patient["nhsNumber"].(string); n != "" {
		return n
	}
	return key
}

// bundleClasses returns the sorted distinct resource types of a decoded
// FHIR bundle's entries, or the resource's own type when it is not a
// bundle. It reads the maps already decoded; it never parses JSON.
func bundleClasses(b map[string]any) []string {
	if b == nil {
		return nil
	}
	rt, _ := b["resourceType"].(string)
	entries, _ := b["entry"].([]any)
	if rt != "Bundle" {
		if rt == "" {
			return nil
		}
		return []string{rt}
	}
	var out []string
	for _, e := range entries {
		em, _ := e.(map[string]any)
		res, _ := em["resource"].(map[string]any)
		if t, _ := res["resourceType"].(string); t != "" && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// rawClasses is the data class of a raw HL7 v2 payload: its message type.
func rawClasses(messageType string) []string {
	if messageType == "" {
		return nil
	}
	return []string{messageType}
}

// Outcomes of the audit records written for each resource consent did not
// permit, beside the destination's own consent record.
const (
	// OutcomeWithheld is a resource left out of the payload, with every
	// reference to it.
	OutcomeWithheld = "withheld"
	// OutcomeStripped is a resource sent without some of its elements.
	OutcomeStripped = "stripped"
)

// maxResourceRecords bounds the per-resource consent records of one
// destination, so that a refused bundle of thousands of entries cannot
// make an audit write larger than the store accepts; the rest are
// counted in one last record.
const maxResourceRecords = 200

// resourceRecords returns one audit record per resource the decision did
// not permit: the entry's position and type, the reason and the rule.
// Neither holds patient data.
func resourceRecords(rec func(ev audit.Event, dest, outcome, reason, rule string) audit.Record, dest string, dec consent.Decision) []audit.Record {
	var out []audit.Record
	more := map[string]int{}
	for _, rd := range dec.Resources {
		outcome := ""
		switch rd.Outcome {
		case consent.Permit:
			continue
		case consent.Redact:
			outcome = OutcomeStripped
		default:
			outcome = OutcomeWithheld
		}
		if len(out) == maxResourceRecords {
			more[outcome]++
			continue
		}
		reason := fmt.Sprintf("entry %d (%s): %s", rd.Index, rd.ResourceType, rd.Reason)
		out = append(out, rec(audit.Consent, dest, outcome, reason, rd.Rule))
	}
	for _, outcome := range []string{OutcomeWithheld, OutcomeStripped} {
		if n := more[outcome]; n > 0 {
			out = append(out, rec(audit.Consent, dest, outcome, fmt.Sprintf("%d more resources %s, not listed one by one", n, outcome), "audit:limit"))
		}
	}
	return out
}

// logicalReference returns, for a Bundle entry that a keep step drops
// and that others may refer to by its urn: fullUrl, what those references
// become: a logical reference by its type and first identifier, or nil
// (removed) when it has none. ok is false when the entry has no urn:
// fullUrl.
func logicalReference(entry map[string]any) (ref map[string]any, fullURL string, ok bool) {
	u, _ := entry["fullUrl"].(string)
	if !strings.HasPrefix(u, "urn:") {
		return nil, "", false
	}
	res, _ := entry["resource"].(map[string]any)
	ids, _ := res["identifier"].([]any)
	if len(ids) == 0 {
		return nil, u, true
	}
	id, _ := ids[0].(map[string]any)
	c, err := jsonmap.Clone(id)
	if id == nil || err != nil {
		return nil, u, true
	}
	out := map[string]any{"identifier": c}
	if rt, _ := res["resourceType"].(string); rt != "" {
		out["type"] = rt
	}
	return out, u, true
}

// startsWithHeader reports whether the first of entries holds a
// MessageHeader.
func startsWithHeader(entries []any) bool {
	if len(entries) == 0 {
		return false
	}
	em, _ := entries[0].(map[string]any)
	res, _ := em["resource"].(map[string]any)
	return res != nil && res["resourceType"] == "MessageHeader"
}

// transform applies the steps to a copy of bundle. When from is not nil
// it says which entries of an original bundle bundle's entries are (by
// their indices there), and the []int returned says the same of the
// result's entries, or is nil when a step changed or made entries (a
// keep step rewriting references, a replace step). A keep step rewrites
// references to an entry it drops that would dangle, and one that drops a message
// Bundle's MessageHeader makes it a collection, so what is delivered is
// still a valid Bundle.
func (r *Route) transform(ctx context.Context, vars *rules.Vars, bundle map[string]any, from []int) (map[string]any, []int, error) {
	cur := bundle
	for i, s := range r.steps {
		v := *vars
		v.Bundle = cur
		switch {
		case s.keep != nil:
			entries, _ := cur["entry"].([]any)
			kept := make([]any, 0, len(entries))
			// What referred to an entry not kept by its urn: fullUrl would
			// dangle (a transaction resolves those within the bundle
			// only): such references become logical ones, by the dropped
			// resource's type and first identifier, or go when it has
			// none. Type/id and absolute references are left, since they
			// resolve on the server.
			var repl map[string]map[string]any
			var keptFrom []int
			if from != nil {
				keptFrom = make([]int, 0, len(entries))
			}
			// The step runs once per entry: one budget bounds them all.
			budget := s.keep.NewBudget()
			for j, e := range entries {
				em, _ := e.(map[string]any)
				res, _ := em["resource"].(map[string]any)
				v.Resource = res
				ok, err := s.keep.EvalBoolWithin(ctx, &v, budget)
				if err != nil {
					return nil, nil, fmt.Errorf("step %d: %w", i, r.exprError(s.keep, err))
				}
				if ok {
					kept = append(kept, e)
					if from != nil {
						keptFrom = append(keptFrom, from[j])
					}
					continue
				}
				if r, u, ok := logicalReference(em); ok {
					if repl == nil {
						repl = map[string]map[string]any{}
					}
					repl[u] = r
				}
			}
			// The entries are shared with the translation (and other
			// destinations), so they are copied first.
			if len(repl) > 0 && fhir.RefersTo(kept, func(ref string) bool { _, ok := repl[ref]; return ok }) {
				c, err := jsonmap.Clone(kept)
				if err != nil {
					return nil, nil, fmt.Errorf("step %d: copying entries: %w", i, err)
				}
				kept = fhir.RewriteReferences(c, repl).([]any)
				keptFrom = nil
			}
			from = keptFrom
			next := make(map[string]any, len(cur))
			for k, val := range cur {
				next[k] = val
			}
			// FHIR JSON has no empty arrays: a bundle left without
			// entries has no entry element.
			if len(kept) > 0 {
				next["entry"] = kept
			} else {
				delete(next, "entry")
			}
			// A message Bundle starts with its MessageHeader (bdl-12);
			// one whose header was not kept is a collection.
			if next["type"] == "message" && !startsWithHeader(kept) {
				next["type"] = "collection"
			}
			cur = next
		case s.replace != nil:
			out, err := s.replace.EvalMap(ctx, &v)
			if err != nil {
				return nil, nil, fmt.Errorf("step %d: %w", i, r.exprError(s.replace, err))
			}
			// What a destination would refuse, or a file destination
			// write as it is, fails here, at the step that made it.
			if p := bundleProblem(out); p != "" {
				err := fault.New(fault.CodeRuleEval, "the result is not a FHIR Bundle").WithDetail(p)
				return nil, nil, fmt.Errorf("step %d: %w", i, r.exprError(s.replace, err))
			}
			cur, from = withSourceTag(cur, out), nil
		}
	}
	return cur, from, nil
}

// withSourceTag returns out, the Bundle a replace step made from in, with
// in's Junction source tag (fhir.SystemJunctionSource) when out's
// meta.tag lacks it. The tag tells a merging FHIR destination that empty
// v2 fields mean no change; a step writing its own Bundle.meta would
// otherwise turn that off, and the destination would replace the
// server's resources whole. out is changed only in new maps and slices,
// since its members may be shared with in.
func withSourceTag(in, out map[string]any) map[string]any {
	tag := sourceTag(in)
	if tag == nil || sourceTag(out) != nil {
		return out
	}
	meta := map[string]any{}
	if m, ok := out["meta"].(map[string]any); ok {
		maps.Copy(meta, m)
	}
	tags, _ := meta["tag"].([]any)
	meta["tag"] = append(slices.Clip(tags), tag)
	next := maps.Clone(out)
	next["meta"] = meta
	return next
}

// sourceTag returns the Junction source tag of the Bundle b's meta.tag,
// or nil.
func sourceTag(b map[string]any) map[string]any {
	meta, _ := b["meta"].(map[string]any)
	tags, _ := meta["tag"].([]any)
	for _, t := range tags {
		if tm, ok := t.(map[string]any); ok && tm["system"] == fhir.SystemJunctionSource {
			return tm
		}
	}
	return nil
}
