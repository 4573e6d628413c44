package router

import (
	"sync"
	"sync/atomic"
	"time"
)

// logLimiter lets through one log line per key (a destination) per
// interval, counting those it held back, so a destination that fails
// every delivery under load writes a line every few seconds, not one per
// attempt.
type logLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	held     map[string]int
	// failing holds, for each key failing now, when its first failure
	// since its last success was; nFailing counts them, so a success
	// while none fails takes no lock.
	failing  map[string]time.Time
	nFailing atomic.Int32
}

// failLogInterval is how often a destination's failed attempts are
// logged at most.
const failLogInterval = 5 * time.Second

func newLogLimiter(interval time.Duration) *logLimiter {
	return &logLimiter{interval: interval, last: map[string]time.Time{}, held: map[string]int{}, failing: map[string]time.Time{}}
}

// failed notes a failure of key at now, so that its next success is told
// (recovered).
func (l *logLimiter) failed(key string, now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.failing[key]; !ok {
		l.failing[key] = now
		l.nFailing.Add(1)
	}
}

// recovered reports, for a success of key at now, whether key was
// failing, and since when: the first success after failures, which is
// worth a line, as their start was.
func (l *logLimiter) recovered(key string, now time.Time) (time.Duration, bool) {
	if l == nil || l.nFailing.Load() == 0 {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	since, ok := l.failing[key]
	if !ok {
		return 0, false
	}
	delete(l.failing, key)
	l.nFailing.Add(-1)
	return now.Sub(since), true
}

// allow reports whether a line for key may be written at now and, if so,
// how many were held back since the last one. A nil limiter allows all.
func (l *logLimiter) allow(key string, now time.Time) (bool, int) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, ok := l.last[key]; ok && now.Sub(last) < l.interval {
		l.held[key]++
		return false, 0
	}
	held := l.held[key]
	l.last[key], l.held[key] = now, 0
	return true, held
}
