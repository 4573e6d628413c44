// Package rules holds Junction's one CEL environment: the variables routes
// can read, the functions they can call, and the limits every expression
// runs under. Expressions compile once at load; load rejects expressions
// whose estimated cost is too high; evaluation runs with a cost limit and a
// deadline.
package rules

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/ext"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// Variable names declared in the environment.
const (
	VarMsg         = "msg"         // envelope metadata: id, source, type, event, control_id, sender, received, content_type
	VarBundle      = "bundle"      // the FHIR Bundle as JSON-shaped maps
	VarV2          = "v2"          // the raw HL7 v2 message (get by path), empty for non-v2 sources
	VarDestination = "destination" // name of the destination being decided
	VarPatient     = "patient"     // the patient index entry (empty until the patient index exists)
	VarResource    = "resource"    // one bundle entry's resource, in keep steps
)

// Limits bound what expressions may cost.
type Limits struct {
	// MaxEstimatedCost rejects expressions at load whose worst-case cost,
	// assuming lists and maps of up to MaxSize elements, exceeds it.
	MaxEstimatedCost uint64
	// MaxSize is the assumed largest size of any list, map or string.
	MaxSize uint64
	// CostLimit stops an evaluation that exceeds it.
	CostLimit uint64
	// Timeout stops an evaluation that runs longer.
	Timeout time.Duration
}

// DefaultLimits are the limits used unless the config says otherwise.
func DefaultLimits() Limits {
	return Limits{MaxEstimatedCost: 10_000_000, MaxSize: 1000, CostLimit: 1_000_000, Timeout: 100 * time.Millisecond}
}

// Env is the compiled CEL environment.
type Env struct {
	env    *cel.Env
	limits Limits
	// names are the variables and functions an expression may name, for
	// suggesting one in place of a name that is not.
	names []string
}

// V2Message is what the v2 variable exposes: field access by path.
type V2Message interface {
	Get(path string) string
}

var v2Type = cel.OpaqueType("junction.V2")

// NewEnv builds the environment.
func NewEnv(limits Limits) (*Env, error) {
	mapT := cel.MapType(cel.StringType, cel.DynType)
	opts := []cel.EnvOption{
		cel.Variable(VarMsg, mapT),
		cel.Variable(VarBundle, mapT),
		cel.Variable(VarV2, v2Type),
		cel.Variable(VarDestination, mapT),
		cel.Variable(VarPatient, mapT),
		cel.Variable(VarResource, mapT),
		ext.Strings(),
		cel.Function("get",
			cel.MemberOverload("v2_get_string", []*cel.Type{v2Type, cel.StringType}, cel.StringType,
				cel.BinaryBinding(func(lhs, rhs ref.Val) ref.Val {
					m, ok := lhs.(v2Val)
					p, ok2 := rhs.(types.String)
					if !ok || !ok2 {
						return types.NewErr("v2.get: bad arguments")
					}
					if m.msg == nil {
						return types.String("")
					}
					return types.String(m.msg.Get(string(p)))
				}))),
		cel.Function("nhsNumberValid",
			cel.Overload("nhs_number_valid_string", []*cel.Type{cel.StringType}, cel.BoolType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					s, ok := v.(types.String)
					if !ok {
						return types.NewErr("nhsNumberValid: expected a string")
					}
					return types.Bool(nhs.ValidNumber(nhs.Normalize(string(s))))
				}))),
		cel.Function("resources",
			cel.Overload("resources_map_string", []*cel.Type{mapT, cel.StringType}, cel.ListType(mapT),
				cel.BinaryBinding(func(b, t ref.Val) ref.Val { return selectResources(b, t, false) }))),
		cel.Function("resource",
			cel.Overload("resource_map_string", []*cel.Type{mapT, cel.StringType}, mapT,
				cel.BinaryBinding(func(b, t ref.Val) ref.Val { return selectResources(b, t, true) }))),
		cel.Function("nhsNumber",
			cel.Overload("nhs_number_map", []*cel.Type{mapT}, cel.StringType,
				cel.UnaryBinding(bundleNHSNumber))),
	}
	opts = append(opts, guardedStrings(maxResultBytes(limits))...)
	opts = append(opts, searchFunctions()...)
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("building CEL environment: %w", err)
	}
	if env, err = env.Extend(cel.CustomTypeAdapter(numberAdapter{base: env.CELTypeAdapter()})); err != nil {
		return nil, fmt.Errorf("building CEL environment: %w", err)
	}
	var names []string
	for n := range env.Functions() {
		if isName(n) {
			names = append(names, n)
		}
	}
	for _, v := range env.Variables() {
		names = append(names, v.Name())
	}
	slices.Sort(names)
	return &Env{env: env, limits: limits, names: names}, nil
}

