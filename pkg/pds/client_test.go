package pds_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/pds"
	"github.com/junction-fhir/junction/pkg/pds/pdstest"
)

// testToken is the synthetic access token the double accepts.
const testToken = "synthetic-access-token"

// secrets resolves references from a map.
type secrets map[string]string

func (s secrets) Resolve(ref string) (string, error) {
	v, ok := s[ref]
	if !ok {
		return "", errors.New("no such secret")
	}
	return v, nil
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// newClient returns a client of srv with the token reference resolving
// to token and short backoffs.
func newClient(t *testing.T, srv *pdstest.Server, token string) *pds.Client {
	t.Helper()
	c, err := pds.New(pds.Config{
		URL: srv.URL(), Token: "env:PDS_TOKEN", Timeout: 5 * time.Second,
		Backoff: 10 * time.Millisecond, MaxBackoff: 3 * time.Second,
	}, secrets{"env:PDS_TOKEN": token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestLookup(t *testing.T) {
	n := nhs.TestNumber
	invalid := n(0)[:9] + string(rune('0'+(int(n(0)[9]-'0')+1)%10))
	tests := []struct {
		name   string
		setup  func(s *pdstest.Server)
		token  string
		number string
		want   pds.Result
		// wantKind is the error kind, nil for success; wantStatus and
		// wantCode the HTTP status and PDS code the error reports.
		wantKind   error
		wantStatus int
		wantCode   string
		// wantRequests is how many requests reached the double.
		wantRequests int
		// minElapsed is the least time the lookup must take.
		minElapsed time.Duration
	}{
		{name: "found", number: n(0), want: pds.Result{NHSNumber: n(0), GPPractice: "Y12345", VersionID: "2"}, wantRequests: 1},
		{name: "found, number with spaces", number: n(1)[:3] + " " + n(1)[3:6] + " " + n(1)[6:],
			want: pds.Result{NHSNumber: n(1), GPPractice: "Y23456", VersionID: "3"}, wantRequests: 1},
		{name: "not registered", number: n(3), want: pds.Result{NHSNumber: n(3), VersionID: "5"}, wantRequests: 1},
		{name: "unknown", number: n(10), wantKind: pds.ErrNotFound, wantStatus: 404, wantCode: "RESOURCE_NOT_FOUND", wantRequests: 1},
		{name: "invalidated", setup: func(s *pdstest.Server) { s.Invalidate(n(11)) }, number: n(11),
			wantKind: pds.ErrNotFound, wantStatus: 404, wantCode: "INVALIDATED_RESOURCE", wantRequests: 1},
		{name: "invalid check digit, not sent", number: invalid, wantKind: pds.ErrInvalid, wantRequests: 0},
		{name: "restricted, practice withheld", number: n(2), want: pds.Result{NHSNumber: n(2), Restricted: true, VersionID: "4"}, wantRequests: 1},
		{name: "superseded", setup: func(s *pdstest.Server) { s.Supersede(n(12), n(1)) }, number: n(12),
			want: pds.Result{NHSNumber: n(1), Superseded: true, GPPractice: "Y23456", VersionID: "3"}, wantRequests: 1},
		{name: "429 then 200, honouring Retry-After", setup: func(s *pdstest.Server) {
			s.Script(pdstest.Failure{Status: http.StatusTooManyRequests, RetryAfter: "1"})
		}, number: n(0), want: pds.Result{NHSNumber: n(0), GPPractice: "Y12345", VersionID: "2"}, wantRequests: 2, minElapsed: time.Second},
		{name: "503 on every attempt", setup: func(s *pdstest.Server) {
			for range 3 {
				s.Script(pdstest.Failure{Status: http.StatusServiceUnavailable, RetryAfter: "0"})
			}
		}, number: n(0), wantKind: pds.ErrUnavailable, wantStatus: 503, wantCode: "SERVICE_UNAVAILABLE", wantRequests: 3},
		{name: "Retry-After beyond the longest wait", setup: func(s *pdstest.Server) {
			s.Script(pdstest.Failure{Status: http.StatusTooManyRequests, RetryAfter: "60"})
		}, number: n(0), wantKind: pds.ErrUnavailable, wantStatus: 429, wantCode: "TOO_MANY_REQUESTS", wantRequests: 1},
		{name: "wrong token, not retried", token: "another-token", number: n(0),
			wantKind: pds.ErrRefused, wantStatus: 401, wantCode: "ACCESS_DENIED", wantRequests: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := pdstest.NewServer(pdstest.Seed()...)
			defer srv.Close()
			srv.Token = testToken
			if tt.setup != nil {
				tt.setup(srv)
			}
			token := testToken
			if tt.token != "" {
				token = tt.token
			}
			c := newClient(t, srv, token)
			start := time.Now()
			got, err := c.Lookup(pds.WithCorrelationID(t.Context(), "corr-1"), tt.number)
			elapsed := time.Since(start)
			if tt.wantKind == nil {
				if err != nil {
					t.Fatalf("Lookup: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("result (-want +got):\n%s", diff)
				}
			} else {
				if !errors.Is(err, tt.wantKind) {
					t.Fatalf("Lookup error = %v, want kind %v", err, tt.wantKind)
				}
				var pe *pds.Error
				if !errors.As(err, &pe) || pe.Status != tt.wantStatus || pe.Code != tt.wantCode {
					t.Errorf("error = %#v, want status %d code %q", err, tt.wantStatus, tt.wantCode)
				}
				if strings.Contains(err.Error(), nhs.Normalize(tt.number)) || strings.Contains(err.Error(), "Y12345") {
					t.Errorf("error %q holds patient data", err)
				}
			}
			if elapsed < tt.minElapsed {
				t.Errorf("lookup took %v, want at least %v (Retry-After)", elapsed, tt.minElapsed)
			}
			reqs := srv.Requests()
			if len(reqs) != tt.wantRequests {
				t.Fatalf("requests = %d, want %d", len(reqs), tt.wantRequests)
			}
			for i, r := range reqs {
				if !uuidRE.MatchString(r.RequestID) {
					t.Errorf("request %d: X-Request-ID %q is not a version 4 UUID", i, r.RequestID)
				}
				if r.RequestID != reqs[0].RequestID {
					t.Errorf("request %d: X-Request-ID changed on retry", i)
				}
				if r.Authorization != "Bearer "+token || r.CorrelationID != "corr-1" {
					t.Errorf("request %d: Authorization %q, X-Correlation-ID %q", i, r.Authorization, r.CorrelationID)
				}
				if r.Path != "/Patient/"+nhs.Normalize(tt.number) {
					t.Errorf("request %d: path %q", i, r.Path)
				}
			}
		})
	}
}

// TestLookupTokenByReference reads the token for every request, so a
// rotated token is used, and refuses at construction a reference that
// does not resolve.
func TestLookupTokenByReference(t *testing.T) {
	srv := pdstest.NewServer(pdstest.Seed()...)
	defer srv.Close()
	sec := secrets{"env:PDS_TOKEN": "first-token"}
	c, err := pds.New(pds.Config{URL: srv.URL(), Token: "env:PDS_TOKEN"}, sec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for _, tok := range []string{"first-token", "rotated-token"} {
		sec["env:PDS_TOKEN"] = tok
		if _, err := c.Lookup(ctx, nhs.TestNumber(0)); err != nil {
			t.Fatal(err)
		}
	}
	reqs := srv.Requests()
	if len(reqs) != 2 || reqs[0].Authorization != "Bearer first-token" || reqs[1].Authorization != "Bearer rotated-token" {
		t.Errorf("requests = %+v", reqs)
	}
	if _, err := pds.New(pds.Config{URL: srv.URL(), Token: "env:MISSING"}, sec); !errors.Is(err, pds.ErrRefused) {
		t.Errorf("New with an unresolvable token: %v, want ErrRefused", err)
	}
	if _, err := pds.New(pds.Config{URL: "ftp://pds.example"}, sec); err == nil {
		t.Error("New accepted an ftp URL")
	}
}

var (
	jwtKeyOnce sync.Once
	jwtKey     *rsa.PrivateKey
)

// signingKey returns an RSA key generated for this test run and its
// PKCS#8 PEM (2048 bits to keep tests quick; NHS England asks for 4096).
func signingKey(t *testing.T) (*rsa.PrivateKey, string) {
	t.Helper()
	jwtKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		jwtKey = k
	})
	der, err := x509.MarshalPKCS8PrivateKey(jwtKey)
	if err != nil {
		t.Fatal(err)
	}
	return jwtKey, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// TestLookupSignedJWT looks patients up with the access token got by
// signed JWT authentication from the double's token endpoint.
func TestLookupSignedJWT(t *testing.T) {
	key, keyPEM := signingKey(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL + "/oauth2/token"
	dead.Close()
	tests := []struct {
		name string
		// kid is the kid the client signs with ("test-1" registered).
		kid string
		// tokenURL replaces the double's.
		tokenURL string
		// advance moves the double's clock between lookups.
		advance time.Duration
		// lookups are made in turn; want* describe the last.
		lookups      int
		wantKind     error
		wantInErr    string
		wantRequests int
		wantTokens   int
	}{
		{name: "token got and reused", lookups: 2, wantRequests: 2, wantTokens: 1},
		{name: "unknown kid refused, not retried", kid: "test-2", lookups: 1, wantKind: pds.ErrRefused,
			wantInErr: "HTTP 401 invalid_request (Invalid 'kid' header in client_assertion JWT - no matching public key)", wantRequests: 0, wantTokens: 1},
		{name: "token endpoint down, retried", tokenURL: deadURL, lookups: 1, wantKind: pds.ErrUnavailable, wantInErr: "after 3 attempts", wantRequests: 0},
		{name: "token expired early is refused, then replaced", advance: 61 * time.Second, lookups: 3, wantRequests: 3, wantTokens: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := pdstest.NewServer(pdstest.Seed()...)
			defer srv.Close()
			var mu sync.Mutex
			var offset time.Duration
			srv.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
			srv.TokenLifetime = time.Minute
			srv.RegisterKey("synthetic-api-key", "test-1", &key.PublicKey)
			kid, tokenURL := "test-1", srv.TokenURL()
			if tt.kid != "" {
				kid = tt.kid
			}
			if tt.tokenURL != "" {
				tokenURL = tt.tokenURL
			}
			c, err := pds.New(pds.Config{
				URL: srv.URL(), Timeout: 5 * time.Second, Backoff: 10 * time.Millisecond,
				Auth: pds.AuthConfig{TokenURL: tokenURL, APIKey: "env:PDS_API_KEY", PrivateKey: "file:/run/pds.pem", KID: kid},
			}, secrets{"env:PDS_API_KEY": "synthetic-api-key", "file:/run/pds.pem": keyPEM})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var err2 error
			for i := range tt.lookups {
				if i == 1 && tt.advance > 0 {
					mu.Lock()
					offset = tt.advance
					mu.Unlock()
					// The double now holds the token expired; the
					// client's clock does not.
					if _, err := c.Lookup(t.Context(), nhs.TestNumber(0)); !errors.Is(err, pds.ErrRefused) {
						t.Fatalf("lookup with a token the API holds expired: %v, want ErrRefused", err)
					}
					continue
				}
				_, err2 = c.Lookup(t.Context(), nhs.TestNumber(0))
				if i < tt.lookups-1 && err2 != nil {
					t.Fatalf("lookup %d: %v", i, err2)
				}
			}
			if tt.wantKind == nil {
				if err2 != nil {
					t.Fatalf("Lookup: %v", err2)
				}
			} else {
				if !errors.Is(err2, tt.wantKind) || !strings.Contains(err2.Error(), tt.wantInErr) {
					t.Fatalf("Lookup error %v, want kind %v saying %q", err2, tt.wantKind, tt.wantInErr)
				}
				if strings.Contains(err2.Error(), "synthetic-api-key") || strings.Contains(err2.Error(), "eyJ") {
					t.Errorf("error %q holds the API key or the assertion", err2)
				}
			}
			reqs, toks := srv.Requests(), srv.TokenRequests()
			if len(reqs) != tt.wantRequests || len(toks) != tt.wantTokens {
				t.Fatalf("PDS requests %d, token requests %d; want %d, %d (%+v)", len(reqs), len(toks), tt.wantRequests, tt.wantTokens, toks)
			}
			if len(reqs) > 0 {
				last := reqs[len(reqs)-1]
				if last.Status != 200 || !strings.HasPrefix(last.Authorization, "Bearer ") || len(last.Authorization) < 20 {
					t.Errorf("last PDS request %+v, want 200 with an issued bearer token", last)
				}
			}
		})
	}
	t.Run("token and auth together", func(t *testing.T) {
		_, err := pds.New(pds.Config{URL: "https://pds.example.nhs.uk/FHIR/R4", Token: "env:PDS_TOKEN",
			Auth: pds.AuthConfig{TokenURL: "https://pds.example.nhs.uk/oauth2/token", APIKey: "env:K", PrivateKey: "env:P", KID: "k"}}, secrets{})
		if err == nil || !strings.Contains(err.Error(), "token or auth, not both") {
			t.Errorf("New: %v, want token or auth, not both", err)
		}
	})
}
