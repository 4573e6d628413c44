package rules

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"

	"github.com/junction-fhir/junction/pkg/fault"
)

// TestStringSearchKeepsSemantics checks that indexOf and lastIndexOf give
// the string extension library's results (indices and offsets counted in
// code points, an invalid byte counting as one), and its errors.
func TestStringSearchKeepsSemantics(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	ref, err := cel.NewEnv(cel.Variable(VarMsg, cel.MapType(cel.StringType, cel.DynType)), ext.Strings())
	if err != nil {
		t.Fatal(err)
	}
	exprs := []string{
		`msg.s.indexOf(msg.sub)`,
		`msg.s.indexOf(msg.sub, msg.off)`,
		`msg.s.lastIndexOf(msg.sub)`,
		`msg.s.lastIndexOf(msg.sub, msg.off)`,
	}
	inputs := []struct{ s, sub string }{
		{"hello mellow", "ello"},
		{"hello mellow", "jello"},
		{"hello mellow", ""},
		{"", ""},
		{"", "a"},
		{"a", "aa"},
		{"héllo wörld héllo", "llo"},
		{"héllo wörld héllo", "ö"},
		{"日本語日本語", "本語"},
		{"aaaa", "aa"},
		{"abc\xffdef\xff", "\xff"},
		{"abc\xffdef", "\uFFFD"},
		{"\xff", "\uFFFD"},
		{"\xff\xfe", "\uFFFD"},
		{"x\uFFFD\xffy", "\xff"},
		{"a\xc3", "\xc3"},
		{"emoji 😀 and 😀", "😀 a"},
	}
	// And strings drawn from a small alphabet of one-, two-, three- and
	// four-byte code points, U+FFFD and bytes that are not UTF-8, so that
	// matches, near-matches and invalid bytes are frequent.
	alphabet := []string{"a", "b", "é", "本", "😀", "\uFFFD", "\xff", "\xc3"}
	rng := rand.New(rand.NewPCG(46, 47))
	draw := func(max int) string {
		var b strings.Builder
		for range rng.IntN(max + 1) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	for range 300 {
		inputs = append(inputs, struct{ s, sub string }{draw(12), draw(3)})
	}
	offsets := []int64{-1, 0, 1, 2, 3, 5, 11, 12, 13, 100}
	for _, src := range exprs {
		p, iss := env.env.Compile(src)
		if iss.Err() != nil {
			t.Fatal(iss.Err())
		}
		got, err := env.env.Program(p)
		if err != nil {
			t.Fatal(err)
		}
		rp, iss := ref.Compile(src)
		if iss.Err() != nil {
			t.Fatal(iss.Err())
		}
		want, err := ref.Program(rp)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range inputs {
			for _, off := range offsets {
				t.Run(fmt.Sprintf("%s/%q/%q/%d", src, in.s, in.sub, off), func(t *testing.T) {
					vars := map[string]any{VarMsg: map[string]any{"s": in.s, "sub": in.sub, "off": off}}
					g, _, gerr := got.Eval(vars)
					w, _, werr := want.Eval(vars)
					if (gerr != nil) != (werr != nil) || gerr != nil && gerr.Error() != werr.Error() {
						t.Fatalf("%q, %q, %d: error %v, want %v", in.s, in.sub, off, gerr, werr)
					}
					if gerr == nil && g.Equal(w) != types.True {
						t.Errorf("%q, %q, %d: %v, want %v", in.s, in.sub, off, g, w)
					}
				})
			}
		}
	}
}

// TestStringSearchOnLargeInput searches a large string for a large one
// that is not in it, the search the string extension library ran in time
// proportional to the product of their lengths (2^40 steps here: hours),
// before charging its cost once the call returned: neither the cost limit
// nor the deadline stopped it. With a cost limit that allows it the
// answer is given; with the default limits it is refused as too costly.
func TestStringSearchOnLargeInput(t *testing.T) {
	hay := strings.Repeat("a", 1<<21)
	tests := []struct {
		name, src, sub string
	}{
		{"indexOf", `msg.id.indexOf(msg.control_id) == -1`, strings.Repeat("a", 1<<20) + "b"},
		{"indexOf from an offset", `msg.id.indexOf(msg.control_id, 7) == -1`, strings.Repeat("a", 1<<20) + "b"},
		{"lastIndexOf", `msg.id.lastIndexOf(msg.control_id) == -1`, "b" + strings.Repeat("a", 1<<20)},
		{"lastIndexOf from an offset", `msg.id.lastIndexOf(msg.control_id, 1500000) == -1`, "b" + strings.Repeat("a", 1<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := &Vars{Msg: map[string]any{"id": hay, "control_id": tt.sub}}
			lim := DefaultLimits()
			lim.CostLimit = 1 << 62
			p, err := newEnv(t, lim).Compile(tt.src, Bool)
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := p.EvalBool(context.Background(), vars); err != nil || !ok {
				t.Errorf("with the cost limit raised: %v, %v; want true", ok, err)
			}
			p, err = newEnv(t, DefaultLimits()).Compile(tt.src, Bool)
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.EvalBool(context.Background(), vars)
			if f := fault.As(err); f == nil || f.Code != fault.CodeRuleEval || !strings.Contains(err.Error(), "cost limit") {
				t.Errorf("with the default limits: %v, want a rule.eval fault for the cost limit", err)
			}
		})
	}
}

// BenchmarkStringSearch times indexOf of a 50,000-byte string absent from
// a 100,000-byte one that holds its first 49,999 bytes at every offset:
// the string extension library's worst case.
func BenchmarkStringSearch(b *testing.B) {
	lim := DefaultLimits()
	lim.CostLimit = 1 << 62
	p, err := newEnv(b, lim).Compile(`msg.id.indexOf(msg.control_id) == -1`, Bool)
	if err != nil {
		b.Fatal(err)
	}
	vars := &Vars{Msg: map[string]any{"id": strings.Repeat("a", 100_000), "control_id": strings.Repeat("a", 49_999) + "b"}}
	for b.Loop() {
		if ok, err := p.EvalBool(context.Background(), vars); err != nil || !ok {
			b.Fatalf("%v, %v", ok, err)
		}
	}
}