// isName reports whether s is a name one writes (size, nhsNumberValid),
// not an operator's internal one (_+_, @in).
func isName(s string) bool {
	for i, r := range s {
		if r != '_' && r != '.' && !unicode.IsLetter(r) && (i == 0 || !unicode.IsDigit(r)) {
			return false
		}
	}
	return s != "" && s[0] != '_' && s[0] != '.'
}

// Limits returns the environment's limits.
func (e *Env) Limits() Limits { return e.limits }

// Kind says what an expression must return.
type Kind int

// Expression kinds.
const (
	Bool Kind = iota // a bool (match, when, keep)
	Map              // a map (replace)
)

// Issue is a compile problem at an offset into the expression source.
type Issue struct {
	// Offset is the byte offset into the source, or -1 when unknown.
	Offset int
	Msg    string
}

// CompileError lists every problem with one expression.
type CompileError struct{ Issues []Issue }

func (c *CompileError) Error() string {
	s := ""
	for i, is := range c.Issues {
		if i > 0 {
			s += "; "
		}
		s += is.Msg
	}
	return s
}

// Program is a compiled, cost-checked expression.
type Program struct {
	src  string
	prg  cel.Program
	cost checker.CostEstimate
	lim  Limits
	// idents are the names the checked expression refers to as
	// identifiers (declared variables, and comprehension variables).
	idents map[string]bool
	// readAt is the byte offset in src of the first read of each declared
	// variable the expression reads (not a comprehension variable of the
	// same name).
	readAt map[string]int
	// keyLits are the literals msg.event, msg.type and destination.name
	// are compared with.
	keyLits []KeyLiteral
	// folds reports whether the checked expression holds a
	// comprehension (exists, all, map, filter, ...). cel-go checks for
	// an interrupted evaluation only in a comprehension's loop, so an
	// expression without one is evaluated without a context: one would
	// never be read, and making it (cel-go's own cancellable context and
	// its async-call state) is most of a small evaluation's cost.
	folds bool
}

// KeyLiterals returns the string literals the expression compares
// msg.event or msg.type with for equality (== or in), and
// destination.name with, so that a route can refuse an event its events
// never take or a name none of its destinations has: such a comparison
// is never true (or, with !=, always).
func (p *Program) KeyLiterals() []KeyLiteral { return p.keyLits }

// Uses reports whether the expression refers to the variable name, so
// the engine can leave out reads that fill variables no expression uses.
// A comprehension variable of the same name counts as a use.
func (p *Program) Uses(name string) bool { return p.idents[name] }

// Reads reports whether the expression reads the declared variable name
// (a comprehension variable of the same name does not count), and the
// byte offset of its first read, so that a caller can refuse a variable
// its kind of expression never has set.
func (p *Program) Reads(name string) (offset int, ok bool) {
	offset, ok = p.readAt[name]
	return offset, ok
}

// Source returns the expression text.
func (p *Program) Source() string { return p.src }

// EstimatedCost returns the worst-case cost estimate.
func (p *Program) EstimatedCost() checker.CostEstimate { return p.cost }

