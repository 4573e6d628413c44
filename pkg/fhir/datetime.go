package fhir

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidHL7Time is wrapped by the errors DateTimeFromHL7 and
// DateFromHL7 return. The error text names what is wrong, never the value.
var ErrInvalidHL7Time = errors.New("invalid HL7 date/time")

// hl7Time is a parsed HL7 v2 TS/DTM value.
type hl7Time struct {
	year, month, day, hour, minute, second int
	// frac holds the digits after the decimal point, as sent.
	frac string
	// precision counts the date/time parts present: 1 year, 2 month,
	// 3 day, 4 hour, 5 minute, 6 second.
	precision int
	// hasOffset is true when the value carried +/-ZZZZ; offset is in
	// seconds east of UTC.
	hasOffset bool
	offset    int
}

func timeError(what string) error {
	return fmt.Errorf("%w: %s", ErrInvalidHL7Time, what)
}

// parseHL7Time parses YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]. A TS
// "degree of precision" component (after "^") and surrounding spaces are
// ignored.
func parseHL7Time(s string) (hl7Time, error) {
	var t hl7Time
	if i := strings.IndexByte(s, '^'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return t, timeError("empty value")
	}
	if i := strings.IndexAny(s, "+-"); i >= 0 {
		z := s[i:]
		s = s[:i]
		if len(z) != 5 || !allDigits(z[1:]) {
			return t, timeError("malformed time zone offset")
		}
		hh, _ := strconv.Atoi(z[1:3])
		mm, _ := strconv.Atoi(z[3:5])
		if hh > 14 || mm > 59 || (hh == 14 && mm != 0) {
			return t, timeError("time zone offset out of range")
		}
		t.offset = hh*3600 + mm*60
		if z[0] == '-' {
			t.offset = -t.offset
		}
		t.hasOffset = true
	}
	if i := strings.IndexByte(s, '.'); i >= 0 {
		t.frac = s[i+1:]
		s = s[:i]
		if len(s) != 14 {
			return t, timeError("fractional seconds without seconds")
		}
		if t.frac == "" || len(t.frac) > 9 || !allDigits(t.frac) {
			return t, timeError("malformed fractional seconds")
		}
	}
	if !allDigits(s) {
		return t, timeError("non-digit in date/time")
	}
	switch len(s) {
	case 4, 6, 8, 10, 12, 14:
	default:
		return t, timeError("date/time has the wrong number of digits")
	}
	fields := []*int{&t.year, &t.month, &t.day, &t.hour, &t.minute, &t.second}
	t.year, _ = strconv.Atoi(s[:4])
	t.precision = 1
	for p := 4; p < len(s); p += 2 {
		*fields[t.precision], _ = strconv.Atoi(s[p : p+2])
		t.precision++
	}
	if t.year == 0 {
		return t, timeError("year out of range")
	}
	if t.precision >= 2 && (t.month < 1 || t.month > 12) {
		return t, timeError("month out of range")
	}
	if t.precision >= 3 {
		last := time.Date(t.year, time.Month(t.month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
		if t.day < 1 || t.day > last {
			return t, timeError("day out of range")
		}
	}
	if t.hour > 23 || t.minute > 59 || t.second > 59 {
		return t, timeError("time of day out of range")
	}
	return t, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// date renders the date part at the precision sent (FHIR date).
func (t hl7Time) date() string {
	var buf [16]byte
	b := appendPadded(buf[:0], t.year, 4)
	if t.precision >= 2 {
		b = appendPadded(append(b, '-'), t.month, 2)
	}
	if t.precision >= 3 {
		b = appendPadded(append(b, '-'), t.day, 2)
	}
	return string(b)
}

// appendPadded appends v in decimal, zero-padded to width digits.
func appendPadded(b []byte, v, width int) []byte {
	var digits [20]byte
	d := strconv.AppendInt(digits[:0], int64(v), 10)
	for i := len(d); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, d...)
}

// DateTimeFromHL7 converts an HL7 v2 TS/DTM value
// (YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]) to a FHIR dateTime of the same
// precision:
//
//   - A value with no time of day stays a date ("19700101" becomes
//     "1970-01-01", "197001" becomes "1970-01"); an offset sent with it is
//     ignored, since a FHIR date has none.
//   - A time of day gets minutes and seconds when missing (FHIR needs
//     both) and keeps any fraction of a second as sent.
//   - A time with an offset keeps its clock time and offset
//     ("20240715093000+0100" becomes "2024-07-15T09:30:00+01:00").
//   - A time without an offset is local time in loc (UTC when loc is nil)
//     and is rendered with the offset in force then, so Europe/London
//     gives +01:00 in summer and +00:00 in winter. A local time that
//     falls in a daylight-saving gap or overlap is resolved as time.Date
//     does.
//
// An invalid value gives an error wrapping ErrInvalidHL7Time whose text
// does not repeat the value.
func DateTimeFromHL7(ts string, loc *time.Location) (string, error) {
	t, err := parseHL7Time(ts)
	if err != nil {
		return "", err
	}
	if t.precision <= 3 {
		return t.date(), nil
	}
	var at time.Time
	if t.hasOffset {
		at = time.Date(t.year, time.Month(t.month), t.day, t.hour, t.minute, t.second, 0,
			time.FixedZone("", t.offset))
	} else {
		if loc == nil {
			loc = time.UTC
		}
		at = time.Date(t.year, time.Month(t.month), t.day, t.hour, t.minute, t.second, 0, loc)
	}
	return formatDateTime(at, t.frac), nil
}

// formatDateTime renders at as a FHIR dateTime to the second, with frac
// (the digits of a fraction of a second, as sent) and at's offset.
func formatDateTime(at time.Time, frac string) string {
	// One allocation, for the result: the parts are written to a buffer
	// on the stack.
	var buf [64]byte
	out := at.AppendFormat(buf[:0], "2006-01-02T15:04:05")
	if frac != "" {
		out = append(append(out, '.'), frac...)
	}
	return string(at.AppendFormat(out, "-07:00"))
}

// pastAllowance is how far after its receipt a time that cannot be in the
// future may seem to be (the sender's clock running ahead of Junction's)
// before PastInstantFromHL7 reads it as the earlier of its two readings.
const pastAllowance = 10 * time.Minute

// PastInstantFromHL7 is InstantFromHL7 for the time of something that had
// happened when the message was received, at received: a message's
// creation (MSH-7), an event (EVN-2, EVN-6), a report's issue (OBR-22).
// A time sent without an offset in the hour loc passes twice when the
// clocks go back has two readings an hour apart. DateTimeFromHL7 takes
// the later; this takes the earlier when the later is more than
// pastAllowance after received and the earlier is not, since the later
// had not happened yet. So a report issued at 01:50 in the first pass and
// sent at once reads as issued before one issued at 01:10 in the second
// pass, as it was. A time received well after it (a backlog, a replay)
// keeps the later reading, as does a zero received; AmbiguousLocal still
// reports the time, whose offset stays a guess.
func PastInstantFromHL7(raw string, loc *time.Location, received time.Time) (string, bool) {
	ts, ok := InstantFromHL7(raw, loc)
	if !ok || received.IsZero() {
		return ts, ok
	}
	t, first, second, twice := readings(raw, loc)
	if !twice {
		return ts, ok
	}
	if limit := received.Add(pastAllowance); second.After(limit) && !first.After(limit) {
		return formatDateTime(first, t.frac), true
	}
	return formatDateTime(second, t.frac), true
}

// readings parses raw, an HL7 v2 time sent without an offset, and, when
// it names a wall-clock time loc passes twice (the hour repeated when the
// clocks go back), returns both instants it may be, first the earlier.
func readings(raw string, loc *time.Location) (t hl7Time, first, second time.Time, twice bool) {
	if !AmbiguousLocal(raw, loc) {
		return t, first, second, false
	}
	t, err := parseHL7Time(raw)
	if err != nil {
		return t, first, second, false
	}
	at := time.Date(t.year, time.Month(t.month), t.day, t.hour, t.minute, t.second, 0, loc)
	var found []time.Time
	for _, u := range [...]time.Time{at.Add(-time.Hour), at, at.Add(time.Hour)} {
		if u.Day() == t.day && u.Hour() == t.hour && u.Minute() == t.minute && u.Second() == t.second {
			found = append(found, u)
		}
	}
	if len(found) != 2 {
		return t, first, second, false // a time the clocks skip: one reading, or none
	}
	return t, found[0], found[1], true
}

// PeriodStartFromHL7 returns start, the dateTime DateTimeFromHL7 gave
// for the HL7 v2 time startRaw, or, when the period it begins would end
// (at end, a FHIR dateTime) before it only because startRaw, sent without
// an offset in the hour loc passes twice, was read as its second pass,
// its first-pass reading, which it must have been (an admission at 01:50
// BST before a discharge at 01:10 GMT). A period that ends before it
// starts for any other reason is left as sent.
func PeriodStartFromHL7(startRaw, start, end string, loc *time.Location) string {
	s, err := time.Parse(time.RFC3339Nano, start)
	if err != nil {
		return start
	}
	e, err := time.Parse(time.RFC3339Nano, end)
	if err != nil || !e.Before(s) {
		return start
	}
	t, first, _, twice := readings(startRaw, loc)
	if !twice || e.Before(first) {
		return start
	}
	return formatDateTime(first, t.frac)
}

// AmbiguousLocal reports whether the HL7 v2 time ts, sent without an
// offset and read in loc, names a wall-clock time loc skips (the hour
// lost when clocks go forward, which DateTimeFromHL7 moves on an hour)
// or passes twice (the hour repeated when they go back, of which it takes
// one), so the instant it gives may not be the one meant. Dates, times
// with an offset and invalid values give false.
func AmbiguousLocal(ts string, loc *time.Location) bool {
	t, err := parseHL7Time(ts)
	if err != nil || t.precision <= 3 || t.hasOffset || loc == nil {
		return false
	}
	at := time.Date(t.year, time.Month(t.month), t.day, t.hour, t.minute, t.second, 0, loc)
	same := func(u time.Time) bool {
		return u.Day() == t.day && u.Hour() == t.hour && u.Minute() == t.minute && u.Second() == t.second
	}
	if !same(at) {
		return true // skipped
	}
	return same(at.Add(-time.Hour)) || same(at.Add(time.Hour))
}

// DateFromHL7 converts an HL7 v2 DT, or the date part of a TS/DTM, to a
// FHIR date at the precision sent ("19700101" becomes "1970-01-01",
// "198808181126+0215" becomes "1988-08-18"). The whole value is checked;
// the time of day and offset, if any, are then dropped without conversion,
// because a birth date is the calendar date where it was recorded.
func DateFromHL7(s string) (string, error) {
	t, err := parseHL7Time(s)
	if err != nil {
		return "", err
	}
	return t.date(), nil
}
