package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jfhir "github.com/junction-fhir/junction/pkg/fhir"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/junction-fhir/junction/pkg/access"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/disclosure"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	transport "github.com/junction-fhir/junction/pkg/mllp"
	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/pds"
	"github.com/junction-fhir/junction/pkg/router"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/telemetry"
	"github.com/junction-fhir/junction/pkg/tlsconf"
)

// Engine is a running Junction.
type Engine struct {
	// configFile is Options.ConfigFile.
	configFile string
	plan       *Plan
	log        *slog.Logger
	reg        *prometheus.Registry
	metrics    *telemetry.Metrics
	tracing    *telemetry.Tracing
	secrets    config.Secrets
	// auth authenticates callers of the admin and audit APIs.
	auth access.Authenticator
	// accessIDs names access records of requests that name no message.
	accessIDs router.IDGen
	// patientKey keys the hash that stands for a patient in audit records
	// and the consent store (see patientHash).
	patientKey []byte
	version    string
	tracer     trace.Tracer

	store *store.Store
	// traffic counts what the store connection sends and receives.
	traffic *storeTraffic
	// patients is the patient index (nil when patient_index.enabled is
	// false); consents is the consent store (nil with the default policy).
	patients *patient.Index
	consents *consent.Store
	// pds looks patients up in PDS in the background (nil when
	// patient_index.pds.url is empty); pdsClient is its client.
	pds       *pds.Enricher
	pdsClient *pds.Client
	// stopWatch stops the opt-out file watcher; watching is done when it
	// has returned.
	stopWatch context.CancelFunc
	watching  sync.WaitGroup
	ingester  *router.Ingester
	// audit is the one audit writer (one hash chain) of this process.
	audit    *audit.Writer
	router   *router.Router
	dests    map[string]*router.Destination
	inbounds []namedInbound
	httpSrv  *http.Server
	httpLn   net.Listener
	// httpHandler is what the HTTP listener serves: the probes alone
	// while the engine starts, then everything.
	httpHandler atomic.Pointer[http.ServeMux]
	// bulkReads holds a token for each admin read of whole streams in
	// progress (see acquireBulk).
	bulkReads chan struct{}
	// patientServiceReads holds a token for each of them a patient
	// service runs (see acquireBulk).
	patientServiceReads chan struct{}

	// reconciling is done when the scheduled reconcile (reconcile.interval)
	// has stopped, which it does as the drain begins.
	reconciling sync.WaitGroup

	ready    atomic.Bool
	draining atomic.Bool
	// drained is done once the drain begins: long admin requests (a
	// replay) stop then, before the audit writer and the store close.
	drained    context.Context
	startDrain context.CancelFunc
	stopOnce   sync.Once
	stopErr    error
}

type namedInbound struct {
	name string
	in   adapter.Inbound
}

// Options are what the caller of New provides besides the plan.
type Options struct {
	Logger   *slog.Logger
	Version  string
	Registry *prometheus.Registry
	// Tracer, when set, replaces the tracer built from the OTEL_*
	// environment (tests record spans with it).
	Tracer trace.Tracer
	// ConfigFile is the config file serve was given ("" for the
	// defaults), so the commands the logs suggest reach this engine.
	ConfigFile string
}

// New prepares an engine from a plan without starting anything.
func New(plan *Plan, o Options) (*Engine, error) {
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	e := &Engine{configFile: o.ConfigFile, plan: plan, log: o.Logger, reg: reg, metrics: telemetry.NewMetrics(reg), traffic: newStoreTraffic(), version: o.Version, dests: map[string]*router.Destination{}, tracer: o.Tracer, bulkReads: make(chan struct{}, maxBulkReads), patientServiceReads: make(chan struct{}, maxPatientServiceBulkReads)}
	e.drained, e.startDrain = context.WithCancel(context.Background())
	reg.MustRegister(e.traffic)
	auth, err := e.newAuthenticator(plan.Config.HTTP)
	if err != nil {
		return nil, err
	}
	e.auth = auth
	if err := e.checkCallerSecrets(); err != nil {
		return nil, err
	}
	return e, nil
}

