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
			sameAsJSON(t, []byte(tt.val))
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
			sameAsJSON(t, val)
		})
	}
}

// sameAsJSON fails t unless decodeIdentifierRef and json.Unmarshal agree
// on val: both fail, or both give the same entry.
func sameAsJSON(t *testing.T, val []byte) {
	t.Helper()
	var want, got identifierRef
	wantErr := json.Unmarshal(val, &want)
	gotErr := decodeIdentifierRef(val, &got)
	if (gotErr != nil) != (wantErr != nil) {
		t.Fatalf("error %v, json.Unmarshal's %v", gotErr, wantErr)
	}
	if gotErr != nil {
		return
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entry (-json.Unmarshal +got):\n%s", diff)
	}
	wName, wOffset := want.Source.Received.Zone()
	gName, gOffset := got.Source.Received.Zone()
	if wName != gName || wOffset != gOffset {
		t.Errorf("time zone %q %d, json.Unmarshal's %q %d", gName, gOffset, wName, wOffset)
	}
}

// FuzzDecodeIdentifierRef checks that decodeIdentifierRef agrees with
// json.Unmarshal on any input.
func FuzzDecodeIdentifierRef(f *testing.F) {
	for _, tt := range refCases {
		f.Add([]byte(tt.val))
	}
	f.Fuzz(sameAsJSON)
}
