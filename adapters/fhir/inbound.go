package fhir

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/junction-fhir/junction/pkg/access"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/budget"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/fhirschema"
	"github.com/junction-fhir/junction/pkg/jsonmap"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// HTTP header names used by the endpoint.
const (
	// HeaderMessageID carries the Junction message id of a stored message.
	// For a resend it is the original's id only when the store recognises
	// the resend at once (nats.group_commit: false); with group commit the
	// resend is recognised later, when its batch is split, and is not
	// routed again, but this reply carries the resend's own id, whose
	// audit trail then names the original.
	HeaderMessageID = "X-Junction-Message-Id"
	// HeaderQuarantineID names, on a refusal, the quarantine entry that
	// keeps what was sent, for the sender to quote to ops.
	HeaderQuarantineID = "X-Junction-Quarantine-Id"
	// HeaderIdempotencyKey lets a sender mark resends of a body without a
	// Bundle.identifier.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderIfNoneExist asks FHIR's conditional create of a POST, which
	// the endpoint refuses: a transaction entry's request.ifNoneExist is
	// the way to ask it.
	HeaderIfNoneExist = "If-None-Exist"
	// maxIdempotencyKey bounds the Idempotency-Key header.
	maxIdempotencyKey = 256
	// maxIdentifier bounds Bundle.identifier.value, which the message
	// carries as its control id.
	maxIdentifier = 512
	// maxDedupeKey is the longest dedupe key kept verbatim; longer keys are
	// hashed.
	maxDedupeKey = 512
	// retryAfterSeconds is suggested to senders when the store is down.
	retryAfterSeconds = "10"
)

// Limits on the shape of an inbound body, on top of MaxBodyBytes and
// MaxDepth. Decoding into the FHIR models costs far more memory than the
// JSON text for dense input: each "{}" (2 bytes) becomes a model struct of
// a few hundred bytes, so 3 MB of "[{},{},...]" took about 500 MB of heap
// before these limits. They are checked by a scan that allocates nothing,
// before any decoding, and refused with 413 and an OperationOutcome
// (issue too-costly).
const (
	// MaxBundleEntries is the most entries a Bundle may hold. Split larger
	// batches into several Bundles.
	MaxBundleEntries = 10_000
	// BytesPerContainer sets the budget of JSON objects and arrays in one
	// body: one per BytesPerContainer bytes of MaxBodyBytes (163,840 at the
	// default 10 MiB), and never fewer than MinContainers. Real FHIR JSON
	// has about one per 160 bytes (one per 31 bytes at the densest among
	// the official R4 examples, compacted).
	BytesPerContainer = 64
	// MinContainers is the smallest budget of objects and arrays.
	MinContainers = 1024
)

// OperationProcessMessage is the {type} of POST /fhir/$process-message,
// FHIR messaging's endpoint: a message Bundle, answered as POST /fhir
// answers (202 once stored; no response message).
const OperationProcessMessage = "$process-message"

// Routes served, by ServeMux pattern.
const (
	RoutePostBundle   = "POST /fhir"
	RoutePostResource = "POST /fhir/{type}"
	RouteMetadata     = "GET /fhir/metadata"
	// routeOtherBase, routeOtherType and routeOther answer every other
	// request under /fhir with an OperationOutcome, as FHIR clients
	// expect, rather than the plain-text 404 or 405 of net/http.
	routeOtherBase = "/fhir"
	routeOtherType = "/fhir/{type}"
	// routeInstance is a resource instance ([base]/[type]/[id]), which a
	// client reads, updates or deletes: none is served.
	routeInstance = "/fhir/{type}/{id}"
	routeOther    = "/fhir/"
)

// acceptedBundleTypes are the Bundle types POST /fhir takes.
var acceptedBundleTypes = map[models.BundleType]bool{
	models.BundleTypeTransaction: true,
	models.BundleTypeBatch:       true,
	models.BundleTypeMessage:     true,
	models.BundleTypeCollection:  true,
}

// Inbound is the FHIR REST endpoint. It implements adapter.HTTPInbound.
type Inbound struct {
	postCheck
	name    string
	host    adapter.Host
	cfg     InboundConfig
	log     *slog.Logger
	metrics *telemetry.Metrics
	tracer  trace.Tracer
	// token, when set, is the SHA-256 digest of the bearer token callers
	// must present.
	token []byte
	// clientCerts says the HTTP listener verifies client certificates:
	// a post without a verified one is refused.
	clientCerts bool
	// localOnly says nothing authenticates posts (no token, no client
	// certificates, a loopback listener, allow_unauthenticated unset):
	// posts must then come from this machine's own users, not from a web
	// page open in a browser here (access.CheckLocal).
	localOnly bool
	// slots bounds posts being checked and stored at once; a post takes
	// one once its body has arrived.
	slots chan struct{}
	// inflight bounds the memory bodies being received and posts being
	// processed hold together (see InboundConfig.MaxInflightBytes).
	mem *budget.Bytes
	// consents, when the host offers it, stores posted Consents.
	consents ConsentStore
	// guard, when the host offers it with consents, authorises Consent
	// writes in place of token.
	guard ConsentGuard

	capability []byte
	// auditEventSearch says the engine serves GET [base]/AuditEvent.
	auditEventSearch bool

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
}

var _ adapter.HTTPInbound = (*Inbound)(nil)

