package consentstore

import (
	"context"
	"errors"
	"testing"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/fault"
)

// recorder is a ConsentWriter that keeps what it was given and fails as
// told.
type recorder struct {
	got  []string
	fail error
}

func (r *recorder) WriteConsent(_ context.Context, c []byte) error {
	if r.fail != nil {
		return r.fail
	}
	r.got = append(r.got, string(c))
	return nil
}

const consentA = `{"resourceType":"Consent","id":"a"}`
const consentB = `{"resourceType":"Consent","id":"b"}`

func TestSend(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		fail      error
		want      []string
		wantCode  fault.Code
		transient bool
	}{
		{name: "a Consent", body: consentA, want: []string{consentA}},
		{name: "a Bundle's Consents, other entries ignored",
			body: `{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + consentA + `},{"resource":{"resourceType":"Patient"}},{},{"resource":` + consentB + `}]}`,
			want: []string{consentA, consentB}},
		{name: "a Bundle without Consents", body: `{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"}}]}`, wantCode: fault.CodeFHIRInvalid},
		{name: "another resource", body: `{"resourceType":"Patient"}`, wantCode: fault.CodeFHIRInvalid},
		{name: "not JSON", body: `MSH|^~\&|`, wantCode: fault.CodeFHIRInvalidJSON},
		{name: "outside the profile", body: consentA, fail: consent.Issues{{Code: "invalid", Location: "Consent.scope", Message: "required"}}, wantCode: fault.CodeDestRejected},
		{name: "store unavailable", body: consentA, fail: errors.New("nats: timeout"), wantCode: fault.CodeStoreUnavailable, transient: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &recorder{fail: tc.fail}
			out, err := Factory{}.NewOutbound(t.Context(), adapter.Settings{Consents: w}, &Config{})
			if err != nil {
				t.Fatal(err)
			}
			rc, err := out.Send(t.Context(), &adapter.Delivery{Body: []byte(tc.body)})
			if tc.wantCode != "" {
				f := fault.As(err)
				if f == nil || f.Code != tc.wantCode || (f.Class == fault.Transient) != tc.transient {
					t.Fatalf("err = %v, want code %s (transient %v)", err, tc.wantCode, tc.transient)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rc.Status != StatusStored || len(w.got) != len(tc.want) {
				t.Fatalf("receipt %+v, stored %d, want %d", rc, len(w.got), len(tc.want))
			}
			for i := range tc.want {
				if w.got[i] != tc.want[i] {
					t.Errorf("stored[%d] = %s, want %s", i, w.got[i], tc.want[i])
				}
			}
		})
	}
}

func TestNeedsTheConsentEngine(t *testing.T) {
	_, err := Factory{}.NewOutbound(t.Context(), adapter.Settings{}, &Config{})
	if fault.CodeOf(err) != fault.CodeConfig {
		t.Errorf("err = %v, want a config fault", err)
	}
}
