package pds

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
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

	"github.com/junction-fhir/junction/pkg/pds/pdstest"
)

const (
	authAPIKey = "synthetic-api-key"
	authKID    = "test-1"
)

var (
	authKeyOnce sync.Once
	authKey     *rsa.PrivateKey
)

// testKey returns an RSA key generated for this test run (2048 bits to
// keep tests quick; NHS England asks for 4096 in production).
func testKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	authKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		authKey = k
	})
	return authKey
}

func pkcs1PEM(k *rsa.PrivateKey) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
}

func pkcs8PEM(t *testing.T, k any) string {
	t.Helper()
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b}))
}

// mapSecrets resolves references from a map.
type mapSecrets map[string]string

func (s mapSecrets) Resolve(ref string) (string, error) {
	v, ok := s[ref]
	if !ok {
		return "", errors.New("no such secret")
	}
	return v, nil
}

// clock is a settable time for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestSource returns a token source for tokenURL signing with k, on
// clk.
func newTestSource(t *testing.T, tokenURL string, k *rsa.PrivateKey, clk *clock) *TokenSource {
	t.Helper()
	ts, err := NewTokenSource(AuthConfig{TokenURL: tokenURL, APIKey: "env:API_KEY", PrivateKey: "file:/run/key.pem", KID: authKID},
		mapSecrets{"env:API_KEY": authAPIKey, "file:/run/key.pem": pkcs1PEM(k)})
	if err != nil {
		t.Fatal(err)
	}
	ts.now = clk.Now
	return ts
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestAssertion checks the signed JWT: header, claims and an RS512
// signature that verifies with the public key.
func TestAssertion(t *testing.T) {
	k := testKey(t)
	clk := &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	const tokenURL = "https://int.api.service.nhs.uk/oauth2/token"
	ts := newTestSource(t, tokenURL, k, clk)
	first, err := ts.Assertion(clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	second, err := ts.Assertion(clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	decode := func(t *testing.T, part string, v any) {
		t.Helper()
		if strings.ContainsAny(part, "=+/") {
			t.Errorf("part %q is not base64url without padding", part)
		}
		b, err := base64.RawURLEncoding.DecodeString(part)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	type claims struct {
		Iss, Sub, Aud, Jti string
		Exp                int64
	}
	var jtis []string
	for i, jwt := range []string{first, second} {
		parts := strings.Split(jwt, ".")
		if len(parts) != 3 {
			t.Fatalf("assertion %d has %d parts", i, len(parts))
		}
		var h map[string]any
		decode(t, parts[0], &h)
		if diff := cmp.Diff(map[string]any{"alg": "RS512", "typ": "JWT", "kid": authKID}, h); diff != "" {
			t.Errorf("header (-want +got):\n%s", diff)
		}
		var c claims
		decode(t, parts[1], &c)
		want := claims{Iss: authAPIKey, Sub: authAPIKey, Aud: tokenURL, Jti: c.Jti, Exp: clk.Now().Add(4 * time.Minute).Unix()}
		if diff := cmp.Diff(want, c); diff != "" {
			t.Errorf("claims (-want +got):\n%s", diff)
		}
		if time.Unix(c.Exp, 0).Sub(clk.Now()) > 5*time.Minute {
			t.Errorf("exp more than 5 minutes ahead")
		}
		if !uuidV4.MatchString(c.Jti) {
			t.Errorf("jti %q is not a version 4 UUID", c.Jti)
		}
		jtis = append(jtis, c.Jti)
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil {
			t.Fatal(err)
		}
		digest := sha512.Sum512([]byte(parts[0] + "." + parts[1]))
		if err := rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA512, digest[:], sig); err != nil {
			t.Errorf("signature does not verify with the public key: %v", err)
		}
	}
	if jtis[0] == jtis[1] {
		t.Error("two assertions share a jti")
	}
}

func TestParsePrivateKey(t *testing.T) {
	k := testKey(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		pem     string
		wantErr string
	}{
		{name: "PKCS#1", pem: pkcs1PEM(k)},
		{name: "PKCS#8", pem: pkcs8PEM(t, k)},
		{name: "PKCS#1 with CRLF and text around", pem: "key:\r\n" + strings.ReplaceAll(pkcs1PEM(k), "\n", "\r\n")},
		{name: "not PEM", pem: "-----BEGIN NOTHING", wantErr: "no PEM block found"},
		{name: "a public key", pem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2}})), wantErr: `PEM block is "PUBLIC KEY"`},
		{name: "encrypted", pem: string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2}})), wantErr: "encrypted keys are not supported"},
		{name: "EC key", pem: pkcs8PEM(t, ec), wantErr: "not an RSA key"},
		{name: "1024 bits", pem: pkcs1PEM(small), wantErr: "RSA key has 1024 bits, want at least 2048"},
		{name: "corrupt PKCS#1", pem: string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)[:100]})), wantErr: "not a valid PKCS#1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrivateKey([]byte(tt.pem))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !got.Equal(k) {
					t.Error("parsed another key")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "MII") {
				t.Errorf("error %q holds key material", err)
			}
		})
	}
}

