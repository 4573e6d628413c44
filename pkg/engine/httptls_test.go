package engine_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/tlsconf/tlstest"
)

// TestHTTPSWithClientCertificates runs the HTTP listener with http.tls
// and a client CA: everything is served over TLS only; the FHIR endpoint
// takes posts only from a client presenting a certificate signed by the
// client CA, while probes, metrics, the capability statement and the
// admin API answer without one.
func TestHTTPSWithClientCertificates(t *testing.T) {
	pki, other := tlstest.PKI(t), tlstest.PKI(t)
	e, _ := startEngine(t, "http:\n  listen: 127.0.0.1:0\n  tls:\n    cert: file:"+pki["server.crt"]+"\n    key: file:"+pki["server.key"]+"\n    client_ca: file:"+pki["ca"]+"\n")
	base := "https://" + e.HTTPAddr().String()

	client := func(certFrom map[string]string) *http.Client {
		t.Helper()
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(readFile(t, pki["ca"])) {
			t.Fatal("CA not PEM")
		}
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if certFrom != nil {
			cert, err := tls.LoadX509KeyPair(certFrom["client.crt"], certFrom["client.key"])
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	patient := `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}]}`
	tests := []struct {
		name         string
		client       *http.Client
		method, path string
		want         int
		wantBody     string
	}{
		{"readiness without a client certificate", client(nil), http.MethodGet, "/readyz", http.StatusOK, "ready"},
		{"metrics without a client certificate", client(nil), http.MethodGet, "/metrics", http.StatusOK, "junction_"},
		{"capability statement says posts need one", client(nil), http.MethodGet, "/fhir/metadata", http.StatusOK, "mutual TLS"},
		{"admin API on loopback without one", client(nil), http.MethodGet, "/api/deadletters", http.StatusOK, ""},
		{"post without a client certificate", client(nil), http.MethodPost, "/fhir/Patient", http.StatusForbidden, "client certificate"},
		{"post with a client certificate", client(pki), http.MethodPost, "/fhir/Patient", http.StatusAccepted, "OperationOutcome"},
		{"plain HTTP to the TLS listener", &http.Client{Timeout: 10 * time.Second}, http.MethodGet, strings.Replace(base, "https", "http", 1) + "/readyz", http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.path
			if strings.HasPrefix(url, "/") {
				url = base + url
			}
			var body io.Reader
			if tt.method == http.MethodPost {
				body = strings.NewReader(patient)
			}
			req, err := http.NewRequest(tt.method, url, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/fhir+json")
			resp, err := tt.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.want || !strings.Contains(string(b), tt.wantBody) {
				t.Fatalf("%s %s: %d %s, want %d with %q", tt.method, tt.path, resp.StatusCode, b, tt.want, tt.wantBody)
			}
		})
	}
	t.Run("client certificate from another CA", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, base+"/fhir/Patient", strings.NewReader(patient))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/fhir+json")
		resp, err := client(other).Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("a certificate from another CA got %d, want a refused handshake", resp.StatusCode)
		}
	})
}

// TestClientCertificatesAuthenticateExposedFHIR: off loopback, the FHIR
// endpoint needs a bearer token unless the listener verifies client
// certificates; TLS alone is not enough.
func TestClientCertificatesAuthenticateExposedFHIR(t *testing.T) {
	pki := tlstest.PKI(t)
	tokFile := t.TempDir() + "/ops"
	if err := os.WriteFile(tokFile, []byte("ops-secret-5a1e-long-enough\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tls := "  tls:\n    cert: file:" + pki["server.crt"] + "\n    key: file:" + pki["server.key"] + "\n"
	tests := []struct {
		name, tls string
		ok        bool
	}{
		{"plain HTTP", "", false},
		{"TLS without client CA", tls, false},
		{"TLS with client CA", tls + "    client_ca: file:" + pki["ca"] + "\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := dir + "/junction.yaml"
			body := "data_dir: " + dir + "\nhttp:\n  listen: 0.0.0.0:0\n  tokens:\n    - {name: ops, role: operator, token: file:" + tokFile + "}\n" + tt.tls +
				"inputs:\n  fhir:\n    type: fhir\nroutes: [" + t.TempDir() + "]\n"
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatalf("config: %v", err)
			}
			_, err = engine.NewPlan(cfg, engine.NewRegistry(all.Factories()...))
			if tt.ok != (err == nil) {
				t.Fatalf("plan error %v, want success %v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "bearer_token: required") {
				t.Fatalf("plan error %v, want the bearer_token requirement", err)
			}
		})
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
