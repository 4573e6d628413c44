package engine_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/pds/pdstest"
)

// TestPDSFillsGPPractice admits a patient without PD1 whom the PDS double
// knows as registered at Y12345: the admission is routed at once without
// the practice (the lookup is off the message path), the background
// lookup then writes the practice to the index, and the patient's next
// admission reaches the practice's destination through
// patient.gpPractice. It does so with the access token read from a
// secret, and with the token got by signed JWT authentication from the
// double's token endpoint.
func TestPDSFillsGPPractice(t *testing.T) {
	tests := []struct {
		name string
		// auth configures the double and returns the pds settings
		// giving the token.
		auth func(t *testing.T, srv *pdstest.Server) string
		// wantAuth is the Authorization PDS should see ("" for any
		// token the double issued).
		wantAuth string
		// wantTokens is how many token requests the double should see.
		wantTokens int
	}{
		{name: "token secret", auth: func(t *testing.T, srv *pdstest.Server) string {
			t.Setenv("JUNCTION_TEST_PDS_TOKEN", "synthetic-pds-token")
			srv.Token = "synthetic-pds-token"
			return "    token: env:JUNCTION_TEST_PDS_TOKEN\n"
		}, wantAuth: "Bearer synthetic-pds-token"},
		{name: "signed JWT", auth: func(t *testing.T, srv *pdstest.Server) string {
			// A key generated for this run (2048 bits for speed; NHS
			// England asks for 4096).
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			keyFile := filepath.Join(t.TempDir(), "pds.pem")
			pemText := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
			if err := os.WriteFile(keyFile, pemText, 0o600); err != nil {
				t.Fatal(err)
			}
			t.Setenv("JUNCTION_TEST_PDS_API_KEY", "synthetic-api-key")
			srv.RegisterKey("synthetic-api-key", "test-1", &key.PublicKey)
			return "    auth:\n      token_url: " + srv.TokenURL() + "\n      api_key: env:JUNCTION_TEST_PDS_API_KEY\n" +
				"      private_key: file:" + keyFile + "\n      kid: test-1\n"
		}, wantTokens: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := pdstest.NewServer(pdstest.Seed()...)
			defer srv.Close()
			auth := tt.auth(t, srv)
			registered := nhs.TestNumber(0) // Y12345 in the double's seed
			routes := writeRoutes(t, map[string]string{"by-gp.yaml": gpRoute})
			e, dir := startEngineWithRoutes(t, routes, fileDests("gp", "merged", "all")+
				"patient_index:\n  pds:\n    url: "+srv.URL()+"\n"+auth+"    refresh_after: 1h\n")
			addr := mllpAddr(t, e)
			if code, _ := send(t, addr, adtPatient("A01", "PDS0001", registered, "")); code != hl7v2.AckAA {
				t.Fatalf("ack %s", code)
			}
			waitFor(t, "the practice from PDS in the index", func() bool {
				rec, err := e.PatientIndex().Get(context.Background(), registered)
				return err == nil && rec.GPPractice == "Y12345" && rec.PDS.Outcome == "found"
			})
			if code, _ := send(t, addr, adtPatient("A01", "PDS0002", registered, "")); code != hl7v2.AckAA {
				t.Fatalf("ack %s", code)
			}
			gp := readAll(t, waitFiles(t, filepath.Join(dir, "out", "gp"), 1))
			if !strings.Contains(gp[0], "PDS0002") {
				t.Errorf("the practice received the wrong admission")
			}
			waitFiles(t, filepath.Join(dir, "out", "all"), 2)
			if v := testutil.ToFloat64(e.Metrics().PDSLookups.WithLabelValues("found")); v != 1 {
				t.Errorf("lookups found = %v, want 1 (the second admission is not due)", v)
			}
			reqs := srv.Requests()
			if len(reqs) != 1 || !strings.HasPrefix(reqs[0].Authorization, "Bearer ") || reqs[0].Status != 200 ||
				tt.wantAuth != "" && reqs[0].Authorization != tt.wantAuth {
				t.Errorf("PDS requests = %+v, want one authorised 200", reqs)
			}
			if toks := srv.TokenRequests(); len(toks) != tt.wantTokens {
				t.Errorf("token requests = %+v, want %d", toks, tt.wantTokens)
			}
		})
	}
}