// NewInbound returns the endpoint. host stores what it accepts.
func NewInbound(set adapter.Settings, host adapter.Host, cfg InboundConfig) (*Inbound, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, configError("inbound", errs)
	}
	if host == nil {
		return nil, fault.New(fault.CodeConfig, "fhir: inbound needs a host")
	}
	set = withDefaults(set)
	if set.HTTPExposed {
		if errs := cfg.ValidateExposed(set.HTTPClientCerts); len(errs) > 0 {
			return nil, configError("inbound", errs)
		}
		if cfg.BearerToken == "" && !set.HTTPClientCerts {
			// Allowed by allow_unauthenticated, but said at start.
			set.Logger.Warn("fhir input takes posts without a token from any machine that can reach the HTTP listener (allow_unauthenticated); something in front must authenticate senders", "input", set.Name)
		}
	}
	in := &Inbound{
		name:        set.Name,
		host:        host,
		cfg:         cfg,
		clientCerts: set.HTTPClientCerts,
		localOnly:   !set.HTTPExposed && !set.HTTPClientCerts && cfg.BearerToken == "" && !cfg.AllowUnauthenticated,
		log:         telemetry.Floodable(set.Logger),
		metrics:     set.Metrics,
		tracer:      set.Tracer,
	}
	pc, err := newPostCheck(cfg)
	if err != nil {
		return nil, err
	}
	in.postCheck = pc
	if cs, ok := host.(ConsentStore); ok {
		in.consents = cs
		if g, ok := host.(ConsentGuard); ok {
			in.guard = g
		}
	}
	slots := cfg.MaxConcurrent
	if slots == 0 {
		slots = 64
	}
	in.slots = make(chan struct{}, slots)
	in.mem = budget.New(cmp.Or(cfg.MaxInflightBytes, DefaultMaxInflightBytes))
	if cfg.BearerToken != "" {
		if set.Secrets == nil {
			return nil, fault.New(fault.CodeConfig, "fhir: bearer_token needs a secret resolver")
		}
		tok, err := set.Secrets.Resolve(cfg.BearerToken)
		if err == nil {
			err = access.CheckSecret(tok)
		}
		if err != nil {
			return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "fhir: bearer_token", err)
		}
		sum := sha256.Sum256([]byte(tok))
		in.token = sum[:]
	}
	cs := jfhir.CapabilityStatement(jfhir.CapabilityOptions{
		SoftwareVersion:  softwareVersion(),
		ResourceTypes:    cfg.ResourceTypes,
		AuditEventSearch: set.AuditEventSearch,
		ConsentStore:     in.consents != nil,
		BearerToken:      in.token != nil,
		ClientCerts:      in.clientCerts,
	})
	b, err := json.Marshal(cs)
	if err != nil {
		return nil, fmt.Errorf("fhir: marshal capability statement: %w", err)
	}
	in.capability = b
	in.auditEventSearch = set.AuditEventSearch
	return in, nil
}

// withDefaults fills in services a test or tool may leave out, so the
// adapter never dereferences nil.
func withDefaults(set adapter.Settings) adapter.Settings {
	if set.Name == "" {
		set.Name = Type
	}
	if set.Logger == nil {
		set.Logger = slog.New(slog.DiscardHandler)
	}
	if set.Metrics == nil {
		set.Metrics = telemetry.NewMetrics(prometheus.NewRegistry())
	}
	if set.Tracer == nil {
		set.Tracer = noop.NewTracerProvider().Tracer("")
	}
	return set
}

// softwareVersion is the main module's version, or "dev".
func softwareVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Start does nothing: the engine serves Routes on its HTTP listener.
func (in *Inbound) Start(context.Context) error { return nil }

// Shutdown refuses new requests (503) and waits for those in progress, or
// for ctx to end. It is safe without Start and idempotent.
func (in *Inbound) Shutdown(ctx context.Context) error {
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
	done := make(chan struct{})
	go func() { in.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fhir: inbound shutdown: %w", ctx.Err())
	}
}

// Routes returns the endpoint's handlers by ServeMux pattern.
func (in *Inbound) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		RoutePostBundle: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			in.post(w, r, "")
		}),
		RoutePostResource: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			in.post(w, r, r.PathValue("type"))
		}),
		RouteMetadata:  http.HandlerFunc(in.metadata),
		routeOtherBase: http.HandlerFunc(in.notAllowed),
		routeOtherType: http.HandlerFunc(in.notAllowed),
		routeInstance: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A read finds no resource here; a search or an operation is
			// no endpoint; an update, patch or delete is a method an
			// instance does not allow.
			id := r.PathValue("id")
			if r.Method == http.MethodGet || r.Method == http.MethodHead || strings.HasPrefix(id, "_") || strings.HasPrefix(id, "$") {
				in.notSupported(w, r)
				return
			}
			in.notAllowed(w, r)
		}),
		routeOther: http.HandlerFunc(in.notSupported),
	}
}

// notAllowed answers a method the endpoint does not serve at [base] or
// [base]/[type]: Junction takes messages in, it is not a FHIR repository.
// It is counted as a rejected request.
func (in *Inbound) notAllowed(w http.ResponseWriter, r *http.Request) {
	allow := http.MethodPost
	what := "takes messages posted to it; it does not serve reads, updates or deletes"
	switch {
	case r.URL.Path == "/fhir/metadata":
		allow = http.MethodGet
		what = "serves its CapabilityStatement here to GET only"
	case r.PathValue("id") != "":
		// No method on an instance: an empty Allow says so (RFC 9110).
		allow = ""
		what = "takes messages posted to [base] or [base]/[type]; it holds no resources to read, update or delete"
	}
	w.Header().Set("Allow", allow)
	in.countUnserved(http.StatusMethodNotAllowed)
	jfhir.WriteOutcome(w, http.StatusMethodNotAllowed, jfhir.Outcome("error", "not-supported",
		r.Method+" is not supported here: Junction "+what+" (allowed: "+allow+")"))
}

// notSupported answers any other path under [base], counted as a rejected
// request.
func (in *Inbound) notSupported(w http.ResponseWriter, _ *http.Request) {
	served := "POST [base], POST [base]/[type] and GET [base]/metadata"
	if in.auditEventSearch {
		served = "POST [base], POST [base]/[type], GET [base]/metadata and GET [base]/AuditEvent?patient=..."
	}
	in.countUnserved(http.StatusNotFound)
	jfhir.WriteOutcome(w, http.StatusNotFound, jfhir.Outcome("error", "not-supported", "no such endpoint: Junction accepts "+served))
}

