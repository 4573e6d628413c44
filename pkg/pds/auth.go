package pds

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Constants of signed JWT authentication.
const (
	// GrantType is the grant_type of the token request.
	GrantType = "client_credentials"
	// ClientAssertionType is the client_assertion_type of the token
	// request.
	ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// MaxAssertionLifetime is the longest an assertion may be valid: its
	// exp may be "no more than 5 minutes in the future".
	MaxAssertionLifetime = 5 * time.Minute
	// AssertionLifetime is how long the assertions TokenSource signs are
	// valid: MaxAssertionLifetime less a minute, so that a token endpoint
	// whose clock is somewhat ahead still accepts them.
	AssertionLifetime = MaxAssertionLifetime - time.Minute
	// DefaultRefreshMargin is how long before its expiry a cached access
	// token is replaced (half the token's lifetime when that is shorter).
	DefaultRefreshMargin = time.Minute
	// MinKeyBits is the smallest RSA key accepted. NHS England asks for
	// 4096-bit keys; 2048 bits is the least this package signs with.
	MinKeyBits = 2048
)

// maxTokenReply bounds the token endpoint's reply read.
const maxTokenReply = 64 << 10

// AuthConfig configures NHS England's signed JWT authentication for
// application-restricted access (see TokenSource). The zero value is off.
type AuthConfig struct {
	// TokenURL is the OAuth 2.0 token endpoint, also the assertion's aud:
	// for example https://int.api.service.nhs.uk/oauth2/token. It must be
	// https, or http to a loopback address (tests).
	TokenURL string
	// APIKey is a reference (env:NAME or file:PATH) to the application's
	// API key, the assertion's iss and sub.
	APIKey string
	// PrivateKey is a reference (env:NAME or file:PATH) to the PEM RSA
	// private key (PKCS#1 "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY",
	// unencrypted) whose public key is registered under KID.
	PrivateKey string
	// KID is the key id the public key was registered with (the JWT
	// header's kid).
	KID string
	// Timeout bounds each token request (DefaultTimeout if zero).
	Timeout time.Duration
}

// Enabled reports whether any field is set.
func (a AuthConfig) Enabled() bool {
	return a.TokenURL != "" || a.APIKey != "" || a.PrivateKey != "" || a.KID != ""
}

// TokenError is a failed token exchange. It holds what the token
// endpoint said, never the key, the assertion or a token.
type TokenError struct {
	// Status is the token endpoint's HTTP status (0 when it did not
	// answer).
	Status int
	// Code is the OAuth error code of the reply ("" when none).
	Code string
	// Description is the reply's error_description, when it is short
	// printable text.
	Description string
	// Err is the underlying cause, if any.
	Err error
}