// Compile parses, type-checks and cost-checks src, which must return kind.
func (e *Env) Compile(src string, kind Kind) (compiled *Program, err error) {
	// cel-go can panic on some inputs (for example a map literal with
	// bytes keys, when folding constants); report that as a compile error
	// rather than crash lint or start.
	defer func() {
		if r := recover(); r != nil {
			compiled, err = nil, &CompileError{Issues: []Issue{{Offset: -1, Msg: "the CEL compiler failed on this expression; simplify it"}}}
		}
	}()
	if off := nestingOffset(src, MaxNesting); off >= 0 {
		return nil, &CompileError{Issues: []Issue{{Offset: off, Msg: fmt.Sprintf("brackets nested more than %d deep; simplify the expression", MaxNesting)}}}
	}
	ast, iss := e.env.Compile(src)
	if iss != nil && iss.Err() != nil {
		ce := &CompileError{}
		for _, er := range iss.Errors() {
			off, msg := undeclared(src, offsetOf(src, er.Location.Line(), er.Location.Column()), er.Message, e.names)
			ce.Issues = append(ce.Issues, Issue{Offset: off, Msg: msg + syntaxHint(src, msg)})
		}
		return nil, ce
	}
	info := ast.NativeRep().SourceInfo()
	bad, reads, lits := unknownKeys(ast.NativeRep().Expr())
	if len(bad) > 0 {
		ce := &CompileError{}
		for _, b := range bad {
			loc := info.GetStartLocation(b.id)
			ce.Issues = append(ce.Issues, Issue{Offset: offsetOf(src, loc.Line(), loc.Column()), Msg: b.msg})
		}
		return nil, ce
	}
	if out := ast.OutputType(); !returns(out, kind) {
		want := "bool"
		if kind == Map {
			want = "a map with string keys"
		}
		return nil, &CompileError{Issues: []Issue{{Offset: -1, Msg: fmt.Sprintf("expression must return %s, not %s", want, out)}}}
	}
	est, err := e.env.EstimateCost(ast, sizeEstimator{max: e.limits.MaxSize})
	if err != nil {
		return nil, &CompileError{Issues: []Issue{{Offset: -1, Msg: "estimating cost: " + err.Error()}}}
	}
	if est.Max > e.limits.MaxEstimatedCost {
		return nil, &CompileError{Issues: []Issue{{Offset: -1, Msg: fmt.Sprintf("estimated worst-case cost %d exceeds the limit %d; narrow the expression (for example select resources by type before iterating)", est.Max, e.limits.MaxEstimatedCost)}}}
	}
	prg, err := e.env.Program(ast, cel.CostLimit(e.limits.CostLimit), cel.InterruptCheckFrequency(64), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, &CompileError{Issues: []Issue{{Offset: -1, Msg: err.Error()}}}
	}
	idents := map[string]bool{}
	for _, ref := range ast.NativeRep().ReferenceMap() {
		if ref.Name != "" && ref.Value == nil {
			idents[ref.Name] = true
		}
	}
	readAt := make(map[string]int, len(reads))
	for name, id := range reads {
		loc := info.GetStartLocation(id)
		readAt[name] = offsetOf(src, loc.Line(), loc.Column())
	}
	var keyLits []KeyLiteral
	for _, l := range lits {
		loc := info.GetStartLocation(l.id)
		keyLits = append(keyLits, KeyLiteral{Key: l.key, Value: l.value, Offset: offsetOf(src, loc.Line(), loc.Column())})
	}
	folds := len(celast.MatchDescendants(celast.NavigateAST(ast.NativeRep()), celast.KindMatcher(celast.ComprehensionKind))) > 0
	return &Program{src: src, prg: prg, cost: est, lim: e.limits, idents: idents, readAt: readAt, keyLits: keyLits, folds: folds}, nil
}

// undeclared tidies the checker's report of an unknown name: without the
// container it was looked up in (always the root here), with the known
// name (of names) it is likely a typo of, and, for a call of an unknown
// function, placed at the function's name rather than at the bracket
// after it.
func undeclared(src string, off int, msg string, names []string) (int, string) {
	name, ok := strings.CutPrefix(msg, "undeclared reference to '")
	if !ok {
		return off, msg
	}
	msg = strings.TrimSuffix(msg, " (in container '')")
	if name, _, ok = strings.Cut(name, "'"); !ok {
		return off, msg
	}
	if s, ok := otherLanguages[name]; ok && slices.Contains(names, s) {
		msg += fmt.Sprintf(" (CEL calls it %q)", s)
	} else if s := yamlx.Suggest(name, names); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	if off >= len(name) && off < len(src) && src[off] == '(' && src[off-len(name):off] == name {
		off -= len(name)
	}
	return off, msg
}

// otherLanguages maps names other languages and engines give common
// functions to CEL's, for route authors coming from them.
var otherLanguages = map[string]string{
	"upperCase": "upperAscii", "toUpperCase": "upperAscii", "toUpper": "upperAscii", "upper": "upperAscii", "ucase": "upperAscii",
	"lowerCase": "lowerAscii", "toLowerCase": "lowerAscii", "toLower": "lowerAscii", "lower": "lowerAscii", "lcase": "lowerAscii",
	"length": "size", "len": "size", "count": "size",
	"strip": "trim", "trimSpace": "trim", "substr": "substring", "includes": "contains",
}

// syntaxHint says what a syntax error the parser reports in its own terms
// most likely means, for operators written as other languages write
// them; "" when there is nothing to add to msg.
func syntaxHint(src, msg string) string {
	switch {
	case !strings.HasPrefix(msg, "Syntax error:"):
		return ""
	case strings.Contains(msg, "token recognition error at: '='") || strings.Contains(msg, "token recognition error at: '= '"):
		return " (CEL compares with ==)"
	case strings.Contains(msg, "mismatched input 'and'") || strings.Contains(msg, "mismatched input 'AND'"):
		return " (CEL's and is &&)"
	case strings.Contains(msg, "mismatched input 'or'") || strings.Contains(msg, "mismatched input 'OR'"):
		return " (CEL's or is ||)"
	case strings.Contains(src, "<>"):
		return " (CEL's not-equal is !=)"
	}
	return ""
}

