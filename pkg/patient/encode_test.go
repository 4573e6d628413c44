package patient

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// TestEncodeRecord checks that records are written byte for byte as
// json.Marshal writes them, directly when their strings allow.
func TestEncodeRecord(t *testing.T) {
	cases := recordCases()
	zeroElsewhere := time.Time{}.In(time.FixedZone("", 3600))
	cases = append(cases, []struct {
		name string
		rec  Record
		fast bool
	}{
		// PDS and Consent are not zero values, yet their times are zero
		// instants: written as "pds":{} and "consent":{}.
		{"zero instant elsewhere", Record{NHSNumber: "9990000018", PDS: PDSCheck{CheckedAt: zeroElsewhere}, UpdatedAt: zeroElsewhere,
			Consent: ConsentSummary{UpdatedAt: zeroElsewhere}, GPSource: Source{Received: zeroElsewhere}}, true},
		{"year beyond 9999", Record{NHSNumber: "9990000018", UpdatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, false},
		{"html", Record{NHSNumber: "9990000018", Postcode: "<LS1&4AB>"}, false},
		{"control", Record{NHSNumber: "9990000018", Given: []string{"Jo\tAnn"}}, false},
	}...)
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			sameBytesAsJSON(t, &tt.rec)
			e := encoder{ok: true}
			e.record(&tt.rec)
			if e.ok != tt.fast {
				t.Errorf("written without encoding/json: %t, want %t", e.ok, tt.fast)
			}
		})
	}
}

// sameBytesAsJSON fails t unless encodeRecord and json.Marshal write r
// alike, or both fail.
func sameBytesAsJSON(t *testing.T, r *Record) {
	t.Helper()
	want, wantErr := json.Marshal(r)
	got, gotErr := encodeRecord(r)
	if (gotErr != nil) != (wantErr != nil) {
		t.Fatalf("error %v, json.Marshal's %v", gotErr, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("wrote\n%s\njson.Marshal wrote\n%s", got, want)
	}
}

// FuzzEncodeRecord checks that encodeRecord writes what json.Marshal
// writes, for records of any strings and times.
func FuzzEncodeRecord(f *testing.F) {
	f.Add("9990000018", "Smith", "Jo", "LS1 4AB", "01JTESTREC", int64(1721032560123456789), 0, uint8(0xff))
	f.Add("", "Ó Briain", "<b>", "", "", int64(-62135596800000000), 3600, uint8(0))
	f.Fuzz(func(t *testing.T, nhsNumber, family, given, text, id string, nanos int64, offset int, set uint8) {
		at := time.Unix(0, nanos).In(time.FixedZone("", offset%86400))
		if set&1 == 0 {
			at = time.Time{}
		}
		src := Source{MessageID: id, Received: at}
		r := Record{NHSNumber: nhsNumber, Family: family, BirthDate: text, UpdatedAt: at, MessageID: id}
		if set&2 != 0 {
			r.Identifiers = []Identifier{{System: text, Value: id}, {}}
			r.Given = []string{given, family}
		}
		if set&4 != 0 {
			r.Deceased, r.Restricted, r.GPSource, r.RestrictedSource, r.MergeSource = true, true, src, src, src
			r.GPPractice, r.GP, r.Gender, r.Postcode, r.MergedInto = text, id, given, text, family
		}
		if set&8 != 0 {
			r.PDS = PDSCheck{CheckedAt: at, Outcome: text, VersionID: id, GPPractice: given}
		}
		if set&16 != 0 {
			r.Flags = []Flag{{System: text, Code: id, Display: given, Start: at, End: at, Origin: family, Source: src}, {}}
		}
		if set&32 != 0 {
			r.Consent = ConsentSummary{HasActiveConsent: set&64 != 0, OptedOut: set&128 != 0, UpdatedAt: at}
		}
		sameBytesAsJSON(t, &r)
	})
}
