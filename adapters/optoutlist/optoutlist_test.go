package optoutlist

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/fault"
)

// loader is an OptOutLoader that keeps what it was given and answers as
// told.
type loader struct {
	got  []string
	asOf []time.Time
	sum  adapter.OptOutSummary
	fail error
}

func (l *loader) LoadOptOuts(_ context.Context, extract []byte, asOf time.Time) (adapter.OptOutSummary, error) {
	if l.fail != nil {
		return adapter.OptOutSummary{}, l.fail
	}
	l.got = append(l.got, string(extract))
	l.asOf = append(l.asOf, asOf)
	return l.sum, nil
}

// Synthetic NHS numbers (999 range, valid check digits).
const list = "NHS_NUMBER\n9990000026\n9990000034\n"

var list64 = base64.StdEncoding.EncodeToString([]byte(list))

func binary(contentType, data, lastUpdated string) string {
	meta := ""
	if lastUpdated != "" {
		meta = `"meta":{"lastUpdated":"` + lastUpdated + `"},`
	}
	return `{"resourceType":"Binary",` + meta + `"contentType":"` + contentType + `","data":"` + data + `"}`
}

func bundle(entries ...string) string {
	var es []string
	for _, e := range entries {
		es = append(es, `{"resource":`+e+`}`)
	}
	return `{"resourceType":"Bundle","type":"collection","entry":[` + strings.Join(es, ",") + `]}`
}