// returns reports whether an expression of type out may return kind. A
// dyn result is checked when it is evaluated.
func returns(out *cel.Type, kind Kind) bool {
	if out.IsExactType(cel.DynType) {
		return true
	}
	if kind == Map {
		if out.Kind() != types.MapKind || len(out.Parameters()) != 2 {
			return false
		}
		key := out.Parameters()[0]
		return key.IsExactType(cel.StringType) || key.IsExactType(cel.DynType)
	}
	return cel.BoolType.IsAssignableType(out)
}

func offsetOf(src string, line, col int) int {
	if line <= 0 {
		return -1
	}
	l, off := 1, 0
	for off < len(src) && l < line {
		if src[off] == '\n' {
			l++
		}
		off++
	}
	// CEL columns count code points from 0.
	for c := 0; c < col && off < len(src); c++ {
		_, w := utf8.DecodeRuneInString(src[off:])
		off += w
	}
	return off
}

// Vars is the input to one evaluation. Nil maps are presented as empty.
type Vars struct {
	Msg         map[string]any
	Bundle      map[string]any
	V2          V2Message
	Destination map[string]any
	Patient     map[string]any
	Resource    map[string]any
}

type activation struct{ v *Vars }

func (a activation) ResolveName(name string) (any, bool) {
	switch name {
	case VarMsg:
		return orEmpty(a.v.Msg), true
	case VarBundle:
		return orEmpty(a.v.Bundle), true
	case VarV2:
		return v2Val{msg: a.v.V2}, true
	case VarDestination:
		return orEmpty(a.v.Destination), true
	case VarPatient:
		return orEmpty(a.v.Patient), true
	case VarResource:
		return orEmpty(a.v.Resource), true
	}
	return nil, false
}

func (a activation) Parent() cel.Activation { return nil }

var emptyMap = map[string]any{}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return emptyMap
	}
	return m
}

// Eval runs p. Errors are permanent faults (code rule.eval) whose message
// holds no data from the input.
func (p *Program) Eval(ctx context.Context, v *Vars) (any, error) {
	out, _, err := p.eval(ctx, v, nil)
	if err != nil {
		return nil, err
	}
	return out.Value(), nil
}

// StepBudgetFactor is how many single evaluations' cost limit and
// deadline a Budget holds.
const StepBudgetFactor = 10

// Budget bounds, together, the evaluations of one expression run many
// times for one message (a keep step runs once per Bundle entry), so that
// an expression within its limits on each entry cannot hold a route for
// minutes on a large Bundle: their summed cost and their time. Each
// evaluation keeps its own limits too. A Budget is not safe for
// concurrent use.
type Budget struct {
	left     uint64
	deadline time.Time
}

// NewBudget returns a budget of StepBudgetFactor times the cost limit and
// deadline of one evaluation of p, starting now.
func (p *Program) NewBudget() *Budget {
	left := uint64(math.MaxUint64)
	if p.lim.CostLimit <= math.MaxUint64/StepBudgetFactor {
		left = p.lim.CostLimit * StepBudgetFactor
	}
	wait := time.Duration(math.MaxInt64)
	if p.lim.Timeout <= math.MaxInt64/StepBudgetFactor {
		wait = p.lim.Timeout * StepBudgetFactor
	}
	return &Budget{left: left, deadline: time.Now().Add(wait)}
}

// EvalBoolWithin runs p as EvalBool does, charging its cost to b. Once b
// is spent (or its deadline passed) it fails with rule.eval.
func (p *Program) EvalBoolWithin(ctx context.Context, v *Vars, b *Budget) (bool, error) {
	if time.Now().After(b.deadline) {
		return false, fault.New(fault.CodeRuleEval, "evaluations for this message exceeded their deadline together")
	}
	out, cost, err := p.eval(ctx, v, b)
	if err != nil {
		return false, err
	}
	if cost > b.left {
		return false, fault.New(fault.CodeRuleEval, "evaluations for this message exceeded their cost limit together")
	}
	b.left -= cost
	r, ok := out.Value().(bool)
	if !ok {
		return false, fault.Newf(fault.CodeRuleEval, "expression returned %T, not bool", out.Value())
	}
	return r, nil
}

