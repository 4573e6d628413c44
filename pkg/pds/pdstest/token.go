package pdstest

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// tokenPath is the token endpoint's path on the double.
const tokenPath = "/oauth2/token"

// DefaultTokenLifetime is the lifetime of the access tokens the double
// issues, the expires_in NHS England's tests expect ("599").
const DefaultTokenLifetime = 599 * time.Second

// maxAssertionAhead is how far in the future an assertion's exp may be.
const maxAssertionAhead = 5 * time.Minute

// TokenRequest is what the double recorded of one token request: never
// the assertion or the token.
type TokenRequest struct {
	Status int
	// Error and Description are the reply's error and error_description
	// ("" on success).
	Error       string
	Description string
}

// RegisterKey registers the public key of an application (identified by
// its API key) under kid, as a developer does with NHS England. Once any
// key is registered, the Patient endpoint accepts only access tokens the
// double issued.
func (s *Server) RegisterKey(apiKey, kid string, pub *rsa.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apps[apiKey] == nil {
		s.apps[apiKey] = map[string]*rsa.PublicKey{}
	}
	s.apps[apiKey][kid] = pub
}

// TokenURL returns the token endpoint's URL, which assertions must name
// as aud.
func (s *Server) TokenURL() string { return s.Server.URL + tokenPath }

// TokenRequests returns the token requests received so far.
func (s *Server) TokenRequests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequest(nil), s.tokenRequests...)
}

// now returns the double's time.
func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// acceptToken reports whether the Patient endpoint accepts a bearer
// token.
func (s *Server) acceptToken(token string) bool {
	s.mu.Lock()
	authOn := len(s.apps) > 0
	exp, issued := s.issued[token]
	s.mu.Unlock()
	if authOn {
		return issued && s.now().Before(exp)
	}
	return s.Token == "" || token == s.Token
}

// serveToken answers a token request and records it.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	rec := s.answerToken(w, r)
	s.mu.Lock()
	s.tokenRequests = append(s.tokenRequests, rec)
	s.mu.Unlock()
}

// answerToken writes the token endpoint's reply and returns its record.
func (s *Server) answerToken(w http.ResponseWriter, r *http.Request) TokenRequest {
	if r.Method != http.MethodPost {
		http.Error(w, "not supported by the double", http.StatusMethodNotAllowed)
		return TokenRequest{Status: http.StatusMethodNotAllowed}
	}
	const bad = http.StatusBadRequest
	const unauthorised = http.StatusUnauthorized
	const invalid = "invalid_request"
	if err := r.ParseForm(); err != nil {
		return oauthError(w, bad, invalid, "Malformed request body")
	}
	switch gt := r.PostForm.Get("grant_type"); {
	case gt == "":
		return oauthError(w, bad, invalid, "grant_type is missing")
	case gt != "client_credentials":
		return oauthError(w, bad, "unsupported_grant_type", "grant_type is invalid")
	}
	if r.PostForm.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		return oauthError(w, bad, invalid, "Missing or invalid client_assertion_type - must be 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'")
	}
	assertion := r.PostForm.Get("client_assertion")
	if assertion == "" {
		return oauthError(w, bad, invalid, "Missing client_assertion")
	}
	parts := strings.Split(assertion, ".")
	var header map[string]any
	var claims map[string]any
	if len(parts) != 3 || decodePart(parts[0], &header) != nil || decodePart(parts[1], &claims) != nil {
		return oauthError(w, bad, invalid, "Malformed JWT in client_assertion")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return oauthError(w, bad, invalid, "Malformed JWT in client_assertion")
	}
	if header["alg"] != "RS512" {
		return oauthError(w, bad, invalid, "Invalid 'alg' header in client_assertion JWT - unsupported JWT algorithm - must be 'RS512'")
	}
	if header["typ"] != "JWT" {
		return oauthError(w, bad, invalid, "Invalid 'typ' header in client_assertion JWT - must be 'JWT'")
	}
	kid, _ := header["kid"].(string)
	if kid == "" {
		return oauthError(w, bad, invalid, "Missing 'kid' header in client_assertion JWT")
	}
	iss, _ := claims["iss"].(string)
	sub, _ := claims["sub"].(string)
	if iss == "" || iss != sub {
		return oauthError(w, bad, invalid, "Missing or non-matching 'iss'/'sub' claims in client_assertion JWT")
	}
	s.mu.Lock()
	keys, known := s.apps[iss]
	pub := keys[kid]
	s.mu.Unlock()
	if !known {
		return oauthError(w, unauthorised, invalid, "Invalid 'iss'/'sub' claims in client_assertion JWT")
	}
	if pub == nil {
		return oauthError(w, unauthorised, invalid, "Invalid 'kid' header in client_assertion JWT - no matching public key")
	}
	digest := sha512.Sum512([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA512, digest[:], sig) != nil {
		return oauthError(w, unauthorised, "public_key error", "JWT signature verification failed")
	}
	rawJTI, ok := claims["jti"]
	if !ok {
		return oauthError(w, bad, invalid, "Missing 'jti' claim in client_assertion JWT")
	}
	jti, ok := rawJTI.(string)
	if !ok || jti == "" {
		return oauthError(w, bad, invalid, "Invalid 'jti' claim in client_assertion JWT - must be a unique string value such as a GUID")
	}
	if claims["aud"] != s.TokenURL() {
		return oauthError(w, unauthorised, invalid, "Missing or invalid 'aud' claim in client_assertion JWT")
	}
	rawExp, ok := claims["exp"]
	if !ok {
		return oauthError(w, bad, invalid, "Missing 'exp' claim in client_assertion JWT")
	}
	num, ok := rawExp.(json.Number)
	exp, err := num.Int64()
	if !ok || err != nil {
		return oauthError(w, bad, invalid, "Invalid 'exp' claim in client_assertion JWT - must be an integer")
	}
	now := s.now()
	switch expiry := time.Unix(exp, 0); {
	case !expiry.After(now):
		return oauthError(w, bad, invalid, "Invalid 'exp' claim in client_assertion JWT - JWT has expired")
	case expiry.After(now.Add(maxAssertionAhead)):
		return oauthError(w, bad, invalid, "Invalid 'exp' claim in client_assertion JWT - more than 5 minutes in future")
	}
	lifetime := s.TokenLifetime
	if lifetime <= 0 {
		lifetime = DefaultTokenLifetime
	}
	token := randomHex(16)
	s.mu.Lock()
	reused := s.usedJTI[jti]
	if !reused {
		s.usedJTI[jti] = true
		s.issued[token] = now.Add(lifetime)
	}
	s.mu.Unlock()
	if reused {
		return oauthError(w, bad, invalid, "Non-unique 'jti' claim in client_assertion JWT")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(map[string]string{
		"access_token": token,
		"expires_in":   formatSeconds(lifetime),
		"token_type":   "Bearer",
	})
	return TokenRequest{Status: http.StatusOK}
}

// decodePart decodes one base64url part of a JWT into v, numbers kept as
// json.Number.
func decodePart(part string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

// oauthError writes an error reply of the token endpoint.
func oauthError(w http.ResponseWriter, status int, code, description string) TokenRequest {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{
		"error": code, "error_description": description, "message_id": "rrt-" + randomHex(8),
	})
	return TokenRequest{Status: status, Error: code, Description: description}
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// formatSeconds returns d in whole seconds as a decimal string.
func formatSeconds(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10)
}
