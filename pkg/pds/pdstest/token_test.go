package pdstest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/nhs"
)

const (
	testAPIKey = "synthetic-api-key"
	testKID    = "test-1"
)

var (
	keysOnce sync.Once
	key      *rsa.PrivateKey
	otherKey *rsa.PrivateKey
)

// testKeys returns two RSA keys generated for this test run.
func testKeys(t *testing.T) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if otherKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return key, otherKey
}

// signJWT signs header and claims with k by RS512, as a client would.
func signJWT(t *testing.T, k *rsa.PrivateKey, header, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	b64 := base64.RawURLEncoding
	in := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	d := sha512.Sum512([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA512, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + b64.EncodeToString(sig)
}

// postToken posts a token request and returns the status and JSON body.
func postToken(t *testing.T, srv *Server, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(srv.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("reply is not JSON: %v", err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return resp.StatusCode, body
}

func tokenForm(assertion string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	}
}

// TestTokenEndpoint checks the token endpoint against the published
// behaviour (see the package documentation): one good assertion, and
// each way of getting one wrong.
func TestTokenEndpoint(t *testing.T) {
	k, other := testKeys(t)
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	srv := NewServer(Seed()...)
	defer srv.Close()
	srv.Now = func() time.Time { return now }
	srv.RegisterKey(testAPIKey, testKID, &k.PublicKey)

	goodHeader := func() map[string]any { return map[string]any{"alg": "RS512", "typ": "JWT", "kid": testKID} }
	jtiN := 0
	goodClaims := func() map[string]any {
		jtiN++
		return map[string]any{
			"iss": testAPIKey, "sub": testAPIKey, "aud": srv.TokenURL(),
			"jti": fmt.Sprintf("00000000-0000-4000-8000-%012d", jtiN),
			"exp": now.Add(4 * time.Minute).Unix(),
		}
	}
	reusedJTI := goodClaims()
	if st, _ := postToken(t, srv, tokenForm(signJWT(t, k, goodHeader(), reusedJTI))); st != 200 {
		t.Fatalf("first use of a jti: status %d", st)
	}
	with := func(m map[string]any, k string, v any) map[string]any {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	// hs512 is an assertion signed with HMAC, which must be refused by alg.
	hs512 := func() string {
		h, _ := json.Marshal(with(goodHeader(), "alg", "HS512"))
		c, _ := json.Marshal(goodClaims())
		in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
		mac := sha256.Sum256([]byte(in))
		return in + "." + base64.RawURLEncoding.EncodeToString(mac[:])
	}
	tests := []struct {
		name     string
		form     url.Values
		status   int
		errCode  string
		errDescr string
	}{
		{name: "valid", form: tokenForm(signJWT(t, k, goodHeader(), goodClaims())), status: 200},
		{name: "grant_type missing", form: with2(tokenForm(signJWT(t, k, goodHeader(), goodClaims())), "grant_type", ""),
			status: 400, errCode: "invalid_request", errDescr: "grant_type is missing"},
		{name: "grant_type wrong", form: with2(tokenForm(signJWT(t, k, goodHeader(), goodClaims())), "grant_type", "authorization_code"),
			status: 400, errCode: "unsupported_grant_type", errDescr: "grant_type is invalid"},
		{name: "client_assertion_type wrong", form: with2(tokenForm(signJWT(t, k, goodHeader(), goodClaims())), "client_assertion_type", "jwt"),
			status: 400, errCode: "invalid_request", errDescr: "Missing or invalid client_assertion_type - must be 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'"},
		{name: "client_assertion missing", form: tokenForm(""), status: 400, errCode: "invalid_request", errDescr: "Missing client_assertion"},
		{name: "not a JWT", form: tokenForm("invalid"), status: 400, errCode: "invalid_request", errDescr: "Malformed JWT in client_assertion"},
		{name: "alg HS512", form: tokenForm(hs512()), status: 400, errCode: "invalid_request",
			errDescr: "Invalid 'alg' header in client_assertion JWT - unsupported JWT algorithm - must be 'RS512'"},
		{name: "alg RS256 claimed", form: tokenForm(signJWT(t, k, with(goodHeader(), "alg", "RS256"), goodClaims())), status: 400, errCode: "invalid_request",
			errDescr: "Invalid 'alg' header in client_assertion JWT - unsupported JWT algorithm - must be 'RS512'"},
		{name: "typ missing", form: tokenForm(signJWT(t, k, with(goodHeader(), "typ", nil), goodClaims())), status: 400, errCode: "invalid_request",
			errDescr: "Invalid 'typ' header in client_assertion JWT - must be 'JWT'"},
		{name: "kid missing", form: tokenForm(signJWT(t, k, with(goodHeader(), "kid", nil), goodClaims())), status: 400, errCode: "invalid_request",
			errDescr: "Missing 'kid' header in client_assertion JWT"},
		{name: "kid unknown", form: tokenForm(signJWT(t, k, with(goodHeader(), "kid", "test-2"), goodClaims())), status: 401, errCode: "invalid_request",
			errDescr: "Invalid 'kid' header in client_assertion JWT - no matching public key"},
		{name: "signed with another key", form: tokenForm(signJWT(t, other, goodHeader(), goodClaims())), status: 401, errCode: "public_key error",
			errDescr: "JWT signature verification failed"},
		{name: "iss and sub unknown", form: tokenForm(signJWT(t, k, goodHeader(), with(with(goodClaims(), "iss", "other"), "sub", "other"))),
			status: 401, errCode: "invalid_request", errDescr: "Invalid 'iss'/'sub' claims in client_assertion JWT"},
		{name: "sub differs from iss", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "sub", "other"))),
			status: 400, errCode: "invalid_request", errDescr: "Missing or non-matching 'iss'/'sub' claims in client_assertion JWT"},
		{name: "iss missing", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "iss", nil))),
			status: 400, errCode: "invalid_request", errDescr: "Missing or non-matching 'iss'/'sub' claims in client_assertion JWT"},
		{name: "jti missing", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "jti", nil))),
			status: 400, errCode: "invalid_request", errDescr: "Missing 'jti' claim in client_assertion JWT"},
		{name: "jti a number", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "jti", 1234567890))),
			status: 400, errCode: "invalid_request", errDescr: "Invalid 'jti' claim in client_assertion JWT - must be a unique string value such as a GUID"},
		{name: "jti reused", form: tokenForm(signJWT(t, k, goodHeader(), reusedJTI)),
			status: 400, errCode: "invalid_request", errDescr: "Non-unique 'jti' claim in client_assertion JWT"},
		{name: "aud another endpoint", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "aud", "https://int.api.service.nhs.uk/oauth2/token"))),
			status: 401, errCode: "invalid_request", errDescr: "Missing or invalid 'aud' claim in client_assertion JWT"},
		{name: "aud missing", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "aud", nil))),
			status: 401, errCode: "invalid_request", errDescr: "Missing or invalid 'aud' claim in client_assertion JWT"},
		{name: "exp missing", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "exp", nil))),
			status: 400, errCode: "invalid_request", errDescr: "Missing 'exp' claim in client_assertion JWT"},
		{name: "exp a string", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "exp", "1796212800"))),
			status: 400, errCode: "invalid_request", errDescr: "Invalid 'exp' claim in client_assertion JWT - must be an integer"},
		{name: "exp past", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "exp", now.Add(-20*time.Second).Unix()))),
			status: 400, errCode: "invalid_request", errDescr: "Invalid 'exp' claim in client_assertion JWT - JWT has expired"},
		{name: "exp now", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "exp", now.Unix()))),
			status: 400, errCode: "invalid_request", errDescr: "Invalid 'exp' claim in client_assertion JWT - JWT has expired"},
		{name: "exp 6 minutes ahead", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "exp", now.Add(6*time.Minute).Unix()))),
			status: 400, errCode: "invalid_request", errDescr: "Invalid 'exp' claim in client_assertion JWT - more than 5 minutes in future"},
		{name: "exp exactly 5 minutes ahead", form: tokenForm(signJWT(t, k, goodHeader(), with(goodClaims(), "exp", now.Add(5*time.Minute).Unix()))), status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := postToken(t, srv, tt.form)
			if status != tt.status {
				t.Fatalf("status %d, want %d (body %v)", status, tt.status, body)
			}
			if tt.status == 200 {
				if tok, _ := body["access_token"].(string); tok == "" || body["expires_in"] != "599" || body["token_type"] != "Bearer" {
					t.Errorf("body %v, want access_token, expires_in \"599\", token_type Bearer", body)
				}
				return
			}
			if body["error"] != tt.errCode || body["error_description"] != tt.errDescr {
				t.Errorf("error %q %q, want %q %q", body["error"], body["error_description"], tt.errCode, tt.errDescr)
			}
			if id, _ := body["message_id"].(string); id == "" {
				t.Error("no message_id")
			}
			if _, ok := body["access_token"]; ok {
				t.Error("an error reply carries a token")
			}
		})
	}
}

