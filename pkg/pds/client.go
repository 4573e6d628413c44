package pds

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/retryafter"
)

// Defaults of Config.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultMaxAttempts = 3
	DefaultBackoff     = 500 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
)

// maxReply bounds the reply body read.
const maxReply = 1 << 20

// Config configures a Client.
type Config struct {
	// URL is the API's base URL, before /Patient: for example
	// https://int.api.service.nhs.uk/personal-demographics/FHIR/R4.
	URL string
	// Token is a reference (env:NAME or file:PATH) to the OAuth 2.0
	// access token sent as Authorization: Bearer, read for every request;
	// empty sends no Authorization (as the sandbox accepts) unless Auth
	// is set. Token and Auth are mutually exclusive.
	Token string
	// Auth, when set, gets the access token by signed JWT authentication
	// (see TokenSource) instead of reading it from Token. Its Timeout
	// defaults to Timeout.
	Auth AuthConfig
	// Timeout bounds each request (DefaultTimeout if zero).
	Timeout time.Duration
	// MaxAttempts bounds the requests of one lookup, the first included
	// (DefaultMaxAttempts if zero).
	MaxAttempts int
	// Backoff is the wait before the second attempt, doubled for each
	// later one (DefaultBackoff if zero). A Retry-After header replaces
	// it when longer.
	Backoff time.Duration
	// MaxBackoff bounds every wait (DefaultMaxBackoff if zero): a
	// Retry-After longer than it ends the lookup with ErrUnavailable
	// rather than asking again early.
	MaxBackoff time.Duration
}

// SecretResolver turns a reference such as "env:NAME" or "file:PATH" into
// its value; config.Secrets is one.
type SecretResolver interface {
	Resolve(ref string) (string, error)
}