func (e *TokenError) Error() string {
	s := "access token"
	if e.Status != 0 {
		s += fmt.Sprintf(": token endpoint answered HTTP %d", e.Status)
	}
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Description != "" {
		s += " (" + e.Description + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *TokenError) Unwrap() error { return e.Err }

// TokenSource gets access tokens by NHS England's signed JWT
// authentication (see the package documentation) and caches each until
// DefaultRefreshMargin before it expires. It is safe for concurrent use;
// one exchange runs at a time and callers waiting for it share its token.
type TokenSource struct {
	tokenURL string
	apiKey   string
	kid      string
	key      *rsa.PrivateKey
	timeout  time.Duration
	hc       *http.Client
	// now is replaced by tests.
	now func() time.Time

	// sem holds one value while an exchange runs.
	sem chan struct{}

	mu        sync.Mutex
	token     string
	expiry    time.Time
	refreshAt time.Time
}

// NewTokenSource returns a token source for cfg. The API key and private
// key references are resolved, and the key parsed, here, so that a wrong
// reference or key fails at start; no token is fetched until Token.
func NewTokenSource(cfg AuthConfig, secrets SecretResolver) (*TokenSource, error) {
	if err := checkTokenURL(cfg.TokenURL); err != nil {
		return nil, fmt.Errorf("pds: auth: token url: %w", err)
	}
	if cfg.KID == "" || !printable(cfg.KID) {
		return nil, errors.New("pds: auth: kid: required, printable and without spaces")
	}
	if secrets == nil {
		return nil, errors.New("pds: auth: no secret resolver")
	}
	apiKey, err := secrets.Resolve(cfg.APIKey)
	if err != nil {
		return nil, fmt.Errorf("pds: auth: api key: %w", err)
	}
	apiKey = strings.TrimSpace(apiKey)
	if apiKey == "" || !printable(apiKey) {
		return nil, errors.New("pds: auth: api key: secret is empty or holds spaces or control characters")
	}
	pemText, err := secrets.Resolve(cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("pds: auth: private key: %w", err)
	}
	key, err := ParsePrivateKey([]byte(pemText))
	if err != nil {
		return nil, fmt.Errorf("pds: auth: private key: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	return &TokenSource{
		tokenURL: cfg.TokenURL, apiKey: apiKey, kid: cfg.KID, key: key, timeout: cfg.Timeout,
		hc: &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			// The assertion must go to the endpoint it names, nowhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now: time.Now,
		sem: make(chan struct{}, 1),
	}, nil
}

// ParsePrivateKey reads a PEM RSA private key: PKCS#1 ("RSA PRIVATE
// KEY") or PKCS#8 ("PRIVATE KEY"), unencrypted, of at least MinKeyBits.
// Its errors never hold key material.
func ParsePrivateKey(pemText []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(pemText)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var key *rsa.PrivateKey
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("not a valid PKCS#1 RSA private key")
		}
		key = k
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("not a valid PKCS#8 private key")
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, errors.New("PKCS#8 key is not an RSA key (RS512 needs RSA)")
		}
		key = rk
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("encrypted keys are not supported: give the key unencrypted, protected by the secret store")
	default:
		return nil, fmt.Errorf("PEM block is %q, want \"RSA PRIVATE KEY\" or \"PRIVATE KEY\"", block.Type)
	}
	if bits := key.N.BitLen(); bits < MinKeyBits {
		return nil, fmt.Errorf("RSA key has %d bits, want at least %d (NHS England asks for 4096)", bits, MinKeyBits)
	}
	return key, nil
}

// Token returns a current access token: the cached one, or a new one
// from the token endpoint when none is cached or the cached one is due
// for refresh. When a refresh fails while the cached token has not yet
// expired, the cached token is returned and the next call tries again.
// Errors are *Error of kind ErrUnavailable (no answer, 408, 429 or 5xx:
// worth asking again), ErrRefused (any other refusal: the configuration
// or registration is wrong) or ErrBadReply, wrapping a *TokenError.
func (s *TokenSource) Token(ctx context.Context) (string, error) {
	if tok, ok := s.cached(false); ok {
		return tok, nil
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return "", &Error{Kind: ErrUnavailable, Err: &TokenError{Err: ctx.Err()}}
	}
	defer func() { <-s.sem }()
	// Another caller may have refreshed while this one waited.
	if tok, ok := s.cached(false); ok {
		return tok, nil
	}
	start := s.now()
	tok, lifetime, err := s.exchange(ctx, start)
	if err != nil {
		if old, ok := s.cached(true); ok {
			return old, nil
		}
		return "", err
	}
	margin := min(DefaultRefreshMargin, lifetime/2)
	s.mu.Lock()
	// Timed from before the request, so the cache never outlives the
	// token.
	s.token, s.expiry, s.refreshAt = tok, start.Add(lifetime), start.Add(lifetime-margin)
	s.mu.Unlock()
	return tok, nil
}

// cached returns the cached token if it is not yet due for refresh or,
// with untilExpiry, not yet expired.
func (s *TokenSource) cached(untilExpiry bool) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	until := s.refreshAt
	if untilExpiry {
		until = s.expiry
	}
	if s.token == "" || !s.now().Before(until) {
		return "", false
	}
	return s.token, true
}

// Invalidate drops the cached token if it is tok, so that the next Token
// fetches another: for a token the API refused before its expiry.
func (s *TokenSource) Invalidate(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == tok {
		s.token, s.expiry, s.refreshAt = "", time.Time{}, time.Time{}
	}
}

// Assertion returns a signed client assertion (a JWT) for the token
// endpoint, valid from now for AssertionLifetime.
func (s *TokenSource) Assertion(now time.Time) (string, error) {
	header := struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
		Kid string `json:"kid"`
	}{"RS512", "JWT", s.kid}
	claims := struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Aud string `json:"aud"`
		Jti string `json:"jti"`
		Exp int64  `json:"exp"`
	}{s.apiKey, s.apiKey, s.tokenURL, newUUID(), now.Add(AssertionLifetime).Unix()}
	h, err := json.Marshal(header)
	if err != nil {
		return "", errors.New("encoding the JWT header")
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", errors.New("encoding the JWT claims")
	}
	b64 := base64.RawURLEncoding
	signing := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	digest := sha512.Sum512([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA512, digest[:])
	if err != nil {
		// The cause cannot hold the key, but say no more than needed.
		return "", errors.New("signing the JWT failed")
	}
	return signing + "." + b64.EncodeToString(sig), nil
}

