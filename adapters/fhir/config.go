// Package fhir is the FHIR REST adapter. Inbound, it is an endpoint on the
// engine's HTTP listener where supplier systems POST bundles and single
// resources, which are checked for structure, stored unchanged and
// answered 202 Accepted. Its translator hands such messages to routes as a
// Bundle. Outbound, it delivers bundles to a FHIR server, as an idempotent
// transaction of conditional updates or as a FHIR message.
//
// The package has two factories under the one type name "fhir": Factory
// for the inbound endpoint and its translator, OutboundFactory for
// destinations. Their configurations differ.
package fhir

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
)

// Type is the adapter type name used in config files.
const Type = "fhir"

// Defaults.
const (
	DefaultMaxBodyBytes = 10 << 20
	DefaultTimeout      = 30 * time.Second
	// MaxDepth is the deepest JSON nesting accepted inbound. FHIR resources
	// rarely exceed 15 levels; the limit keeps hostile input cheap.
	MaxDepth = 100
)

// Outbound modes.
const (
	ModeTransaction = "transaction"
	ModeMessage     = "message"
)

// DefaultResourceTypes returns the single resource types accepted by
// POST /fhir/{type} unless configured otherwise.
func DefaultResourceTypes() []string {
	return []string{
		"Patient", "Encounter", "Observation", "Condition", "AllergyIntolerance",
		"DiagnosticReport", "ServiceRequest", "Consent", "Practitioner",
		"Organization", "Location", "RelatedPerson", "Specimen", "Flag",
	}
}

// InboundConfig configures the inbound FHIR endpoint.
type InboundConfig struct {
	// MaxBodyBytes is the largest body accepted (default 10 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ResourceTypes are the single resource types accepted by
	// POST /fhir/{type}. Bundles are always accepted.
	ResourceTypes []string `yaml:"resource_types"`
	// BearerToken, when set, is a secret reference ("env:NAME" or
	// "file:PATH") to the token callers must send as
	// "Authorization: Bearer <token>". Set it whenever the HTTP listener is
	// reachable beyond this machine.
	BearerToken string `yaml:"bearer_token"`
	// AllowUnauthenticated lets the endpoint run without BearerToken on
	// an HTTP listener reachable beyond loopback, for deployments where
	// something in front (a gateway with mutual TLS, say) authenticates
	// senders. Without it such a start is refused.
	AllowUnauthenticated bool `yaml:"allow_unauthenticated"`
	// MaxConcurrent bounds posts being checked and stored at once (a post
	// takes a place once its body has arrived); more get 503 with
	// Retry-After. 0 means 64.
	MaxConcurrent int `yaml:"max_concurrent"`
	// MaxInflightBytes bounds the memory that bodies being received, and
	// posts being checked and stored (three times their size), hold
	// together beyond 64 KiB a body; a post that would need more gets 503
	// with Retry-After. 0 means DefaultMaxInflightBytes.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes"`
	// Schema is the path of the FHIR R4 JSON schema (fhir.schema.json,
	// published with the R4 specification) to validate every post
	// against: unknown elements, primitive formats (a birthDate of
	// "01/01/1980"), required elements and codes a closed value set
	// fixes. Empty (the default) checks structure only: JSON, the
	// models' types and codes, FHIR JSON's rules (no null, empty
	// arrays, objects or strings) and Bundle references.
	Schema string `yaml:"schema"`
}

// DefaultMaxInflightBytes is the default MaxInflightBytes: 256 MiB.
const DefaultMaxInflightBytes = 256 << 20

// DefaultInboundConfig returns the defaults.
func DefaultInboundConfig() InboundConfig {
	return InboundConfig{
		MaxBodyBytes:  DefaultMaxBodyBytes,
		ResourceTypes: DefaultResourceTypes(),
		MaxConcurrent: 64,
		// As 0 would: the default written out, as the README shows it.
		MaxInflightBytes: DefaultMaxInflightBytes,
	}
}

// ValidateExposed implements adapter.ExposureValidator: on a listener
// other machines reach, the endpoint takes patient data, so it needs a
// bearer token unless client certificates authenticate senders or the
// config says something in front does.
func (c *InboundConfig) ValidateExposed(clientCerts bool) []error {
	if c.BearerToken == "" && !c.AllowUnauthenticated && !clientCerts {
		return []error{errors.New("bearer_token: required when http.listen is not a loopback address, since anyone reaching the endpoint could post patient data; or set http.tls.client_ca so client certificates authenticate senders; set allow_unauthenticated: true only when something in front authenticates senders")}
	}
	return nil
}