// eval runs p until its Timeout from now, or b's deadline when b is not
// nil and that comes first.
func (p *Program) eval(ctx context.Context, v *Vars, b *Budget) (out ref.Val, cost uint64, err error) {
	timed, _ := ctx.(*timedContext)
	defer func() {
		if r := recover(); r != nil {
			if timed != nil {
				timed.t.stop()
			}
			out, err = nil, fault.New(fault.CodeRuleEval, "evaluation failed inside the CEL runtime")
		}
	}()
	if !p.folds {
		// Nothing could interrupt it (see Program.folds): its cost limit
		// bounds it, as it bounds every evaluation.
		out, det, err := p.prg.Eval(activation{v})
		return p.result(out, det, err, false)
	}
	// One context bounds the evaluation by the earlier deadline, as one
	// for the budget's with one for the timeout inside it would.
	deadline := time.Now().Add(p.lim.Timeout)
	if b != nil && b.deadline.Before(deadline) {
		deadline = b.deadline
	}
	if timed != nil {
		ctx = timed.t.start(deadline)
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	out, det, err := p.prg.ContextEval(ctx, activation{v})
	// The timer's context is cancelled, not past a deadline of its own,
	// when the timer stops an evaluation.
	expired := timed != nil && timed.t.stop()
	return p.result(out, det, err, expired || errors.Is(ctx.Err(), context.DeadlineExceeded))
}

// result is what eval returns for an evaluation's outcome: its value and
// actual cost, or a rule.eval fault saying whether it ran out of time
// (expired) or of cost.
func (p *Program) result(out ref.Val, det *cel.EvalDetails, err error, expired bool) (ref.Val, uint64, error) {
	var cost uint64
	if det != nil {
		if c := det.ActualCost(); c != nil {
			cost = *c
		}
	}
	if err != nil {
		msg := "evaluation failed"
		switch {
		case expired:
			msg = "evaluation exceeded its deadline"
		case isCostErr(err):
			msg = "evaluation exceeded its cost limit"
		}
		// CEL error text can quote values (map keys, strings); keep it as
		// caller-only detail.
		return nil, cost, fault.New(fault.CodeRuleEval, msg).WithDetail(err.Error())
	}
	return out, cost, nil
}

func isCostErr(err error) bool {
	return strings.Contains(err.Error(), "cost limit")
}

// EvalBool runs p and requires a bool.
func (p *Program) EvalBool(ctx context.Context, v *Vars) (bool, error) {
	out, err := p.Eval(ctx, v)
	if err != nil {
		return false, err
	}
	b, ok := out.(bool)
	if !ok {
		return false, fault.Newf(fault.CodeRuleEval, "expression returned %T, not bool", out)
	}
	return b, nil
}

// EvalMap runs p and requires a map, returned as JSON-shaped Go values:
// map[string]any, []any, nil, bool, int64, uint64, float64 and string.
// Bytes become base64 text, timestamps RFC 3339 text and durations Go
// duration text, so the result always encodes as JSON.
func (p *Program) EvalMap(ctx context.Context, v *Vars) (map[string]any, error) {
	out, _, err := p.eval(ctx, v, nil)
	if err != nil {
		return nil, err
	}
	if _, ok := out.(traits.Mapper); !ok {
		return nil, fault.Newf(fault.CodeRuleEval, "expression returned %s, not a map", out.Type().TypeName())
	}
	native, err := jsonValue(out, 0)
	if err != nil {
		return nil, fault.New(fault.CodeRuleEval, "expression result has no JSON form").WithDetail(err.Error())
	}
	return native.(map[string]any), nil
}

// maxJSONDepth bounds the nesting jsonValue follows.
const maxJSONDepth = 1000

// jsonValue converts a CEL value into the Go values encoding/json writes
// as JSON: CEL's own native forms (structpb.NullValue for null,
// map[any]any for nested maps, time.Duration) do not encode as FHIR
// expects, so every value is converted here.
func jsonValue(v ref.Val, depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, fmt.Errorf("nested more than %d levels deep", maxJSONDepth)
	}
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		return uint64(x), nil
	case types.Double:
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, errors.New("a number is NaN or infinite")
		}
		return f, nil
	case types.String:
		return string(x), nil
	case types.Bytes:
		return base64.StdEncoding.EncodeToString(x), nil
	case types.Timestamp:
		return x.Time.UTC().Format(time.RFC3339Nano), nil
	case types.Duration:
		return x.Duration.String(), nil
	case traits.Mapper:
		out := map[string]any{}
		it := x.Iterator()
		for it.HasNext() == types.True {
			k := it.Next()
			ks, ok := k.(types.String)
			if !ok {
				return nil, fmt.Errorf("a map key is %s, not a string", k.Type().TypeName())
			}
			e, err := jsonValue(x.Get(k), depth+1)
			if err != nil {
				return nil, err
			}
			out[string(ks)] = e
		}
		return out, nil
	case traits.Lister:
		out := []any{}
		it := x.Iterator()
		for it.HasNext() == types.True {
			e, err := jsonValue(it.Next(), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	case *types.Err:
		return nil, x
	}
	return nil, fmt.Errorf("a value of type %s has no JSON form", v.Type().TypeName())
}

// v2Val is the runtime value of the v2 variable.
type v2Val struct{ msg V2Message }