// exchange makes one token request and returns the token and its
// lifetime.
func (s *TokenSource) exchange(ctx context.Context, now time.Time) (string, time.Duration, error) {
	assertion, err := s.Assertion(now)
	if err != nil {
		return "", 0, &Error{Kind: ErrRefused, Err: &TokenError{Err: err}}
	}
	form := url.Values{
		"grant_type":            {GrantType},
		"client_assertion_type": {ClientAssertionType},
		"client_assertion":      {assertion},
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, &Error{Kind: ErrRefused, Err: &TokenError{Err: errors.New("building the token request")}}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", 0, &Error{Kind: ErrUnavailable, Err: &TokenError{Err: err}}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenReply))
	if err != nil {
		return "", 0, &Error{Kind: ErrUnavailable, Err: &TokenError{Status: resp.StatusCode, Err: errors.New("reading the reply failed")}}
	}
	if resp.StatusCode != http.StatusOK {
		te := &TokenError{Status: resp.StatusCode}
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &oe) == nil {
			if oauthCode(oe.Error) {
				te.Code = oe.Error
			}
			if d := oe.Description; len(d) <= 200 && printableText(d) && !strings.Contains(d, s.apiKey) {
				te.Description = d
			}
		}
		kind := ErrRefused
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500 {
			kind = ErrUnavailable
		}
		return "", 0, &Error{Kind: kind, Err: te}
	}
	tok, lifetime, err := parseTokenReply(body)
	if err != nil {
		return "", 0, &Error{Kind: ErrBadReply, Err: &TokenError{Status: resp.StatusCode, Err: err}}
	}
	return tok, lifetime, nil
}

// parseTokenReply reads a successful token reply: access_token,
// expires_in (seconds, a string as NHS England sends it, or a number)
// and token_type (Bearer, if given).
func parseTokenReply(body []byte) (string, time.Duration, error) {
	var r struct {
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
		TokenType   string          `json:"token_type"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return "", 0, errors.New("reply is not a JSON object")
	}
	if r.AccessToken == "" || len(r.AccessToken) > 4096 || !printable(r.AccessToken) {
		return "", 0, errors.New("access_token missing or not a usable token")
	}
	if r.TokenType != "" && !strings.EqualFold(r.TokenType, "Bearer") {
		return "", 0, fmt.Errorf("token_type %q, want Bearer", truncate(r.TokenType, 20))
	}
	raw := strings.Trim(string(r.ExpiresIn), `"`)
	secs, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || secs <= 0 || secs > 24*3600 {
		return "", 0, errors.New("expires_in missing or not a positive number of seconds")
	}
	return r.AccessToken, time.Duration(secs) * time.Second, nil
}

// checkTokenURL accepts an absolute https URL without query or fragment,
// or http to a loopback host (a test double).
func checkTokenURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("must be an absolute URL without credentials, query or fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if LoopbackHost(u.Hostname()) {
			return nil
		}
		return errors.New("must be https (http only to a loopback address)")
	}
	return errors.New("scheme must be https")
}

// LoopbackHost reports whether host (without port) is localhost or a
// loopback IP address.
func LoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// printable reports whether s holds only printable ASCII without spaces.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if ch := s[i]; ch <= 0x20 || ch >= 0x7f {
			return false
		}
	}
	return true
}

// printableText reports whether s holds only printable ASCII, spaces
// included.
func printableText(s string) bool {
	for i := 0; i < len(s); i++ {
		if ch := s[i]; ch < 0x20 || ch >= 0x7f {
			return false
		}
	}
	return true
}

// oauthCode reports whether s looks like an OAuth error code (letters,
// digits, '_', '-', '.' and spaces, as "public_key error"), so that
// nothing else from a reply reaches an error string.
func oauthCode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if ch := s[i]; !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-' || ch == '.' || ch == ' ') {
			return false
		}
	}
	return true
}

// truncate returns s cut to n bytes.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