// countUnserved counts a request the endpoint does not serve, answered
// with status.
func (in *Inbound) countUnserved(status int) {
	in.metrics.Rejected.WithLabelValues(in.name, string(fault.CodeFHIRNotSupported)).Inc()
	in.metrics.Acks.WithLabelValues(in.name, strconv.Itoa(status)).Inc()
}

func (in *Inbound) metadata(w http.ResponseWriter, r *http.Request) {
	if wantsOnlyXML(r) {
		in.countUnserved(http.StatusNotAcceptable)
		jfhir.WriteOutcome(w, http.StatusNotAcceptable, jfhir.Outcome("error", "not-supported",
			"Junction speaks FHIR JSON only (application/fhir+json); ask for it, or for _format=json"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", jfhir.MediaTypeJSON)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(in.capability)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(in.capability)
}

// wantsOnlyXML reports whether r asks for FHIR XML and not JSON: by
// _format, or by an Accept header that names XML and neither JSON nor
// any type (*/* or application/*).
func wantsOnlyXML(r *http.Request) bool {
	if f := strings.ToLower(r.URL.Query().Get("_format")); f != "" {
		return strings.Contains(f, "xml")
	}
	accept := strings.ToLower(r.Header.Get("Accept"))
	return strings.Contains(accept, "xml") && !strings.Contains(accept, "json") && !strings.Contains(accept, "*/*") && !strings.Contains(accept, "application/*")
}

func (in *Inbound) enter() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return false
	}
	in.inflight.Add(1)
	return true
}

// verifiedClient reports whether r came over TLS with a client
// certificate the listener verified against its client CA.
func verifiedClient(r *http.Request) bool {
	return r.TLS != nil && len(r.TLS.VerifiedChains) > 0
}

// post handles POST /fhir (pathType "") and POST /fhir/{type}.
func (in *Inbound) post(w http.ResponseWriter, r *http.Request, pathType string) {
	if pathType == "metadata" {
		// POST [base]/metadata is the capability endpoint used wrongly,
		// not a resource type.
		in.notAllowed(w, r)
		return
	}
	start := time.Now()
	var record func(context.Context, string) error
	if in.clientCerts && !verifiedClient(r) {
		// With mutual TLS on, every post (a Consent too) needs a
		// certificate, checked before any token.
		// 403: no Authorization scheme would help (a 401 must name one).
		jfhir.WriteOutcome(w, http.StatusForbidden, jfhir.Outcome("error", "security", "a client certificate signed by the endpoint's client CA is required (mutual TLS)"))
		in.metrics.Acks.WithLabelValues(in.name, "403").Inc()
		in.metrics.Rejected.WithLabelValues(in.name, string(fault.CodeUnauthorized)).Inc()
		return
	}
	if in.localOnly && access.CheckLocal(r) != nil {
		jfhir.WriteOutcome(w, http.StatusForbidden, jfhir.Outcome("error", "security", "without bearer_token this endpoint takes posts only when addressed to this machine by a loopback name (localhost, 127.0.0.1, [::1]), not forwarded by a proxy and not sent by a web page of another site; set bearer_token to take posts otherwise"))
		in.metrics.Acks.WithLabelValues(in.name, "403").Inc()
		in.metrics.Rejected.WithLabelValues(in.name, string(fault.CodeUnauthorized)).Inc()
		return
	}
	if pathType == "Consent" && in.consents != nil && in.guard != nil {
		rec, status := in.guard.AuthorizeConsent(w, r)
		if status != 0 {
			in.metrics.Acks.WithLabelValues(in.name, strconv.Itoa(status)).Inc()
			in.metrics.Rejected.WithLabelValues(in.name, string(fault.CodeUnauthorized)).Inc()
			return
		}
		record = rec
	} else if in.token != nil {
		// As the admin API reads it: the scheme in any case, and digests
		// compared, so the time taken says nothing of the token's length.
		scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], in.token) != 1 {
			w.Header().Set("WWW-Authenticate", "Bearer")
			jfhir.WriteOutcome(w, http.StatusUnauthorized, jfhir.Outcome("error", "security", "a valid bearer token is required"))
			in.metrics.Acks.WithLabelValues(in.name, "401").Inc()
			in.metrics.Rejected.WithLabelValues(in.name, string(fault.CodeUnauthorized)).Inc()
			return
		}
	}
	if wantsOnlyXML(r) {
		// Refused before it is stored: a client that can read XML only
		// would take a JSON answer for a failure and post again.
		in.countUnserved(http.StatusNotAcceptable)
		jfhir.WriteOutcome(w, http.StatusNotAcceptable, jfhir.Outcome("error", "not-supported",
			"not stored: Junction answers in FHIR JSON only (application/fhir+json); ask for it in Accept, or for _format=json"))
		return
	}
	if !in.enter() {
		w.Header().Set("Retry-After", retryAfterSeconds)
		jfhir.WriteOutcome(w, http.StatusServiceUnavailable, jfhir.Outcome("error", "transient", "endpoint shutting down; not stored, resend later"))
		in.metrics.Acks.WithLabelValues(in.name, "503").Inc()
		return
	}
	defer in.inflight.Done()
	in.metrics.Received.WithLabelValues(in.name).Inc()
	// A caller's W3C trace context (traceparent, tracestate) is carried
	// on, so its trace and Junction's are one; it is ids only, never data.
	ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := in.tracer.Start(ctx, "fhir.receive", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()

	status := in.receive(ctx, w, r, pathType, span, record)

	in.metrics.Acks.WithLabelValues(in.name, strconv.Itoa(status)).Inc()
	in.metrics.AckLatency.WithLabelValues(in.name).Observe(time.Since(start).Seconds())
	if status >= 400 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
}

// busy answers 503 with Retry-After: the post was not stored, for want of
// room, and may be sent again.
func (in *Inbound) busy(w http.ResponseWriter, text string) int {
	w.Header().Set("Retry-After", retryAfterSeconds)
	jfhir.WriteOutcome(w, http.StatusServiceUnavailable, jfhir.Outcome("error", "transient", text))
	in.metrics.Rejected.WithLabelValues(in.name, "busy").Inc()
	return http.StatusServiceUnavailable
}

