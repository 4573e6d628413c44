package rules

import (
	"context"
	"sync"
	"time"
)

// WithTimer returns ctx carrying a timer for the evaluations given the
// returned context, one after another, such as those of one message on
// one route, and a func that stops the timer, to call when they are done.
// Each evaluation is bounded as it is without the timer: Limits.Timeout
// from its start, or its Budget's deadline when that comes first, and
// ctx's own deadline and cancellation. Without it each evaluation makes
// a deadline context, with a runtime timer, of its own; with it they
// share one cancellable context and one timer, re-armed for each.
//
// The returned context is ctx to anything other than an evaluation. The
// timer is not safe for concurrent evaluations; a context derived from
// the returned one does not carry it.
func WithTimer(ctx context.Context) (context.Context, func()) {
	t := &evalTimer{parent: ctx}
	return &timedContext{Context: ctx, t: t}, t.close
}

// timedContext is the context WithTimer returns: its parent, with the
// timer.
type timedContext struct {
	context.Context
	t *evalTimer
}

// evalTimer bounds evaluations one after another. The context they run
// under is a child of parent, cancelled (with the cause
// context.DeadlineExceeded) when the timer fires at the running
// evaluation's deadline, and replaced by a new one for the next.
type evalTimer struct {
	parent context.Context
	timer  *time.Timer

	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelCauseFunc
	// deadline is the running evaluation's, zero between evaluations.
	deadline time.Time
	// fired reports that ctx was cancelled at an evaluation's deadline.
	fired bool
}

// start returns the context for an evaluation with deadline, and arms
// the timer for it. Call stop when the evaluation ends.
func (t *evalTimer) start(deadline time.Time) context.Context {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx == nil || t.fired {
		if t.cancel != nil {
			t.cancel(nil)
		}
		t.ctx, t.cancel = context.WithCancelCause(t.parent)
		t.fired = false
	}
	t.deadline = deadline
	d := time.Until(deadline)
	if d <= 0 {
		// As context.WithDeadline: a deadline already passed is one
		// the context starts past, not one a timer will get to.
		t.expire()
		return t.ctx
	}
	if t.timer == nil {
		t.timer = time.AfterFunc(d, t.fire)
	} else {
		t.timer.Reset(d)
	}
	return t.ctx
}

// stop ends the running evaluation and reports whether its deadline
// cancelled its context.
func (t *evalTimer) stop() (expired bool) {
	if t.timer != nil {
		t.timer.Stop()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.deadline = time.Time{}
	return t.fired
}

// fire is the timer's func: it cancels the running evaluation once its
// deadline has passed. A firing late for an evaluation that has ended
// finds no deadline, or a later one not yet passed, and does nothing.
func (t *evalTimer) fire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.deadline.IsZero() && !time.Now().Before(t.deadline) {
		t.expire()
	}
}

// expire cancels the evaluations' context at a deadline; t.mu is held.
func (t *evalTimer) expire() {
	t.cancel(context.DeadlineExceeded)
	t.fired = true
}

// close stops the timer and releases the context.
func (t *evalTimer) close() {
	if t.timer != nil {
		t.timer.Stop()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cancel != nil {
		t.cancel(nil)
	}
}
