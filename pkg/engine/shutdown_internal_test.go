package engine

import (
	"context"
	"errors"
	"testing"
	"time"
)

// funcInput is an input whose Shutdown is a function.
type funcInput func(ctx context.Context) error

func (f funcInput) Start(context.Context) error        { return nil }
func (f funcInput) Shutdown(ctx context.Context) error { return f(ctx) }

// TestShutdownInputsAtOnce: every input is told to stop as the drain
// begins, not only once the inputs shut down before it have finished
// their messages in hand (meanwhile still taking new ones); errors come
// last started first.
func TestShutdownInputsAtOnce(t *testing.T) {
	t.Run("at once", func(t *testing.T) {
		told := make(chan struct{})
		inputs := []namedInbound{
			{name: "pathology", in: funcInput(func(context.Context) error { close(told); return nil })},
			// Shut down first when one at a time, last started: busy
			// until the other input has been told too.
			{name: "pas", in: funcInput(func(ctx context.Context) error {
				select {
				case <-told:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})},
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if errs := shutdownInputs(ctx, inputs); len(errs) != 0 {
			t.Errorf("shutdownInputs = %v: pathology was not told to stop while pas drained", errs)
		}
	})
	t.Run("errors", func(t *testing.T) {
		inputs := []namedInbound{
			{name: "a", in: funcInput(func(context.Context) error { return errors.New("one") })},
			{name: "b", in: funcInput(func(context.Context) error { return nil })},
			{name: "c", in: funcInput(func(context.Context) error { return errors.New("two") })},
		}
		errs := shutdownInputs(context.Background(), inputs)
		if got := errors.Join(errs...).Error(); got != "input c: two\ninput a: one" {
			t.Errorf("errors %q, want c's then a's", got)
		}
	})
}