// TestTokenCached checks against the double that the token is cached,
// refreshed a minute before it expires, fetched once by concurrent
// callers, and fetched again after the API refused it.
func TestTokenCached(t *testing.T) {
	k := testKey(t)
	clk := &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	srv := pdstest.NewServer()
	defer srv.Close()
	srv.Now = clk.Now
	srv.RegisterKey(authAPIKey, authKID, &k.PublicKey)
	ts := newTestSource(t, srv.TokenURL(), k, clk)
	ctx := context.Background()
	var last string
	steps := []struct {
		name       string
		advance    time.Duration
		invalidate bool
		concurrent int
		wantNew    bool
		// wantExchanges is the token requests so far.
		wantExchanges int
	}{
		{name: "first call exchanges", wantNew: true, wantExchanges: 1},
		{name: "second call cached", advance: time.Second, wantExchanges: 1},
		{name: "just before the refresh margin", advance: 599*time.Second - time.Minute - 2*time.Second, wantExchanges: 1},
		{name: "within the refresh margin", advance: time.Second, wantNew: true, wantExchanges: 2},
		{name: "concurrent callers after expiry share one exchange", advance: 10 * time.Minute, concurrent: 8, wantNew: true, wantExchanges: 3},
		{name: "invalidated", invalidate: true, wantNew: true, wantExchanges: 4},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clk.Add(st.advance)
			if st.invalidate {
				ts.Invalidate(last)
			}
			n := max(st.concurrent, 1)
			got := make([]string, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { got[i], errs[i] = ts.Token(ctx) })
			}
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("Token: %v", errs[i])
				}
				if got[i] != got[0] {
					t.Errorf("concurrent callers got different tokens")
				}
			}
			if isNew := got[0] != last; isNew != st.wantNew {
				t.Errorf("new token %v, want %v", isNew, st.wantNew)
			}
			last = got[0]
			reqs := srv.TokenRequests()
			if len(reqs) != st.wantExchanges {
				t.Fatalf("token requests %d, want %d: %+v", len(reqs), st.wantExchanges, reqs)
			}
			for _, r := range reqs {
				if r.Status != http.StatusOK {
					t.Errorf("token request refused: %+v", r)
				}
			}
		})
	}
}