// Validate returns every problem with c.
func (c *InboundConfig) Validate() []error {
	var errs []error
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, errors.New("max_body_bytes: must be positive"))
	}
	if c.MaxConcurrent < 0 {
		errs = append(errs, errors.New("max_concurrent: must not be negative (0 means the default, 64)"))
	}
	if c.MaxInflightBytes < 0 || cmp.Or(c.MaxInflightBytes, DefaultMaxInflightBytes) < (processingFactor+2)*c.MaxBodyBytes {
		errs = append(errs, fmt.Errorf("max_inflight_bytes: must be at least 5 times max_body_bytes (%d), or a body that large could never be taken (0 means the default, 256 MiB: raise it with max_body_bytes)", c.MaxBodyBytes))
	}
	if c.BearerToken != "" && !isSecretRef(c.BearerToken) {
		errs = append(errs, errors.New("bearer_token: must be a reference (env:NAME or file:PATH), never the token itself"))
	}
	if len(c.ResourceTypes) == 0 {
		errs = append(errs, errors.New("resource_types: at least one type is required"))
	}
	if c.Schema != "" {
		if st, err := os.Stat(c.Schema); err != nil || st.IsDir() {
			errs = append(errs, fmt.Errorf("schema: %s is not a readable file (the FHIR R4 JSON schema, fhir.schema.json)", c.Schema))
		}
	}
	seen := map[string]bool{}
	for i, t := range c.ResourceTypes {
		switch {
		case seen[t]:
			errs = append(errs, fmt.Errorf("resource_types[%d]: %q listed twice", i, t))
		case t == "Bundle":
			errs = append(errs, fmt.Errorf("resource_types[%d]: Bundle is always accepted; do not list it", i))
		case !supportedType(t):
			errs = append(errs, fmt.Errorf("resource_types[%d]: %q is not a resource type this endpoint can check (supported: %s)", i, t, strings.Join(SupportedResourceTypes(), ", ")))
		}
		seen[t] = true
	}
	return errs
}

// OutboundConfig configures a FHIR server destination.
type OutboundConfig struct {
	// URL is the server's base URL (required).
	URL string `yaml:"url"`
	// Authorization is a secret reference ("env:NAME" or "file:PATH")
	// whose value is sent verbatim as the Authorization header. Inline
	// values are refused so credentials stay out of config files.
	Authorization string `yaml:"authorization"`
	// Timeout bounds one request (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	// Mode is "transaction" (default) or "message".
	Mode string `yaml:"mode"`
	// Merge lists the resource types that, in transaction mode, are
	// merged into the server's copy rather than replaced whole: the copy
	// is read by identifier and the delivery's elements laid over it (see
	// Outbound). Default DefaultMergeTypes; empty replaces every type.
	Merge []string `yaml:"merge"`
}

// DefaultOutboundConfig returns the defaults.
func DefaultOutboundConfig() OutboundConfig {
	return OutboundConfig{Timeout: DefaultTimeout, Mode: ModeTransaction, Merge: DefaultMergeTypes()}
}

// Validate returns every problem with c.
func (c *OutboundConfig) Validate() []error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("url: required"))
	} else if err := jfhir.CheckBaseURL(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("url: %w", err))
	}
	if c.Authorization != "" && !isSecretRef(c.Authorization) {
		errs = append(errs, errors.New("authorization: must be a secret reference (env:NAME or file:PATH), not an inline value"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("timeout: must be positive"))
	}
	if c.Mode != ModeTransaction && c.Mode != ModeMessage {
		errs = append(errs, fmt.Errorf("mode: %q is not %q or %q", c.Mode, ModeTransaction, ModeMessage))
	}
	seen := map[string]bool{}
	for i, t := range c.Merge {
		if _, ok := jfhir.ResourceTypeOf(t); !ok || t == "Bundle" || t == "MessageHeader" {
			errs = append(errs, fmt.Errorf("merge[%d]: %q is not a resource type a transaction updates", i, t))
		} else if seen[t] {
			errs = append(errs, fmt.Errorf("merge[%d]: %q given twice", i, t))
		}
		seen[t] = true
	}
	return errs
}