// processingFactor is how many times its size a body is reckoned to
// cost while it is checked, decoded and stored.
const processingFactor = 3

// freeBodyBytes is what each body may hold without drawing on the
// memory budget, so ordinary posts are never refused for others' large
// ones.
const freeBodyBytes = 64 << 10

// errBudget reports a body refused because the memory budget is held.
var errBudget = errors.New("fhir: memory budget for bodies in flight exhausted")

// readBody reads r whole, taking from mem, before its buffer grows past
// freeBodyBytes, what it grows by. It returns the body and what it took
// (to give back when the post is done), and errBudget when mem could not
// cover the next growth.
func readBody(r io.Reader, mem *budget.Bytes) ([]byte, int64, error) {
	buf := make([]byte, 0, 4096)
	var drawn int64
	for {
		if len(buf) == cap(buf) {
			next := 2 * cap(buf)
			if more := int64(max(next-freeBodyBytes, 0)) - drawn; more > 0 {
				if !mem.Take(more) {
					return nil, drawn, errBudget
				}
				drawn += more
			}
			grown := make([]byte, len(buf), next)
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, drawn, nil
		}
		if err != nil {
			return buf, drawn, err
		}
	}
}

// rejection is a request refused before storing.
type rejection struct {
	status int
	code   fault.Code
	issue  string // OperationOutcome issue type; "" means fault.IssueType(code)
	detail string
	expr   []string
	// urlOnly marks a request refused for its URL before its body was
	// looked at: there is nothing in the body for ops to inspect.
	urlOnly bool
}

func (in *Inbound) reject(w http.ResponseWriter, rj rejection) int {
	issue := rj.issue
	if issue == "" {
		issue = fault.IssueType(rj.code)
	}
	in.metrics.Rejected.WithLabelValues(in.name, string(rj.code)).Inc()
	in.log.Debug("request rejected", "reason", string(rj.code), "status", rj.status)
	jfhir.WriteOutcome(w, rj.status, jfhir.Outcome("error", issue, rj.detail, rj.expr...))
	return rj.status
}

