package engine_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/jstest"
)

// TestPatientHashKeyLostWithConsentsStored: the generated patient hash
// key is kept in the consent_key bucket. When that bucket is lost (a
// restore without it, a damaged disk) while Consents or opt-outs are
// stored under the key, a new key would find none of them and their
// denials would stop applying: PatientHashKey refuses rather than make
// one. With nothing stored under the old key, a new key is made.
func TestPatientHashKeyLostWithConsentsStored(t *testing.T) {
	tests := []struct {
		name    string
		bucket  string // a bucket holding an entry; "" for none
		refused bool
	}{
		{"nothing keyed by it", "", false},
		{"consents stored", consent.DefaultConsentBucket, true},
		{"opt-outs stored", consent.DefaultOptOutBucket, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := jstest.Start(t, "hashkey")
			cc := config.ConsentConfig{}
			first, generated, err := engine.PatientHashKey(t.Context(), js, config.Secrets{}, cc, bucket.Policy{})
			if err != nil || !generated {
				t.Fatalf("first PatientHashKey = generated %v, %v", generated, err)
			}
			if tc.bucket != "" {
				kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: tc.bucket})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := kv.Put(t.Context(), engine.PatientHash(first, "9990000018"), []byte("{}")); err != nil {
					t.Fatal(err)
				}
			}
			if err := js.DeleteStream(t.Context(), "KV_consent_key"); err != nil {
				t.Fatal(err)
			}
			second, _, err := engine.PatientHashKey(t.Context(), js, config.Secrets{}, cc, bucket.Policy{})
			if tc.refused {
				if err == nil {
					t.Fatalf("PatientHashKey made a new key (same as before: %v) with %s holding entries under the lost one", bytes.Equal(first, second), tc.bucket)
				}
				if !strings.Contains(err.Error(), "patient hash key is gone") {
					t.Errorf("error %q does not say the key is gone", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("PatientHashKey with nothing stored under the lost key: %v", err)
			}
		})
	}
}
