package telemetry

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Log rate limits: each distinct message is written LogBurst times at
// once, then at most LogPerSecond times a second.
const (
	LogBurst     = 20
	LogPerSecond = 1
)

// maxLimitedMessages bounds the messages tracked; past it the counts
// start again (messages are the code's own texts, so far fewer exist).
const maxLimitedMessages = 4096

// RateLimited wraps h so that a sender of bad input cannot flood the log:
// each distinct message at Info or Warn level is written LogBurst times,
// then at most LogPerSecond times a second, and the next one written after
// some were dropped carries "suppressed" with how many. Errors and debug
// lines (off unless asked for) are never dropped. Metrics still count
// every event; the log keeps its shape, not its every line.
func RateLimited(h slog.Handler) slog.Handler {
	return &rateLimited{h: h, st: &limitState{buckets: map[string]*bucket{}, now: time.Now}}
}

type rateLimited struct {
	h  slog.Handler
	st *limitState
}

// limitState is shared by a handler and those made from it by WithAttrs
// and WithGroup.
type limitState struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	now     func() time.Time
}

type bucket struct {
	tokens  float64
	last    time.Time
	dropped int
}

// Enabled implements slog.Handler.
func (l *rateLimited) Enabled(ctx context.Context, level slog.Level) bool {
	return l.h.Enabled(ctx, level)
}

// Handle implements slog.Handler.
func (l *rateLimited) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo || r.Level >= slog.LevelError {
		return l.h.Handle(ctx, r)
	}
	write, dropped := l.st.take(r.Message)
	if !write {
		return nil
	}
	if dropped > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", dropped))
	}
	return l.h.Handle(ctx, r)
}

// take reports whether a line of msg may be written now, and how many
// were dropped since the last one written.
func (s *limitState) take(msg string) (bool, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	b := s.buckets[msg]
	if b == nil {
		if len(s.buckets) >= maxLimitedMessages {
			s.buckets = map[string]*bucket{}
		}
		b = &bucket{tokens: LogBurst, last: now}
		s.buckets[msg] = b
	}
	b.tokens = min(LogBurst, b.tokens+now.Sub(b.last).Seconds()*LogPerSecond)
	b.last = now
	if b.tokens < 1 {
		b.dropped++
		return false, 0
	}
	b.tokens--
	n := b.dropped
	b.dropped = 0
	return true, n
}

// WithAttrs implements slog.Handler.
func (l *rateLimited) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &rateLimited{h: l.h.WithAttrs(attrs), st: l.st}
}

// WithGroup implements slog.Handler.
func (l *rateLimited) WithGroup(name string) slog.Handler {
	return &rateLimited{h: l.h.WithGroup(name), st: l.st}
}