func (v v2Val) ConvertToNative(reflect.Type) (any, error) {
	return nil, errors.New("v2 cannot be converted")
}
func (v v2Val) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return v2Type
	}
	return types.NewErr("v2 cannot be converted to %s", t)
}
func (v v2Val) Equal(o ref.Val) ref.Val { return types.Bool(false) }
func (v v2Val) Type() ref.Type          { return v2Type }
func (v v2Val) Value() any              { return v.msg }

// numberAdapter converts Go values to CEL values as base does, except
// that a json.Number (a number whose text jsonmap.Decode keeps, such as
// 72.50) is a double like any other number, and that the JSON maps and
// lists it wraps convert their elements through it too (base would
// convert them itself, and make such a number a string).
type numberAdapter struct{ base types.Adapter }

// NativeToValue implements types.Adapter.
func (a numberAdapter) NativeToValue(v any) ref.Val {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return types.NewErr("a number is out of the range of a double")
		}
		return types.Double(f)
	case map[string]any:
		return types.NewStringInterfaceMap(a, x)
	case []any:
		return types.NewDynamicList(a, x)
	}
	return a.base.NativeToValue(v)
}

// selectResources returns the resources of type t in bundle b (entry[].resource).
func selectResources(b, t ref.Val, first bool) ref.Val {
	m, ok := b.(traits.Mapper)
	ts, ok2 := t.(types.String)
	if !ok || !ok2 {
		return types.NewErr("resources: bad arguments")
	}
	adapter := types.DefaultTypeAdapter
	var out []ref.Val
	entries, found := m.Find(types.String("entry"))
	if found {
		if l, ok := entries.(traits.Lister); ok {
			it := l.Iterator()
			for it.HasNext() == types.True {
				e, ok := it.Next().(traits.Mapper)
				if !ok {
					continue
				}
				r, found := e.Find(types.String("resource"))
				if !found {
					continue
				}
				rm, ok := r.(traits.Mapper)
				if !ok {
					continue
				}
				rt, found := rm.Find(types.String("resourceType"))
				if found && rt.Equal(ts) == types.True {
					if first {
						return rm
					}
					out = append(out, rm)
				}
			}
		}
	}
	if first {
		return types.NewStringInterfaceMap(adapter, map[string]any{})
	}
	return types.NewRefValList(adapter, out)
}

// bundleNHSNumber returns the NHS number of the bundle's patient, or "":
// that of its first Patient entry; with none, that of the patient of a
// Bundle an entry carries (a document in a message, as ITK3 sends it);
// with none there either, the first NHS number by which an entry's
// subject or patient names its patient (subject.identifier, or a
// conditional reference Patient?identifier=<NHS number system>|...), as a
// supplier posting an Observation names the patient without a Patient
// entry.
func bundleNHSNumber(b ref.Val) ref.Val {
	if m, ok := b.Value().(map[string]any); ok {
		if n, ok := plainNHSNumber(m, 0); ok {
			return types.String(n)
		}
	}
	return types.String(patientNHSNumber(b, 0))
}

// maxCarriedBundles bounds how deep patientNHSNumber looks into Bundles
// that entries carry.
const maxCarriedBundles = 4

// patientNHSNumber is bundleNHSNumber of b, a Bundle carried depth
// Bundles down.
func patientNHSNumber(b ref.Val, depth int) string {
	p, ok := selectResources(b, types.String("Patient"), true).(traits.Mapper)
	if ok && p.Size() != types.IntZero {
		return identifierNHSNumber(p)
	}
	resources := entryResources(b)
	if depth < maxCarriedBundles {
		for _, r := range resources {
			if rt, found := r.Find(types.String("resourceType")); found && rt.Equal(types.String("Bundle")) == types.True {
				if n := patientNHSNumber(r, depth+1); n != "" {
					return n
				}
			}
		}
	}
	for _, r := range resources {
		for _, key := range [...]string{"subject", "patient"} {
			v, found := r.Find(types.String(key))
			if !found {
				continue
			}
			if n := referenceNHSNumber(v); n != "" {
				return n
			}
		}
	}
	return ""
}

// entryResources returns the resources of b's entries.
func entryResources(b ref.Val) []traits.Mapper {
	m, ok := b.(traits.Mapper)
	if !ok {
		return nil
	}
	entries, found := m.Find(types.String("entry"))
	if !found {
		return nil
	}
	l, ok := entries.(traits.Lister)
	if !ok {
		return nil
	}
	var out []traits.Mapper
	for it := l.Iterator(); it.HasNext() == types.True; {
		e, ok := it.Next().(traits.Mapper)
		if !ok {
			continue
		}
		if r, found := e.Find(types.String("resource")); found {
			if rm, ok := r.(traits.Mapper); ok {
				out = append(out, rm)
			}
		}
	}
	return out
}

