package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// natsLog hands the embedded nats-server's own warnings and errors to
// Junction's log. They are what it says about a damaged or inconsistent
// store on recovery (a block it cannot read, an index that does not match
// its blocks, state it rebuilt, messages it lost) and about writes it
// failed; without them a restored or damaged data directory starts with
// nothing said. Its notices (start-up banner, streams restored) go to
// debug; debug and trace output is never asked for, as trace would carry
// message payloads.
//
// A warning or error the server repeats (one per failed write on a full
// disk, say) is logged once per natsLogEvery for its format, the next
// line saying how many were held back meanwhile.
type natsLog struct {
	log *slog.Logger
	// now is the clock; nil means time.Now.
	now  func() time.Time
	mu   sync.Mutex
	seen map[string]*natsLine
}

// natsLine is when a format of the server's was last logged at a level,
// and how many lines of it were held back since.
type natsLine struct {
	last time.Time
	held int
}

// natsLogEvery is how often one warning or error format of the embedded
// server is logged at most.
const natsLogEvery = 10 * time.Second

// newNATSLog returns a natsLog writing to log.
func newNATSLog(log *slog.Logger) *natsLog {
	return &natsLog{log: log, seen: map[string]*natsLine{}}
}

// allow reports whether a line of format at level may be logged now, and
// how many of it were held back since the last one logged.
func (l *natsLog) allow(level, format string) (held int, ok bool) {
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	key := level + "\x00" + format
	e := l.seen[key]
	if e == nil {
		if l.seen == nil {
			l.seen = map[string]*natsLine{}
		}
		l.seen[key] = &natsLine{last: now}
		return 0, true
	}
	if now.Sub(e.last) < natsLogEvery {
		e.held++
		return 0, false
	}
	held, e.held, e.last = e.held, 0, now
	return held, true
}

// logLimited logs msg at level unless allow holds it back.
func (l *natsLog) logLimited(level slog.Level, msg, format string, v ...any) {
	held, ok := l.allow(level.String(), format)
	if !ok {
		return
	}
	if held > 0 {
		l.log.Log(context.Background(), level, msg, "said", said(format, v...), "repeated", held)
		return
	}
	l.log.Log(context.Background(), level, msg, "said", said(format, v...))
}

// said formats a line of the server's, withholding the snippet of the
// wire protocol it quotes with a client's protocol error, which can hold
// the bytes of a message (a patient's data).
func said(format string, v ...any) string {
	line := fmt.Sprintf(format, v...)
	if i := strings.Index(line, "proto='"); i >= 0 {
		line = line[:i] + "proto=[withheld]"
	}
	return line
}

// Noticef logs a notice at debug.
func (l *natsLog) Noticef(format string, v ...any) {
	l.log.Debug("embedded NATS", "said", said(format, v...))
}

// Warnf logs a warning, except the one about the large maximum payload
// Junction sets on purpose (EmbeddedMaxPayload), which goes to debug.
func (l *natsLog) Warnf(format string, v ...any) {
	if line := said(format, v...); strings.HasPrefix(line, "Maximum payloads over") {
		l.log.Debug("embedded NATS", "said", line)
		return
	}
	l.logLimited(slog.LevelWarn, "embedded NATS warning", format, v...)
}

// Errorf logs an error.
func (l *natsLog) Errorf(format string, v ...any) {
	l.logLimited(slog.LevelError, "embedded NATS error", format, v...)
}

// Fatalf logs a fatal error at error; the server stops itself where it
// calls this, and Junction, not the server, decides whether to exit.
func (l *natsLog) Fatalf(format string, v ...any) {
	l.log.Error("embedded NATS fatal error", "said", said(format, v...))
}

// Debugf is not called: the server is given no debug flag.
func (l *natsLog) Debugf(string, ...any) {}

// Tracef is not called: the server is given no trace flag, and its trace
// output holds message payloads.
func (l *natsLog) Tracef(string, ...any) {}
