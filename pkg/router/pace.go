package router

import (
	"context"
	"time"
)

// pacer slows a reconcile that runs in the background so that it leaves
// the store and the CPU to the engine's own work: after each paceEvery
// messages read it sleeps idle times as long as it worked since its last
// sleep, so it works at most 1/(1+idle) of the time. Reads of the streams
// compete with the writes of ingest and routing (measured in
// BENCHMARKS.md, 2026-12-08: reconciles run back to back cut ingest
// tenfold on a small machine). A nil pacer does not pace, for the
// reconciles an operator waits for.
type pacer struct {
	idle float64
	// now and sleep are the clock and the wait (time.Now and a sleep
	// that ends with ctx when nil).
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	// read counts the messages read since the last sleep, which ended
	// at began.
	read  int
	began time.Time
}

// paceEvery is how many messages a pacer lets through between sleeps.
const paceEvery = 500

// schedulePaceIdle is the scheduled reconcile's pace: a quarter of the
// time at work.
const schedulePaceIdle = 3

// newPacer returns a pacer working 1/(1+idle) of the time.
func newPacer(idle float64) *pacer {
	return &pacer{idle: idle, now: time.Now, sleep: sleepCtx}
}

// step counts n messages read, and sleeps when paceEvery have been since
// the last sleep. It returns ctx's error when ctx ends the sleep.
func (p *pacer) step(ctx context.Context, n int) error {
	if p == nil {
		return nil
	}
	if p.began.IsZero() {
		p.began = p.now()
	}
	p.read += n
	if p.read < paceEvery {
		return nil
	}
	p.read = 0
	worked := p.now().Sub(p.began)
	if err := p.sleep(ctx, time.Duration(float64(worked)*p.idle)); err != nil {
		return err
	}
	p.began = p.now()
	return nil
}

// sleepCtx sleeps for d, or until ctx is done (sleep), and returns ctx's
// error.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d > 0 && ctx.Err() == nil {
		sleep(ctx, d)
	}
	return ctx.Err()
}
