package rules

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/fault"
)

// TestHostileExpressionsRejectedAtCompile shows expressions built to be
// expensive refused before they run, with an issue at an offset where one
// can be given (the route loader turns it into file:line:col).
func TestHostileExpressionsRejectedAtCompile(t *testing.T) {
	ten := "[1,2,3,4,5,6,7,8,9,10]"
	tests := []struct {
		name       string
		src        string
		wantMsg    string
		wantOffset int // -1: the whole expression
	}{
		{"six nested comprehensions", strings.Repeat(ten+".map(x, ", 6) + "x" + strings.Repeat(")", 6) + ".size() > 0", "exceeds the limit", -1},
		{"ten nested all macros", strings.Repeat(ten+".all(x, ", 10) + "true" + strings.Repeat(")", 10), "exceeds the limit", -1},
		{"comprehension over the bundle inside one over the bundle", `bundle.entry.map(e, bundle.entry.map(f, e)).size() > 0`, "exceeds the limit", -1},
		{"chained replace blowup", `"aaaaaaaaaa"` + strings.Repeat(`.replace("a","aaaaaaaaaa")`, 8) + `.size() > 0`, "exceeds the limit", -1},
		{"replace of input by input, twice", `msg.id.replace("", msg.id).replace("", msg.id).size() > 0`, "exceeds the limit", -1},
		{"split and join of input, twice", `msg.id.split("").join(msg.id).split("").join(msg.id).size() > 0`, "exceeds the limit", -1},
		{"parentheses 300 deep", strings.Repeat("(", 300) + "true" + strings.Repeat(")", 300), "nested more than 32 deep", 32},
		{"list literals 200 deep", strings.Repeat("[", 200) + strings.Repeat("]", 200) + " == []", "nested more than 32 deep", 32},
		{"map literals 150 deep", strings.Repeat("{1:", 150) + "1" + strings.Repeat("}", 150) + " == {}", "nested more than 32 deep", 32 * 3},
		{"macros 40 deep", strings.Repeat("[1].all(x, ", 40) + "true" + strings.Repeat(")", 40), "nested more than 32 deep", 32 * len("[1].all(x, ")},
		{"bad regex", `msg.id.matches("a{1000}{1000}")`, "invalid nested repetition", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, DefaultLimits())
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := env.Compile(tt.src, Bool)
			runtime.ReadMemStats(&after)
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile = %v, want a *CompileError", err)
			}
			if !strings.Contains(ce.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", ce.Error(), tt.wantMsg)
			}
			if tt.wantOffset >= 0 && (len(ce.Issues) != 1 || ce.Issues[0].Offset != tt.wantOffset) {
				t.Errorf("issues %+v, want one at offset %d", ce.Issues, tt.wantOffset)
			}
			// Refusing must be cheap: the nested literals above cost up to
			// 474 MB to compile before the nesting limit.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Errorf("refusing allocated %d bytes", alloc)
			}
		})
	}
}