// with2 returns form with key set to v, or removed when v is empty.
func with2(form url.Values, key, v string) url.Values {
	if v == "" {
		form.Del(key)
	} else {
		form.Set(key, v)
	}
	return form
}

// TestPatientNeedsIssuedToken checks that, once a key is registered, the
// Patient endpoint accepts only unexpired tokens the double issued.
func TestPatientNeedsIssuedToken(t *testing.T) {
	k, _ := testKeys(t)
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	srv := NewServer(Seed()...)
	defer srv.Close()
	srv.Token = "static-token" // ignored once a key is registered
	srv.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv.RegisterKey(testAPIKey, testKID, &k.PublicKey)
	status, body := postToken(t, srv, tokenForm(signJWT(t, k,
		map[string]any{"alg": "RS512", "typ": "JWT", "kid": testKID},
		map[string]any{"iss": testAPIKey, "sub": testAPIKey, "aud": srv.TokenURL(), "jti": "f5b4c1b2-0d1e-4a6b-9c3d-2e1f0a9b8c7d", "exp": now.Add(time.Minute).Unix()})))
	if status != 200 {
		t.Fatalf("token status %d: %v", status, body)
	}
	issued, _ := body["access_token"].(string)
	get := func(token string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL()+"/Patient/"+nhs.TestNumber(0), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Request-ID", rid)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name    string
		token   string
		advance time.Duration
		want    int
	}{
		{"issued token", issued, 0, 200},
		{"static token no longer accepted", "static-token", 0, 401},
		{"token never issued", "0123456789abcdef0123456789abcdef", 0, 401},
		{"issued token just before expiry", issued, 598 * time.Second, 200},
		{"issued token expired", issued, 2 * time.Second, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			now = now.Add(tt.advance)
			mu.Unlock()
			if got := get(tt.token); got != tt.want {
				t.Errorf("status %d, want %d", got, tt.want)
			}
		})
	}
	for _, r := range srv.TokenRequests() {
		if strings.Contains(r.Description, issued) {
			t.Error("a token request record holds the token")
		}
	}
}