// Client looks patients up in PDS. It is safe for concurrent use.
type Client struct {
	cfg     Config
	base    string
	secrets SecretResolver
	// tokens gets access tokens when Config.Auth is set.
	tokens *TokenSource
	hc     *http.Client
	// now and sleep are replaced by tests.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// New returns a client for cfg. The token reference, or the API key and
// private key references of Auth, are resolved once here so that a wrong
// reference fails at start.
func New(cfg Config, secrets SecretResolver) (*Client, error) {
	if err := fhir.CheckBaseURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("pds: url: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	c := &Client{
		cfg: cfg, base: strings.TrimRight(cfg.URL, "/"), secrets: secrets,
		hc: &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			// A redirect could carry the token elsewhere: never follow.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now: time.Now, sleep: sleepCtx,
	}
	if cfg.Auth.Enabled() {
		if cfg.Token != "" {
			return nil, errors.New("pds: give token or auth, not both")
		}
		if cfg.Auth.Timeout <= 0 {
			cfg.Auth.Timeout = cfg.Timeout
		}
		ts, err := NewTokenSource(cfg.Auth, secrets)
		if err != nil {
			return nil, err
		}
		c.tokens = ts
		c.cfg = cfg
	}
	if cfg.Token != "" {
		if secrets == nil {
			return nil, errors.New("pds: token: no secret resolver")
		}
		if _, _, err := c.bearer(context.Background()); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Close closes idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// bearer returns the Authorization header value, or "" without a token,
// and the token it holds.
func (c *Client) bearer(ctx context.Context) (auth, token string, err error) {
	if c.tokens != nil {
		tok, err := c.tokens.Token(ctx)
		if err != nil {
			return "", "", err
		}
		return "Bearer " + tok, tok, nil
	}
	if c.cfg.Token == "" {
		return "", "", nil
	}
	v, err := c.secrets.Resolve(c.cfg.Token)
	if err != nil {
		return "", "", &Error{Kind: ErrRefused, Err: fmt.Errorf("token: %w", err)}
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return "", "", &Error{Kind: ErrRefused, Err: errors.New("token: secret is empty")}
	}
	for i := 0; i < len(v); i++ {
		if ch := v[i]; ch < 0x20 || ch == 0x7f {
			return "", "", &Error{Kind: ErrRefused, Err: errors.New("token: secret holds control characters")}
		}
	}
	return "Bearer " + v, v, nil
}

type correlationKey struct{}

// WithCorrelationID returns a context whose lookups send id as
// X-Correlation-ID, which PDS mirrors back and logs, to trace a lookup
// across systems. id must not hold patient data.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey{}, id)
}

// Lookup gets the patient with the NHS number from PDS (GET
// {base}/Patient/{nhsNumber}). Throttling (429), timeouts (408) and
// server errors (5xx), and requests that got no answer, are asked again,
// up to Config.MaxAttempts requests in all, with the same X-Request-ID,
// after the longer of the backoff and the reply's Retry-After. With
// Config.Auth, the access token is got before each attempt, and a token
// endpoint that is unavailable counts as a failed attempt; a 401 drops the
// cached token so that the next lookup fetches another. Errors wrap one
// of ErrNotFound, ErrInvalid, ErrUnavailable, ErrRefused or ErrBadReply
// and hold no patient data.
func (c *Client) Lookup(ctx context.Context, nhsNumber string) (Result, error) {
	n := nhs.Normalize(strings.TrimSpace(nhsNumber))
	if !nhs.ValidNumber(n) {
		return Result{}, &Error{Kind: ErrInvalid}
	}
	requestID := newUUID()
	correlation, _ := ctx.Value(correlationKey{}).(string)
	wait := c.cfg.Backoff
	for attempt := 1; ; attempt++ {
		var fail *Error
		auth, token, err := c.bearer(ctx)
		if err != nil {
			// A token endpoint that did not answer usefully counts as a
			// request without an answer; any other token error ends the
			// lookup.
			if !errors.As(err, &fail) || fail.Kind != ErrUnavailable || ctx.Err() != nil {
				return Result{}, err
			}
			fail.Attempts = attempt
		}
		var retryAfter time.Duration
		if fail == nil {
			var status int
			var body []byte
			status, body, retryAfter, err = c.get(ctx, n, auth, requestID, correlation)
			switch {
			case err != nil:
				fail = &Error{Kind: ErrUnavailable, Attempts: attempt, Err: err}
				if ctx.Err() != nil {
					return Result{}, fail // the caller gave up
				}
			case status == http.StatusOK:
				res, err := c.parse(body, n)
				if err != nil {
					return Result{}, &Error{Kind: ErrBadReply, Status: status, Attempts: attempt, Err: err}
				}
				return res, nil
			default:
				if status == http.StatusUnauthorized && c.tokens != nil {
					// Revoked or expired early: the next lookup gets another.
					c.tokens.Invalidate(token)
				}
				fail = classify(status, body)
				fail.Attempts = attempt
				if fail.Kind != ErrUnavailable {
					return Result{}, fail
				}
			}
		}
		if attempt >= c.cfg.MaxAttempts {
			return Result{}, fail
		}
		d := jitter(wait)
		if retryAfter > d {
			d = retryAfter
		}
		if d > c.cfg.MaxBackoff {
			// Asking sooner than PDS said would only be refused again.
			return Result{}, fail
		}
		if dl, ok := ctx.Deadline(); ok && c.now().Add(d).After(dl) {
			return Result{}, fail
		}
		if err := c.sleep(ctx, d); err != nil {
			return Result{}, fail
		}
		wait = min(wait*2, c.cfg.MaxBackoff)
	}
}

// get makes one request. err is set when there was no answer.
func (c *Client) get(ctx context.Context, nhsNumber, auth, requestID, correlation string) (status int, body []byte, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/Patient/"+nhsNumber, nil)
	if err != nil {
		return 0, nil, 0, errors.New("building request")
	}
	h := req.Header
	h.Set("Accept", "application/fhir+json")
	h.Set("X-Request-ID", requestID)
	if correlation != "" {
		h.Set("X-Correlation-ID", correlation)
	}
	if auth != "" {
		h.Set("Authorization", auth)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// The *url.Error names the URL, which holds the NHS number: keep
		// only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return 0, nil, 0, fmt.Errorf("reading reply: %w", err)
	}
	return resp.StatusCode, body, retryafter.Parse(resp.Header.Get("Retry-After"), c.now()), nil
}

// classify turns an error status and its OperationOutcome into an Error.
func classify(status int, body []byte) *Error {
	code := outcomeCode(body)
	e := &Error{Status: status, Code: code}
	switch {
	case status == http.StatusNotFound:
		e.Kind = ErrNotFound
	case status == http.StatusBadRequest && code == "INVALID_RESOURCE_ID":
		e.Kind = ErrInvalid
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500:
		e.Kind = ErrUnavailable
	default:
		e.Kind = ErrRefused
	}
	return e
}

// spineCode reports whether s looks like a Spine error code (upper-case
// letters, digits and underscores), so that nothing else from a reply
// reaches an error string.
func spineCode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if ch := s[i]; !(ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_') {
			return false
		}
	}
	return true
}

// outcomeCode returns the first Spine error code of an OperationOutcome,
// or "".
func outcomeCode(body []byte) string {
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Details struct {
				Coding []struct {
					Code string `json:"code"`
				} `json:"coding"`
			} `json:"details"`
		} `json:"issue"`
	}
	if json.Unmarshal(body, &oo) != nil || oo.ResourceType != "OperationOutcome" {
		return ""
	}
	for _, is := range oo.Issue {
		for _, c := range is.Details.Coding {
			if spineCode(c.Code) {
				return c.Code
			}
		}
	}
	return ""
}

// jitter returns d less up to a fifth, so that many clients throttled
// together do not come back together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - time.Duration(mrand.Int64N(int64(d)/5+1))
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