// receive checks, stores and answers one POST, returning the status sent.
//
// record, for a Consent write the ConsentGuard allowed, audits the write.
func (in *Inbound) receive(ctx context.Context, w http.ResponseWriter, r *http.Request, pathType string, span trace.Span, record func(context.Context, string) error) int {
	if rj, ok := checkMediaType(r.Header.Get("Content-Type")); !ok {
		return in.reject(w, rj)
	}
	if ce := strings.TrimSpace(r.Header.Get("Content-Encoding")); ce != "" && !strings.EqualFold(ce, "identity") {
		// RFC 9110 15.5.16: a content coding the server does not take is
		// 415, not a body that fails to parse.
		return in.reject(w, rejection{status: http.StatusUnsupportedMediaType, code: fault.CodeFHIRMediaType,
			detail: "unsupported Content-Encoding; send the body uncompressed"})
	}
	idemKey := strings.TrimSpace(r.Header.Get(HeaderIdempotencyKey))
	if len(idemKey) > maxIdempotencyKey {
		return in.reject(w, rejection{status: http.StatusBadRequest, code: fault.CodeFHIRInvalid,
			detail: fmt.Sprintf("%s header longer than %d characters", HeaderIdempotencyKey, maxIdempotencyKey)})
	}
	if strings.TrimSpace(r.Header.Get(HeaderIfNoneExist)) != "" {
		// A conditional create asks that nothing be written where a
		// resource matches; a single resource is forwarded to be created
		// or updated by its identifier, which would replace the
		// destination's record. Refused rather than ignored.
		return in.reject(w, rejection{status: http.StatusBadRequest, code: fault.CodeFHIRNotSupported, issue: "not-supported",
			detail: HeaderIfNoneExist + " (a conditional create) is not supported on a post, whose resources are forwarded to be created or updated: " +
				"post a transaction Bundle whose entry has request.method POST and request.ifNoneExist, which is forwarded as a conditional create; nothing was stored"})
	}
	limit := in.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		return in.reject(w, tooLarge(limit))
	}
	// The body draws on the memory budget as it arrives, so a slow
	// upload holds what it has sent and no slot; the slot is taken once
	// it is all here.
	body, drawn, err := readBody(http.MaxBytesReader(w, r.Body, limit), in.mem)
	defer in.mem.Give(drawn)
	if err != nil {
		switch _, tooBig := errors.AsType[*http.MaxBytesError](err); {
		case tooBig:
			return in.reject(w, tooLarge(limit))
		case errors.Is(err, errBudget):
			return in.busy(w, "too many large posts being received; not stored, resend later")
		}
		// The client went away or stalled mid-body: nothing was
		// checked, so this is not counted as an invalid resource.
		return in.reject(w, rejection{status: http.StatusBadRequest, code: fault.CodeFHIRIncomplete, detail: "the request body ended before it was complete, or came too slowly; nothing was stored"})
	}
	// Checking and storing a body costs a few times its size.
	work := processingFactor * int64(max(len(body)-freeBodyBytes, 0))
	if !in.mem.Take(work) {
		return in.busy(w, "too many large posts in progress; not stored, resend later")
	}
	defer in.mem.Give(work)
	select {
	case in.slots <- struct{}{}:
		defer func() { <-in.slots }()
	default:
		return in.busy(w, "too many requests in progress; not stored, resend later")
	}
	if pathType == "Consent" && in.consents != nil {
		return in.storeConsent(ctx, w, body, record)
	}
	parsed, rj, ok := in.check(body, pathType)
	if !ok {
		if rj.code != fault.CodeFHIREmpty && !rj.urlOnly {
			// Kept for ops, as MLLP input that does not parse is: the
			// sender was told what is wrong, ops can see what it sent.
			if id := adapter.Quarantine(ctx, in.host, in.log, in.metrics, in.name, body, string(rj.code)); id != "" {
				w.Header().Set(HeaderQuarantineID, id)
			}
		}
		return in.reject(w, rj)
	}

	env := &envelope.Envelope{
		ID:          in.host.NewID(),
		Source:      in.name,
		ContentType: envelope.ContentTypeFHIR,
		ReceivedAt:  time.Now().UTC(),
		MessageType: parsed.resourceType,
		Raw:         body,
	}
	switch {
	case parsed.identifier != "":
		env.ControlID = parsed.identifier
		env.DedupeKey = boundKey("bundle|" + parsed.identifierSystem + "|" + parsed.identifier)
	case idemKey != "":
		env.ControlID = idemKey
		env.DedupeKey = boundKey("idem|" + idemKey)
	}
	partKey := parsed.patient.NHS
	if partKey == "" {
		partKey = env.DedupeKey
	}
	if partKey == "" {
		partKey = env.ID
	}
	env.Partition = in.host.Partition(partKey)
	span.SetAttributes(attribute.String("junction.message_type", env.MessageType), attribute.String("junction.message_id", env.ID))

	res, err := in.host.Ingest(ctx, env)
	if err != nil {
		level := slog.LevelWarn
		oo := jfhir.Outcome("error", "transient", "message may not have been stored: the store did not confirm it; resend it (a resend with the same Bundle.identifier or Idempotency-Key is recognised)")
		if fault.CodeOf(err) == fault.CodeBacklog {
			// Expected while routing is behind: the engine logs when
			// the input starts and stops refusing, and counts each.
			level = slog.LevelDebug
			oo = jfhir.Outcome("error", "throttled", "message not taken now: Junction is behind with routing; resend it after the Retry-After interval")
		}
		in.log.Log(r.Context(), level, "message not stored; answered 503", "id", env.ID, "type", env.MessageType, "error", err.Error())
		span.RecordError(err)
		w.Header().Set("Retry-After", retryAfterSeconds)
		jfhir.WriteOutcome(w, http.StatusServiceUnavailable, oo)
		return http.StatusServiceUnavailable
	}
	id := res.ID
	if id == "" {
		id = env.ID
	}
	w.Header().Set(HeaderMessageID, id)
	if res.Duplicate {
		// The trace names the message the audit trail has: the stored
		// original, not the id this resend was given and never stored
		// under.
		span.SetAttributes(attribute.String("junction.message_id", id), attribute.Bool("junction.duplicate", true))
		in.metrics.Duplicates.WithLabelValues(in.name).Inc()
		in.log.Info("duplicate received", "id", id, "type", env.MessageType)
		jfhir.WriteOutcome(w, http.StatusAccepted, jfhir.Information("duplicate of message "+id+"; already stored, not stored again"))
		return http.StatusAccepted
	}
	in.log.Debug("message stored", "id", id, "type", env.MessageType)
	oo := jfhir.Information("stored as message " + id)
	warn := func(diagnostics string, expr ...string) {
		oo.Issue = append(oo.Issue, jfhir.Outcome("warning", "informational", diagnostics, expr...).Issue...)
	}
	if in.consents != nil && len(parsed.consents) > 0 {
		// A supplier may expect a Consent in a Bundle to take effect; only
		// POST /fhir/Consent records one (or a route to consent-store).
		warn("a Consent in a Bundle is routed as data, not recorded as the patient's consent decision; POST it to /fhir/Consent to record it", parsed.consents...)
	}
	// What the translation will count as data-quality issues, told to the
	// sender now (never quoting the number).
	switch k := parsed.patient; {
	case k.NHS != "" && !nhs.ValidNumber(k.NHS):
		warn("an identifier in " + nhs.SystemNHSNumber + " is not a valid NHS number (" + whyInvalid(k.NHS) + "): routed as sent, with the patient unknown to consent decisions")
	case !k.Found && k.Referenced:
		warn("the patient is named only by a literal reference (Patient/...): nothing identifies them, so their consent cannot be looked up; add the NHS number as subject.identifier")
	}
	jfhir.WriteOutcome(w, http.StatusAccepted, oo)
	return http.StatusAccepted
}

// whyInvalid says, without quoting it, why n (normalised) is not a valid
// NHS number.
func whyInvalid(n string) string {
	if len(n) != 10 || strings.Trim(n, "0123456789") != "" {
		return "an NHS number is ten digits"
	}
	return "its check digit fails"
}

func tooLarge(max int64) rejection {
	return rejection{status: http.StatusRequestEntityTooLarge, code: fault.CodeFHIRTooLarge,
		detail: fmt.Sprintf("body larger than %d bytes", max)}
}

// tooCostly refuses a body whose shape would cost too much to decode.
func tooCostly(detail string, expr ...string) rejection {
	return rejection{status: http.StatusRequestEntityTooLarge, code: fault.CodeFHIRTooLarge, detail: detail, expr: expr}
}

// postCheck is what a post's body is checked against before it is
// stored: the input's resource types, body limit and schema.
type postCheck struct {
	types map[string]bool
	// maxBody is InboundConfig.MaxBodyBytes.
	maxBody int64
	// schema, when configured, validates every post (InboundConfig.Schema).
	schema *fhirschema.Schema
}

// newPostCheck returns the checks of an input configured as cfg.
func newPostCheck(cfg InboundConfig) (postCheck, error) {
	pc := postCheck{types: map[string]bool{}, maxBody: cfg.MaxBodyBytes}
	for _, t := range cfg.ResourceTypes {
		pc.types[t] = true
	}
	if cfg.Schema != "" {
		sch, err := fhirschema.Load(cfg.Schema)
		if err != nil {
			return postCheck{}, fault.Wrap(fault.Permanent, fault.CodeConfig, "fhir: schema", err)
		}
		pc.schema = sch
	}
	return pc, nil
}

// maxContainers is the budget of JSON objects and arrays in one body.
func (in *postCheck) maxContainers() int {
	return int(max(in.maxBody/BytesPerContainer, MinContainers))
}