// refusalCodes are the fault codes an input storing content type ct
// refuses input with before storing it: those of its framing and format
// (mllp. and hl7., or fhir.), and those of the store.
func refusalCodes(ct string) []string {
	prefixes := []string{"fhir."}
	if ct == envelope.ContentTypeHL7v2 {
		prefixes = []string{"mllp.", "hl7."}
	}
	out := []string{string(fault.CodeStoreUnavailable), string(fault.CodeBacklog)}
	for _, c := range fault.Codes() {
		for _, p := range prefixes {
			if strings.HasPrefix(string(c), p) {
				out = append(out, string(c))
			}
		}
	}
	return out
}

// primeMetrics creates the zero series of what the plan's inputs, routes
// and destinations count (telemetry.Metrics.Prime).
func (e *Engine) primeMetrics() {
	inputs := map[string]telemetry.InputSeries{}
	for name, pi := range e.plan.Inputs {
		var s telemetry.InputSeries
		if cs, ok := pi.Factory.(adapter.ContentStorer); ok {
			switch ct := cs.StoresContent(); ct {
			case envelope.ContentTypeHL7v2:
				s.Acks = []string{"AA", "AE", "AR", "CA", "CE", "CR"}
				s.Rejected = append(refusalCodes(ct), transport.RefusedFull, transport.RefusedHostFull)
			case envelope.ContentTypeFHIR:
				s.Acks = []string{"202", "400"}
				s.Rejected = append(refusalCodes(ct), string(fault.CodeUnauthorized))
			}
			// Either kind may reuse a dedupe id for another message.
			s.DataQuality = []string{router.DQControlIDReused}
		}
		if dq, ok := pi.Translator.(adapter.DataQualityCoder); ok {
			s.DataQuality = append(s.DataQuality, dq.DataQualityCodes()...)
		}
		inputs[name] = s
	}
	var routes []string
	for _, r := range e.plan.Routes {
		routes = append(routes, r.Name)
	}
	e.metrics.Prime(inputs, routes, sortedKeys(e.plan.Destinations))
}

// Metrics returns the engine's metrics (for tests).
func (e *Engine) Metrics() *telemetry.Metrics { return e.metrics }

// PatientIndex returns the patient index, or nil when it is disabled (for
// tests and tools).
func (e *Engine) PatientIndex() *patient.Index { return e.patients }

// Store returns the engine's store (for tests and tools).
func (e *Engine) Store() *store.Store { return e.store }

// HTTPAddr returns the HTTP listener's address once started.
func (e *Engine) HTTPAddr() net.Addr {
	if e.httpLn == nil {
		return nil
	}
	return e.httpLn.Addr()
}

// Inbound returns a started inbound component by name.
func (e *Engine) Inbound(name string) adapter.Inbound {
	for _, n := range e.inbounds {
		if n.name == name {
			return n.in
		}
	}
	return nil
}

// Ready reports whether the engine accepts messages.
func (e *Engine) Ready() bool { return e.notReady() == "" }

// notReady says why the engine does not accept messages, or "".
func (e *Engine) notReady() string {
	switch {
	case e.draining.Load():
		return "shutting down: draining in-flight work"
	case !e.ready.Load():
		return "starting"
	case e.store == nil || !e.store.Healthy():
		return "the store is not answering, or has no quorum (see the log)"
	case e.store.Refusing():
		return "the store refuses inbound messages: out of storage (see the log)"
	}
	if why := e.store.CannotWrite(); why != "" {
		// Input would still be stored and acknowledged, but wait
		// unaudited and unrouted.
		return "the store cannot write what messages need: " + why + " (see the log)"
	}
	return ""
}

func (e *Engine) settings(name string) adapter.Settings {
	return adapter.Settings{
		Name: name, Logger: e.log.With("component", name), Metrics: e.metrics,
		Tracer: e.tracing.Tracer, DataDir: e.plan.Config.DataDir, Secrets: e.secrets,
		JS: e.storeJS(), Buckets: e.plan.Config.NATS.Buckets(),
		Consents: e.consentWriter(), OptOuts: e.optOutLoader(), AuditEventSearch: true,
		HTTPExposed:     !config.IsLoopback(e.plan.Config.HTTP.Listen),
		HTTPClientCerts: e.plan.Config.HTTP.ClientCertsVerified(),
		KeyedHash:       e.keyedHash,
		NeedBucket:      e.needBucket(),
	}
}

