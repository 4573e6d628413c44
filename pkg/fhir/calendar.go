package fhir

import (
	"errors"
	"sync"
	"time"
	_ "time/tzdata" // Europe/London where the host has no zone database (a FROM scratch image)
)

// englandZone loads Europe/London once.
var englandZone = sync.OnceValue(func() *time.Location {
	loc, err := time.LoadLocation("Europe/London")
	if err != nil {
		return time.UTC // unreachable with time/tzdata linked in
	}
	return loc
})

// CalendarZone is the zone whose calendar days FHIR dates without a time
// name: Europe/London. A consent ending "2026-07-31", a child-protection
// plan ending that day or an opt-out list dated it means the English
// calendar day, which in summer starts at 23:00 UTC the day before; read
// as a UTC day it would end an hour late and start an hour late.
func CalendarZone() *time.Location { return englandZone() }

// ErrNotFHIRDate is returned by DateSpan for a value that is neither a
// FHIR date (YYYY, YYYY-MM, YYYY-MM-DD) nor a dateTime with a zone.
var ErrNotFHIRDate = errors.New("not a FHIR date or a dateTime with a time zone")

// DateSpan returns the first instant a FHIR date or dateTime covers and
// the first instant after it: a year, month or day as that calendar span
// in CalendarZone (so a Period's end given as a date includes all of that
// English day), a dateTime as the instant it names. Calendar spans come
// back in UTC. With localTimes, a
// dateTime without a zone (2026-07-31T09:00:00, which FHIR does not
// allow) is read in CalendarZone too rather than refused. The error names
// no part of the value.
func DateSpan(s string, localTimes bool) (from, until time.Time, err error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, t.Add(time.Nanosecond), nil
	}
	zone := CalendarZone()
	if localTimes {
		if t, err := time.ParseInLocation("2006-01-02T15:04:05", s, zone); err == nil {
			return t.UTC(), t.Add(time.Nanosecond).UTC(), nil
		}
	}
	for _, l := range []struct {
		layout     string
		y, m, days int
	}{
		{time.DateOnly, 0, 0, 1},
		{"2006-01", 0, 1, 0},
		{"2006", 1, 0, 0},
	} {
		if len(s) != len(l.layout) {
			continue
		}
		if t, err := time.ParseInLocation(l.layout, s, zone); err == nil {
			// AddDate keeps the wall clock: the next day's midnight in
			// the zone, 23 or 25 hours on when the clocks change.
			return t.UTC(), t.AddDate(l.y, l.m, l.days).UTC(), nil
		}
	}
	return time.Time{}, time.Time{}, ErrNotFHIRDate
}
