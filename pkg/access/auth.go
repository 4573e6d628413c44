package access

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
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

// Fixed authenticates every request as one principal. The engine uses it
// when no token is configured and the listener is on loopback, so that
// zero-setup installs keep an open admin API on the local machine only.
type Fixed struct {
	Principal Principal
}

// Authenticate implements Authenticator.
func (f Fixed) Authenticate(*http.Request) (Principal, error) {
	return Principal{Name: f.Principal.Name, Roles: slices.Clone(f.Principal.Roles)}, nil
}
