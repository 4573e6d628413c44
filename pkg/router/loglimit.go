package router

import (
	"sync"
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
}

// failLogInterval is how often a destination's failed attempts are
// logged at most.
const failLogInterval = 5 * time.Second

func newLogLimiter(interval time.Duration) *logLimiter {
	return &logLimiter{interval: interval, last: map[string]time.Time{}, held: map[string]int{}}
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
