// Package config holds the engine configuration: its schema, documented
// defaults, strict loading with file:line:col errors, and secret
// references. Secrets are never written inline: a setting that holds one
// takes "env:NAME" or "file:PATH".
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/junction-fhir/junction/pkg/access"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/pds"
	"github.com/junction-fhir/junction/pkg/router"
	"github.com/junction-fhir/junction/pkg/rules"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/tlsconf"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// Config is the whole engine configuration.
type Config struct {
	// DataDir holds the embedded store and file destinations' output.
	DataDir string `yaml:"data_dir" yamlx:"nonnull"`
	// Log sets level (debug, info, warn, error).
	Log LogConfig `yaml:"log"`
	// NATS selects the embedded server (default) or an external cluster.
	NATS store.Config `yaml:"nats"`
	// HTTP is the one HTTP listener: FHIR endpoint, admin API, metrics, health.
	HTTP HTTPConfig `yaml:"http"`
	// Inputs are inbound adapter instances by name. Written with no
	// value, it is an error rather than no inputs (or the defaults), as
	// are data_dir, destinations and routes with none.
	Inputs map[string]*Component `yaml:"inputs" yamlx:"nonnull"`
	// Destinations are outbound adapter instances by name.
	Destinations map[string]*Component `yaml:"destinations" yamlx:"nonnull"`
	// Routes lists route files or directories.
	Routes []string `yaml:"routes" yamlx:"nonnull"`
	// Rules bounds CEL cost.
	Rules RulesConfig `yaml:"rules"`
	// Router tunes the consumers.
	Router RouterConfig `yaml:"router"`
	// Audit configures the audit chains' signed checkpoints.
	Audit AuditConfig `yaml:"audit"`
	// Reconcile schedules the engine's own reconcile of every message it
	// acknowledged, exported as metrics.
	Reconcile ReconcileConfig `yaml:"reconcile"`
	// Consent selects the consent decider and configures the consent
	// engine.
	Consent ConsentConfig `yaml:"consent"`
	// PatientIndex configures the patient index routes keep current and
	// read (the CEL variable patient).
	PatientIndex PatientIndexConfig `yaml:"patient_index"`
	// Tracing says where OpenTelemetry spans are exported, unless the
	// standard OTEL_EXPORTER_OTLP_* variables do.
	Tracing TracingConfig `yaml:"tracing"`
	// ShutdownTimeout bounds the drain at shutdown.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MemoryLimitMiB is the soft memory limit `junction serve` gives the
	// Go runtime (it collects garbage harder as the heap nears it); 0
	// sets none. The GOMEMLIMIT environment variable, when set, wins.
	MemoryLimitMiB int `yaml:"memory_limit_mib"`

	// file is where the config was read from ("" for defaults).
	file string
	// top is the file's top mapping, to place validation errors.
	top yamlx.Node
	// routesUnread says the file's routes did not decode: Load has
	// reported why, and left none.
	routesUnread bool
}

// TracingConfig configures OTLP trace export from the file. The standard
// OTEL_EXPORTER_OTLP_* variables, when set, win over it, and give what it
// has no setting for (headers, TLS, timeouts).
type TracingConfig struct {
	// OTLPEndpoint is the collector's OTLP traces endpoint URL, used as
	// it is, as OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is: for grpc
	// http://collector:4317, for http/protobuf
	// http://collector:4318/v1/traces. Empty: no export, unless the
	// variables ask.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// OTLPProtocol is grpc (the default) or http/protobuf.
	OTLPProtocol string `yaml:"otlp_protocol"`
}

// validate checks the tracing section.
func (t TracingConfig) validate() []error {
	var errs []error
	if t.OTLPEndpoint != "" {
		u, err := url.Parse(t.OTLPEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			// The message names no part of the URL: it may hold a secret.
			errs = append(errs, errors.New("tracing.otlp_endpoint: must be an absolute http(s) URL without credentials, query or fragment, such as http://collector:4317"))
		}
	}
	switch t.OTLPProtocol {
	case "", "grpc", "http/protobuf":
	default:
		errs = append(errs, fmt.Errorf("tracing.otlp_protocol: must be grpc or http/protobuf, got %q", t.OTLPProtocol))
	}
	return errs
}

// LogConfig configures logging.
type LogConfig struct {
	Level string `yaml:"level"`
}