func isSecretRef(s string) bool {
	for _, p := range []string{"env:", "file:"} {
		if strings.HasPrefix(s, p) && len(s) > len(p) {
			return true
		}
	}
	return false
}

// Factory builds the inbound FHIR endpoint and its translator.
type Factory struct{}

var (
	_ adapter.InboundFactory    = Factory{}
	_ adapter.TranslatorFactory = Factory{}
	_ adapter.ContentStorer     = Factory{}
)

// Type returns "fhir".
func (Factory) Type() string { return Type }

// StoresContent returns envelope.ContentTypeFHIR: the endpoint stores the
// posted FHIR JSON.
func (Factory) StoresContent() string { return envelope.ContentTypeFHIR }

// NewConfig returns an *InboundConfig holding the defaults.
func (Factory) NewConfig() any {
	c := DefaultInboundConfig()
	return &c
}

// NewInbound returns the endpoint for cfg, an *InboundConfig. It returns
// an adapter.HTTPInbound.
func (Factory) NewInbound(_ context.Context, set adapter.Settings, host adapter.Host, cfg any) (adapter.Inbound, error) {
	c, err := inboundConfigOf(cfg)
	if err != nil {
		return nil, err
	}
	return NewInbound(set, host, c)
}

// NewTranslator returns the translator for messages this adapter stored.
// It needs no configuration.
func (Factory) NewTranslator(cfg any) (adapter.Translator, error) {
	c, ok := cfg.(*InboundConfig)
	if !ok {
		return Translator{}, nil
	}
	return Translator{input: &inputChecks{cfg: *c}}, nil
}

// OutboundFactory builds FHIR server destinations.
type OutboundFactory struct{}

var (
	_ adapter.OutboundFactory = OutboundFactory{}
	_ adapter.ContentTaker    = OutboundFactory{}
)

// Type returns "fhir".
func (OutboundFactory) Type() string { return Type }

// TakesContent reports whether contentType is FHIR JSON, the only payload
// a FHIR server destination sends.
func (OutboundFactory) TakesContent(contentType string) bool {
	return contentType == envelope.ContentTypeFHIR
}

// NewConfig returns an *OutboundConfig holding the defaults.
func (OutboundFactory) NewConfig() any {
	c := DefaultOutboundConfig()
	return &c
}

// NewOutbound returns a destination for cfg, an *OutboundConfig.
func (OutboundFactory) NewOutbound(_ context.Context, set adapter.Settings, cfg any) (adapter.Outbound, error) {
	var c OutboundConfig
	switch v := cfg.(type) {
	case *OutboundConfig:
		if v == nil {
			return nil, fault.New(fault.CodeConfig, "fhir: nil outbound config")
		}
		c = *v
	case OutboundConfig:
		c = v
	default:
		return nil, fault.Newf(fault.CodeConfig, "fhir: outbound config is %T, want *fhir.OutboundConfig", cfg)
	}
	return NewOutbound(set, c)
}

func inboundConfigOf(cfg any) (InboundConfig, error) {
	switch v := cfg.(type) {
	case *InboundConfig:
		if v == nil {
			return DefaultInboundConfig(), nil
		}
		return *v, nil
	case InboundConfig:
		return v, nil
	case nil:
		return DefaultInboundConfig(), nil
	default:
		return InboundConfig{}, fault.Newf(fault.CodeConfig, "fhir: inbound config is %T, want *fhir.InboundConfig", cfg)
	}
}

// configError joins validation problems into one config fault.
func configError(what string, errs []error) error {
	return fault.Wrap(fault.Permanent, fault.CodeConfig, "fhir: invalid "+what+" config", errors.Join(errs...))
}

// isResourceType reports whether name is a FHIR R4 resource type.
func isResourceType(name string) bool {
	_, ok := jfhir.ResourceTypeOf(name)
	return ok
}

// MaxInputBytes is the largest message this input stores.
func (c *InboundConfig) MaxInputBytes() int64 { return c.MaxBodyBytes }

// CallerSecrets implements adapter.CallerSecrets: bearer_token, when set.
func (c *InboundConfig) CallerSecrets() map[string]string {
	if c.BearerToken == "" {
		return nil
	}
	return map[string]string{"bearer_token": c.BearerToken}
}
