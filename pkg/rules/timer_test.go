package rules

import (
	"context"
	"testing"
	"time"
)

// TestTimerGoesOnAfterADeadline: an evaluation stopped at its deadline
// leaves the timer fit for the next, which runs under a context of its
// own with its own deadline.
func TestTimerGoesOnAfterADeadline(t *testing.T) {
	const src = `bundle.entry.all(e, e.resource.resourceType == "Observation")`
	limits := Limits{MaxEstimatedCost: 1 << 62, MaxSize: 100_000, CostLimit: 1 << 40, Timeout: time.Millisecond}
	slow, err := newEnv(t, limits).Compile(src, Bool)
	if err != nil {
		t.Fatal(err)
	}
	// Over enough entries to check for an interrupt, with a minute to.
	limits.Timeout = time.Minute
	quick, err := newEnv(t, limits).Compile(src, Bool)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := WithTimer(context.Background())
	defer stop()
	big := &Vars{Bundle: bigBundle(200_000)}
	for range 3 {
		if _, err := slow.EvalBool(ctx, big); err == nil || err.Error() != "rule.eval: evaluation exceeded its deadline" {
			t.Fatalf("slow evaluation: %v, want the deadline exceeded", err)
		}
		if ok, err := quick.EvalBool(ctx, &Vars{Bundle: bigBundle(1000)}); err != nil || !ok {
			t.Fatalf("quick evaluation after a deadline = %v, %v", ok, err)
		}
	}
}

// TestTimerIgnoresALateFiring: the timer's func running late, after the
// evaluation it was armed for has ended, cancels neither that
// evaluation's context nor the next one's before its own deadline.
func TestTimerIgnoresALateFiring(t *testing.T) {
	tm := &evalTimer{parent: context.Background()}
	defer tm.close()
	first := tm.start(time.Now().Add(time.Hour))
	if tm.stop() {
		t.Fatal("stop reports a deadline that has not passed")
	}
	tm.fire()
	if first.Err() != nil {
		t.Fatalf("a firing between evaluations cancelled the context: %v", first.Err())
	}
	next := tm.start(time.Now().Add(time.Hour))
	tm.fire()
	if next.Err() != nil || tm.stop() {
		t.Fatalf("a firing before the deadline cancelled the context: %v", next.Err())
	}
	// A deadline already passed is passed at once, as with
	// context.WithDeadline; the next evaluation gets a new context.
	past := tm.start(time.Now().Add(-time.Nanosecond))
	if past.Err() == nil || context.Cause(past) != context.DeadlineExceeded || !tm.stop() {
		t.Fatalf("context for a past deadline: %v, cause %v", past.Err(), context.Cause(past))
	}
	if again := tm.start(time.Now().Add(time.Hour)); again.Err() != nil || tm.stop() {
		t.Fatalf("context after a deadline: %v", again.Err())
	}
}

// TestTimerContextIsItsParent: the context WithTimer returns is its
// parent to anything but an evaluation, and stopping the timer leaves
// the parent as it was.
func TestTimerContextIsItsParent(t *testing.T) {
	type key struct{}
	deadline := time.Now().Add(time.Hour)
	parent, cancel := context.WithDeadline(context.WithValue(context.Background(), key{}, "v"), deadline)
	defer cancel()
	ctx, stop := WithTimer(parent)
	if d, ok := ctx.Deadline(); !ok || !d.Equal(deadline) {
		t.Errorf("Deadline = %v, %v", d, ok)
	}
	if ctx.Value(key{}) != "v" || ctx.Done() != parent.Done() || ctx.Err() != nil {
		t.Error("the timed context is not its parent")
	}
	p, err := newEnv(t, DefaultLimits()).Compile(`bundle.resourceType == "Bundle"`, Bool)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := p.EvalBool(ctx, &Vars{Bundle: bigBundle(1)}); err != nil || !ok {
		t.Fatalf("EvalBool = %v, %v", ok, err)
	}
	stop()
	if parent.Err() != nil {
		t.Errorf("stopping the timer ended its parent: %v", parent.Err())
	}
}

// TestEvalWithoutComprehensionAddsNoAllocations checks that an
// expression without a comprehension, which no context or timer could
// interrupt, is evaluated at what cel-go's own evaluation of the same
// variables allocates: with a shared timer, with a context of its own,
// and within a budget, none of them making a context for it.
func TestEvalWithoutComprehensionAddsNoAllocations(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	vars := testVars(t)
	for _, src := range []string{
		`resource.resourceType != "MessageHeader"`,
		`nhsNumberValid(nhsNumber(bundle)) && msg.event in ["A01", "A03"]`,
	} {
		p, err := env.Compile(src, Bool)
		if err != nil {
			t.Fatalf("Compile(%s): %v", src, err)
		}
		if p.folds {
			t.Fatalf("%s: folds is true for an expression without a comprehension", src)
		}
		own := testing.AllocsPerRun(50, func() {
			if _, _, err := p.prg.Eval(activation{vars}); err != nil {
				t.Fatal(err)
			}
		})
		timed, stop := WithTimer(context.Background())
		budget := p.NewBudget()
		for _, tt := range []struct {
			name string
			eval func() (bool, error)
		}{
			{"shared timer", func() (bool, error) { return p.EvalBool(timed, vars) }},
			{"own context", func() (bool, error) { return p.EvalBool(context.Background(), vars) }},
			{"within a budget", func() (bool, error) { return p.EvalBoolWithin(timed, vars, budget) }},
		} {
			t.Run(src+"/"+tt.name, func(t *testing.T) {
				got := testing.AllocsPerRun(50, func() {
					if ok, err := tt.eval(); err != nil || !ok {
						t.Fatalf("= %v, %v", ok, err)
					}
				})
				if got > own {
					t.Errorf("%v allocations an evaluation, cel-go's own Eval %v", got, own)
				}
			})
		}
		stop()
	}
}

// TestComprehensionFolds checks which expressions are taken to hold a
// comprehension, and so are evaluated under a context that can stop
// them.
func TestComprehensionFolds(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	for _, tt := range []struct {
		src   string
		folds bool
	}{
		{`resource.resourceType != "MessageHeader"`, false},
		{`nhsNumberValid(nhsNumber(bundle))`, false},
		{`bundle.entry.exists(e, e.resource.resourceType == "Patient")`, true},
		{`resources(bundle, "Patient").all(p, has(p.id))`, true},
		{`size(bundle.entry.filter(e, true)) > 0`, true},
		{`msg.event == "A01" || [1, 2].map(x, x * 2).size() == 2`, true},
	} {
		t.Run(tt.src, func(t *testing.T) {
			p, err := env.Compile(tt.src, Bool)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if p.folds != tt.folds {
				t.Errorf("folds = %v, want %v", p.folds, tt.folds)
			}
		})
	}
}
