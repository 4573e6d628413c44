package pds

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	c := &Client{now: func() time.Time { return time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC) }}
	const n = "9990000018"
	gp := func(system, value, start, end string) string {
		return `{"type": "Organization", "identifier": {"system": "` + system + `", "value": "` + value +
			`", "period": {"start": "` + start + `", "end": "` + end + `"}}}`
	}
	patientWith := func(gps ...string) string {
		s := `{"resourceType": "Patient", "id": "` + n + `", "meta": {"versionId": "7"}, "generalPractitioner": [`
		for i, g := range gps {
			if i > 0 {
				s += ","
			}
			s += g
		}
		return s + "]}"
	}
	ods := "https://fhir.nhs.uk/Id/ods-organization-code"
	tests := []struct {
		name    string
		body    string
		want    Result
		wantErr bool
	}{
		{name: "current practice", body: patientWith(gp(ods, "y12345", "2020-01-01", "")), want: Result{NHSNumber: n, GPPractice: "Y12345", VersionID: "7"}},
		{name: "legacy ODS system", body: patientWith(gp(SystemODSLegacy, "Y12345", "", "")), want: Result{NHSNumber: n, GPPractice: "Y12345", VersionID: "7"}},
		{name: "ended registration skipped", body: patientWith(gp(ods, "Y11111", "2010-01-01", "2019-12-31"), gp(ods, "Y22222", "2020-01-01", "")),
			want: Result{NHSNumber: n, GPPractice: "Y22222", VersionID: "7"}},
		{name: "future registration skipped", body: patientWith(gp(ods, "Y33333", "2027-01-01", "")), want: Result{NHSNumber: n, VersionID: "7"}},
		{name: "ends today still current", body: patientWith(gp(ods, "Y44444", "", "2026-12-02")), want: Result{NHSNumber: n, GPPractice: "Y44444", VersionID: "7"}},
		{name: "other system ignored", body: patientWith(gp("https://example.org/other", "Y55555", "", "")), want: Result{NHSNumber: n, VersionID: "7"}},
		{name: "GMP code of a practitioner", body: patientWith(`{"type": "Practitioner", "identifier": {"system": "https://fhir.hl7.org.uk/Id/gmp-number", "value": "G1234567"}}`),
			want: Result{NHSNumber: n, GP: "G1234567", VersionID: "7"}},
		{name: "restricted by either system", body: `{"resourceType": "Patient", "id": "` + n + `", "meta": {"security": [{"system": "https://www.hl7.org/fhir/valueset-security-labels.html", "code": "R"}]}}`,
			want: Result{NHSNumber: n, Restricted: true}},
		{name: "superseded", body: `{"resourceType": "Patient", "id": "9990000026"}`, want: Result{NHSNumber: "9990000026", Superseded: true}},
		{name: "not a Patient", body: `{"resourceType": "OperationOutcome"}`, wantErr: true},
		{name: "id not an NHS number", body: `{"resourceType": "Patient", "id": "abc"}`, wantErr: true},
		{name: "not JSON", body: `<Patient/>`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.parse([]byte(tt.body), n)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parse error = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	oo := func(code string) []byte {
		return []byte(`{"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "x", "details": {"coding": [{"code": "` + code + `"}]}}]}`)
	}
	tests := []struct {
		status   int
		body     []byte
		wantKind error
		wantCode string
	}{
		{400, oo("INVALID_RESOURCE_ID"), ErrInvalid, "INVALID_RESOURCE_ID"},
		{400, oo("MISSING_VALUE"), ErrRefused, "MISSING_VALUE"},
		{401, oo("ACCESS_DENIED"), ErrRefused, "ACCESS_DENIED"},
		{403, nil, ErrRefused, ""},
		{404, oo("RESOURCE_NOT_FOUND"), ErrNotFound, "RESOURCE_NOT_FOUND"},
		{408, oo("UNABLE_TO_CALL_SERVICE"), ErrUnavailable, "UNABLE_TO_CALL_SERVICE"},
		{429, oo("TOO_MANY_REQUESTS"), ErrUnavailable, "TOO_MANY_REQUESTS"},
		{502, []byte("<html>bad gateway</html>"), ErrUnavailable, ""},
		// A code that could carry data is not taken into the error.
		{404, oo("not found: 9990000018 Smith"), ErrNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status)+" "+tt.wantCode, func(t *testing.T) {
			e := classify(tt.status, tt.body)
			if !errors.Is(e, tt.wantKind) || e.Code != tt.wantCode || e.Status != tt.status {
				t.Errorf("classify = %v (code %q), want kind %v code %q", e, e.Code, tt.wantKind, tt.wantCode)
			}
		})
	}
}

// TestParseTodayInEngland checks that a GP registration's period, in
// English calendar dates, is compared with today's date in England: from
// midnight to 01:00 BST the UTC date is still yesterday's.
func TestParseTodayInEngland(t *testing.T) {
	const n = "9990000018"
	ods := "https://fhir.nhs.uk/Id/ods-organization-code"
	body := `{"resourceType": "Patient", "id": "` + n + `", "generalPractitioner": [` +
		`{"type": "Organization", "identifier": {"system": "` + ods + `", "value": "Y66666", "period": {"start": "2020-01-01", "end": "2026-07-15"}}},` +
		`{"type": "Organization", "identifier": {"system": "` + ods + `", "value": "Y77777", "period": {"start": "2026-07-16"}}}]}`
	tests := []struct {
		name     string
		now      time.Time
		practice string
	}{
		{"00:30 BST on the 16th", time.Date(2026, 7, 15, 23, 30, 0, 0, time.UTC), "Y77777"},
		{"23:30 BST on the 15th", time.Date(2026, 7, 15, 22, 30, 0, 0, time.UTC), "Y66666"},
		{"00:30 GMT, winter", time.Date(2026, 12, 2, 0, 30, 0, 0, time.UTC), "Y77777"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Client{now: func() time.Time { return tt.now }}
			got, err := c.parse([]byte(body), n)
			if err != nil {
				t.Fatal(err)
			}
			if got.GPPractice != tt.practice {
				t.Errorf("practice %q, want %q", got.GPPractice, tt.practice)
			}
		})
	}
}
