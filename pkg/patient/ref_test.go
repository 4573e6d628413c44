package patient

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// refCases are stored identifier entries: the forms json.Marshal writes,
// and others encoding/json reads.
var refCases = []struct {
	name string
	val  string
	fast bool // json.Marshal's form, read without encoding/json
}{
	{"written", `{"record":"p.0a1b","source":{"messageId":"01JTESTREF","received":"2024-07-15T08:36:00.123456789Z"}}`, true},
	{"no message id", `{"record":"p.0a1b","source":{"received":"2024-07-15T08:36:00Z"}}`, true},
	{"no time", `{"record":"p.0a1b","source":{"messageId":"01JTESTREF"}}`, true},
	{"empty source", `{"record":"p.0a1b","source":{}}`, true},
	{"offset time", `{"record":"p.0a1b","source":{"messageId":"m","received":"2024-07-15T08:36:00+01:00"}}`, true},
	{"spaces", `{"record": "p.0a1b", "source": {}}`, false},
	{"keys reordered", `{"source":{"messageId":"m"},"record":"p.0a1b"}`, false},
	{"extra key", `{"record":"p.0a1b","source":{},"x":1}`, false},
	{"escape", `{"record":"p.\u0030","source":{}}`, false},
	{"non-ASCII", `{"record":"p.é","source":{}}`, false},
	{"invalid UTF-8", "{\"record\":\"p.\xff\",\"source\":{}}", false},
	{"empty message id", `{"record":"p.0a1b","source":{"messageId":""}}`, false},
	{"zero time", `{"record":"p.0a1b","source":{"received":"0001-01-01T00:00:00Z"}}`, false},
	{"bad time", `{"record":"p.0a1b","source":{"received":"yesterday"}}`, false},
	{"no source", `{"record":"p.0a1b"}`, false},
	{"trailing bytes", `{"record":"p.0a1b","source":{}}x`, false},
	{"null", `null`, false},
	{"truncated", `{"record":"p.0a1b","source":{"messageId":"m`, false},
}

// TestDecodeIdentifierRef checks that a stored identifier entry decodes
// to what json.Unmarshal makes of it, reading json.Marshal's form without
// encoding/json.
func TestDecodeIdentifierRef(t *testing.T) {
	for _, tt := range refCases {
		t.Run(tt.name, func(t *testing.T) {
			var fast identifierRef
			if got := fastIdentifierRef([]byte(tt.val), &fast); got != tt.fast {
				t.Errorf("read without encoding/json: %t, want %t", got, tt.fast)
			}
			sameAsJSON(t, []byte(tt.val), decodeIdentifierRef)
		})
	}
}

// TestDecodeIdentifierRefWritten checks that the entries pointIdentifier
// writes are read without encoding/json.
func TestDecodeIdentifierRefWritten(t *testing.T) {
	at := time.Date(2024, 7, 15, 8, 36, 0, 120000000, time.UTC)
	tests := []struct {
		name string
		ref  identifierRef
	}{
		{"full", identifierRef{Record: "p.0a1b", Source: Source{MessageID: "01JTESTREF", Received: at}}},
		{"zone", identifierRef{Record: "p.0a1b", Source: Source{MessageID: "01JTESTREF", Received: at.In(time.FixedZone("", 3600))}}},
		{"empty", identifierRef{Record: "p.0a1b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			val, err := json.Marshal(tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			var got identifierRef
			if !fastIdentifierRef(val, &got) {
				t.Errorf("%s not read without encoding/json", val)
			}
			sameAsJSON(t, val, decodeIdentifierRef)
		})
	}
}

// sameAsJSON fails t unless decode and json.Unmarshal agree on val:
// both fail, or both give the same value, times in the same zones.
func sameAsJSON[T any](t *testing.T, val []byte, decode func([]byte, *T) error) {
	t.Helper()
	var want, got T
	wantErr := json.Unmarshal(val, &want)
	gotErr := decode(val, &got)
	if (gotErr != nil) != (wantErr != nil) {
		t.Fatalf("error %v, json.Unmarshal's %v", gotErr, wantErr)
	}
	if gotErr != nil {
		return
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded (-json.Unmarshal +got):\n%s", diff)
	}
	// Times compare by instant above; written again they show their
	// zones too.
	w, werr := json.Marshal(want)
	g, gerr := json.Marshal(got)
	if werr != nil || gerr != nil || string(w) != string(g) {
		t.Errorf("written again %s (%v), json.Unmarshal's %s (%v)", g, gerr, w, werr)
	}
}

// FuzzDecodeIdentifierRef checks that decodeIdentifierRef agrees with
// json.Unmarshal on any input.
func FuzzDecodeIdentifierRef(f *testing.F) {
	for _, tt := range refCases {
		f.Add([]byte(tt.val))
	}
	f.Fuzz(func(t *testing.T, val []byte) { sameAsJSON(t, val, decodeIdentifierRef) })
}