// needBucket is the store's NeedBucket once it is open, else nil.
func (e *Engine) needBucket() func(bucket, holds string) {
	if e.store == nil {
		return nil
	}
	return e.store.NeedBucket
}

// storeJS is the store's JetStream once it is open.
func (e *Engine) storeJS() jetstream.JetStream {
	if e.store == nil {
		return nil
	}
	return e.store.JS
}

// Start brings the engine up: the HTTP listener serving its probes and
// metrics alone, then the store, destinations, routes and the inputs'
// listeners, and last the rest of the HTTP endpoints, so nothing is
// accepted before it can be stored and routed. On error, whatever started
// is shut down.
func (e *Engine) Start(ctx context.Context) (err error) {
	cfg := e.plan.Config
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
			_ = e.Shutdown(sctx)
		}
	}()
	for _, w := range e.plan.PlaceholderWarnings() {
		// Config paths and positions only; `junction lint` prints the
		// same.
		e.log.Warn(w)
	}
	if e.tracer != nil {
		e.tracing = &telemetry.Tracing{Tracer: e.tracer}
	} else if e.tracing, err = telemetry.NewTracing(ctx, e.version, telemetry.TraceExport{Endpoint: cfg.Tracing.OTLPEndpoint, Protocol: cfg.Tracing.OTLPProtocol}, e.log); err != nil {
		return err
	}
	// The HTTP listener's certificate is read before anything starts, so
	// a bad one stops the start at once.
	var httpTLS *tls.Config
	if t := cfg.HTTP.TLS; t != nil {
		// Client certificates are asked for and verified when given; the
		// FHIR endpoint refuses posts without one, while probes and
		// scrapers need none.
		files := tlsconf.ServerFiles{Cert: t.Cert, Key: t.Key, ClientCA: t.ClientCA}
		if httpTLS, err = tlsconf.Server(e.secrets, "http.tls.", files, tls.VerifyClientCertIfGiven, e.log.With("component", "http")); err != nil {
			return err
		}
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	cfg.DataDir = dataDir
	// The HTTP listener opens first, serving the probes and metrics
	// alone, so a start that waits (for a NATS cluster, say) answers
	// /readyz with why rather than refusing connections.
	if err := e.listenHTTP(httpTLS); err != nil {
		return err
	}
	e.store, err = store.Open(ctx, cfg.NATS, dataDir, e.secrets, e.log)
	if err != nil {
		return fmt.Errorf("opening store: %w", err)
	}
	e.traffic.conn.Store(e.store.NC)
	// The readiness and replica gauges follow the store's probes, as
	// /readyz does.
	setReplicas := func() {
		r := e.store.Replicas()
		e.metrics.StoreReplicas.WithLabelValues("current").Set(float64(r.Current))
		e.metrics.StoreReplicas.WithLabelValues("catching_up").Set(float64(r.CatchingUp))
		e.metrics.StoreReplicas.WithLabelValues("unreachable").Set(float64(r.Unreachable))
		for _, w := range e.store.Writable() {
			v := 0.0
			if w.Writable {
				v = 1
			}
			e.metrics.StoreWritable.WithLabelValues(w.Stream).Set(v)
		}
	}
	setReplicas()
	e.store.OnHealth(func(bool) {
		v := 0.0
		if e.Ready() {
			v = 1
		}
		e.metrics.Ready.Set(v)
		setReplicas()
	})
	if e.store.Embedded() {
		e.log.Info("store ready", "mode", "embedded", "dir", filepath.Join(dataDir, "jetstream"), "fsync", "every write")
	} else {
		e.log.Info("store ready", "mode", "external", "replicas", cfg.NATS.Replicas)
	}
	// Every input's largest message must fit in one store message, with
	// room for headers.
	for _, name := range sortedKeys(e.plan.Inputs) {
		if sl, ok := e.plan.Inputs[name].Config.(adapter.SizeLimited); ok && sl.MaxInputBytes()+64<<10 > e.store.MaxPayload() {
			return fmt.Errorf("inputs.%s: accepts messages of %d bytes but the NATS server's max_payload is %d; raise max_payload on the server or lower the input's limit", name, sl.MaxInputBytes(), e.store.MaxPayload())
		}
	}
	aopts := []audit.Option{audit.WithCheckpointInterval(cfg.Audit.CheckpointInterval)}
	if cfg.Audit.SigningKey != "" {
		s, err := e.secrets.Resolve(cfg.Audit.SigningKey)
		if err != nil {
			return fmt.Errorf("audit.signing_key: %w", err)
		}
		key, err := audit.ParsePrivateKey(s)
		if err != nil {
			return fmt.Errorf("audit.signing_key: %w", err)
		}
		aopts = append(aopts, audit.WithSigningKey(key))
	}
	e.audit = audit.NewWriter(e.store.JS, aopts...)
	e.ingester = router.NewIngester(e.store, e.log, e.metrics, e.audit)
	backlog := router.NewBacklog(uint64(cfg.Router.MaxBacklog), e.log, e.metrics)
	e.ingester.LimitBacklog(backlog)
	// Consent and the patient index open before the destinations, so a
	// consent-store destination can write Consents.
	var decider consent.Decider
	var consents *consent.Store
	if err := e.store.WhenSettled(ctx, "consent", func() (err error) {
		decider, consents, err = e.openConsent(ctx)
		return err
	}); err != nil {
		return err
	}
	e.consents = consents
	if consents != nil {
		// Every consent decision reads them: without a leader no message
		// is routed.
		e.store.NeedBucket(consent.DefaultConsentBucket, "patients' Consents, read for every consent decision")
		e.store.NeedBucket(consent.DefaultOptOutBucket, "the national data opt-out list, read for consent decisions")
	}
	if pc := cfg.PatientIndex; pc.Enabled {
		e.noteLostBucket(ctx, pc.Bucket, "the patient index: its entries are made again only from messages received from now on")
		if err := e.store.WhenSettled(ctx, "patient index", func() (err error) {
			e.patients, err = patient.Open(ctx, e.store.JS, patient.Config{Bucket: pc.Bucket, Buckets: cfg.NATS.Buckets(), HashKey: e.patientKey})
			return err
		}); err != nil {
			return fmt.Errorf("patient_index: %w", err)
		}
		e.store.NeedBucket(pc.Bucket, "the patient index, written for every message with a patient")
		e.log.Info("patient index ready", "bucket", pc.Bucket)
	}
	var patientIndexed func(*patient.Record)
	if pc := cfg.PatientIndex; pc.Enabled && pc.PDS.URL != "" {
		if err := e.startPDS(ctx, pc.PDS); err != nil {
			return fmt.Errorf("patient_index.pds: %w", err)
		}
		patientIndexed = e.pds.Observe
	}
	for _, name := range sortedKeys(e.plan.Destinations) {
		pd := e.plan.Destinations[name]
		out, err := pd.Factory.NewOutbound(ctx, e.settings(name), pd.Config)
		if err != nil {
			return fmt.Errorf("destination %s: %w", name, err)
		}
		if err := out.Start(ctx); err != nil {
			return fmt.Errorf("starting destination %s: %w", name, err)
		}
		e.dests[name] = &router.Destination{Name: name, Type: pd.Spec.Type, Out: out, Retry: pd.Spec.Retry, Internal: e.plan.InternalDestination(name),
			ODS: cfg.Consent.Destinations[name].ODS}
	}
	translators := e.plan.Translators()
	for _, name := range sortedKeys(translators) {
		if b, ok := translators[name].(adapter.StoreBinder); ok {
			var t adapter.Translator
			if err := e.store.WhenSettled(ctx, "input "+name, func() (err error) {
				t, err = b.BindStore(ctx, e.settings(name))
				return err
			}); err != nil {
				return fmt.Errorf("input %s: %w", name, err)
			}
			translators[name] = t
		}
	}
	if consents != nil && cfg.Consent.OptOutFile != "" {
		e.watchOptOutFile(ctx, cfg.Consent.OptOutFile)
	}
	var consentChanges func(context.Context, []string, bool) (consent.Changes, error)
	if consents != nil {
		consentChanges = consents.LastChanges
	}
	e.router = router.New(router.Options{
		Store: e.store, Routes: e.plan.Routes, Translators: translators, Destinations: e.dests, Audit: e.audit,
		Decider: decider, Logger: e.log, Metrics: e.metrics, Tracer: e.tracing.Tracer, ConfigFile: e.configFile,
		Batch: cfg.Router.Batch, AckWait: cfg.Router.AckWait,
		Pipeline: cfg.PipelineMode(), DedupeWindow: cfg.NATS.DedupeWindow, DeliveryConcurrency: cfg.Router.DeliveryConcurrency,
		SpanBatches: cfg.Router.SpanBatches,
		PatientHash: e.patientHash, Patients: e.patients, OptedOut: e.optedOut(),
		PatientIndexed: patientIndexed, SourceODS: disclosure.DirectoryFrom(cfg.Consent).Sources,
		ConsentChanges: consentChanges, RecheckAfter: cfg.Consent.RecheckAfter,
		Backlog: backlog,
	})
	if err := e.router.Start(ctx); err != nil {
		return fmt.Errorf("starting routes: %w", err)
	}
	for _, r := range e.plan.Routes {
		e.log.Info("route loaded", "route", r.Name, "source", r.Source, "file", r.File, "destinations", len(r.Destinations))
	}
	// With the consent engine on, inputs may store Consents through their
	// host (the FHIR endpoint does, for POST /fhir/Consent).
	var host adapter.Host = e.ingester
	if consents != nil {
		ch := consentHost{Ingester: e.ingester, store: consents, patients: e.patients}
		host = ch
		if _, open := e.auth.(access.Local); !open {
			// With http.tokens, Consent writes need a role (see
			// guardedConsentHost).
			host = guardedConsentHost{consentHost: ch, e: e}
		}
	}
	e.primeMetrics()
	mux := http.NewServeMux()
	for _, name := range sortedKeys(e.plan.Inputs) {
		pi := e.plan.Inputs[name]
		in, err := pi.Factory.NewInbound(ctx, e.settings(name), host, pi.Config)
		if err != nil {
			return fmt.Errorf("input %s: %w", name, err)
		}
		if hi, ok := in.(adapter.HTTPInbound); ok {
			for pattern, h := range hi.Routes() {
				mux.Handle(pattern, h)
			}
		}
		if err := in.Start(ctx); err != nil {
			return fmt.Errorf("starting input %s: %w", name, err)
		}
		e.inbounds = append(e.inbounds, namedInbound{name: name, in: in})
	}
	e.probes(mux)
	e.adminMux(mux)
	// From here the listener serves everything.
	e.httpHandler.Store(mux)
	e.startReconcile()
	e.ready.Store(true)
	e.metrics.Ready.Set(1)
	e.log.Info("junction ready", "version", e.version, "inputs", len(e.inbounds), "routes", len(e.plan.Routes), "destinations", len(e.dests))
	return nil
}

