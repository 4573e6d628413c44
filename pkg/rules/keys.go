package rules

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"

	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// MsgKeys are the keys of the msg variable, in the order the README
// lists them.
func MsgKeys() []string {
	return []string{"id", "source", "type", "event", "control_id", "sender", "received", "content_type"}
}

// DestinationKeys are the keys of the destination variable.
func DestinationKeys() []string { return []string{"name"} }

// patientKeyTypes are the keys of a patient index record as the patient
// variable gives it (patient.Record.CELAt, whose tests hold it to these),
// with the CEL type name of each key's values.
var patientKeyTypes = []struct{ key, typ string }{
	{"nhsNumber", "string"}, {"identifiers", "list"}, {"family", "string"}, {"given", "list"},
	{"birthDate", "string"}, {"gender", "string"}, {"postcode", "string"}, {"deceased", "bool"},
	{"gpPractice", "string"}, {"gp", "string"}, {"flags", "list"}, {"activeFlags", "list"},
	{"consent", "map"}, {"restricted", "bool"}, {"merged", "bool"}, {"mergedInto", "string"},
	{"updated", "string"}, {"messageId", "string"},
}

// PatientKeys are the keys of the patient variable for a patient the
// index knows (for one it does not, it is an empty map), in the order
// the README lists them.
func PatientKeys() []string {
	keys := make([]string, len(patientKeyTypes))
	for i, k := range patientKeyTypes {
		keys[i] = k.key
	}
	return keys
}

// fixedKeys are the variables whose keys are known at load, so a
// misspelt key is a load error rather than a dead letter for every
// message the expression sees.
func fixedKeys() map[string][]string {
	return map[string][]string{VarMsg: MsgKeys(), VarDestination: DestinationKeys(), VarPatient: PatientKeys()}
}

// keyType is the CEL type name of a fixed key's values: msg's and
// destination's are strings but msg.received, a timestamp; patient's
// are as patientKeyTypes gives them. The variables are declared as maps
// of dyn (their values differ in type), so the checker cannot see a key
// compared with a value of another type.
func keyType(name, key string) string {
	switch {
	case name == VarMsg && key == "received":
		return "timestamp"
	case name == VarPatient:
		for _, k := range patientKeyTypes {
			if k.key == key {
				return k.typ
			}
		}
	}
	return "string"
}

// literalType is the CEL type name of a literal, or of a conversion
// whose type its name gives (duration("1h"), timestamp("..."), int(x)),
// or "" when it cannot tell.
func literalType(e ast.Expr) string {
	if e.Kind() == ast.CallKind {
		c := e.AsCall()
		switch f := c.FunctionName(); f {
		case "duration", "timestamp", "int", "uint", "double", "string", "bytes", "bool":
			if !c.IsMemberFunction() && len(c.Args()) == 1 {
				return f
			}
		}
		return ""
	}
	if e.Kind() != ast.LiteralKind {
		return ""
	}
	switch e.AsLiteral().(type) {
	case types.String:
		return "string"
	case types.Int:
		return "int"
	case types.Uint:
		return "uint"
	case types.Double:
		return "double"
	case types.Bool:
		return "bool"
	case types.Bytes:
		return "bytes"
	}
	// null is left alone: msg.sender != null is always true, but says
	// nothing wrong.
	return ""
}

// eventCode is the form of an HL7 v2 trigger event code (A01, R01, O21).
var eventCode = regexp.MustCompile(`^[A-Z][0-9]{2}$`)

// eventShape says why msg.key (event or type) compared (op: ==, != or
// in) with the string literal lit can never hold it, mistaking one for
// the other: msg.event is the trigger event alone and never holds a ^,
// while msg.type is TYPE^EVENT (or a FHIR input's resource type) and
// never an event code alone. It returns "" otherwise.
func eventShape(op, key string, lit ast.Expr) string {
	if op != "==" && op != "!=" && op != "in" || lit.Kind() != ast.LiteralKind {
		return ""
	}
	v, ok := lit.AsLiteral().(types.String)
	if !ok {
		return ""
	}
	switch s := string(v); {
	case key == "event" && strings.Contains(s, "^"):
		typ, ev, _ := strings.Cut(s, "^")
		return fmt.Sprintf("msg.event is the trigger event alone, such as %q, so it never holds %q: compare msg.type with %q, or msg.event with %q", ev, s, typ+"^"+ev, ev)
	case key == "type" && eventCode.MatchString(s):
		return fmt.Sprintf("msg.type is the message type and event, such as \"ADT^%s\" (a FHIR input's, the resource type), so it never holds %q: compare msg.event with %q", s, s, s)
	}
	return ""
}

