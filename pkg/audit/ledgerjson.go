package audit

import (
	"bytes"
	"strconv"
	"time"
	"unicode/utf8"
)

// ledgerFields is what a ledger reads of one record: its strings are
// still bytes of the JSON, good while the JSON is.
type ledgerFields struct {
	id, event, route, destination, outcome []byte
	seq                                    uint64
	// nanos is the record's time as a step holds it.
	nanos int64
}

// ledgerKeys are the record's keys a ledger reads, as the audit writer
// spells them.
var ledgerKeys = [...]string{"time", "message_id", "event", "route", "destination", "outcome", "seq"}

// maxScanDepth bounds the nesting scanLedgerFields skips through itself;
// deeper values are left to encoding/json.
const maxScanDepth = 32

// scanLedgerFields appends to out the fields a ledger reads of each
// record of data, a JSON array of audit records. It reads what the audit
// writer writes and nothing it is unsure of: for invalid JSON, a string
// with an escape or invalid UTF-8, a key that names a field only when
// case is ignored (as encoding/json matches), a null, or a value of
// another type where a field is read, it returns false, having decided
// nothing, and the caller decodes data with encoding/json instead. A
// reconcile of 1.3 million records spent most of its CPU in
// encoding/json's reflection; jsonmap, which builds every value, is
// little faster here (BenchmarkLedgerJSON: the scan reads a writer's
// batch about three times as fast as encoding/json, in a sixth of the
// allocations).
func scanLedgerFields(data []byte, out []ledgerFields) ([]ledgerFields, bool) {
	s := scanner{b: data}
	s.space()
	ok := s.array(func() bool {
		f := ledgerFields{nanos: unixNanos(time.Time{})}
		if !s.object(func(key []byte) bool { return s.field(key, &f) }) {
			return false
		}
		out = append(out, f)
		return true
	})
	return out, ok && s.end()
}

// scanner reads JSON from b at i.
type scanner struct {
	b []byte
	i int
}

// space skips JSON whitespace.
func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// byte consumes c if it comes next.
func (s *scanner) byte(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only whitespace follows.
func (s *scanner) end() bool {
	s.space()
	return s.i == len(s.b)
}

// object reads an object, calling member with each key once the
// scanner is at its value; member reads the value.
func (s *scanner) object(member func(key []byte) bool) bool {
	if !s.byte('{') {
		return false
	}
	s.space()
	if s.byte('}') {
		return true
	}
	for {
		key, ok := s.str()
		if !ok {
			return false
		}
		s.space()
		if !s.byte(':') {
			return false
		}
		s.space()
		if !member(key) {
			return false
		}
		s.space()
		if s.byte('}') {
			return true
		}
		if !s.byte(',') {
			return false
		}
		s.space()
	}
}

// array reads an array, calling elem at each element; elem reads it.
func (s *scanner) array(elem func() bool) bool {
	if !s.byte('[') {
		return false
	}
	s.space()
	if s.byte(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		s.space()
		if s.byte(']') {
			return true
		}
		if !s.byte(',') {
			return false
		}
		s.space()
	}
}

// field reads the value of key into f, or skips it when f does not hold
// it.
func (s *scanner) field(key []byte, f *ledgerFields) bool {
	var dst *[]byte
	switch string(key) {
	case "time":
		start := s.i
		if _, ok := s.str(); !ok {
			return false
		}
		var t time.Time // read as encoding/json reads it
		if t.UnmarshalJSON(s.b[start:s.i]) != nil {
			return false
		}
		f.nanos = unixNanos(t)
		return true
	case "seq":
		n, ok := s.uint()
		f.seq = n
		return ok
	case "message_id":
		dst = &f.id
	case "event":
		dst = &f.event
	case "route":
		dst = &f.route
	case "destination":
		dst = &f.destination
	case "outcome":
		dst = &f.outcome
	default:
		for _, k := range ledgerKeys {
			if bytes.EqualFold(key, []byte(k)) {
				return false
			}
		}
		for _, c := range key {
			if c >= utf8.RuneSelf {
				return false // encoding/json folds some letters beyond ASCII too
			}
		}
		return s.skip(0)
	}
	v, ok := s.str()
	*dst = v
	return ok
}

// str reads a string without escapes, returning its content.
func (s *scanner) str() ([]byte, bool) {
	if !s.byte('"') {
		return nil, false
	}
	start, ascii := s.i, true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			if !ascii && !utf8.Valid(v) {
				return nil, false
			}
			return v, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		s.i++
	}
	return nil, false
}

// uint reads a non-negative integer that fits in 64 bits.
func (s *scanner) uint() (uint64, bool) {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	digits := s.b[start:s.i]
	if len(digits) == 0 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return 0, false // a number encoding/json would not put in a uint64
		}
	}
	n, err := strconv.ParseUint(string(digits), 10, 64)
	return n, err == nil
}

// skip passes over one value of any kind.
func (s *scanner) skip(depth int) bool {
	if s.i >= len(s.b) || depth > maxScanDepth {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '{':
		return s.object(func([]byte) bool { return s.skip(depth + 1) })
	case c == '[':
		return s.array(func() bool { return s.skip(depth + 1) })
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
				s.i += len(lit)
				return true
			}
		}
		return false
	}
}

// number passes over a JSON number.
func (s *scanner) number() bool {
	s.byte('-')
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.byte('0') {
		// no more digits may follow a leading zero
	} else if digits() == 0 {
		return false
	}
	if s.byte('.') && digits() == 0 {
		return false
	}
	if s.byte('e') || s.byte('E') {
		if !s.byte('+') {
			s.byte('-')
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
