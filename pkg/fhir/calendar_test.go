package fhir

import (
	"errors"
	"testing"
	"time"
)

func TestDateSpan(t *testing.T) {
	utc := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name, in    string
		localTimes  bool
		from, until string
	}{
		{"a summer day starts at midnight BST", "2026-07-31", false, "2026-07-30T23:00:00Z", "2026-07-31T23:00:00Z"},
		{"a winter day is a UTC day", "2026-12-31", false, "2026-12-31T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"the day the clocks go forward has 23 hours", "2026-03-29", false, "2026-03-29T00:00:00Z", "2026-03-29T23:00:00Z"},
		{"the day the clocks go back has 25 hours", "2026-10-25", false, "2026-10-24T23:00:00Z", "2026-10-26T00:00:00Z"},
		{"a month", "2026-07", false, "2026-06-30T23:00:00Z", "2026-07-31T23:00:00Z"},
		{"a year", "2026", false, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"a dateTime is its instant", "2026-07-31T10:00:00+01:00", false, "2026-07-31T09:00:00Z", "2026-07-31T09:00:00.000000001Z"},
		{"a local time in England", "2026-07-31T10:00:00", true, "2026-07-31T09:00:00Z", "2026-07-31T09:00:00.000000001Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from, until, err := DateSpan(tt.in, tt.localTimes)
			if err != nil {
				t.Fatalf("DateSpan(%q) error: %v", tt.in, err)
			}
			if !from.Equal(utc(tt.from)) || !until.Equal(utc(tt.until)) {
				t.Errorf("DateSpan(%q) = %v, %v; want %s, %s", tt.in, from.UTC(), until.UTC(), tt.from, tt.until)
			}
		})
	}
	for _, bad := range []string{"", "2026-7-31", "2026-02-30", "31/07/2026", "2026-07-31T10:00:00", "2026-07-31 10:00"} {
		t.Run("refuses "+bad, func(t *testing.T) {
			if _, _, err := DateSpan(bad, false); !errors.Is(err, ErrNotFHIRDate) {
				t.Errorf("DateSpan(%q) error = %v, want ErrNotFHIRDate", bad, err)
			}
		})
	}
}