// listenHTTP opens the HTTP listener and serves, until Start stores the
// full mux in httpHandler, the probes and metrics alone: anything else
// is answered 503, starting.
func (e *Engine) listenHTTP(httpTLS *tls.Config) error {
	cfg := e.plan.Config
	starting := http.NewServeMux()
	e.probes(starting)
	starting.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "5")
		const why = "Junction is starting; try again shortly"
		if strings.HasPrefix(r.URL.Path, "/fhir") {
			jfhir.WriteOutcome(w, http.StatusServiceUnavailable, jfhir.Outcome("error", "transient", why))
			return
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting", "error": why})
	})
	e.httpHandler.Store(starting)
	var err error
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	refusedLog := telemetry.Floodable(e.log.With("component", "http"))
	limit := newConnLimit(ln, cfg.HTTP.MaxConnections, func() {
		e.metrics.HTTPConnectionsRefused.Inc()
		refusedLog.Warn("http connection refused: the listener holds http.max_connections, none of them idle or silent for a second", "max_connections", cfg.HTTP.MaxConnections)
	})
	e.httpLn = limit
	e.httpSrv = &http.Server{
		ConnState: limit.connState,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.httpHandler.Load().ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		ReadTimeout:       cfg.HTTP.ReadTimeout, WriteTimeout: cfg.HTTP.WriteTimeout,
		// Go's default, 1 MiB, lets a thousand slow clients hold a GiB.
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       log.New(httpErrorWriter{log: e.log, flood: telemetry.Floodable(e.log.With("component", "http"))}, "", 0),
	}
	e.httpSrv.TLSConfig = httpTLS
	go func() {
		var err error
		if e.httpSrv.TLSConfig != nil {
			err = e.httpSrv.ServeTLS(e.httpLn, "", "")
		} else {
			err = e.httpSrv.Serve(e.httpLn)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("http server stopped", "err", err)
		}
	}()
	e.log.Info("http listening", "addr", e.httpLn.Addr().String(), "tls", cfg.HTTP.TLS != nil, "client_certs", cfg.HTTP.ClientCertsVerified(), "fhir", "/fhir", "admin", "/api", "metrics", "/metrics", "health", "/healthz /readyz")
	if !config.IsLoopback(cfg.HTTP.Listen) && cfg.HTTP.TLS == nil {
		// Junction serves plain HTTP: tokens and patient data cross the
		// network as sent unless something in front terminates TLS.
		e.log.Warn("http listener is reachable beyond this machine over plain HTTP; put a TLS-terminating proxy or ingress in front", "addr", e.httpLn.Addr().String())
	}
	return nil
}