// identifierNHSNumber returns the value of the first identifier of p (a
// Patient) in the NHS number system, or "".
func identifierNHSNumber(p traits.Mapper) string {
	ids, found := p.Find(types.String("identifier"))
	if !found {
		return ""
	}
	l, ok := ids.(traits.Lister)
	if !ok {
		return ""
	}
	for it := l.Iterator(); it.HasNext() == types.True; {
		id, ok := it.Next().(traits.Mapper)
		if !ok {
			continue
		}
		if n := nhsIdentifierValue(id); n != "" {
			return n
		}
	}
	return ""
}

// nhsIdentifierValue returns the value of id, an Identifier, when its
// system is the NHS number's, or "".
func nhsIdentifierValue(id traits.Mapper) string {
	sys, _ := id.Find(types.String("system"))
	if sys == nil || sys.Equal(types.String(nhs.SystemNHSNumber)) != types.True {
		return ""
	}
	v, _ := id.Find(types.String("value"))
	s, _ := v.(types.String)
	return string(s)
}

// referenceNHSNumber returns the NHS number v, a Reference, names its
// patient by: its identifier in the NHS number system, else the first a
// conditional reference searches by, or "".
func referenceNHSNumber(v ref.Val) string {
	r, ok := v.(traits.Mapper)
	if !ok {
		return ""
	}
	if id, found := r.Find(types.String("identifier")); found {
		if idm, ok := id.(traits.Mapper); ok {
			if n := nhsIdentifierValue(idm); n != "" {
				return n
			}
		}
	}
	if rv, found := r.Find(types.String("reference")); found {
		if s, ok := rv.(types.String); ok {
			for _, n := range nhs.SearchedNumbers(string(s)) {
				if n != "" {
					return n
				}
			}
		}
	}
	return ""
}

// sizeEstimator bounds the size of every unknown list, map and string so
// worst-case costs are finite: max for what the variables hold (a
// bundle's entries, a function's result), its square root for what is
// nested inside an element of one (an Observation's interpretations, a
// coding list), and the square root again, but at least 4, for each level
// deeper (an interpretation's codings), since a FHIR resource does not
// hold a thousand codings in each of a thousand elements. Without that,
// three nested exists() over a bundle are estimated at billions, and a
// filter on a result's interpretation codes at 20 million, and refused.
// Evaluation's cost limit still bounds what is actually spent.
type sizeEstimator struct{ max uint64 }

func (s sizeEstimator) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	size := float64(s.max)
	for range nesting(n.Path()) {
		size = max(4, math.Sqrt(size))
	}
	return &checker.SizeEstimate{Min: 0, Max: max(1, min(s.max, uint64(math.Ceil(size))))}
}

// nesting returns how many elements of lists or maps a value at path lies
// inside: the checker names elements "@items", "@keys" and "@values" (a
// dyn may be either; a function's result starts the path).
func nesting(path []string) int {
	n := 0
	for _, p := range path {
		if p == "@items" || p == "@keys" || p == "@values" {
			n++
		}
	}
	return n
}

func (s sizeEstimator) EstimateCallCost(function, overloadID string, target *checker.AstNode, args []checker.AstNode) *checker.CallEstimate {
	switch overloadID {
	case "resources_map_string", "resource_map_string", "nhs_number_map":
		return &checker.CallEstimate{CostEstimate: checker.CostEstimate{Min: 1, Max: s.max}, ResultSize: &checker.SizeEstimate{Min: 0, Max: s.max}}
	}
	return nil
}

// MaxNesting is the deepest nesting of brackets ((), [] and {}) an
// expression may have. The CEL type checker takes time and memory that grow
// steeply with the nesting of literals: 150 nested map literals took 1.2 s
// and 474 MB to compile. Real expressions nest a few levels.
const MaxNesting = 32

// nestingOffset returns the byte offset in src of the first bracket nested
// deeper than max, or -1. It skips string literals (single, double and
// triple quoted, raw or not) and // comments. It only bounds the work the
// compiler is asked to do, so it need not judge syntax: the parser does.
func nestingOffset(src string, max int) int {
	depth := 0
	for i := 0; i < len(src); i++ {
		switch c := src[i]; c {
		case '(', '[', '{':
			depth++
			if depth > max {
				return i
			}
		case ')', ']', '}':
			depth--
		case '/':
			if i+1 < len(src) && src[i+1] == '/' {
				for i < len(src) && src[i] != '\n' {
					i++
				}
			}
		case '"', '\'':
			raw := i > 0 && (src[i-1] == 'r' || src[i-1] == 'R')
			i = skipString(src, i, raw)
		}
	}
	return -1
}