// comparisons are the operators whose operands must be of one type.
var comparisons = map[string]string{
	"_==_": "==", "_!=_": "!=", "_<_": "<", "_<=_": "<=", "_>_": ">", "_>=_": ">=",
}

// keyIssue is an unknown key of a fixed-key variable, at an expression id.
type keyIssue struct {
	id  int64
	msg string
}

// unknownKeys finds reads of keys that the fixed-key variables do not
// have: v.key, has(v.key) and v["key"], where v is the declared variable
// (not a comprehension variable of the same name); comparisons of their
// keys with literals of another type (msg.event == 1, msg.received > 5);
// and v2.get with a literal path that is not a v2 path, which would read
// "" for every message. It also returns, for each declared variable the
// expression reads (an identifier no comprehension variable shadows),
// the expression id of its first read.
func unknownKeys(e ast.Expr) ([]keyIssue, map[string]int64, []keyLiteral) {
	var out []keyIssue
	var lits []keyLiteral
	reads := map[string]int64{}
	check := func(id int64, operand ast.Expr, key string, shadowed map[string]int) {
		if operand.Kind() != ast.IdentKind {
			return
		}
		name := operand.AsIdent()
		keys, ok := fixedKeys()[name]
		if !ok || shadowed[name] > 0 || slices.Contains(keys, key) {
			return
		}
		out = append(out, keyIssue{id: id, msg: fmt.Sprintf("%s has no key %q (it has %s)", name, key, strings.Join(keys, ", "))})
	}
	shadowed := map[string]int{}
	// fixedKey returns the variable and key e reads, when e is v.key or
	// v["key"] of a fixed-key variable v that has the key.
	fixedKey := func(e ast.Expr) (string, string, bool) {
		var operand ast.Expr
		var key string
		switch e.Kind() {
		case ast.SelectKind:
			if e.AsSelect().IsTestOnly() {
				return "", "", false // has(msg.key): a bool, not the key's value
			}
			operand, key = e.AsSelect().Operand(), e.AsSelect().FieldName()
		case ast.CallKind:
			c := e.AsCall()
			if c.FunctionName() != "_[_]" || len(c.Args()) != 2 || c.Args()[1].Kind() != ast.LiteralKind {
				return "", "", false
			}
			k, ok := c.Args()[1].AsLiteral().(types.String)
			if !ok {
				return "", "", false
			}
			operand, key = c.Args()[0], string(k)
		default:
			return "", "", false
		}
		if operand.Kind() != ast.IdentKind {
			return "", "", false
		}
		name := operand.AsIdent()
		keys, ok := fixedKeys()[name]
		if !ok || shadowed[name] > 0 || !slices.Contains(keys, key) {
			return "", "", false
		}
		return name, key, true
	}
	// compared reports a fixed key compared with a literal (or a
	// conversion) of another type: never equal, or an evaluation error
	// for every message.
	compared := func(op string, keyed, lit ast.Expr) {
		name, key, ok := fixedKey(keyed)
		if !ok {
			return
		}
		want, got := keyType(name, key), literalType(lit)
		if got == want && name == VarMsg {
			if issue := eventShape(op, key, lit); issue != "" {
				out = append(out, keyIssue{id: lit.ID(), msg: issue})
			} else if v, ok := lit.AsLiteral().(types.String); ok && (op == "==" || op == "in") && (key == "event" || key == "type") {
				lits = append(lits, keyLiteral{id: lit.ID(), key: key, value: string(v)})
			}
			return
		}
		if got == want && name == VarDestination && key == "name" && lit.Kind() == ast.LiteralKind {
			// (destination.name != "" says nothing wrong.)
			if v, ok := lit.AsLiteral().(types.String); ok && v != "" {
				lits = append(lits, keyLiteral{id: lit.ID(), key: "destination.name", value: string(v)})
			}
			return
		}
		if got == "" || got == want {
			return
		}
		hint := ""
		if want == "timestamp" {
			hint = `, such as timestamp("2026-01-01T00:00:00Z")`
		}
		article := "a"
		if strings.ContainsRune("aeiou", rune(got[0])) {
			article = "an"
		}
		out = append(out, keyIssue{id: lit.ID(), msg: fmt.Sprintf("%s.%s is a %s; it cannot be compared (%s) with %s %s%s", name, key, want, op, article, got, hint)})
	}
	var walk func(e ast.Expr)
	walk = func(e ast.Expr) {
		switch e.Kind() {
		case ast.IdentKind:
			if name := e.AsIdent(); shadowed[name] == 0 {
				if _, seen := reads[name]; !seen {
					reads[name] = e.ID()
				}
			}
		case ast.SelectKind:
			s := e.AsSelect()
			check(e.ID(), s.Operand(), s.FieldName(), shadowed)
			walk(s.Operand())
		case ast.CallKind:
			c := e.AsCall()
			if c.FunctionName() == "_[_]" && len(c.Args()) == 2 && c.Args()[1].Kind() == ast.LiteralKind {
				if k, ok := c.Args()[1].AsLiteral().(types.String); ok {
					check(e.ID(), c.Args()[0], string(k), shadowed)
				}
			}
			if op, ok := comparisons[c.FunctionName()]; ok && len(c.Args()) == 2 {
				compared(op, c.Args()[0], c.Args()[1])
				compared(op, c.Args()[1], c.Args()[0])
			}
			if c.FunctionName() == "@in" && len(c.Args()) == 2 && c.Args()[1].Kind() == ast.ListKind {
				for _, el := range c.Args()[1].AsList().Elements() {
					compared("in", c.Args()[0], el)
				}
			}
			if c.IsMemberFunction() && c.FunctionName() == "get" && len(c.Args()) == 1 && c.Args()[0].Kind() == ast.LiteralKind &&
				c.Target().Kind() == ast.IdentKind && c.Target().AsIdent() == VarV2 && shadowed[VarV2] == 0 {
				if p, ok := c.Args()[0].AsLiteral().(types.String); ok {
					if _, valid := hl7v2.ParsePath(string(p)); !valid {
						out = append(out, keyIssue{id: c.Args()[0].ID(), msg: fmt.Sprintf("v2.get: %q is not a v2 path; write SEG[n]-field[repetition].component.subcomponent, such as \"PID-3[1].1\"", string(p))})
					}
				}
			}
			if c.IsMemberFunction() {
				walk(c.Target())
			}
			for _, a := range c.Args() {
				walk(a)
			}
		case ast.ListKind:
			for _, el := range e.AsList().Elements() {
				walk(el)
			}
		case ast.MapKind:
			for _, en := range e.AsMap().Entries() {
				me := en.AsMapEntry()
				walk(me.Key())
				walk(me.Value())
			}
		case ast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				walk(f.AsStructField().Value())
			}
		case ast.ComprehensionKind:
			c := e.AsComprehension()
			walk(c.IterRange())
			walk(c.AccuInit())
			vars := []string{c.IterVar(), c.AccuVar()}
			if c.HasIterVar2() {
				vars = append(vars, c.IterVar2())
			}
			for _, v := range vars {
				shadowed[v]++
			}
			walk(c.LoopCondition())
			walk(c.LoopStep())
			walk(c.Result())
			for _, v := range vars {
				shadowed[v]--
			}
		}
	}
	walk(e)
	return out, reads, lits
}

// keyLiteral is a string literal that msg.event or msg.type (key event
// or type) is compared with for equality (== or in), or destination.name
// (key destination.name) is compared with at all, at an expression id.
type keyLiteral struct {
	id         int64
	key, value string
}

// KeyLiteral is a string literal that msg.event or msg.type (Key event
// or type) is compared with for equality (== or in), or destination.name
// (Key destination.name) with any comparison, and the byte offset in the
// expression where it is written.
type KeyLiteral struct {
	Key, Value string
	Offset     int
}
