package fhir

import (
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/London even where the host has no zone database

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/google/go-cmp/cmp"
)

func london(t testing.TB) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Fatalf("load Europe/London: %v", err)
	}
	return loc
}

func TestDateTimeFromHL7(t *testing.T) {
	loc := london(t)
	tests := []struct {
		name string
		in   string
		loc  *time.Location
		want string
	}{
		{"date stays a date", "19700101", loc, "1970-01-01"},
		{"year only", "1970", loc, "1970"},
		{"year and month", "197007", loc, "1970-07"},
		{"offset on a date is dropped", "19700101+0100", loc, "1970-01-01"},
		{"leap day", "20240229", loc, "2024-02-29"},
		{"summer local time is BST", "20240715093000", loc, "2024-07-15T09:30:00+01:00"},
		{"winter local time is GMT", "20240115093000", loc, "2024-01-15T09:30:00+00:00"},
		{"day before BST ends", "20241026120000", loc, "2024-10-26T12:00:00+01:00"},
		{"day after BST ends", "20241028120000", loc, "2024-10-28T12:00:00+00:00"},
		{"minutes precision gets seconds", "202407150930", loc, "2024-07-15T09:30:00+01:00"},
		{"hour precision gets minutes", "2024071509", loc, "2024-07-15T09:00:00+01:00"},
		{"fraction kept as sent", "20240715093000.1234", loc, "2024-07-15T09:30:00.1234+01:00"},
		{"fraction keeps trailing zero", "20240115093000.10", loc, "2024-01-15T09:30:00.10+00:00"},
		{"explicit offset wins over loc", "20240715093000+0200", loc, "2024-07-15T09:30:00+02:00"},
		{"negative offset", "20240115093000-0500", loc, "2024-01-15T09:30:00-05:00"},
		{"odd offset", "198908181126+0215", loc, "1989-08-18T11:26:00+02:15"},
		{"explicit zero offset", "20240715093000+0000", loc, "2024-07-15T09:30:00+00:00"},
		{"nil location is UTC", "20240715093000", nil, "2024-07-15T09:30:00+00:00"},
		{"fixed location", "20240715093000", time.FixedZone("X", -3*3600), "2024-07-15T09:30:00-03:00"},
		{"precision component ignored", "20240715093000^S", loc, "2024-07-15T09:30:00+01:00"},
		{"spaces trimmed", " 20240715093000 ", loc, "2024-07-15T09:30:00+01:00"},
		{"fraction with offset", "20210817151943.4+0200", loc, "2021-08-17T15:19:43.4+02:00"},
		{"midnight", "20240101000000", loc, "2024-01-01T00:00:00+00:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DateTimeFromHL7(tt.in, tt.loc)
			if err != nil {
				t.Fatalf("DateTimeFromHL7(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DateTimeFromHL7(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestDateTimeFromHL7Invalid(t *testing.T) {
	loc := london(t)
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"only precision", "^S"},
		{"odd digit count", "2024071"},
		{"thirteen digits", "2024071509300"},
		{"too many digits", "202407150930001"},
		{"month 13", "20241301"},
		{"month 0", "20240001"},
		{"day 0", "20240100"},
		{"30 February", "20240230"},
		{"29 February not leap", "20230229"},
		{"hour 24", "20240715240000"},
		{"minute 60", "20240715096000"},
		{"second 60", "20240715093060"},
		{"year 0", "00000101"},
		{"ISO not HL7", "2024-07-15"},
		{"letters", "2024Jul15"},
		{"short offset", "20240715093000+01"},
		{"offset too large", "20240715093000+1500"},
		{"offset 14:30", "20240715093000+1430"},
		{"offset minutes 60", "20240715093000+0160"},
		{"offset with letters", "20240715093000+01a0"},
		{"two offsets", "20240715093000+0100-0100"},
		{"fraction without seconds", "202407150930.5"},
		{"empty fraction", "20240715093000."},
		{"fraction too long", "20240715093000.1234567890"},
		{"fraction with letters", "20240715093000.1a"},
		{"offset only", "+0100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DateTimeFromHL7(tt.in, loc)
			if err == nil {
				t.Fatalf("DateTimeFromHL7(%q) = %q, want an error", tt.in, got)
			}
			if !errors.Is(err, ErrInvalidHL7Time) {
				t.Errorf("error %v does not wrap ErrInvalidHL7Time", err)
			}
			if len(strings.TrimSpace(tt.in)) > 3 && strings.Contains(err.Error(), strings.TrimSpace(tt.in)) {
				t.Errorf("error text %q repeats the value", err)
			}
			if _, derr := DateFromHL7(tt.in); derr == nil {
				t.Errorf("DateFromHL7(%q) accepted an invalid value", tt.in)
			}
		})
	}
}

func TestDateFromHL7(t *testing.T) {
	tests := []struct{ in, want string }{
		{"19700101", "1970-01-01"},
		{"1970", "1970"},
		{"197003", "1970-03"},
		{"198808181126+0215", "1988-08-18"},
		// Late evening with a negative offset: the date as recorded, not
		// the UTC date.
		{"19880818233000-0500", "1988-08-18"},
		{"20240229", "2024-02-29"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := DateFromHL7(tt.in)
			if err != nil {
				t.Fatalf("DateFromHL7(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DateFromHL7(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// fhirDateTimePattern returns the FHIR R4 dateTime pattern, from the JSON
// schema when the corpus is present, else an equivalent written here.
func fhirDateTimePattern(t testing.TB) *regexp.Regexp {
	t.Helper()
	const own = `^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])(T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?)?)?$`
	b, err := os.ReadFile(r4SchemaPath)
	if err != nil {
		corpustest.Note(t, "FHIR R4 JSON schema not readable at %s; checking against Junction's own pattern only", r4SchemaPath)
		return regexp.MustCompile(own)
	}
	var s struct {
		Definitions map[string]struct {
			Pattern string `json:"pattern"`
		} `json:"definitions"`
	}
	if err := json.Unmarshal(b, &s); err != nil || s.Definitions["dateTime"].Pattern == "" {
		t.Fatalf("FHIR schema present but unreadable: %v", err)
	}
	return regexp.MustCompile(s.Definitions["dateTime"].Pattern)
}

const r4SchemaPath = "../../../shared/corpora/fhir-r4-schema/fhir.schema.json"

// TestDateTimeFromHL7MatchesSchema checks every seventh hour of two years
// in London against the FHIR dateTime pattern and against time.Parse.
func TestDateTimeFromHL7MatchesSchema(t *testing.T) {
	pat := fhirDateTimePattern(t)
	loc := london(t)
	start := time.Date(2023, 1, 1, 0, 30, 15, 0, time.UTC)
	for h := 0; h < 2*366*24; h += 7 {
		at := start.Add(time.Duration(h) * time.Hour).In(loc)
		in := at.Format("20060102150405")
		got, err := DateTimeFromHL7(in, loc)
		if err != nil {
			t.Fatalf("DateTimeFromHL7(%q): %v", in, err)
		}
		if !pat.MatchString(got) {
			t.Fatalf("DateTimeFromHL7(%q) = %q, not a FHIR dateTime", in, got)
		}
		back, err := time.Parse(time.RFC3339, got)
		if err != nil {
			t.Fatalf("parse %q: %v", got, err)
		}
		// The clock time is kept, and the offset is one London really
		// uses at that clock time (in the autumn overlap either is right).
		if wall := back.Format("20060102150405"); wall != in {
			t.Fatalf("DateTimeFromHL7(%q) = %q, clock time changed", in, got)
		}
		if wall := back.In(loc).Format("20060102150405"); wall != in {
			t.Fatalf("DateTimeFromHL7(%q) = %q, offset not used in London then", in, got)
		}
	}
}

func FuzzDateTimeFromHL7(f *testing.F) {
	for _, s := range []string{
		"19700101", "1970", "20240715093000", "20240715093000.1234+0100",
		"198808181126+0215", "20240230", "20240715093000^S", "+0100", "",
	} {
		f.Add(s)
	}
	pat := fhirDateTimePattern(f)
	datePat := regexp.MustCompile(`^\d{4}(-\d{2}(-\d{2})?)?$`)
	loc := london(f)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := DateTimeFromHL7(s, loc)
		d, derr := DateFromHL7(s)
		if (err == nil) != (derr == nil) {
			t.Fatalf("DateTimeFromHL7 and DateFromHL7 disagree on %q: %v / %v", s, err, derr)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidHL7Time) {
				t.Fatalf("error %v does not wrap ErrInvalidHL7Time", err)
			}
			return
		}
		if !pat.MatchString(got) {
			t.Fatalf("DateTimeFromHL7(%q) = %q, not a FHIR dateTime", s, got)
		}
		if !datePat.MatchString(d) || !strings.HasPrefix(got, d[:4]) {
			t.Fatalf("DateFromHL7(%q) = %q, not a FHIR date", s, d)
		}
	})
}

func BenchmarkDateTimeFromHL7(b *testing.B) {
	loc := london(b)
	for b.Loop() {
		if _, err := DateTimeFromHL7("20240715093000.1234", loc); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAmbiguousLocal checks the wall-clock times London skips or passes
// twice in 2024 (clocks forward 31 March at 01:00, back 27 October at
// 02:00) against ordinary ones.
func TestAmbiguousLocal(t *testing.T) {
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ts   string
		want bool
	}{
		{"202403310130", true},       // skipped
		{"202403310100", true},       // skipped: the first minute gone
		{"202403310200", false},      // BST begins
		{"202403310059", false},      // still GMT
		{"20241027013000", true},     // passed twice
		{"20241027010000", true},     // passed twice
		{"20241027020000", false},    // once, in GMT
		{"20241027005959", false},    // once, in BST
		{"20240715093512", false},    // ordinary
		{"202403310130+0000", false}, // an offset says which
		{"20240331", false},          // a date
		{"not a time", false},        // invalid
	}
	for _, tt := range tests {
		t.Run(tt.ts, func(t *testing.T) {
			if got := AmbiguousLocal(tt.ts, london); got != tt.want {
				t.Errorf("AmbiguousLocal(%q) = %v, want %v", tt.ts, got, tt.want)
			}
		})
	}
	if AmbiguousLocal("202403310130", time.UTC) {
		t.Error("UTC skips no time")
	}
}

// TestPastInstantFromHL7 checks the reading of a time that had happened
// when it was received: in the hour London passes twice (27 October 2024,
// 01:00 BST to 01:59 GMT), the earlier reading when the later had not
// happened yet, else the later, as DateTimeFromHL7 gives; other times as
// InstantFromHL7 reads them.
func TestPastInstantFromHL7(t *testing.T) {
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Fatal(err)
	}
	utc := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name, raw string
		received  time.Time
		want      string
		ok        bool
	}{
		{"first pass, received at once", "20241027015000", utc("2024-10-27T00:51:00Z"), "2024-10-27T01:50:00+01:00", true},
		{"first pass, with a fraction", "20241027015000.25", utc("2024-10-27T00:51:00Z"), "2024-10-27T01:50:00.25+01:00", true},
		{"second pass, received at once", "20241027011000", utc("2024-10-27T01:11:00Z"), "2024-10-27T01:10:00+00:00", true},
		{"sender's clock a little ahead", "20241027015000", utc("2024-10-27T01:45:00Z"), "2024-10-27T01:50:00+00:00", true},
		{"received long after", "20241027015000", utc("2024-10-28T09:00:00Z"), "2024-10-27T01:50:00+00:00", true},
		{"both readings ahead of receipt", "20241027015000", utc("2024-10-26T12:00:00Z"), "2024-10-27T01:50:00+00:00", true},
		{"no receipt time", "20241027015000", time.Time{}, "2024-10-27T01:50:00+00:00", true},
		{"with its offset", "20241027015000+0000", utc("2024-10-27T00:51:00Z"), "2024-10-27T01:50:00+00:00", true},
		{"the hour skipped", "20240331013000", utc("2024-03-31T00:31:00Z"), "2024-03-31T02:30:00+01:00", true},
		{"ordinary summer time", "20240715093000", utc("2024-07-15T08:31:00Z"), "2024-07-15T09:30:00+01:00", true},
		{"a date is no instant", "20241027", utc("2024-10-27T00:51:00Z"), "", false},
		{"invalid", "20241327015000", utc("2024-10-27T00:51:00Z"), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := PastInstantFromHL7(tt.raw, london, tt.received)
			if got != tt.want || ok != tt.ok {
				t.Errorf("PastInstantFromHL7(%q) = %q, %v; want %q, %v", tt.raw, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestPeriodStartFromHL7 checks that a period's start in the hour London
// passes twice is read as its first pass when only that keeps the period
// from ending before it starts, and is otherwise left as DateTimeFromHL7
// gave it.
func TestPeriodStartFromHL7(t *testing.T) {
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, startRaw, endRaw, want string
	}{
		{"first pass, ended in the second", "20241027015000", "20241027011000", "2024-10-27T01:50:00+01:00"},
		{"with a fraction", "20241027015000.5", "20241027011000", "2024-10-27T01:50:00.5+01:00"},
		{"both in the second pass, in order", "20241027011000", "20241027015000", "2024-10-27T01:10:00+00:00"},
		{"ended before even the first pass", "20241027015000", "20241027003000", "2024-10-27T01:50:00+00:00"},
		{"ended a day before: the sender's error", "20241027015000", "20241026011000", "2024-10-27T01:50:00+00:00"},
		{"start with its offset", "20241027015000+0000", "20241027011000", "2024-10-27T01:50:00+00:00"},
		{"ordinary times out of order", "20240715100000", "20240715090000", "2024-07-15T10:00:00+01:00"},
		{"an end date", "20241027015000", "20241026", "2024-10-27T01:50:00+00:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, err := DateTimeFromHL7(tt.startRaw, london)
			if err != nil {
				t.Fatal(err)
			}
			end, err := DateTimeFromHL7(tt.endRaw, london)
			if err != nil {
				t.Fatal(err)
			}
			if got := PeriodStartFromHL7(tt.startRaw, start, end, london); got != tt.want {
				t.Errorf("PeriodStartFromHL7(%q, %q) = %q, want %q", tt.startRaw, end, got, tt.want)
			}
		})
	}
}