// skipString returns the offset of the last byte of the string literal
// whose opening quote is at src[i] (or the end of src if it is not closed).
func skipString(src string, i int, raw bool) int {
	q := src[i]
	triple := strings.HasPrefix(src[i:], string([]byte{q, q, q}))
	end := string(q)
	if triple {
		end = string([]byte{q, q, q})
		i += 2
	}
	for i++; i < len(src); i++ {
		if src[i] == '\\' && !raw {
			i++
			continue
		}
		if !triple && src[i] == '\n' {
			return i
		}
		if strings.HasPrefix(src[i:], end) {
			return i + len(end) - 1
		}
	}
	return len(src)
}

// maxResultBytes is the largest string the guarded string functions may
// build: one the cost limit could not pay to traverse (CEL charges 0.1 per
// byte), so at least 1 MiB.
func maxResultBytes(l Limits) int {
	const floor = 1 << 20
	if l.CostLimit >= math.MaxInt/10 {
		return math.MaxInt
	}
	return max(int(l.CostLimit)*10, floor)
}

// guardedStrings redefines the string extension functions whose result can
// be much larger than their input (replace with an empty or short pattern,
// join of a long list), so that they refuse to build a result larger than
// limit instead of allocating it. CEL checks its cost limit and deadline
// only after a call returns, and with dyn-typed operands (all our
// variables) it charges these calls as constant, so without this one call
// such as msg.id.replace("", msg.id) could allocate gigabytes.
func guardedStrings(limit int) []cel.EnvOption {
	tooBig := func(fn string) ref.Val {
		return types.NewErr("%s: result would exceed %d bytes", fn, limit)
	}
	replace := func(s, old, repl types.String, n int) ref.Val {
		count := strings.Count(string(s), string(old))
		if n >= 0 && n < count {
			count = n
		}
		if grow := len(repl) - len(old); grow > 0 && count > 0 && (len(s) > limit || count > (limit-len(s))/grow) {
			return tooBig("replace")
		}
		return types.String(strings.Replace(string(s), string(old), string(repl), n))
	}
	join := func(l ref.Val, sep string) ref.Val {
		list, ok := l.(traits.Lister)
		if !ok {
			return types.NewErr("join: not a list")
		}
		n, ok := list.Size().(types.Int)
		if !ok {
			return types.NewErr("join: list has no size")
		}
		size := 0
		parts := make([]string, 0, min(int(n), 1<<16))
		for i := types.Int(0); i < n; i++ {
			s, ok := list.Get(i).(types.String)
			if !ok {
				return types.NewErr("join: list element %d is not a string", i)
			}
			if i > 0 {
				size += len(sep)
			}
			size += len(s)
			if size > limit || size < 0 {
				return tooBig("join")
			}
			parts = append(parts, string(s))
		}
		return types.String(strings.Join(parts, sep))
	}
	return []cel.EnvOption{
		cel.Function("replace",
			cel.MemberOverload("string_replace_string_string", []*cel.Type{cel.StringType, cel.StringType, cel.StringType}, cel.StringType,
				cel.FunctionBinding(func(args ...ref.Val) ref.Val {
					s, ok1 := args[0].(types.String)
					old, ok2 := args[1].(types.String)
					repl, ok3 := args[2].(types.String)
					if !ok1 || !ok2 || !ok3 {
						return types.NewErr("replace: bad arguments")
					}
					return replace(s, old, repl, -1)
				})),
			cel.MemberOverload("string_replace_string_string_int", []*cel.Type{cel.StringType, cel.StringType, cel.StringType, cel.IntType}, cel.StringType,
				cel.FunctionBinding(func(args ...ref.Val) ref.Val {
					s, ok1 := args[0].(types.String)
					old, ok2 := args[1].(types.String)
					repl, ok3 := args[2].(types.String)
					n, ok4 := args[3].(types.Int)
					if !ok1 || !ok2 || !ok3 || !ok4 {
						return types.NewErr("replace: bad arguments")
					}
					if n < math.MinInt32 || n > math.MaxInt32 {
						n = -1
					}
					return replace(s, old, repl, int(n))
				}))),
		cel.Function("join",
			cel.MemberOverload("list_join", []*cel.Type{cel.ListType(cel.StringType)}, cel.StringType,
				cel.UnaryBinding(func(l ref.Val) ref.Val { return join(l, "") })),
			cel.MemberOverload("list_join_string", []*cel.Type{cel.ListType(cel.StringType), cel.StringType}, cel.StringType,
				cel.BinaryBinding(func(l, sep ref.Val) ref.Val {
					s, ok := sep.(types.String)
					if !ok {
						return types.NewErr("join: separator is not a string")
					}
					return join(l, string(s))
				}))),
	}
}