// invalidUTF8Offset returns the offset of the first byte of b that is not
// part of valid UTF-8, or -1. FHIR JSON is UTF-8; encoding/json would
// silently replace such bytes, so the stored raw message and what routes
// see would differ.
func invalidUTF8Offset(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// countContainers returns the number of JSON objects and arrays in b,
// counting brackets outside strings. Like depthOffset it does not check
// syntax and allocates nothing.
func countContainers(b []byte) int {
	n := 0
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			n++
		}
	}
	return n
}

// bundleEntryCount returns the number of elements of the array under the
// root object's "entry" key in doc, which must be valid JSON. Keys are
// matched as encoding/json matches struct fields (escapes decoded, case
// ignored); if the key appears more than once, the largest count is
// returned. It allocates only to decode a key holding escapes.
func bundleEntryCount(doc []byte) int {
	var (
		depth     int
		expectKey bool // at depth 1, the next string is a key
		isEntry   bool // the last key at depth 1 was "entry"; its value is next
		counting  bool // inside the entry array (at depth 2)
		n, most   int
	)
	for i := 0; i < len(doc); i++ {
		c := doc[i]
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		if depth == 1 && isEntry && c != ':' {
			// The value of an entry key starts here.
			isEntry = false
			if c == '[' {
				counting, n = true, 0
				if j := skipSpace(doc, i+1); j < len(doc) && doc[j] != ']' {
					n = 1
				}
			}
		}
		switch c {
		case '"':
			start := i
			escaped := false
			for i++; i < len(doc); i++ {
				if doc[i] == '\\' {
					escaped = true
					i++
					continue
				}
				if doc[i] == '"' {
					break
				}
			}
			if depth == 1 && expectKey {
				expectKey = false
				isEntry = isEntryKey(doc[start:min(i+1, len(doc))], escaped)
			}
		case '{', '[':
			depth++
			if depth == 1 && c == '{' {
				expectKey = true
			}
		case '}', ']':
			if counting && depth == 2 {
				counting = false
				most = max(most, n)
			}
			depth--
		case ',':
			switch {
			case depth == 1:
				expectKey = true
			case counting && depth == 2:
				n++
			}
		}
	}
	return most
}

// skipSpace returns the index of the first byte of b at or after i that
// is not JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// isEntryKey reports whether the quoted JSON string key names "entry" as
// encoding/json would match it to the Bundle.entry field.
func isEntryKey(quoted []byte, escaped bool) bool {
	if !escaped {
		return len(quoted) == len(`"entry"`) && strings.EqualFold(string(quoted[1:len(quoted)-1]), "entry")
	}
	var k string
	if json.Unmarshal(quoted, &k) != nil {
		return false
	}
	return strings.EqualFold(k, "entry")
}

// checkMediaType accepts application/fhir+json and application/json, with
// an optional charset (UTF-8 only) and fhirVersion (4.0 only).
func checkMediaType(ct string) (rejection, bool) {
	bad := func(detail string) (rejection, bool) {
		return rejection{status: http.StatusUnsupportedMediaType, code: fault.CodeFHIRMediaType, detail: detail}, false
	}
	if ct == "" {
		return bad("Content-Type required: application/fhir+json")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return bad("unreadable Content-Type; use application/fhir+json")
	}
	if mt != "application/fhir+json" && mt != "application/json" {
		return bad("unsupported Content-Type " + strconv.Quote(mt) + "; use application/fhir+json")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return bad("unsupported charset; FHIR JSON is UTF-8")
	}
	if v, ok := params["fhirversion"]; ok && v != "4.0" && v != "4.0.1" {
		return bad("unsupported fhirVersion; this endpoint is FHIR R4 (4.0)")
	}
	return rejection{}, true
}

// checked is what check learned about an accepted body.
type checked struct {
	resourceType     string
	identifierSystem string
	identifier       string
	patient          patientKeys
	// consents are the paths of a Bundle's Consent entries.
	consents []string
}

