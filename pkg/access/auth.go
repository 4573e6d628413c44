package access

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Authenticator finds the principal behind a request. Bearer implements it
// with configured tokens; a single sign-on authenticator (an OIDC access
// token verified against the identity provider's keys, its claims mapped
// to Roles) implements the same interface and needs nothing else changed.
type Authenticator interface {
	// Authenticate returns the request's principal. It returns an error
	// wrapping ErrNoCredentials when the request carries none and
	// ErrUnknownCredentials when they are not accepted; the engine answers
	// both with 401.
	Authenticate(r *http.Request) (Principal, error)
}

// Errors of Authenticate.
var (
	ErrNoCredentials      = errors.New("a bearer token is required")
	ErrUnknownCredentials = errors.New("the bearer token is not recognised")
)

// Token is one configured bearer token with its secret already resolved
// from its reference.
type Token struct {
	// Name identifies the token in audit records and metrics.
	Name  string
	Roles []Role
	// Secret is the token value callers send.
	Secret string
}

// Bearer authenticates "Authorization: Bearer <token>" against configured
// tokens. Every token is compared, in constant time, on every request.
type Bearer struct {
	tokens []bearerToken
}

type bearerToken struct {
	principal Principal
	sum       [sha256.Size]byte
}

// MinSecretLength is the shortest bearer token accepted.
const MinSecretLength = 16

// CheckSecret reports what makes a bearer token's value unfit: shorter
// than MinSecretLength (a guessable token guards patient data poorly), or
// holding whitespace (a copying mistake; callers could never send it).
// The error never quotes the value.
func CheckSecret(v string) error {
	switch {
	case v == "":
		return errors.New("the secret is empty")
	case strings.ContainsFunc(v, unicode.IsSpace):
		return errors.New("the secret holds spaces or other whitespace")
	case utf8.RuneCountInString(v) < MinSecretLength:
		return fmt.Errorf("the secret is shorter than %d characters; use a random one, such as openssl rand -hex 32 writes", MinSecretLength)
	}
	return nil
}

// NewBearer builds the authenticator. It refuses unfit secrets (CheckSecret), unnamed or
// role-less tokens, and two tokens with the same name or the same secret
// (errors name the tokens, never the secrets).
func NewBearer(tokens []Token) (*Bearer, error) {
	b := &Bearer{}
	for _, t := range tokens {
		if t.Name == "" {
			return nil, errors.New("a token has no name")
		}
		if err := CheckSecret(t.Secret); err != nil {
			return nil, fmt.Errorf("token %s: %w", t.Name, err)
		}
		if len(t.Roles) == 0 {
			return nil, fmt.Errorf("token %s: no roles", t.Name)
		}
		sum := sha256.Sum256([]byte(t.Secret))
		for _, o := range b.tokens {
			if o.principal.Name == t.Name {
				return nil, fmt.Errorf("token %s: the name is used twice", t.Name)
			}
			if o.sum == sum {
				return nil, fmt.Errorf("tokens %s and %s have the same secret; give each its own", o.principal.Name, t.Name)
			}
		}
		b.tokens = append(b.tokens, bearerToken{principal: Principal{Name: t.Name, Roles: slices.Clone(t.Roles)}, sum: sum})
	}
	return b, nil
}

// Holder returns the principal whose token is secret, if any.
func (b *Bearer) Holder(secret string) (Principal, bool) {
	sum := sha256.Sum256([]byte(secret))
	for _, t := range b.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			return t.principal, true
		}
	}
	return Principal{}, false
}

// Authenticate implements Authenticator.
func (b *Bearer) Authenticate(r *http.Request) (Principal, error) {
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	got = strings.TrimSpace(got)
	if !ok || !strings.EqualFold(scheme, "Bearer") || got == "" {
		return Principal{}, ErrNoCredentials
	}
	// Compare digests so every comparison takes the same time whatever
	// the lengths, and compare against every token without stopping at a
	// match.
	sum := sha256.Sum256([]byte(got))
	match := -1
	for i, t := range b.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Principal{}, ErrUnknownCredentials
	}
	p := b.tokens[match].principal
	return Principal{Name: p.Name, Roles: slices.Clone(p.Roles)}, nil
}

// ErrNotLocal is the error of Local for a request that may not come from
// this machine's own users: one addressed to a name that is not loopback,
// or sent by a web page of another origin.
var ErrNotLocal = errors.New("without http.tokens the admin API answers only requests addressed to this machine by a loopback name (localhost, 127.0.0.1, [::1]), not forwarded by a proxy and not sent by a web page of another site; configure http.tokens to reach it otherwise, through a proxy for example")

// Local authenticates every request CheckLocal accepts as Principal. The
// engine uses it when no token is configured and the listener is on
// loopback, so that zero-setup installs keep an open admin API for the
// local machine only. The listener alone keeps other machines out,
// but not a web page open in a browser on this machine, which can send
// requests to a loopback port (cross-site) or have its own name resolve
// to 127.0.0.1 (DNS rebinding) and read the answers.
type Local struct {
	Principal Principal
}

// Authenticate implements Authenticator.
func (l Local) Authenticate(r *http.Request) (Principal, error) {
	if err := CheckLocal(r); err != nil {
		return Principal{}, err
	}
	return Principal{Name: l.Principal.Name, Roles: slices.Clone(l.Principal.Roles)}, nil
}

// CheckLocal returns ErrNotLocal unless r is addressed to a loopback name
// (its Host: localhost, or a loopback IP address), was not forwarded by a
// proxy (which says so in Forwarded, X-Forwarded-For, X-Forwarded-Host or
// X-Real-IP: a proxy on this machine would otherwise open the API to
// whoever reaches the proxy) and, when it comes from a browser, from a
// page of a loopback origin: an Origin header naming another host, or
// "null", and Sec-Fetch-Site cross-site are refused. Tools such as curl
// and Junction's CLI send none of these headers.
func CheckLocal(r *http.Request) error {
	if !LoopbackHost(r.Host) {
		return ErrNotLocal
	}
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip"} {
		if r.Header.Get(h) != "" {
			return ErrNotLocal
		}
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !LoopbackHost(u.Host) {
			return ErrNotLocal
		}
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return ErrNotLocal
	}
	return nil
}

// LoopbackHost reports whether host (with or without a port, an IPv6
// address in brackets or not) is localhost, in any case, or a loopback IP
// address: a name only this machine answers to.
func LoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
