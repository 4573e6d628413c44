package telemetry

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// Log rate limits: each distinct message of a floodable logger is written
// LogBurst times at once, then at most LogPerSecond times a second.
const (
	LogBurst     = 20
	LogPerSecond = 1
)

// maxLimitedKeys bounds the messages tracked; past it the quietest are
// forgotten.
const maxLimitedKeys = 1024

// floodKey marks a logger's lines as rate limited (see Floodable). The
// handler takes the attribute off; it is never written.
const floodKey = "junction.floodable"

// keyAttrs are the attributes that, with the message, tell one limited
// line from another: the same refusal from two inputs is two lines.
var keyAttrs = map[string]bool{"adapter": true, "component": true, "input": true, "destination": true, "route": true}

// Floodable returns log marked so that RateLimited limits its lines: for
// what bad input from outside makes once per message, connection or
// request (refusals, quarantines, handshakes), which a sender can make by
// the thousand. Everything else Junction logs is written whole.
func Floodable(log *slog.Logger) *slog.Logger {
	return log.With(slog.Bool(floodKey, true))
}

// RateLimited wraps h so that a sender of bad input cannot flood the log:
// the Info and Warn lines of loggers marked by Floodable are written
// LogBurst times for each message (and input, destination, route), then
// at most LogPerSecond times a second, and the next one written after some
// were dropped carries "suppressed" with how many. When a flood stops, the
// last line dropped is written once the rate allows, carrying the count,
// so the log says how much it held back even if nothing follows. Errors,
// debug lines and unmarked loggers are never held back, and metrics count
// every event.
func RateLimited(h slog.Handler) slog.Handler {
	return &rateLimited{h: h, st: &limitState{buckets: map[string]*bucket{}, now: time.Now,
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) }}}
}

type rateLimited struct {
	h  slog.Handler
	st *limitState
	// limited says the logger was marked by Floodable; key holds its
	// keyAttrs, as "name=value;".
	limited bool
	key     string
	// group is set once a group is opened: attributes after it are not
	// keyAttrs.
	group bool
}

// limitState is shared by a handler and those made from it.
type limitState struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	now     func() time.Time
	// after runs f once, d from now (time.AfterFunc); tests replace it.
	after func(d time.Duration, f func())
}

type bucket struct {
	tokens  float64
	last    time.Time
	dropped int
	// held is the last line dropped, with the handler it was for: if no
	// other line of its key is written first, it is written when the
	// rate allows (see flush), so a flood that stops still says how
	// many lines it dropped.
	held *heldLine
}

// heldLine is a dropped line kept to be written later.
type heldLine struct {
	h slog.Handler
	r slog.Record
}

// Enabled implements slog.Handler.
func (l *rateLimited) Enabled(ctx context.Context, level slog.Level) bool {
	return l.h.Enabled(ctx, level)
}

// Handle implements slog.Handler.
func (l *rateLimited) Handle(ctx context.Context, r slog.Record) error {
	if !l.limited || r.Level < slog.LevelInfo || r.Level >= slog.LevelError {
		return l.h.Handle(ctx, r)
	}
	var key strings.Builder
	key.WriteString(r.Message)
	key.WriteByte('\n')
	key.WriteString(l.key)
	r.Attrs(func(a slog.Attr) bool {
		if keyAttrs[a.Key] {
			key.WriteString(a.Key + "=" + a.Value.String() + ";")
		}
		return true
	})
	write, dropped := l.st.take(key.String(), l.h, r)
	if !write {
		return nil
	}
	if dropped > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", dropped))
	}
	return l.h.Handle(ctx, r)
}

// take reports whether line r of key, for handler h, may be written now,
// and how many were dropped since the last one written. A line dropped is
// held to be written later (see flush).
func (s *limitState) take(key string, h slog.Handler, r slog.Record) (bool, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	b := s.buckets[key]
	if b == nil {
		if len(s.buckets) >= maxLimitedKeys {
			s.forgetQuietest()
		}
		b = &bucket{tokens: LogBurst, last: now}
		s.buckets[key] = b
	}
	b.tokens = min(LogBurst, b.tokens+now.Sub(b.last).Seconds()*LogPerSecond)
	b.last = now
	if b.tokens < 1 {
		b.dropped++
		if b.held == nil {
			s.after(refillWait(b.tokens), func() { s.flush(key) })
		}
		b.held = &heldLine{h: h, r: r.Clone()}
		return false, 0
	}
	b.tokens--
	n := b.dropped
	b.dropped, b.held = 0, nil
	return true, n
}

// refillWait is how long until a bucket holding tokens has one.
func refillWait(tokens float64) time.Duration {
	return time.Duration((1 - tokens) / LogPerSecond * float64(time.Second))
}

// flush writes key's held line, if no line of key was written since it
// was dropped, with "suppressed" counting the others dropped; when the
// rate does not allow it yet, it tries again when it will.
func (s *limitState) flush(key string) {
	s.mu.Lock()
	b := s.buckets[key]
	if b == nil || b.held == nil {
		s.mu.Unlock()
		return
	}
	now := s.now()
	b.tokens = min(LogBurst, b.tokens+now.Sub(b.last).Seconds()*LogPerSecond)
	b.last = now
	if b.tokens < 1 {
		s.after(refillWait(b.tokens), func() { s.flush(key) })
		s.mu.Unlock()
		return
	}
	b.tokens--
	hl, n := b.held, b.dropped-1
	b.dropped, b.held = 0, nil
	s.mu.Unlock()
	r := hl.r
	if n > 0 {
		r.AddAttrs(slog.Int("suppressed", n))
	}
	_ = hl.h.Handle(context.Background(), r)
}

// forgetQuietest drops the half of the buckets used longest ago, so a
// message being limited now keeps its count. s.mu is held.
func (s *limitState) forgetQuietest() {
	times := make([]time.Time, 0, len(s.buckets))
	for _, b := range s.buckets {
		times = append(times, b.last)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	cut := times[len(times)/2]
	for k, b := range s.buckets {
		if !b.last.After(cut) {
			delete(s.buckets, k)
		}
	}
}

// WithAttrs implements slog.Handler.
func (l *rateLimited) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *l
	kept := attrs[:0:0]
	for _, a := range attrs {
		switch {
		case a.Key == floodKey && !l.group:
			n.limited = a.Value.Kind() == slog.KindBool && a.Value.Bool()
			continue
		case keyAttrs[a.Key] && !l.group:
			n.key += a.Key + "=" + a.Value.String() + ";"
		}
		kept = append(kept, a)
	}
	if len(kept) > 0 {
		n.h = l.h.WithAttrs(kept)
	}
	return &n
}

// WithGroup implements slog.Handler.
func (l *rateLimited) WithGroup(name string) slog.Handler {
	n := *l
	n.h = l.h.WithGroup(name)
	n.group = n.group || name != ""
	return &n
}