// probes serves /metrics, /healthz and /readyz on mux.
func (e *Engine) probes(mux *http.ServeMux) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{Registry: e.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if why := e.notReady(); why != "" {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": why})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// traceFlushTimeout bounds flushing spans at shutdown.
const traceFlushTimeout = 2 * time.Second

// maxHeaderBytes bounds a request's headers on the HTTP listener: ample
// for bearer tokens and FHIR headers, answered 431 beyond.
const maxHeaderBytes = 64 << 10

// Shutdown drains: it stops accepting (readiness false), lets listeners
// finish in-flight messages, lets routes and deliveries finish their
// batches, then stops destinations and the store. The HTTP listener
// serves until routing has drained, so /readyz answers 503 and /metrics
// can be scraped while it does (posts to the FHIR endpoint get 503 from
// the start). It is idempotent.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.stopOnce.Do(func() {
		e.draining.Store(true)
		e.startDrain()
		e.ready.Store(false)
		e.metrics.Ready.Set(0)
		errs := shutdownInputs(ctx, e.inbounds)
		if e.ingester != nil {
			if err := e.ingester.Close(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		if e.router != nil {
			if err := e.router.Shutdown(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		if e.pds != nil {
			// After the router: nothing queues lookups any more.
			if err := e.pds.Stop(ctx); err != nil {
				errs = append(errs, err)
			}
			e.pdsClient.Close()
		}
		if e.stopWatch != nil {
			e.stopWatch()
			e.watching.Wait()
		}
		if e.httpSrv != nil {
			// Before the audit writer closes: admin requests record
			// their access through it.
			if err := e.httpSrv.Shutdown(ctx); err != nil {
				// Out of time: close the connections still open. Close
				// does not wait for their handlers; those that change
				// state were refused since the drain began.
				_ = e.httpSrv.Close()
				errs = append(errs, fmt.Errorf("http: %w", err))
			}
		}
		if e.audit != nil {
			// Settles the chain and signs its last checkpoint.
			if err := e.audit.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("audit: %w", err))
			}
		}
		for _, name := range sortedKeys(e.dests) {
			if err := e.dests[name].Out.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("destination %s: %w", name, err))
			}
		}
		if e.tracing != nil {
			// Spans are telemetry: flushing them has a short bound of its
			// own, and a collector that cannot be reached does not make
			// the drain fail or overrun.
			tctx, cancel := context.WithTimeout(ctx, traceFlushTimeout)
			if err := e.tracing.Shutdown(tctx); err != nil {
				e.log.Warn("traces not all exported at shutdown", "error", err.Error())
			}
			cancel()
		}
		// The scheduled reconcile stopped as the drain began (its reads
		// end with their context); it holds up nothing past the drain's
		// time.
		waitBounded(ctx, &e.reconciling)
		if e.store != nil {
			// Bounded by what is left of the drain's time: a frozen NATS
			// server must not hold the process past shutdown_timeout.
			e.store.CloseContext(ctx)
		}
		e.stopErr = errors.Join(errs...)
		e.log.Info("junction stopped")
	})
	return e.stopErr
}