// check validates body for the URL type pathType ("" for POST /fhir).
func (in *postCheck) check(body []byte, pathType string) (checked, rejection, bool) {
	invalid := func(code fault.Code, issue, detail string, expr ...string) (checked, rejection, bool) {
		return checked{}, rejection{status: http.StatusBadRequest, code: code, issue: issue, detail: detail, expr: expr}, false
	}
	// POST [base]/$process-message takes a message Bundle, as POST [base]
	// does any Bundle (FHIR messaging's endpoint; the reply is the same).
	processMessage := pathType == OperationProcessMessage
	if processMessage {
		pathType = ""
	}
	if pathType != "" && pathType != "Bundle" && !in.types[pathType] {
		// FHIR's create: 404, the resource type is not supported here
		// (the CapabilityStatement lists those that are).
		return checked{}, rejection{status: http.StatusNotFound, code: fault.CodeFHIRNotSupported, issue: "not-supported",
			detail: "resource type " + strconv.Quote(pathType) + " is not accepted here; GET /fhir/metadata lists those that are", urlOnly: true}, false
	}
	doc := stripBOM(body)
	trimmed := bytes.TrimSpace(doc)
	if len(trimmed) == 0 {
		return invalid(fault.CodeFHIREmpty, "", "empty body")
	}
	if off := depthOffset(doc, MaxDepth); off >= 0 {
		return invalid(fault.CodeFHIRInvalidJSON, "", fmt.Sprintf("JSON nested deeper than %d levels at offset %d", MaxDepth, off))
	}
	if off := invalidUTF8Offset(doc); off >= 0 {
		return invalid(fault.CodeFHIRInvalidJSON, "", fmt.Sprintf("body is not valid UTF-8: invalid byte at offset %d", off))
	}
	if trimmed[0] != '{' {
		if !json.Valid(doc) {
			var v any
			return invalid(fault.CodeFHIRInvalidJSON, "", jsonError(json.Unmarshal(doc, &v)))
		}
		return invalid(fault.CodeFHIRInvalid, "structure", "body is not a JSON object")
	}
	var head struct {
		ResourceType json.RawMessage `json:"resourceType"`
	}
	if err := json.Unmarshal(doc, &head); err != nil {
		return invalid(fault.CodeFHIRInvalidJSON, "", jsonError(err))
	}
	var rt string
	if len(head.ResourceType) == 0 || json.Unmarshal(head.ResourceType, &rt) != nil || rt == "" {
		return invalid(fault.CodeFHIRInvalid, "required", "resourceType missing or not a string", "resourceType")
	}
	if !isResourceType(rt) {
		return invalid(fault.CodeFHIRInvalid, "", "unknown resourceType "+elementName(rt), "resourceType")
	}
	switch {
	case pathType == "" && rt != "Bundle":
		return invalid(fault.CodeFHIRInvalid, "", "POST [base] takes a Bundle; post a single "+rt+" to [base]/"+rt, "resourceType")
	case pathType != "" && rt != pathType:
		return invalid(fault.CodeFHIRInvalid, "", "resourceType "+rt+" does not match the URL type "+pathType, "resourceType")
	case rt != "Bundle" && !in.types[rt]:
		return invalid(fault.CodeFHIRInvalid, "not-supported", "resource type "+rt+" is not accepted here", "resourceType")
	}
	// The body is valid JSON now; before decoding it into the models,
	// check that its shape does not cost too much memory.
	if rt == "Bundle" {
		if n := bundleEntryCount(doc); n > MaxBundleEntries {
			return checked{}, tooCostly(fmt.Sprintf("Bundle has %d entries; the limit is %d: split it into several Bundles", n, MaxBundleEntries), "Bundle.entry"), false
		}
	}
	if limit := in.maxContainers(); countContainers(doc) > limit {
		return checked{}, tooCostly(fmt.Sprintf("JSON holds more than %d objects and arrays; this endpoint takes at most one per %d bytes of its %d-byte body limit", limit, BytesPerContainer, in.maxBody)), false
	}
	if off, reason := keyProblem(doc); off >= 0 {
		return invalid(fault.CodeFHIRInvalid, "structure", fmt.Sprintf("%s, at offset %d", reason, off))
	}
	if off, reason := fhirJSONProblem(doc); off >= 0 {
		return invalid(fault.CodeFHIRInvalid, "structure", fmt.Sprintf("%s, at offset %d", reason, off))
	}
	out := checked{resourceType: rt}
	if rt == "Bundle" {
		var b models.Bundle
		if err := json.Unmarshal(doc, &b); err != nil {
			return invalid(fault.CodeFHIRInvalid, "", "invalid Bundle: "+modelError(err))
		}
		if processMessage && b.Type != models.BundleTypeMessage {
			return invalid(fault.CodeFHIRInvalid, "invalid", "$process-message takes a Bundle of type message; post other Bundles to [base]", "Bundle.type")
		}
		if !acceptedBundleTypes[b.Type] {
			return invalid(fault.CodeFHIRInvalid, "not-supported", "Bundle.type must be transaction, batch, message or collection", "Bundle.type")
		}
		needsRequest := b.Type == models.BundleTypeTransaction || b.Type == models.BundleTypeBatch
		for i, e := range b.Entry {
			switch {
			case needsRequest && e.Request == nil:
				return invalid(fault.CodeFHIRInvalid, "required", "an entry of a transaction or batch needs a request (bdl-3)", fmt.Sprintf("Bundle.entry[%d].request", i))
			case !needsRequest && e.Request != nil:
				return invalid(fault.CodeFHIRInvalid, "invalid", "only a transaction's or batch's entries have a request (bdl-3)", fmt.Sprintf("Bundle.entry[%d].request", i))
			}
			if r := e.Request; r != nil && r.Method != models.HTTPVerbPOST && r.Method != models.HTTPVerbPUT {
				// Destinations are sent the resources to create or
				// update: a DELETE would become an update of what was
				// meant to go, a PATCH a Parameters resource.
				return invalid(fault.CodeFHIRInvalid, "not-supported", "request method "+r.Method.Code()+
					" is not supported: Junction forwards a Bundle's resources to be created or updated; send deletes, patches and reads to the system that holds the record",
					fmt.Sprintf("Bundle.entry[%d].request.method", i))
			}
			where := fmt.Sprintf("Bundle.entry[%d].resource", i)
			if len(e.Resource) == 0 {
				if i == 0 && b.Type == models.BundleTypeMessage {
					return invalid(fault.CodeFHIRInvalid, "", "the first entry of a message Bundle must be a MessageHeader", where)
				}
				continue
			}
			ert, err := jfhir.ResourceType(e.Resource)
			if err != nil || !isResourceType(ert) {
				return invalid(fault.CodeFHIRInvalid, "", "entry without a valid resourceType", where)
			}
			if i == 0 && b.Type == models.BundleTypeMessage && ert != "MessageHeader" {
				return invalid(fault.CodeFHIRInvalid, "", "the first entry of a message Bundle must be a MessageHeader", where)
			}
			if chk, ok := checkers[ert]; ok {
				// First, as it names the element (the decode says only
				// that a number is not valid when a string is not one).
				if at, what, bad := modelProblem(e.Resource, chk.typ, where); bad {
					return invalid(fault.CodeFHIRInvalid, "", "invalid "+ert+": "+what, at)
				}
				if err := chk.decode(e.Resource); err != nil {
					return invalid(fault.CodeFHIRInvalid, "", "invalid "+ert+": "+modelError(err), where)
				}
			}
			if nestedContained(e.Resource) {
				return invalid(fault.CodeFHIRInvalid, "invalid", "a contained resource contains others: FHIR R4 forbids it (dom-2)", where+".contained")
			}
			if el := missingRequired(ert, e.Resource); el != "" {
				return invalid(fault.CodeFHIRInvalid, "required", ert+"."+el+" is required (FHIR R4 gives it a minimum of 1)", where+"."+el)
			}
			if ert == "Consent" {
				out.consents = append(out.consents, where)
			}
		}
		if detail, where, bad := bundleIntegrity(b.Entry); bad {
			return invalid(fault.CodeFHIRInvalid, "", detail, where)
		}
		if b.Type == models.BundleTypeMessage && len(b.Entry) == 0 {
			return invalid(fault.CodeFHIRInvalid, "", "a message Bundle needs a MessageHeader entry", "Bundle.entry")
		}
		if b.Identifier != nil && b.Identifier.Value != nil && *b.Identifier.Value != "" {
			if len(*b.Identifier.Value) > maxIdentifier {
				// It travels with the message through the store, in
				// headers JetStream bounds (64 KiB together).
				return invalid(fault.CodeFHIRInvalid, "too-long", fmt.Sprintf("Bundle.identifier.value is longer than %d characters", maxIdentifier), "Bundle.identifier.value")
			}
			out.identifier = *b.Identifier.Value
			if b.Identifier.System != nil {
				out.identifierSystem = *b.Identifier.System
			}
		}
	} else {
		if at, what, bad := modelProblem(doc, checkers[rt].typ, rt); bad {
			return invalid(fault.CodeFHIRInvalid, "", "invalid "+rt+": "+what, at)
		}
		if err := checkers[rt].decode(doc); err != nil {
			return invalid(fault.CodeFHIRInvalid, "", "invalid "+rt+": "+modelError(err))
		}
		if nestedContained(doc) {
			return invalid(fault.CodeFHIRInvalid, "invalid", "a contained resource contains others: FHIR R4 forbids it (dom-2)", rt+".contained")
		}
		if el := missingRequired(rt, doc); el != "" {
			return invalid(fault.CodeFHIRInvalid, "required", rt+"."+el+" is required (FHIR R4 gives it a minimum of 1)", rt+"."+el)
		}
	}
	if in.schema != nil {
		if issues := in.schema.Validate(doc); len(issues) > 0 {
			return invalid(fault.CodeFHIRInvalid, "invalid", schemaDetail(issues), schemaPaths(issues)...)
		}
	}
	if n := patientCount(doc); n > envelope.MaxPatients {
		return checked{}, rejection{status: http.StatusUnprocessableEntity, code: fault.CodeTooLarge, issue: "too-costly",
			detail: fmt.Sprintf("the resources are about more than %d patients (NHS numbers); send one message per patient, or fewer patients a message", envelope.MaxPatients)}, false
	}
	out.patient = patientKeysOf(doc, rt)
	return out, rejection{}, true
}