// HTTPConfig configures the HTTP listener.
type HTTPConfig struct {
	Listen string `yaml:"listen" yamlx:"nonnull"`
	// Tokens are the bearer tokens of the admin and audit APIs, each with
	// a name and roles (see TokenConfig). At least one token (or
	// AdminToken) is required when Listen is not loopback; with none, on
	// loopback, the APIs are open to the local machine.
	Tokens []TokenConfig `yaml:"tokens"`
	// AdminToken is a reference (env:NAME or file:PATH) to a bearer token
	// holding every role. Deprecated: use Tokens.
	AdminToken        string        `yaml:"admin_token"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	// MaxConnections bounds the connections the listener holds open: at
	// it, an idle keep-alive connection is closed for a new one, or with
	// none idle the new one is closed, so that clients holding
	// connections cannot take every file descriptor the process has.
	MaxConnections int `yaml:"max_connections"`
	// TLS, when set, makes the listener serve HTTPS only.
	TLS *HTTPTLSConfig `yaml:"tls"`
}

// HTTPTLSConfig configures TLS on the HTTP listener. Values are secret
// references: "file:PATH", or "env:NAME" naming a variable that holds the
// PEM. The certificate is read again while Junction runs, so a renewed
// one is served without a restart.
type HTTPTLSConfig struct {
	// Cert and Key are the server's certificate chain and private key.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientCA, when set, makes the FHIR endpoint take posts only from
	// clients presenting a certificate signed by it (mutual TLS); it then
	// needs no bearer token off loopback. Other paths need no client
	// certificate, so probes and scrapers need none; a certificate a
	// client does present must be signed by ClientCA, on every path.
	ClientCA string `yaml:"client_ca"`
}

// ClientCertsVerified reports whether the listener verifies client
// certificates, which the FHIR endpoint then requires.
func (h HTTPConfig) ClientCertsVerified() bool {
	return h.TLS != nil && h.TLS.ClientCA != ""
}

// validateTLS returns the problems with the listener's TLS settings.
func (h HTTPConfig) validateTLS() []error {
	t := h.TLS
	if t == nil {
		return nil
	}
	var errs []error
	if t.Cert == "" {
		errs = append(errs, errors.New("http.tls.cert: required"))
	}
	if t.Key == "" {
		errs = append(errs, errors.New("http.tls.key: required"))
	}
	errs = tlsconf.CheckRef(errs, "http.tls.cert", t.Cert)
	errs = tlsconf.CheckRef(errs, "http.tls.key", t.Key)
	return tlsconf.CheckRef(errs, "http.tls.client_ca", t.ClientCA)
}

// AuditConfig configures audit checkpoints.
type AuditConfig struct {
	// SigningKey is a reference (env:NAME or file:PATH) to the ed25519 key
	// that signs audit checkpoints: PEM (PKCS #8, as "junction audit
	// keygen" writes) or a 32-byte seed in hex or base64. Without it the
	// audit records are still hash-chained but no checkpoints are signed.
	SigningKey string `yaml:"signing_key"`
	// CheckpointInterval is how often, at most, each audit writer
	// publishes a signed checkpoint while it writes.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
}

// ReconcileConfig schedules the in-engine reconcile: every Interval, one
// process of those sharing the store checks that the messages received
// in the window since the last one checked, up to Lag ago, reached an
// outcome (see router.ReconcileScheduler).
type ReconcileConfig struct {
	// Interval is how often a window is checked; 0 turns the scheduled
	// reconcile off.
	Interval time.Duration `yaml:"interval"`
	// Lag is how long after a window ends it is checked: long enough for
	// its messages to have finished.
	Lag time.Duration `yaml:"lag"`
}

// Bounds of the reconcile settings.
const (
	// maxReconcileInterval is the longest window one scheduled run checks
	// (router's maxReconcileWindow): with a longer interval the windows
	// would fall behind.
	maxReconcileInterval = time.Hour
	// maxReconcileLag keeps a window's messages well within the streams'
	// retention when it is checked.
	maxReconcileLag = 24 * time.Hour
)

// validate checks the reconcile section; ingressMaxAge is how long the
// ingress stream keeps messages.
func (r ReconcileConfig) validate(ingressMaxAge time.Duration) []error {
	var errs []error
	if r.Interval != 0 && (r.Interval < time.Minute || r.Interval > maxReconcileInterval) {
		errs = append(errs, fmt.Errorf("reconcile.interval: must be 0 (off) or 1m to 1h, got %s", r.Interval))
	}
	switch {
	case r.Lag < time.Minute || r.Lag > maxReconcileLag:
		errs = append(errs, fmt.Errorf("reconcile.lag: must be 1m to 24h, got %s", r.Lag))
	case ingressMaxAge > 0 && r.Lag+r.Interval >= ingressMaxAge:
		errs = append(errs, fmt.Errorf("reconcile.lag: with reconcile.interval, must be under nats.ingress_max_age (%s), so that a window's messages are still stored when it is checked", ingressMaxAge))
	}
	return errs
}

// RulesConfig bounds CEL.
type RulesConfig struct {
	MaxEstimatedCost uint64        `yaml:"max_estimated_cost"`
	CostLimit        uint64        `yaml:"cost_limit"`
	Timeout          time.Duration `yaml:"timeout"`
}

// Limits converts to rules.Limits.
func (r RulesConfig) Limits() rules.Limits {
	l := rules.DefaultLimits()
	l.MaxEstimatedCost, l.CostLimit, l.Timeout = r.MaxEstimatedCost, r.CostLimit, r.Timeout
	return l
}

// PipelineMode is the router pipeline the config selects: the one named,
// or by default the batch pipeline when ingest group-commits and the
// message pipeline when it does not.
func (c *Config) PipelineMode() string {
	if c.Router.Pipeline != "" {
		return c.Router.Pipeline
	}
	if c.NATS.GroupCommit {
		return router.PipelineBatch
	}
	return router.PipelineMessage
}

// DefaultMaxBacklog is router.max_backlog's default: at the full route's
// rate on a small machine (about 1,000 messages a second, BENCHMARKS.md)
// a minute and a half of routing, and about 100 MB of the store's disk
// for average ADT messages.
const DefaultMaxBacklog = 100_000

// RouterConfig tunes consumers.
type RouterConfig struct {
	Batch   int           `yaml:"batch"`
	AckWait time.Duration `yaml:"ack_wait"`
	// Pipeline is "batch" (group-committed batches stay whole through
	// routing and delivery; needs nats.group_commit), "message" (every
	// stage writes each message on its own) or empty: batch with group
	// commit, else message. See PipelineMode.
	Pipeline string `yaml:"pipeline"`
	// DeliveryConcurrency is how many partitions the batch pipeline sends
	// to one destination at once.
	DeliveryConcurrency int `yaml:"delivery_concurrency"`
	// SpanBatches is how many stored batches a batch-pipeline stage that
	// has fallen behind takes at once (a span), writing one set of
	// outputs for all of them.
	SpanBatches int `yaml:"span_batches"`
	// MaxBacklog is how many stored messages of one input may wait to be
	// routed before the input refuses new ones (resend later) until the
	// backlog falls below four fifths of it; 0 means no limit.
	MaxBacklog int `yaml:"max_backlog"`
}

// Consent engines.
const (
	// ConsentEngineConsent is the consent engine: patients' Consents, the
	// national data opt-out, security labels and destination allow-lists
	// decide, with each route's default when no Consent speaks.
	ConsentEngineConsent = "consent"
	// ConsentEngineDefault decides by each route's declared default alone.
	ConsentEngineDefault = "default"
)

// ConsentConfig configures consent decisions.
type ConsentConfig struct {
	// Engine is "consent" (the default) or "default".
	Engine string `yaml:"engine"`
	// HashKey is a reference (env:NAME or file:PATH) to the key, at least
	// 16 bytes, that turns NHS numbers into the keys of the consent
	// buckets and into the patient hashes audit records carry (so a
	// patient's disclosures can be found). Empty: a random key is made
	// once and kept in the store. It is used whichever Engine decides.
	HashKey string `yaml:"hash_key"`
	// OptOutMaxAge is how old the national data opt-out list may be before
	// it counts as stale (and denies research and planning).
	OptOutMaxAge time.Duration `yaml:"opt_out_max_age"`
	// OptOutFile is the path of the national data opt-out list (one NHS
	// number per line, or CSV with the number in the first column), loaded
	// at start and again whenever its modification time changes, which
	// dates the list. Empty: the list is loaded only through the admin
	// API (POST /api/optouts).
	OptOutFile string `yaml:"opt_out_file"`
	// RecheckAfter is how old a queued payload's consent decision may be
	// before, ahead of each attempt to send it, Junction checks whether
	// its patients' Consents or the opt-out list changed since; one that
	// changed is routed again and decided anew instead of sent as
	// queued. 0 checks before every attempt. Only with engine: consent.
	RecheckAfter time.Duration `yaml:"recheck_after"`
	// Destinations gives destinations' ODS organisation codes and the
	// restricted data they are allow-listed for, by destination name.
	Destinations map[string]ConsentDestination `yaml:"destinations"`
	// Sources gives inputs' ODS organisation codes, by input name, so a
	// patient's disclosure report can name the organisation the data
	// came from.
	Sources map[string]ConsentSource `yaml:"sources"`
}

// ConsentSource is an input as disclosure reports see it.
type ConsentSource struct {
	// ODS is the sending organisation's ODS code.
	ODS string `yaml:"ods"`
}

// PatientIndexConfig configures the patient index.
type PatientIndexConfig struct {
	// Enabled applies every translated message to the index and gives
	// routes the patient's record (default true).
	Enabled bool `yaml:"enabled"`
	// Bucket is the JetStream KV bucket of the index.
	Bucket string `yaml:"bucket"`
	// PDS looks patients up in the Personal Demographics Service in the
	// background to keep their registered GP practice current (off when
	// its URL is empty).
	PDS PDSConfig `yaml:"pds"`
}

// PDSConfig configures background lookups in the Personal Demographics
// Service (PDS) FHIR API; see package pkg/pds.
type PDSConfig struct {
	// URL is the API's base URL, before /Patient (for example
	// https://int.api.service.nhs.uk/personal-demographics/FHIR/R4).
	// Empty: no lookups.
	URL string `yaml:"url"`
	// Token is a reference (env:NAME or file:PATH) to the OAuth 2.0
	// access token, sent as Authorization: Bearer and read again for
	// every request; empty sends none (as the sandbox accepts) unless
	// Auth is set. Give Token or Auth, not both.
	Token string `yaml:"token"`
	// Auth gets the access token by NHS England's signed JWT
	// authentication for application-restricted access (off when empty,
	// the default).
	Auth PDSAuthConfig `yaml:"auth"`
	// Timeout bounds each request, token requests included.
	Timeout time.Duration `yaml:"timeout"`
	// RefreshAfter is how old a patient's last PDS answer may be before a
	// message for the patient queues another lookup.
	RefreshAfter time.Duration `yaml:"refresh_after"`
}

// PDSAuthConfig configures signed JWT authentication for PDS (see
// pds.TokenSource): Junction signs a JWT (RS512) with the private key and
// exchanges it at the token endpoint for an access token, cached and
// renewed a minute before it expires. All four settings are given
// together, or none (the default: off).
type PDSAuthConfig struct {
	// TokenURL is the OAuth 2.0 token endpoint, also the JWT's aud (for
	// example https://int.api.service.nhs.uk/oauth2/token). It must be
	// https; http is accepted only to a loopback address (a test double).
	TokenURL string `yaml:"token_url"`
	// APIKey is a reference (env:NAME or file:PATH) to the application's
	// API key from the NHS England developer portal (the JWT's iss and
	// sub).
	APIKey string `yaml:"api_key"`
	// PrivateKey is a reference (env:NAME or file:PATH) to the PEM RSA
	// private key, PKCS#1 or PKCS#8, unencrypted; at least 2048 bits
	// (NHS England asks for 4096).
	PrivateKey string `yaml:"private_key"`
	// KID is the key id the public key was registered with (the JWT
	// header's kid).
	KID string `yaml:"kid"`
}

// set reports whether any setting is given.
func (a PDSAuthConfig) set() bool {
	return a.TokenURL != "" || a.APIKey != "" || a.PrivateKey != "" || a.KID != ""
}

// validate checks the auth settings.
func (a PDSAuthConfig) validate() []error {
	if !a.set() {
		return nil
	}
	var errs []error
	var missing []string
	for _, f := range []struct{ name, v string }{{"token_url", a.TokenURL}, {"api_key", a.APIKey}, {"private_key", a.PrivateKey}, {"kid", a.KID}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("patient_index.pds.auth: token_url, api_key, private_key and kid are given together; missing %s", strings.Join(missing, ", ")))
	}
	if a.TokenURL != "" {
		u, err := url.Parse(a.TokenURL)
		switch {
		case err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Scheme != "https" && u.Scheme != "http"):
			errs = append(errs, errors.New("patient_index.pds.auth.token_url: must be an absolute https URL without credentials, query or fragment"))
		case u.Scheme == "http" && !IsLoopback(net.JoinHostPort(u.Hostname(), "0")):
			errs = append(errs, errors.New("patient_index.pds.auth.token_url: must be https (http only to a loopback address, for tests)"))
		}
	}
	if a.APIKey != "" && !IsRef(a.APIKey) {
		errs = append(errs, errors.New("patient_index.pds.auth.api_key: must be a reference (env:NAME or file:PATH), never the key itself"))
	}
	if a.PrivateKey != "" && !IsRef(a.PrivateKey) {
		errs = append(errs, errors.New("patient_index.pds.auth.private_key: must be a reference (env:NAME or file:PATH), never the key itself"))
	}
	if a.KID != "" && strings.IndexFunc(a.KID, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		errs = append(errs, errors.New("patient_index.pds.auth.kid: must be printable ASCII without spaces"))
	}
	return errs
}

// validate checks the patient index section.
func (p PatientIndexConfig) validate() []error {
	var errs []error
	if p.Enabled && !validName(p.Bucket) {
		errs = append(errs, fmt.Errorf("patient_index.bucket: must be 1 to 64 letters, digits, '-' or '_', got %q", p.Bucket))
	}
	if p.PDS.URL == "" {
		return errs
	}
	if !p.Enabled {
		errs = append(errs, errors.New("patient_index.pds: needs patient_index.enabled: true (lookups update the index)"))
	}
	if u, err := url.Parse(p.PDS.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, errors.New("patient_index.pds.url: must be an absolute https URL without credentials, query or fragment"))
	} else if u.Scheme == "http" && !IsLoopback(net.JoinHostPort(u.Hostname(), "0")) {
		errs = append(errs, errors.New("patient_index.pds.url: must be https (http only to a loopback address, for tests): lookups carry NHS numbers and the access token"))
	}
	if p.PDS.Token != "" && !IsRef(p.PDS.Token) {
		errs = append(errs, errors.New("patient_index.pds.token: must be a reference (env:NAME or file:PATH), never the token itself"))
	}
	if p.PDS.Token != "" && p.PDS.Auth.set() {
		errs = append(errs, errors.New("patient_index.pds: give token or auth, not both (auth gets the token itself)"))
	}
	errs = append(errs, p.PDS.Auth.validate()...)
	if p.PDS.Timeout <= 0 {
		errs = append(errs, errors.New("patient_index.pds.timeout: must be positive"))
	}
	if p.PDS.RefreshAfter < time.Minute {
		errs = append(errs, errors.New("patient_index.pds.refresh_after: must be at least 1m"))
	}
	return errs
}

// ConsentDestination is a receiver as the consent engine sees it.
type ConsentDestination struct {
	// ODS is the receiving organisation's ODS code; Consent provisions
	// name recipients by it.
	ODS string `yaml:"ods"`
	// Allow lists the restricted data the destination may receive: V,
	// GRA-S22, HFEA-S33A (legal: only this opens them), R, SEXUAL-HEALTH,
	// SAFEGUARDING (protected: this or the patient's Consent), S-FLAG
	// (contact details of restricted patients).
	Allow []string `yaml:"allow"`
}

// consentClearances are the values ConsentDestination.Allow takes.
var consentClearances = []string{"V", "GRA-S22", "HFEA-S33A", "R", "SEXUAL-HEALTH", "SAFEGUARDING", "S-FLAG"}

// validate checks the consent section against the destinations.
func (c ConsentConfig) validate(inputs, dests map[string]*Component) []error {
	var errs []error
	switch c.Engine {
	case ConsentEngineConsent, ConsentEngineDefault:
	default:
		errs = append(errs, fmt.Errorf("consent.engine: must be %s or %s, got %q", ConsentEngineConsent, ConsentEngineDefault, c.Engine))
	}
	if c.HashKey != "" && !IsRef(c.HashKey) {
		errs = append(errs, errors.New("consent.hash_key: must be a reference (env:NAME or file:PATH), never the key itself"))
	}
	if c.OptOutMaxAge <= 0 {
		errs = append(errs, errors.New("consent.opt_out_max_age: must be positive"))
	}
	if c.RecheckAfter < 0 {
		errs = append(errs, errors.New("consent.recheck_after: must not be negative"))
	}
	if c.OptOutFile != "" && c.Engine == ConsentEngineDefault {
		errs = append(errs, errors.New("consent.opt_out_file: needs consent.engine: consent (the default policy does not consult the opt-out list)"))
	}
	names := make([]string, 0, len(c.Destinations))
	for n := range c.Destinations {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		d := c.Destinations[name]
		if _, ok := dests[name]; !ok {
			errs = append(errs, fmt.Errorf("consent.destinations.%s: no destination of that name", name))
		}
		if d.ODS != "" && !validODS(d.ODS) {
			errs = append(errs, fmt.Errorf("consent.destinations.%s.ods: %q is not an ODS code (2 to 12 letters and digits)", name, d.ODS))
		}
		for i, a := range d.Allow {
			if !slices.Contains(consentClearances, a) {
				errs = append(errs, fmt.Errorf("consent.destinations.%s.allow[%d]: must be one of %s, got %q", name, i, strings.Join(consentClearances, ", "), a))
			}
		}
	}
	names = names[:0]
	for n := range c.Sources {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, ok := inputs[name]; !ok {
			errs = append(errs, fmt.Errorf("consent.sources.%s: no input of that name", name))
		}
		if o := c.Sources[name].ODS; o != "" && !validODS(o) {
			errs = append(errs, fmt.Errorf("consent.sources.%s.ods: %q is not an ODS code (2 to 12 letters and digits)", name, o))
		}
	}
	return errs
}

// validODS reports whether s looks like an ODS organisation code.
func validODS(s string) bool {
	if len(s) < 2 || len(s) > 12 {
		return false
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Component is one adapter instance: its type, for destinations its retry
// policy, and the rest of its settings, decoded later by the adapter.
type Component struct {
	Type    string
	TypePos yamlx.Pos
	Retry   router.Retry
	// Settings is the mapping without type and retry.
	Settings yamlx.Node
	// Pos is where the component was declared.
	Pos yamlx.Pos
}

// UnmarshalYAMLx splits type and retry from the adapter's own settings.
// Errors carry the component's path (such as destinations.ehr.retry) and
// exact positions, and Settings keeps the source so the adapter's own
// decoding reports the same way.
func (c *Component) UnmarshalYAMLx(n yamlx.Node, errs *yamlx.Errors) {
	c.Pos = n.Pos()
	c.Retry = router.DefaultRetry()
	node := n.Node
	if node == nil || node.Kind != yaml.MappingNode {
		errs.Add(n.Pos(), "%s: expected a mapping with a type", n.Path)
		return
	}
	rest := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: node.Line, Column: node.Column}
	seen := map[string]bool{}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i], node.Content[i+1]
		switch k.Value {
		case "type", "retry":
			if seen[k.Value] {
				errs.Add(yamlx.Pos{File: n.File, Line: k.Line, Col: k.Column}, "%s: duplicate key %q", n.Path, k.Value)
				continue
			}
			seen[k.Value] = true
			if k.Value == "retry" {
				n.Child(v, "retry").DecodeTo(&c.Retry, errs)
				continue
			}
			c.TypePos = yamlx.Pos{File: n.File, Line: v.Line, Col: v.Column}
			if v.Kind != yaml.ScalarNode || v.ShortTag() == "!!null" || v.Value == "" {
				errs.Add(c.TypePos, "%s.type: expected an adapter type name", n.Path)
				continue
			}
			c.Type = v.Value
		default:
			rest.Content = append(rest.Content, k, v)
		}
	}
	if !seen["type"] {
		errs.Add(n.Pos(), "missing required field \"type\" in %s", n.Path)
	}
	c.Settings = n.Child(rest, "")
}

// Default returns the zero-setup configuration: embedded NATS under ./data,
// a PAS MLLP listener on 127.0.0.1:2575, the FHIR endpoint and admin API on
// 127.0.0.1:8080, the shipped routes, and file destinations under the data
// directory.
func Default() *Config {
	return &Config{
		DataDir: "data",
		Log:     LogConfig{Level: "info"},
		NATS:    store.DefaultConfig(),
		HTTP: HTTPConfig{
			Listen: "127.0.0.1:8080", Tokens: []TokenConfig{}, ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout: time.Minute, WriteTimeout: time.Minute, MaxConnections: 1000,
		},
		Inputs: map[string]*Component{
			"pas":       {Type: "pas", Retry: router.DefaultRetry()},
			"pathology": {Type: "pathology", Retry: router.DefaultRetry()},
			"fhir":      {Type: "fhir", Retry: router.DefaultRetry()},
		},
		Destinations: map[string]*Component{
			"fhir-store":   {Type: "file", Retry: router.DefaultRetry(), Settings: settings("dir: out/fhir-store")},
			"data-quality": {Type: "file", Retry: router.DefaultRetry(), Settings: settings("dir: out/data-quality")},
		},
		Routes:          []string{"routes"},
		Rules:           RulesConfig{MaxEstimatedCost: rules.DefaultLimits().MaxEstimatedCost, CostLimit: rules.DefaultLimits().CostLimit, Timeout: rules.DefaultLimits().Timeout},
		Router:          RouterConfig{Batch: 64, AckWait: 10 * time.Second, DeliveryConcurrency: 16, SpanBatches: 64, MaxBacklog: DefaultMaxBacklog},
		Audit:           AuditConfig{CheckpointInterval: time.Minute},
		Reconcile:       ReconcileConfig{Interval: 5 * time.Minute, Lag: 15 * time.Minute},
		Consent:         ConsentConfig{Engine: ConsentEngineConsent, OptOutMaxAge: 720 * time.Hour, RecheckAfter: 10 * time.Second},
		PatientIndex:    PatientIndexConfig{Enabled: true, Bucket: patient.DefaultBucket, PDS: PDSConfig{Timeout: 10 * time.Second, RefreshAfter: 24 * time.Hour}},
		Tracing:         TracingConfig{OTLPProtocol: "grpc"},
		ShutdownTimeout: 30 * time.Second,
		MemoryLimitMiB:  200,
	}
}

// settings parses a default component's settings, written in this file:
// an error is a bug in Junction, said plainly at once.
func settings(src string) yamlx.Node {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil || len(doc.Content) == 0 {
		panic(fmt.Sprintf("config: default settings %q do not parse: %v", src, err))
	}
	return yamlx.Node{Node: doc.Content[0], File: "(defaults)"}
}

// Load reads a config file over the defaults. Inputs and destinations
// given in the file replace the default set entirely, so a trust's config
// says exactly what runs.
//
// When the file has errors, Load returns them together with the config
// as far as it was decoded, so a caller such as lint can go on to report
// other problems (the route files'); nothing may run on that config. Its
// routes are empty when the error is in them. It returns no config when
// the file could not be read or parsed at all.
func Load(path string) (*Config, error) {
	c := Default()
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	top := topMapping(data)
	if valueOf(top, "inputs") != nil {
		c.Inputs = nil
	}
	if valueOf(top, "destinations") != nil {
		c.Destinations = nil
	}
	var errs yamlx.Errors
	if err := yamlx.Decode(path, data, c); err != nil && !errors.As(err, &errs) {
		return nil, err
	}
	// A component written as null ("pas:" with nothing after it) decodes
	// to a nil entry, which nothing downstream expects.
	for _, sec := range []struct {
		key string
		m   map[string]*Component
	}{{"inputs", c.Inputs}, {"destinations", c.Destinations}} {
		for name, comp := range sec.m {
			if comp != nil {
				continue
			}
			p := yamlx.Pos{File: path}
			if k := keyOf(valueOf(top, sec.key), name); k != nil {
				p.Line, p.Col = k.Line, k.Column
			}
			errs.Add(p, "%s.%s: expected a mapping with a type, got null", sec.key, name)
			delete(sec.m, name)
		}
	}
	if len(errs) > 0 {
		if top == nil {
			return nil, errs.Err()
		}
		// Placed like a good file's, so what is checked after these
		// errors is reported with them, each at its line.
		c.file = path
		c.top = yamlx.Node{Node: top, File: path}
		for _, e := range errs {
			if e.Msg == "routes" || strings.HasPrefix(e.Msg, "routes:") || strings.HasPrefix(e.Msg, "routes[") {
				// Not the routes the file meant: none rather than the
				// default ones.
				c.Routes = nil
				c.routesUnread = true
			}
		}
		return c, errs.Err()
	}
	c.file = path
	c.top = yamlx.Node{Node: top, File: path}
	return c, nil
}

// PosOf returns where the setting at path (as Validate's errors name it,
// such as http.tokens) is written in the file the config came from, or
// where its nearest parent is (see yamlx.Node.PosOf); the zero Pos for a
// config not read from a file.
func (c *Config) PosOf(path string) yamlx.Pos {
	if c.top.Node == nil {
		return yamlx.Pos{}
	}
	return c.top.PosOf(path)
}

// RoutePos returns where the config file writes Routes[i], or the zero
// Pos when it does not (the routes are the defaults, or were given
// another way, such as on the command line, after loading).
func (c *Config) RoutePos(i int) yamlx.Pos {
	if c.top.Node == nil || i < 0 || i >= len(c.Routes) {
		return yamlx.Pos{}
	}
	v := valueOf(c.top.Node, "routes")
	if v == nil || v.Kind != yaml.SequenceNode || i >= len(v.Content) || v.Content[i].Value != c.Routes[i] {
		return yamlx.Pos{}
	}
	return yamlx.Pos{File: c.file, Line: v.Content[i].Line, Col: v.Content[i].Column}
}

// topMapping returns the document's top mapping, or nil.
func topMapping(data []byte) *yaml.Node {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	return doc.Content[0]
}

// keyOf returns the key node of key in mapping m, or nil.
func keyOf(m *yaml.Node, key string) *yaml.Node {
	k, _ := yamlx.MapEntry(m, key)
	return k
}

// valueOf returns the value node of key in mapping m, or nil.
func valueOf(m *yaml.Node, key string) *yaml.Node {
	_, v := yamlx.MapEntry(m, key)
	return v
}

// File returns the path the config came from, or "".
func (c *Config) File() string { return c.file }

// Validate checks settings that do not depend on adapters. Adapter
// settings are checked by the engine with each adapter's own config.
func (c *Config) Validate() []error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: required"))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: must be debug, info, warn or error, got %q", c.Log.Level))
	}
	errs = append(errs, c.NATS.Validate()...)
	if c.NATS.Listen != "" && !IsLoopback(c.NATS.Listen) {
		errs = append(errs, fmt.Errorf("nats.listen: %s is not a loopback address; the embedded server has no authentication, so it may only listen on loopback", c.NATS.Listen))
	}
	if err := adapter.CheckHostPort(c.HTTP.Listen, true); err != nil {
		errs = append(errs, fmt.Errorf("http.listen: %v", err))
	} else if !IsLoopback(c.HTTP.Listen) && c.HTTP.AdminToken == "" && len(c.HTTP.Tokens) == 0 {
		errs = append(errs, fmt.Errorf("http.tokens: at least one token is required when http.listen (%s) is not a loopback address, since the admin API shows patient data", c.HTTP.Listen))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"read_header_timeout", c.HTTP.ReadHeaderTimeout}, {"read_timeout", c.HTTP.ReadTimeout}, {"write_timeout", c.HTTP.WriteTimeout}} {
		if d.v < 0 {
			// net/http would take it as no timeout at all.
			errs = append(errs, fmt.Errorf("http.%s: must not be negative (0 means none), got %s", d.name, d.v))
		}
	}
	if c.HTTP.MaxConnections < 1 {
		errs = append(errs, fmt.Errorf("http.max_connections: must be positive, got %d", c.HTTP.MaxConnections))
	}
	if c.HTTP.AdminToken != "" && !IsRef(c.HTTP.AdminToken) {
		errs = append(errs, errors.New("http.admin_token: must be a reference (env:NAME or file:PATH), never the token itself"))
	}
	errs = append(errs, c.HTTP.validateTokens()...)
	errs = append(errs, c.HTTP.validateTLS()...)
	if c.Audit.SigningKey != "" && !IsRef(c.Audit.SigningKey) {
		errs = append(errs, errors.New("audit.signing_key: must be a reference (env:NAME or file:PATH), never the key itself"))
	}
	if c.Audit.CheckpointInterval <= 0 {
		errs = append(errs, errors.New("audit.checkpoint_interval: must be positive"))
	}
	errs = append(errs, c.Reconcile.validate(c.NATS.IngressMaxAge)...)
	if c.Router.Batch < 1 || c.Router.Batch > 1000 {
		errs = append(errs, fmt.Errorf("router.batch: must be 1 to 1000, got %d", c.Router.Batch))
	}
	if c.Router.AckWait < time.Second {
		errs = append(errs, errors.New("router.ack_wait: must be at least 1s"))
	}
	switch c.Router.Pipeline {
	case "", router.PipelineMessage:
	case router.PipelineBatch:
		if !c.NATS.GroupCommit {
			errs = append(errs, errors.New("router.pipeline: batch needs nats.group_commit: true"))
		}
	default:
		errs = append(errs, fmt.Errorf("router.pipeline: must be %s or %s, got %q", router.PipelineMessage, router.PipelineBatch, c.Router.Pipeline))
	}
	if c.Router.MaxBacklog < 0 {
		errs = append(errs, fmt.Errorf("router.max_backlog: must not be negative (0 means no limit), got %d", c.Router.MaxBacklog))
	}
	if c.Router.SpanBatches < 1 || c.Router.SpanBatches > 1024 {
		errs = append(errs, fmt.Errorf("router.span_batches: must be 1 to 1024, got %d", c.Router.SpanBatches))
	}
	if c.Router.DeliveryConcurrency < 1 || c.Router.DeliveryConcurrency > 1024 {
		errs = append(errs, fmt.Errorf("router.delivery_concurrency: must be 1 to 1024, got %d", c.Router.DeliveryConcurrency))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("shutdown_timeout: must be positive"))
	}
	if c.MemoryLimitMiB < 0 || c.MemoryLimitMiB > 1<<20 {
		errs = append(errs, fmt.Errorf("memory_limit_mib: must be 0 (none) to %d, got %d", 1<<20, c.MemoryLimitMiB))
	}
	// Zero limits would reject every expression or stop every evaluation.
	if c.Rules.MaxEstimatedCost == 0 {
		errs = append(errs, errors.New("rules.max_estimated_cost: must be positive"))
	}
	if c.Rules.CostLimit == 0 {
		errs = append(errs, errors.New("rules.cost_limit: must be positive"))
	}
	if c.Rules.Timeout <= 0 {
		errs = append(errs, errors.New("rules.timeout: must be positive"))
	}
	for _, name := range sortedNames(c.Inputs) {
		if !validName(name) {
			errs = append(errs, fmt.Errorf("%sinputs.%s: names may hold only letters, digits, '-' and '_'", c.namePos("inputs", name), name))
		} else if name[0] == '_' {
			// An input's name is a token of its store subjects, beside
			// the engine's own (junction.in._acc, junction.in._span).
			errs = append(errs, fmt.Errorf("%sinputs.%s: names may not start with '_', which the engine keeps for its own store subjects", c.namePos("inputs", name), name))
		}
		if c.Inputs[name] == nil {
			errs = append(errs, fmt.Errorf("inputs.%s: expected a mapping with a type", name))
		}
	}
	for _, name := range sortedNames(c.Destinations) {
		d := c.Destinations[name]
		if !validName(name) {
			errs = append(errs, fmt.Errorf("%sdestinations.%s: names may hold only letters, digits, '-' and '_'", c.namePos("destinations", name), name))
		}
		if d == nil {
			errs = append(errs, fmt.Errorf("destinations.%s: expected a mapping with a type", name))
			continue
		}
		for _, e := range d.Retry.Validate() {
			errs = append(errs, fmt.Errorf("destinations.%s.%w", name, e))
		}
	}
	if len(c.Routes) == 0 && !c.routesUnread {
		errs = append(errs, errors.New("routes: at least one route file or directory is required"))
	}
	errs = append(errs, c.Consent.validate(c.Inputs, c.Destinations)...)
	errs = append(errs, c.PatientIndex.validate()...)
	errs = append(errs, c.Tracing.validate()...)
	return errs
}

// namePos returns "file:line:col: " of the key naming an input or
// destination (section) in the file, or "" when it is not in one: such a
// name is no settings path, so the engine cannot place its errors.
func (c *Config) namePos(section, name string) string {
	if c.top.Node == nil {
		return ""
	}
	k := keyOf(valueOf(c.top.Node, section), name)
	if k == nil {
		return ""
	}
	return yamlx.Pos{File: c.file, Line: k.Line, Col: k.Column}.String() + ": "
}

// sortedNames returns m's keys in order, so errors come out in a stable
// order.
func sortedNames(m map[string]*Component) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// IsLoopback reports whether a host:port listens on loopback only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && access.LoopbackHost(host)
}

// IsRef reports whether s is a secret reference.
func IsRef(s string) bool {
	return strings.HasPrefix(s, "env:") || strings.HasPrefix(s, "file:")
}

// Secrets resolves env: and file: references.
type Secrets struct {
	// Getenv defaults to os.Getenv.
	Getenv func(string) string
}

// Resolve returns the value a reference names. Values read from files lose
// one trailing newline.
func (s Secrets) Resolve(ref string) (string, error) {
	switch {
	case strings.HasPrefix(ref, "env:"):
		name := ref[4:]
		if name == "" {
			return "", errors.New("env: reference names no variable")
		}
		var v string
		set := true
		if s.Getenv != nil {
			v = s.Getenv(name)
			set = v != ""
		} else {
			v, set = os.LookupEnv(name)
		}
		switch {
		case !set:
			return "", fmt.Errorf("environment variable %s is not set", name)
		case v == "":
			return "", fmt.Errorf("environment variable %s is set but empty", name)
		}
		return v, nil
	case strings.HasPrefix(ref, "file:"):
		b, err := os.ReadFile(ref[5:])
		if err != nil {
			return "", fmt.Errorf("reading secret file: %w", err)
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if v == "" {
			return "", errors.New("secret file is empty")
		}
		return v, nil
	}
	return "", errors.New("not a secret reference: use env:NAME or file:PATH")
}

// isTokenSetting reports whether the setting at path holds a bearer
// token (http.admin_token, http.tokens[i].token, an input's
// bearer_token), whose value must pass access.CheckSecret as serve
// checks it.
func isTokenSetting(path string) bool {
	last := path[strings.LastIndexByte(path, '.')+1:]
	return last == "admin_token" || last == "bearer_token" || last == "token" && strings.HasPrefix(path, "http.tokens[")
}

// isAdminTokenSetting reports whether the setting at path holds one of
// the admin and audit APIs' tokens.
func isAdminTokenSetting(path string) bool {
	return path == "http.admin_token" || strings.HasPrefix(path, "http.tokens[") && strings.HasSuffix(path, "].token")
}

// checkSecretValue returns what is wrong with the value v of the secret
// setting at path, for the settings whose values have a form serve would
// otherwise find wrong only part way through starting, one at a time. Its
// errors never hold the value.
func checkSecretValue(path, v string) error {
	switch {
	case isTokenSetting(path):
		return access.CheckSecret(v)
	case path == "audit.signing_key":
		_, err := audit.ParsePrivateKey(v)
		return err
	case path == "consent.hash_key" && len(v) < 16:
		return errors.New("the key must be at least 16 bytes")
	case path == "patient_index.pds.auth.private_key":
		_, err := pds.ParsePrivateKey([]byte(v))
		return err
	}
	return nil
}

// pemSetting is the value a TLS setting's reference holds, and where the
// setting is written.
type pemSetting struct {
	value string
	pos   yamlx.Pos
}

// checkTLSPEM returns what is wrong with the PEM the references of the
// tls mapping at path hold (m, by key), which would otherwise stop serve
// part way through starting: a certificate and key (both read) that do
// not make a pair, placed at cert, and a CA (ca, client_ca) holding no
// certificate. Its errors name no key material.
func checkTLSPEM(path string, m map[string]pemSetting) []error {
	var errs []error
	if cert, key := m["cert"], m["key"]; cert.value != "" && key.value != "" {
		if _, err := tls.X509KeyPair([]byte(cert.value), []byte(key.value)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s.cert and key: not a valid certificate and key pair: %w", cert.pos, path, err))
		}
	}
	for _, field := range []string{"ca", "client_ca"} {
		if ca := m[field]; ca.value != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(ca.value)) {
			errs = append(errs, fmt.Errorf("%s: %s.%s: no PEM certificate found", ca.pos, path, field))
		}
	}
	return errs
}

// CheckSecretRefs tries every secret reference (a string value starting
// env: or file:) written in the config file, and returns one error per
// reference that does not resolve, or whose value has the wrong form (a
// token too short, a signing or private key that does not parse, a hash
// key too short, an input's bearer_token or an admin token that is
// another admin token's secret), placed at the value and named by its
// setting's path, so that all of them are reported at once rather than
// one per start as each component resolves its own. The values read are
// dropped, never returned or logged. A config with no file has none.
func (c *Config) CheckSecretRefs(s Secrets) []error {
	if c.top.Node == nil {
		return nil
	}
	var errs []error
	// adminTokens are the admin tokens' values read so far, by the
	// setting giving each; callers are the inputs' bearer tokens.
	type secretAt struct{ path, value string }
	var adminTokens, callers []secretAt
	// tlsPEM are the values read in the tls mapping being walked, by
	// key (cert, key, ca, client_ca).
	var tlsPEM map[string]pemSetting
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.MappingNode:
			outer := tlsPEM
			isTLS := path == "tls" || strings.HasSuffix(path, ".tls")
			if isTLS {
				tlsPEM = map[string]pemSetting{}
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				walk(n.Content[i+1], p)
			}
			if isTLS {
				errs = append(errs, checkTLSPEM(path, tlsPEM)...)
				tlsPEM = outer
			}
		case yaml.SequenceNode:
			for i, v := range n.Content {
				walk(v, fmt.Sprintf("%s[%d]", path, i))
			}
		case yaml.AliasNode:
			// Reported where the anchor is written.
		case yaml.ScalarNode:
			if n.Tag != "!!str" || !IsRef(n.Value) {
				return
			}
			v, err := s.Resolve(n.Value)
			pos := yamlx.Pos{File: c.file, Line: n.Line, Col: n.Column}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: cannot resolve secret reference: %w", pos, path, err))
				return
			}
			if err := checkSecretValue(path, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: %w", pos, path, err))
				return
			}
			if tlsPEM != nil {
				tlsPEM[path[strings.LastIndexByte(path, '.')+1:]] = pemSetting{v, pos}
			}
			switch {
			case isAdminTokenSetting(path):
				for _, o := range adminTokens {
					if o.value == v {
						errs = append(errs, fmt.Errorf("%s: %s: the same secret as %s; give each token its own", pos, path, o.path))
						return
					}
				}
				for _, o := range callers {
					if o.value == v {
						errs = append(errs, fmt.Errorf("%s: %s: the same secret as %s, whose callers would hold this token's roles; give each its own", pos, path, o.path))
						return
					}
				}
				adminTokens = append(adminTokens, secretAt{path, v})
			case strings.HasPrefix(path, "inputs.") && strings.HasSuffix(path, ".bearer_token"):
				for _, o := range adminTokens {
					if o.value == v {
						errs = append(errs, fmt.Errorf("%s: %s: the same secret as the admin token %s, whose roles its callers would hold; give each its own", pos, path, o.path))
						return
					}
				}
				callers = append(callers, secretAt{path, v})
			}
		}
	}
	walk(c.top.Node, "")
	return errs
}
