package store

import (
	"fmt"
	"log/slog"
	"strings"
)

// natsLog hands the embedded nats-server's own warnings and errors to
// Junction's log. They are what it says about a damaged or inconsistent
// store on recovery (a block it cannot read, an index that does not match
// its blocks, state it rebuilt, messages it lost) and about writes it
// failed; without them a restored or damaged data directory starts with
// nothing said. Its notices (start-up banner, streams restored) go to
// debug; debug and trace output is never asked for, as trace would carry
// message payloads.
type natsLog struct{ log *slog.Logger }

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
func (l natsLog) Noticef(format string, v ...any) {
	l.log.Debug("embedded NATS", "said", said(format, v...))
}

// Warnf logs a warning, except the one about the large maximum payload
// Junction sets on purpose (EmbeddedMaxPayload), which goes to debug.
func (l natsLog) Warnf(format string, v ...any) {
	line := said(format, v...)
	if strings.HasPrefix(line, "Maximum payloads over") {
		l.log.Debug("embedded NATS", "said", line)
		return
	}
	l.log.Warn("embedded NATS warning", "said", line)
}

// Errorf logs an error.
func (l natsLog) Errorf(format string, v ...any) {
	l.log.Error("embedded NATS error", "said", said(format, v...))
}

// Fatalf logs a fatal error at error; the server stops itself where it
// calls this, and Junction, not the server, decides whether to exit.
func (l natsLog) Fatalf(format string, v ...any) {
	l.log.Error("embedded NATS fatal error", "said", said(format, v...))
}

// Debugf is not called: the server is given no debug flag.
func (l natsLog) Debugf(string, ...any) {}

// Tracef is not called: the server is given no trace flag, and its trace
// output holds message payloads.
func (l natsLog) Tracef(string, ...any) {}