// startReconcile starts the scheduled reconcile (reconcile.interval),
// unless it is off, until the drain begins.
func (e *Engine) startReconcile() {
	rc := e.plan.Config.Reconcile
	if rc.Interval <= 0 {
		return
	}
	host, _ := os.Hostname()
	var ids router.IDGen
	s := router.NewReconcileScheduler(router.ScheduleOptions{
		Interval: rc.Interval, Lag: rc.Lag, Routes: e.sourceRoutes(),
		JS: e.store.JS, Buckets: e.plan.Config.NATS.Buckets(), Bulk: e.store.Bulk,
		Owner: host + "/" + ids.New(), Metrics: e.metrics, Log: e.log,
	})
	e.reconciling.Go(func() { s.Run(e.drained) })
}

// waitBounded waits for wg, or until ctx is done.
func waitBounded(ctx context.Context, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// shutdownInputs shuts the inputs down all at once, so that every one
// stops accepting as the drain begins rather than only once those
// before it have finished their messages in hand, and returns their
// errors, last started first.
func shutdownInputs(ctx context.Context, inputs []namedInbound) []error {
	errs := make([]error, len(inputs))
	var wg sync.WaitGroup
	for i, n := range inputs {
		wg.Go(func() {
			if err := n.in.Shutdown(ctx); err != nil {
				errs[i] = fmt.Errorf("input %s: %w", n.name, err)
			}
		})
	}
	wg.Wait()
	var out []error
	for i := len(errs) - 1; i >= 0; i-- {
		if errs[i] != nil {
			out = append(out, errs[i])
		}
	}
	return out
}

// Run starts the engine and blocks until ctx is done, then drains.
func (e *Engine) Run(ctx context.Context) error {
	if err := e.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	e.log.Info("shutting down", "timeout", e.plan.Config.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), e.plan.Config.ShutdownTimeout)
	defer cancel()
	return e.Shutdown(sctx)
}