// TestTokenErrors checks how failed exchanges are reported: the kind,
// what the token endpoint said, and nothing secret.
func TestTokenErrors(t *testing.T) {
	k := testKey(t)
	clk := &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	var mu sync.Mutex
	var status int
	var reply string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(reply))
	}))
	defer srv.Close()
	tests := []struct {
		name      string
		status    int
		reply     string
		cached    bool // a token cached, not yet expired
		wantKind  error
		wantInErr string
		wantToken string
	}{
		{name: "200 string expires_in", status: 200, reply: `{"access_token": "tok-1", "expires_in": "599", "token_type": "Bearer"}`, wantToken: "tok-1"},
		{name: "200 numeric expires_in", status: 200, reply: `{"access_token": "tok-2", "expires_in": 599, "token_type": "bearer", "issued_at": "1796212800000"}`, wantToken: "tok-2"},
		{name: "200 without expires_in", status: 200, reply: `{"access_token": "tok-3", "token_type": "Bearer"}`, wantKind: ErrBadReply, wantInErr: "expires_in"},
		{name: "200 zero expires_in", status: 200, reply: `{"access_token": "tok-3", "expires_in": "0"}`, wantKind: ErrBadReply, wantInErr: "expires_in"},
		{name: "200 another token type", status: 200, reply: `{"access_token": "tok-3", "expires_in": "599", "token_type": "mac"}`, wantKind: ErrBadReply, wantInErr: "token_type"},
		{name: "200 token with a newline", status: 200, reply: `{"access_token": "tok\n3", "expires_in": "599"}`, wantKind: ErrBadReply, wantInErr: "access_token"},
		{name: "200 not JSON", status: 200, reply: `<html/>`, wantKind: ErrBadReply},
		{name: "401 unknown kid", status: 401, reply: `{"error": "invalid_request", "error_description": "Invalid 'kid' header in client_assertion JWT - no matching public key", "message_id": "rrt-1"}`,
			wantKind: ErrRefused, wantInErr: "HTTP 401 invalid_request (Invalid 'kid' header in client_assertion JWT - no matching public key)"},
		{name: "description echoing the API key dropped", status: 401, reply: `{"error": "invalid_request", "error_description": "bad iss ` + authAPIKey + `"}`,
			wantKind: ErrRefused, wantInErr: "HTTP 401 invalid_request"},
		{name: "500", status: 500, reply: `{}`, wantKind: ErrUnavailable, wantInErr: "HTTP 500"},
		{name: "429", status: 429, reply: ``, wantKind: ErrUnavailable, wantInErr: "HTTP 429"},
		{name: "503 while a token is still valid", status: 503, reply: ``, cached: true, wantToken: "cached-token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			status, reply = tt.status, tt.reply
			mu.Unlock()
			ts := newTestSource(t, srv.URL+"/oauth2/token", k, clk)
			if tt.cached {
				ts.token, ts.expiry, ts.refreshAt = "cached-token", clk.Now().Add(30*time.Second), clk.Now().Add(-30*time.Second)
			}
			tok, err := ts.Token(context.Background())
			if tt.wantKind == nil {
				if err != nil || tok != tt.wantToken {
					t.Fatalf("Token = %q, %v; want %q", tok, err, tt.wantToken)
				}
				return
			}
			if !errors.Is(err, tt.wantKind) {
				t.Fatalf("error %v, want kind %v", err, tt.wantKind)
			}
			var te *TokenError
			if !errors.As(err, &te) {
				t.Errorf("error %v does not wrap a TokenError", err)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not say %q", err, tt.wantInErr)
			}
			for _, secret := range []string{authAPIKey, "tok-3", "MII", "eyJ"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q holds %q", err, secret)
				}
			}
		})
	}
	t.Run("no answer", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		ts := newTestSource(t, dead.URL+"/oauth2/token", k, clk)
		if _, err := ts.Token(context.Background()); !errors.Is(err, ErrUnavailable) {
			t.Errorf("error %v, want ErrUnavailable", err)
		}
	})
}

func TestNewTokenSourceErrors(t *testing.T) {
	k := testKey(t)
	sec := mapSecrets{"env:API_KEY": authAPIKey, "env:KEY": pkcs1PEM(k), "env:EMPTY": " ", "env:NOTPEM": "secret-value-123"}
	good := AuthConfig{TokenURL: "https://int.api.service.nhs.uk/oauth2/token", APIKey: "env:API_KEY", PrivateKey: "env:KEY", KID: authKID}
	tests := []struct {
		name    string
		modify  func(*AuthConfig)
		wantErr string
	}{
		{name: "valid", modify: func(*AuthConfig) {}},
		{name: "http to loopback", modify: func(a *AuthConfig) { a.TokenURL = "http://127.0.0.1:8080/oauth2/token" }},
		{name: "http elsewhere", modify: func(a *AuthConfig) { a.TokenURL = "http://int.api.service.nhs.uk/oauth2/token" }, wantErr: "must be https"},
		{name: "relative URL", modify: func(a *AuthConfig) { a.TokenURL = "/oauth2/token" }, wantErr: "must be an absolute URL"},
		{name: "no kid", modify: func(a *AuthConfig) { a.KID = "" }, wantErr: "kid: required"},
		{name: "api key unresolved", modify: func(a *AuthConfig) { a.APIKey = "env:MISSING" }, wantErr: "api key: no such secret"},
		{name: "api key blank", modify: func(a *AuthConfig) { a.APIKey = "env:EMPTY" }, wantErr: "api key: secret is empty"},
		{name: "key not PEM", modify: func(a *AuthConfig) { a.PrivateKey = "env:NOTPEM" }, wantErr: "private key: no PEM block found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.modify(&cfg)
			_, err := NewTokenSource(cfg, sec)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "secret-value-123") {
				t.Errorf("error %q holds the secret", err)
			}
		})
	}
}