// recordCases are records as the index writes them.
func recordCases() []struct {
	name string
	rec  Record
	fast bool // read without encoding/json
} {
	at := time.Date(2024, 7, 15, 8, 36, 0, 123456789, time.UTC)
	src := Source{MessageID: "01JTESTREC", Received: at}
	return []struct {
		name string
		rec  Record
		fast bool
	}{
		{"number only", Record{NHSNumber: "9990000018"}, true},
		{"no number", Record{}, true},
		{"demographics", Record{NHSNumber: "9990000018", Identifiers: []Identifier{local("A1"), {System: "other", Value: "B2"}},
			Family: "Smith", Given: []string{"Jo", "Ann"}, BirthDate: "1980-02-29", Gender: "female", Postcode: "LS1 4AB",
			Deceased: true, GPPractice: "Y99999", GP: "G9999998", GPSource: src, UpdatedAt: at, MessageID: "01JTESTREC"}, true},
		{"everything", Record{NHSNumber: "9990000018", Identifiers: []Identifier{local("A1")}, Family: "Smith", Given: []string{"Jo"},
			BirthDate: "1980", Gender: "unknown", Postcode: "LS1 4AB", Deceased: true, GPPractice: "Y99999", GP: "G9999998",
			GPSource: Source{Received: at},
			PDS:      PDSCheck{CheckedAt: at, Outcome: "found", VersionID: "3", GPPractice: "Y99999"},
			Flags: []Flag{
				{System: "https://example.org/flags", Code: "CP", Display: "Child protection plan", Start: at, End: at.Add(time.Hour),
					Origin: "socialcare/LA-E09000033", Source: src},
				{System: "s", Code: "c", Source: Source{MessageID: "m"}},
				{},
			},
			Consent:    ConsentSummary{HasActiveConsent: true, OptedOut: true, UpdatedAt: at},
			Restricted: true, RestrictedSource: src, MergedInto: "9990000026", MergeSource: src,
			UpdatedAt: at.In(time.FixedZone("", -5*3600)), MessageID: "01JTESTREC"}, true},
		{"consent only opted out", Record{NHSNumber: "9990000018", Consent: ConsentSummary{OptedOut: true}}, true},
		{"pds not found", Record{NHSNumber: "9990000018", PDS: PDSCheck{CheckedAt: at, Outcome: "not_found"}}, true},
		{"merged", Record{NHSNumber: "9990000018", MergedInto: "9990000026", MergeSource: src}, true},
		{"name not ASCII", Record{NHSNumber: "9990000018", Family: "Ó Briain", Given: []string{"Siân"}}, false},
		{"name escaped", Record{NHSNumber: "9990000018", Family: "O'Neil <Jr> & \"Co\""}, false},
	}
}

// TestDecodeRecord checks that a stored record decodes to what
// json.Unmarshal makes of it, reading json.Marshal's form without
// encoding/json.
func TestDecodeRecord(t *testing.T) {
	for _, tt := range recordCases() {
		t.Run(tt.name, func(t *testing.T) {
			val, err := json.Marshal(&tt.rec)
			if err != nil {
				t.Fatal(err)
			}
			var r Record
			if got := fastRecord(val, &r); got != tt.fast {
				t.Errorf("%s read without encoding/json: %t, want %t", val, got, tt.fast)
			}
			sameAsJSON(t, val, decodeRecordJSON)
		})
	}
	others := []struct{ name, val string }{
		{"spaces", `{"nhsNumber": "9990000018"}`},
		{"reordered", `{"family":"Smith","nhsNumber":"9990000018"}`},
		{"repeated", `{"nhsNumber":"9990000018","nhsNumber":"9990000026"}`},
		{"unknown field", `{"nhsNumber":"9990000018","x":1}`},
		{"other case", `{"NHSNumber":"9990000018"}`},
		{"empty arrays", `{"nhsNumber":"9990000018","identifiers":[],"given":[],"flags":[]}`},
		{"null given", `{"nhsNumber":"9990000018","given":null}`},
		{"false", `{"nhsNumber":"9990000018","deceased":false}`},
		{"empty object", `{"nhsNumber":"9990000018","pds":{}}`},
		{"empty string", `{"nhsNumber":"9990000018","family":""}`},
		{"zero time", `{"nhsNumber":"9990000018","updatedAt":"0001-01-01T00:00:00Z"}`},
		{"bad time", `{"nhsNumber":"9990000018","updatedAt":"today"}`},
		{"number", `{"nhsNumber":9990000018}`},
		{"truncated", `{"nhsNumber":"9990000018","given":["Jo"`},
		{"trailing", `{"nhsNumber":"9990000018"}{}`},
		{"not an object", `[]`},
	}
	for _, tt := range others {
		t.Run(tt.name, func(t *testing.T) {
			var r Record
			if fastRecord([]byte(tt.val), &r) {
				t.Errorf("%s read without encoding/json", tt.val)
			}
			sameAsJSON(t, []byte(tt.val), decodeRecordJSON)
		})
	}
}

// FuzzDecodeRecord checks that decodeRecordJSON agrees with
// json.Unmarshal on any input.
func FuzzDecodeRecord(f *testing.F) {
	for _, tt := range recordCases() {
		val, err := json.Marshal(&tt.rec)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(val)
	}
	f.Fuzz(func(t *testing.T, val []byte) { sameAsJSON(t, val, decodeRecordJSON) })
}