// TestHostileNestingLimitIsExact compiles literals nested exactly
// MaxNesting deep, and refuses one more.
func TestHostileNestingLimitIsExact(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	at := strings.Repeat("[", MaxNesting) + strings.Repeat("]", MaxNesting) + " == []"
	if _, err := env.Compile(at, Bool); err != nil {
		t.Errorf("%d deep: %v", MaxNesting, err)
	}
	over := "[" + at[:len(at)-len(" == []")] + "] == []"
	if _, err := env.Compile(over, Bool); err == nil || !strings.Contains(err.Error(), "nested more than") {
		t.Errorf("%d deep: %v, want the nesting error", MaxNesting+1, err)
	}
	// Brackets inside strings and comments do not count.
	quoted := `msg.id == "` + strings.Repeat("[", 100) + `" || msg.id == '''` + strings.Repeat("{", 100) + `''' || msg.id == r"\` + strings.Repeat("(", 100) + `" // ` + strings.Repeat("(", 100) + "\n"
	if _, err := env.Compile(quoted, Bool); err != nil {
		t.Errorf("brackets in strings and comments: %v", err)
	}
}

// TestHostileEvaluationIsStopped runs expressions that pass the load-time
// estimate (which assumes strings and lists of up to MaxSize) on input
// much larger than that. Each must end in a rule.eval fault without
// allocating more than a bounded amount: a few times the largest result a
// guarded string function may build (10 bytes per unit of CostLimit).
func TestHostileEvaluationIsStopped(t *testing.T) {
	lim := DefaultLimits()
	big := strings.Repeat("a", 100_000)
	tests := []struct {
		name    string
		src     string
		vars    func() *Vars
		wantMsg string
		detail  string
	}{
		{"replace of a large input by itself", `msg.id.replace("", msg.control_id).size() > 0`,
			func() *Vars { return &Vars{Msg: map[string]any{"id": big, "control_id": big}} }, "rule.eval: evaluation failed", "replace: result would exceed"},
		{"replace with a count", `msg.id.replace("a", msg.control_id, 100000).size() > 0`,
			func() *Vars { return &Vars{Msg: map[string]any{"id": big, "control_id": big}} }, "rule.eval: evaluation failed", "replace: result would exceed"},
		{"join of a long list of large strings", `bundle.entry.map(e, msg.id).join(msg.id).size() > 0`,
			func() *Vars { return &Vars{Msg: map[string]any{"id": big}, Bundle: bigBundle(1000)} }, "rule.eval: evaluation failed", "join: result would exceed"},
		// Cost limit or deadline, whichever comes first.
		{"comprehension over a bundle far larger than estimated", `bundle.entry.exists(e, e.resource.resourceType == "Condition")`,
			func() *Vars { return &Vars{Bundle: bigBundle(200_000)} }, "rule.eval: evaluation exceeded its", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newEnv(t, lim).Compile(tt.src, Bool)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			vars := tt.vars()
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			ok, err := p.EvalBool(context.Background(), vars)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("estimated %d; stopped after %v having allocated %d bytes", p.EstimatedCost().Max, time.Since(start), alloc)
			if err == nil {
				t.Fatalf("EvalBool = %v, want an error", ok)
			}
			f := fault.As(err)
			if f == nil || f.Code != fault.CodeRuleEval || fault.IsTransient(err) {
				t.Fatalf("error %v is not a permanent rule.eval fault", err)
			}
			if !strings.HasPrefix(err.Error(), tt.wantMsg) || !strings.Contains(f.Detail, tt.detail) {
				t.Errorf("error %q (detail %q), want %q with detail containing %q", err, f.Detail, tt.wantMsg, tt.detail)
			}
			if strings.Contains(err.Error(), "aaaa") {
				t.Error("the error quotes input")
			}
			if limit := uint64(4*maxResultBytes(lim) + 64<<20); alloc > limit {
				t.Errorf("allocated %d bytes, want at most %d", alloc, limit)
			}
		})
	}
}

// TestGuardedStringsKeepSemantics checks the guarded replace and join give
// the extension library's results.
func TestGuardedStringsKeepSemantics(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	tests := []struct{ src, want string }{
		{`"banana".replace("a", "o")`, "bonono"},
		{`"banana".replace("a", "o", 2)`, "bonona"},
		{`"banana".replace("a", "o", 0)`, "banana"},
		{`"banana".replace("a", "o", -1)`, "bonono"},
		{`"abc".replace("", "-")`, "-a-b-c-"},
		{`"héllo".replace("", ".")`, ".h.é.l.l.o."},
		{`"aaa".replace("aa", "")`, "a"},
		{`["a", "b", "c"].join()`, "abc"},
		{`["a", "b", "c"].join(", ")`, "a, b, c"},
		{`[].join("x")`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := env.Compile(fmt.Sprintf("%s == %q", tt.src, tt.want), Bool)
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := p.EvalBool(context.Background(), &Vars{}); err != nil || !ok {
				t.Errorf("%s != %q: %v %v", tt.src, tt.want, ok, err)
			}
		})
	}
}