// startPDS starts background lookups of patients' GP registration in the
// Personal Demographics Service (see pds.Enricher).
func (e *Engine) startPDS(ctx context.Context, c config.PDSConfig) error {
	client, err := pds.New(pds.Config{
		URL: c.URL, Token: c.Token, Timeout: c.Timeout,
		Auth: pds.AuthConfig{TokenURL: c.Auth.TokenURL, APIKey: c.Auth.APIKey, PrivateKey: c.Auth.PrivateKey, KID: c.Auth.KID},
	}, e.secrets)
	if err != nil {
		return err
	}
	e.pdsClient = client
	e.pds = pds.NewEnricher(client, e.patients, pds.EnricherOptions{
		RefreshAfter: c.RefreshAfter, Metrics: e.metrics, Logger: e.log.With("component", "pds"),
	})
	e.pds.Start(ctx)
	e.log.Info("pds lookups on", "refresh_after", c.RefreshAfter.String(), "timeout", c.Timeout.String(), "signed_jwt_auth", c.Auth.TokenURL != "")
	return nil
}

// httpErrorWriter is the HTTP server's error log. A failed TLS handshake
// (a port scanner, a load balancer's TCP check, a client without the
// right certificate) is one rate-limited line naming the remote address
// without its port, so handshakes cannot flood the log; anything else is
// a warning as the server wrote it.
type httpErrorWriter struct {
	log, flood *slog.Logger
}

// Write implements io.Writer; the server writes a line at a time.
func (w httpErrorWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	if rest, ok := strings.CutPrefix(line, "http: TLS handshake error from "); ok {
		addr, why, _ := strings.Cut(rest, ": ")
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		w.flood.Warn("http tls handshake failed", "remote_ip", host, "error", why)
		return len(p), nil
	}
	w.log.Warn(line)
	return len(p), nil
}