func TestSend(t *testing.T) {
	day := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	docRef := func(att, date string) string {
		return `{"resourceType":"DocumentReference","status":"current",` + date + `"content":[{"attachment":` + att + `}]}`
	}
	tests := []struct {
		name     string
		body     string
		sum      adapter.OptOutSummary
		fail     error
		wantAsOf time.Time
		wantCode fault.Code
		// wantStatus is the receipt status; wantReason a part of the
		// fault's message.
		wantStatus, wantReason string
		transient              bool
	}{
		{name: "a Binary", body: binary("text/csv", list64, "2026-12-01T06:00:00Z"), sum: adapter.OptOutSummary{Accepted: 2}, wantAsOf: day, wantStatus: StatusLoaded},
		{name: "a Binary in a Bundle", body: bundle(`{"resourceType":"Patient"}`, binary("text/csv; charset=utf-8", list64, "2026-12-01T06:00:00Z")), wantAsOf: day, wantStatus: StatusLoaded},
		{name: "text/plain", body: binary("text/plain", list64, "2026-12-01"), wantAsOf: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), wantStatus: StatusLoaded},
		// A date is the start of that English day: midnight BST in summer.
		{name: "dated in summer", body: binary("text/plain", list64, "2026-07-01"), wantAsOf: time.Date(2026, 6, 30, 23, 0, 0, 0, time.UTC), wantStatus: StatusLoaded},
		{name: "a DocumentReference dated by the attachment", body: docRef(`{"contentType":"text/csv","data":"`+list64+`","creation":"2026-12-01T06:00:00Z"}`, `"date":"2026-11-01T00:00:00Z",`), wantAsOf: day, wantStatus: StatusLoaded},
		{name: "a DocumentReference dated by itself", body: docRef(`{"contentType":"text/csv","data":"`+list64+`"}`, `"date":"2026-12-01T07:00:00+01:00",`), wantAsOf: day, wantStatus: StatusLoaded},
		{name: "an older list", body: binary("text/csv", list64, "2026-12-01T06:00:00Z"), sum: adapter.OptOutSummary{Superseded: true}, wantAsOf: day, wantStatus: StatusSuperseded},
		{name: "not JSON", body: "9990000026\n", wantCode: fault.CodeFHIRInvalidJSON, wantReason: "not FHIR JSON"},
		{name: "a Patient", body: `{"resourceType":"Patient"}`, wantCode: fault.CodeFHIRInvalid, wantReason: `"Patient"`},
		{name: "a Bundle without a list", body: bundle(`{"resourceType":"Patient"}`), wantCode: fault.CodeFHIRInvalid, wantReason: "no Binary"},
		{name: "a Bundle with two lists", body: bundle(binary("text/csv", list64, "2026-12-01"), binary("text/csv", list64, "2026-12-01")), wantCode: fault.CodeFHIRInvalid, wantReason: "2 Binary"},
		{name: "no date", body: binary("text/csv", list64, ""), wantCode: fault.CodeFHIRInvalid, wantReason: "date is missing"},
		{name: "a date without a zone", body: binary("text/csv", list64, "2026-12-01T06:00:00"), wantCode: fault.CodeFHIRInvalid, wantReason: "not a FHIR date"},
		{name: "not base64", body: binary("text/csv", "99900000*26", "2026-12-01"), wantCode: fault.CodeFHIRInvalid, wantReason: "not base64"},
		{name: "another content type", body: binary("application/pdf", list64, "2026-12-01"), wantCode: fault.CodeFHIRInvalid, wantReason: "text/csv"},
		{name: "no content type", body: binary("", list64, "2026-12-01"), wantCode: fault.CodeFHIRInvalid, wantReason: "contentType is required"},
		{name: "no data", body: binary("text/csv", "", "2026-12-01"), wantCode: fault.CodeFHIRInvalid, wantReason: "data is empty"},
		{name: "by url", body: docRef(`{"contentType":"text/csv","url":"https://example.org/list.csv","creation":"2026-12-01"}`, ""), wantCode: fault.CodeFHIRInvalid, wantReason: "not fetched"},
		{name: "refused by the loader", body: binary("text/csv", list64, "2026-12-01"), fail: fault.New(fault.CodeDestRejected, "optout-list: no valid number"), wantCode: fault.CodeDestRejected, wantReason: "no valid number"},
		{name: "store down", body: binary("text/csv", list64, "2026-12-01"), fail: fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "optout-list: storing", errors.New("timeout")), wantCode: fault.CodeStoreUnavailable, transient: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &loader{sum: tt.sum, fail: tt.fail}
			out, err := Factory{}.NewOutbound(context.Background(), adapter.Settings{OptOuts: l}, &Config{})
			if err != nil {
				t.Fatal(err)
			}
			rc, err := out.Send(context.Background(), &adapter.Delivery{Body: []byte(tt.body)})
			if tt.wantCode != "" {
				f := fault.As(err)
				if f == nil || f.Code != tt.wantCode || !strings.Contains(f.Msg, tt.wantReason) {
					t.Fatalf("err = %v, want %s holding %q", err, tt.wantCode, tt.wantReason)
				}
				if (f.Class == fault.Transient) != tt.transient {
					t.Errorf("class %v, want transient %v", f.Class, tt.transient)
				}
				if strings.Contains(err.Error(), "9990000") {
					t.Errorf("the fault holds an NHS number: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rc.Status != tt.wantStatus {
				t.Errorf("status %q, want %q", rc.Status, tt.wantStatus)
			}
			if len(l.got) != 1 || l.got[0] != list {
				t.Fatalf("loaded %q, want the decoded list", l.got)
			}
			if !l.asOf[0].Equal(tt.wantAsOf) {
				t.Errorf("as of %v, want %v", l.asOf[0], tt.wantAsOf)
			}
			if strings.Contains(rc.Location+rc.Reply, "9990000") {
				t.Errorf("the receipt holds an NHS number: %+v", rc)
			}
		})
	}
}

func TestReceiptReportsInvalidLines(t *testing.T) {
	l := &loader{sum: adapter.OptOutSummary{Accepted: 1, Invalid: 2, InvalidLines: []int{3, 7}}}
	out, err := Factory{}.NewOutbound(context.Background(), adapter.Settings{OptOuts: l}, &Config{})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := out.Send(context.Background(), &adapter.Delivery{Body: []byte(binary("text/csv", list64, "2026-12-01"))})
	if err != nil {
		t.Fatal(err)
	}
	if want := "1 NHS number(s), 2 invalid line(s) (lines 3, 7), as of 2026-12-01T00:00:00Z"; rc.Location != want {
		t.Errorf("location %q, want %q", rc.Location, want)
	}
}

func TestNeedsTheConsentEngine(t *testing.T) {
	_, err := Factory{}.NewOutbound(context.Background(), adapter.Settings{}, &Config{})
	if f := fault.As(err); f == nil || f.Code != fault.CodeConfig {
		t.Fatalf("err = %v, want a config fault", err)
	}
}