// patientCount returns how many patients (distinct valid NHS numbers, as
// routing counts them: consent.BundleNHSNumbers) doc names, or 0 when it
// cannot name more than envelope.MaxPatients: each NHS number is an
// identifier with a system, so a body of fewer "system" keys is not
// decoded again.
func patientCount(doc []byte) int {
	// (Escapes of ASCII letters read as the letters, as the models do.)
	if bytes.Count(unescapeASCII(doc), []byte(`"system"`)) <= envelope.MaxPatients {
		return 0
	}
	m, err := jsonmap.Decode(doc)
	if err != nil {
		return 0
	}
	return len(consent.BundleNHSNumbers(m))
}

// maxSchemaIssues is how many schema issues a refusal names.
const maxSchemaIssues = 10

// schemaDetail says what the FHIR schema found wrong, the first issues by
// path and rule (never a value), and how many more there are.
func schemaDetail(issues []fhirschema.Issue) string {
	var b strings.Builder
	b.WriteString("not valid FHIR R4 (the FHIR JSON schema): ")
	for i, is := range issues[:min(len(issues), maxSchemaIssues)] {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(shownPath(is) + ": " + is.Msg)
	}
	if n := len(issues) - maxSchemaIssues; n > 0 {
		fmt.Fprintf(&b, "; and %d more", n)
	}
	return b.String()
}

// schemaPaths returns the paths of the first issues, for the
// OperationOutcome's expressions.
func schemaPaths(issues []fhirschema.Issue) []string {
	out := make([]string, 0, min(len(issues), maxSchemaIssues))
	for _, is := range issues[:min(len(issues), maxSchemaIssues)] {
		out = append(out, shownPath(is))
	}
	return out
}

// shownPath is an issue's path as a refusal may show it: a key FHIR does
// not define (an unknown element) may be patient data put where an
// element belongs, so one that is no FHIR element name is not shown.
func shownPath(is fhirschema.Issue) string {
	if is.Rule != "unknown-element" {
		return is.Path
	}
	i := strings.LastIndexByte(is.Path, '.')
	if i < 0 {
		return is.Path
	}
	if key := is.Path[i+1:]; knownNames()[strings.ToLower(strings.TrimPrefix(key, "_"))] {
		return is.Path
	}
	return is.Path[:i] + ".(not shown)"
}

// modelError describes a samply decoding error without quoting the
// input: JSON type errors by position, the models' unknown-code errors
// ("unknown AdministrativeGender code `x`") by the code system alone, since
// a sender's mapping error can put patient data where a code belongs.
// A json.Number's error ("invalid number literal, trying to unmarshal
// \"...\" into Number") says only that a number is invalid, and any other
// message is cut at its first quote or backtick, so no wording of a
// decoder can carry the input into the answer.
func modelError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.As(err, &syn) || errors.As(err, &typ) {
		return jsonError(err)
	}
	msg := err.Error()
	if strings.Contains(msg, "invalid number literal") {
		return "a number is not a valid JSON number (the value is not shown)"
	}
	if i := strings.IndexAny(msg, "`\"'"); i >= 0 {
		return strings.TrimRight(strings.TrimSpace(msg[:i]), ",:") + " (the value is not shown)"
	}
	return msg
}

// boundKey returns key, or a hash of it when it is too long for a header.
func boundKey(key string) string {
	if len(key) <= maxDedupeKey {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "sha256|" + hex.EncodeToString(sum[:])
}
