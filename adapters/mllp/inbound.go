// Package mllp is the MLLP transport adapter: an inbound listener that
// stores each HL7 v2 message before acknowledging it (used by the pas and
// pathology adapters), and an outbound destination, type "mllp", that
// forwards HL7 v2 messages and insists on a matching acknowledgement.
package mllp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/junction-fhir/junction/pkg/access"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	transport "github.com/junction-fhir/junction/pkg/mllp"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// Inbound defaults.
const (
	DefaultListen          = "127.0.0.1:2575"
	DefaultMaxMessageBytes = 1 << 20
	// DefaultMaxSegments is the default limit of segments in one
	// message: far more than a real message holds (a cumulative
	// laboratory report of hundreds of OBX), far fewer than 1 MiB of
	// tiny segments, each of which becomes a FHIR element or resource.
	DefaultMaxSegments    = 5000
	DefaultReadTimeout    = 30 * time.Second
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultMaxConnections = 1000
	// DefaultMaxConnectionsPerHost is the default limit of open
	// connections from one remote IP address: a tenth of the listener's,
	// far more than a sending system uses, so one host cannot hold every
	// place.
	DefaultMaxConnectionsPerHost = 100
	DefaultAckApplication        = "JUNCTION"
)

// Accept acknowledgement policies (InboundConfig.AcceptAck).
const (
	// AcceptAckAlways answers every message (the default). Senders that
	// set MSH-15 NE often still wait for an answer, for example with
	// MSH-16 AL for an application acknowledgement, which Junction does
	// not send: left unanswered, they would stall.
	AcceptAckAlways = "always"
	// AcceptAckMSH15 answers as the sender's MSH-15 asks in enhanced
	// mode: AL (or empty, or a value HL7 does not define) always, NE
	// never, ER only for CE or CR, SU only for CA. A message not stored
	// (CE) that may not be answered closes the connection instead.
	AcceptAckMSH15 = "msh15"
)

// ackNotSent labels, in junction_ingress_acks_total, a message the
// sender's MSH-15 asked not to be answered, and an acknowledgement
// received (never answered).
const ackNotSent = "none"

// notStoredText is the ACK text when the store fails.
const notStoredText = "message may not have been stored; resend it (a resend is recognised)"

// backlogText is the ERR text of a message refused, unstored, because
// routing is behind (router.max_backlog).
const backlogText = "message not taken now: Junction is behind with routing; resend it later"

// TLSConfig configures inbound TLS. Values are secret references:
// "file:PATH", or "env:NAME" naming a variable that holds the PEM.
type TLSConfig struct {
	// Cert and Key are the server's certificate chain and private key.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientCA, when set, makes client certificates signed by it
	// mandatory (mutual TLS).
	ClientCA string `yaml:"client_ca"`
}

// InboundConfig configures an MLLP listener.
type InboundConfig struct {
	// Listen is the TCP address (default 127.0.0.1:2575).
	Listen string `yaml:"listen" yamlx:"nonnull"`
	// MaxMessageBytes limits one message (default 1 MiB).
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxSegments limits the segments of one message (default 5000):
	// 70,000 one-line NK1s fit in 1 MiB and translate to a 42 MB Bundle,
	// held up every other message for half a minute. More are refused
	// before storing (AR, or CR in enhanced mode, with ERR 104).
	MaxSegments int `yaml:"max_segments"`
	// ReadTimeout bounds the receipt of one message (default 30s).
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// IdleTimeout closes connections idle this long (default 5m).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConnections limits open connections (default 1000).
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerHost limits open connections from one remote IP
	// address (default 100; 0 means no limit, for senders that all reach
	// Junction through one NAT). Over it, one of that host's connections
	// is closed to make room, as with max_connections, or the new one is
	// refused.
	MaxConnectionsPerHost int `yaml:"max_connections_per_host"`
	// MaxBufferedBytes bounds what the messages being received on all
	// connections hold together beyond their first 64 KiB each (default
	// 128 MiB; 0 means the default): a message that would need more is answered AR (ERR 207,
	// resend later) and its connection closed, so many senders of large
	// or unfinished messages cannot run Junction out of memory.
	MaxBufferedBytes int64 `yaml:"max_buffered_bytes"`
	// TLS, when set, makes the listener accept TLS only.
	TLS *TLSConfig `yaml:"tls"`
	// App and Facility are MSH-3 and MSH-4 of the ACKs sent (default
	// application "JUNCTION").
	App      string `yaml:"ack_application"`
	Facility string `yaml:"ack_facility"`
	// AcceptAck is when enhanced-mode senders get an accept
	// acknowledgement: AcceptAckAlways (the default, also when empty) or
	// AcceptAckMSH15.
	AcceptAck string `yaml:"accept_ack"`
	// ProcessingIDs, when set, are the processing ids (MSH-11.1, HL7
	// table 0103: P production, T training, D debugging) the listener
	// takes, such as [P] on a live feed, so a training system pointed at
	// it makes no live records; others are refused before they are
	// stored (AR, or CR in enhanced mode, with ERR 202). Empty takes all.
	ProcessingIDs []string `yaml:"processing_ids"`
	// Relay lists the message types, beyond those the feed's translator
	// takes, that the listener also stores and acknowledges, such as
	// "ORM^O01" or "SIU^*" (every event of a type): Junction has no
	// mapping for them, so they are routed with a minimal translation
	// (the MessageHeader and the PID's patients) to routes that name them
	// and forward them raw. Empty: the listener refuses them before
	// storing (AR with ERR 200 or 201).
	Relay []string `yaml:"relay"`
}

// DefaultInboundConfig returns the defaults.
func DefaultInboundConfig() InboundConfig {
	return InboundConfig{
		Listen:                DefaultListen,
		MaxMessageBytes:       DefaultMaxMessageBytes,
		MaxSegments:           DefaultMaxSegments,
		ReadTimeout:           DefaultReadTimeout,
		IdleTimeout:           DefaultIdleTimeout,
		MaxConnections:        DefaultMaxConnections,
		MaxConnectionsPerHost: DefaultMaxConnectionsPerHost,
		MaxBufferedBytes:      transport.DefaultMaxBufferedBytes,
		App:                   DefaultAckApplication,
		AcceptAck:             AcceptAckAlways,
	}
}

// Validate returns every problem with c.
func (c *InboundConfig) Validate() []error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("listen: required"))
	} else if err := adapter.CheckHostPort(c.Listen, true); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	if c.MaxMessageBytes <= 0 {
		errs = append(errs, errors.New("max_message_bytes: must be positive"))
	}
	if c.MaxSegments <= 0 {
		errs = append(errs, errors.New("max_segments: must be positive"))
	}
	if c.ReadTimeout <= 0 {
		errs = append(errs, errors.New("read_timeout: must be positive"))
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, errors.New("idle_timeout: must be positive"))
	}
	if c.MaxConnections <= 0 {
		errs = append(errs, errors.New("max_connections: must be positive"))
	}
	if c.MaxConnectionsPerHost < 0 {
		errs = append(errs, errors.New("max_connections_per_host: must not be negative (0 means no limit)"))
	}
	if c.MaxBufferedBytes < 0 || c.MaxBufferedBytes > 0 && c.MaxBufferedBytes < int64(c.MaxMessageBytes) {
		errs = append(errs, fmt.Errorf("max_buffered_bytes: must be at least max_message_bytes (%d), or no message that large could be received", c.MaxMessageBytes))
	}
	if c.AcceptAck != "" && c.AcceptAck != AcceptAckAlways && c.AcceptAck != AcceptAckMSH15 {
		errs = append(errs, fmt.Errorf("accept_ack: must be %q or %q", AcceptAckAlways, AcceptAckMSH15))
	}
	for i, id := range c.ProcessingIDs {
		if id != "P" && id != "T" && id != "D" {
			errs = append(errs, fmt.Errorf("processing_ids[%d]: %q is not an HL7 processing id (P, T or D)", i, id))
		}
	}
	for i, p := range c.Relay {
		switch {
		case !hl7v2.ValidTypePattern(p):
			errs = append(errs, fmt.Errorf("relay[%d]: %q is not a message type with its event, such as ORM^O01, or TYPE^* for every event of one", i, p))
		case slices.ContainsFunc(c.Relay[:i], func(q string) bool { return hl7v2.TypeMatches(q, p) || hl7v2.TypeMatches(p, q) }):
			errs = append(errs, fmt.Errorf("relay[%d]: %q overlaps an earlier entry; list one of them", i, p))
		}
	}
	if t := c.TLS; t != nil {
		if t.Cert == "" {
			errs = append(errs, errors.New("tls.cert: required"))
		}
		if t.Key == "" {
			errs = append(errs, errors.New("tls.key: required"))
		}
		errs = checkRef(errs, "tls.cert", t.Cert)
		errs = checkRef(errs, "tls.key", t.Key)
		errs = checkRef(errs, "tls.client_ca", t.ClientCA)
	}
	return errs
}

// Inbound is an MLLP listener that stores every message through the host
// before acknowledging it. It implements adapter.Inbound.
//
// Per frame: a message that does not parse is quarantined and answered AR
// with an ERR segment; a message without MSH-9 or MSH-10 is quarantined
// and answered AR (CR in enhanced mode) with ERR 101; otherwise it is
// stored with its bytes unchanged and answered AA (CA in enhanced mode),
// also when it is a resend of a stored message. If the store fails the
// answer is never positive: AR with ERR 207 (CE in enhanced mode), so the
// sender resends. A frame that is too large or malformed is quarantined
// (its first 64 KiB), answered AR, and the connection closed.
type Inbound struct {
	name       string
	host       adapter.Host
	cfg        InboundConfig
	patientKey func(*hl7v2.Message) string
	log        *slog.Logger
	metrics    *telemetry.Metrics
	tracer     trace.Tracer
	// serverSpan starts each frame's span, made once.
	serverSpan trace.SpanStartOption
	srv        *transport.Server
	// types, when set, are the message types ("ADT^A01") the listener
	// takes; see AcceptOnly.
	types map[string]bool
	// typeList is types as given, for the ERR text.
	typeList string
	// screen, if set, refuses messages of a taken type whose structure
	// the translator cannot take; see Screen.
	screen func(*hl7v2.Message) *hl7v2.AckError

	mu        sync.Mutex
	started   bool
	serveDone chan struct{}
}

var (
	_ adapter.Inbound   = (*Inbound)(nil)
	_ transport.Handler = (*Inbound)(nil)
)

// NewInbound returns a listener for cfg. patientKey extracts the patient
// key (NHS number, MRN) used for the ordering partition; nil means none.
// TLS secrets are resolved here, so a bad reference fails at start-up.
func NewInbound(set adapter.Settings, host adapter.Host, cfg InboundConfig, patientKey func(*hl7v2.Message) string) (*Inbound, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "mllp: invalid inbound config", errors.Join(errs...))
	}
	if host == nil {
		return nil, fault.New(fault.CodeConfig, "mllp: inbound needs a host")
	}
	set = withDefaults(set)
	in := &Inbound{
		name:       set.Name,
		host:       host,
		cfg:        cfg,
		patientKey: patientKey,
		// Per-message and per-connection lines are what a sender of bad
		// input can make by the thousand: rate limited.
		log:        telemetry.Floodable(set.Logger),
		metrics:    set.Metrics,
		tracer:     set.Tracer,
		serverSpan: trace.WithSpanKind(trace.SpanKindServer),
	}
	var tlsCfg *tls.Config
	if cfg.TLS != nil {
		var err error
		if tlsCfg, err = serverTLS(set.Secrets, cfg.TLS, set.Logger); err != nil {
			return nil, err
		}
	}
	in.srv = &transport.Server{
		Addr:             cfg.Listen,
		Handler:          in,
		MaxMessageBytes:  cfg.MaxMessageBytes,
		ReadTimeout:      cfg.ReadTimeout,
		IdleTimeout:      cfg.IdleTimeout,
		MaxConns:         cfg.MaxConnections,
		MaxConnsPerHost:  cfg.MaxConnectionsPerHost,
		MaxBufferedBytes: cfg.MaxBufferedBytes,
		OnRefused: func(_ *transport.ConnInfo, why string) {
			set.Metrics.Rejected.WithLabelValues(set.Name, why).Inc()
		},
		OnEvicted: func(*transport.ConnInfo) {
			set.Metrics.Evicted.WithLabelValues(set.Name).Inc()
		},
		OnConns: func(n int) {
			set.Metrics.Connections.WithLabelValues(set.Name).Set(float64(n))
		},
		TLSConfig:    tlsCfg,
		Logger:       in.log,
		OnFrameError: in.onFrameError,
	}
	return in, nil
}

// withDefaults fills in services a test or tool may leave out.
func withDefaults(set adapter.Settings) adapter.Settings {
	if set.Name == "" {
		set.Name = "mllp"
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

// Start binds the listen address and serves connections in the
// background until Shutdown. Cancelling ctx after Start returns does not
// stop the listener; Shutdown does.
func (in *Inbound) Start(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.started {
		return fault.New(fault.CodeConfig, "mllp: inbound already started")
	}
	if err := in.srv.Listen(); err != nil {
		return fmt.Errorf("mllp: start %s: %w", in.name, err)
	}
	in.started = true
	in.serveDone = make(chan struct{})
	in.log.Info("listening", "adapter", in.name, "addr", in.srv.ListenAddr().String(), "tls", in.cfg.TLS != nil)
	if host, _, err := net.SplitHostPort(in.cfg.Listen); err == nil && !access.LoopbackHost(host) {
		if in.cfg.TLS == nil {
			// Allowed (trust networks often carry MLLP plain), but
			// said, as for the HTTP listener.
			in.log.Warn("mllp listener is reachable beyond this machine without TLS: messages cross the network as sent; set tls, or keep the network between sender and Junction trusted", "adapter", in.name, "addr", in.srv.ListenAddr().String())
		}
		if len(in.cfg.ProcessingIDs) == 0 {
			// A live feed's listener: a training system pointed at it
			// would make live records.
			in.log.Warn("mllp listener reachable beyond this machine takes every processing id: training (T) and debugging (D) messages are routed as live ones; set processing_ids: [P] on a live feed", "adapter", in.name)
		}
	}
	serveCtx := context.WithoutCancel(ctx)
	go func() {
		defer close(in.serveDone)
		if err := in.srv.Serve(serveCtx); err != nil {
			in.log.Error("mllp listener stopped", "adapter", in.name, "error", err.Error())
		}
	}()
	return nil
}

// Shutdown stops accepting, lets messages in progress be stored and
// acknowledged, and closes every connection, or gives up when ctx ends.
// It is safe without Start and idempotent.
func (in *Inbound) Shutdown(ctx context.Context) error {
	err := in.srv.Shutdown(ctx)
	in.mu.Lock()
	done := in.serveDone
	in.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
		}
	}
	if err != nil {
		return fmt.Errorf("mllp: shutdown %s: %w", in.name, err)
	}
	return nil
}

// Addr returns the address listened on, or nil before Start.
func (in *Inbound) Addr() net.Addr { return in.srv.ListenAddr() }

// ServeMLLP handles one frame; it implements the pkg/mllp Handler.
func (in *Inbound) ServeMLLP(ctx context.Context, _ *transport.ConnInfo, payload []byte) ([]byte, bool) {
	start := time.Now()
	in.metrics.Received.WithLabelValues(in.name).Inc()
	ctx, span := in.tracer.Start(ctx, "mllp.receive", in.serverSpan)
	defer span.End()

	ack, code, cond := in.receive(ctx, span, payload, start)
	in.metrics.AckLatency.WithLabelValues(in.name).Observe(time.Since(start).Seconds())
	if !code.Accepted() {
		span.SetStatus(codes.Error, "negative acknowledgement")
	}
	if ack == nil {
		// An acknowledgement received (receive): not answered.
		in.metrics.Acks.WithLabelValues(in.name, ackNotSent).Inc()
		span.SetAttributes(attribute.String("junction.ack", ackNotSent))
		return nil, false
	}
	if in.cfg.AcceptAck == AcceptAckMSH15 && !answers(cond, code) {
		in.metrics.Acks.WithLabelValues(in.name, ackNotSent).Inc()
		span.SetAttributes(attribute.String("junction.ack", ackNotSent))
		if !code.Accepted() {
			in.log.Info("negative acknowledgement not sent, as MSH-15 asks", "adapter", in.name, "code", string(code), "accept_ack_type", cond)
		}
		// A message the store did not take must not pass in silence,
		// whatever MSH-15 asks: closing the connection tells the sender
		// that something failed, and it sends again.
		return nil, code == hl7v2.AckCE
	}
	in.metrics.Acks.WithLabelValues(in.name, string(code)).Inc()
	return ack, false
}

// answers reports whether a sender whose MSH-15 is cond is sent an
// accept acknowledgement with code (HL7 table 0155): NE never, ER only
// for an error or a reject, SU only on success, anything else always.
func answers(cond string, code hl7v2.AckCode) bool {
	switch cond {
	case "NE":
		return false
	case "ER":
		return !code.Accepted()
	case "SU":
		return code.Accepted()
	}
	return true
}

// AcceptOnly makes the listener refuse, before storing them, messages
// whose type (MSH-9.1 and the event, from MSH-9.2 or EVN-1) is not one
// of types, such as "ADT^A01": they are answered AR (CR in enhanced
// mode) with ERR code 200 (unknown message type) or 201 (unknown event),
// counted and quarantined, rather than acknowledged and then
// dead-lettered by every route, since the adapter's translator never
// takes them. A type may be given as "ORM^*", every event of it. Call it
// before Start.
func (in *Inbound) AcceptOnly(types []string) {
	in.types = make(map[string]bool, len(types))
	for _, t := range types {
		in.types[t] = true
	}
	in.typeList = strings.Join(types, ", ")
}

// Screen makes the listener refuse, before storing them, messages for
// which check returns an error: they are answered AE (CE in enhanced
// mode, where the listener commits or not: HL7 v2 keeps AR and CR for a
// message type, processing id or version it does not take, or a system
// failure) with that ERR, counted as hl7.required-field-missing and quarantined,
// like messages of a type the listener does not take. Use it for what the
// feed's translator would refuse in every case (a result message without
// an order, say), so the sender hears of it rather than an AA followed by
// a dead letter. Call it before Start.
func (in *Inbound) Screen(check func(*hl7v2.Message) *hl7v2.AckError) { in.screen = check }

// unsupported returns the ERR code, the MSH field and component it is
// about and the text for a message the listener does not take (a
// processing id or a message type it was not given), or "" when it takes
// it.
func (in *Inbound) unsupported(m *hl7v2.Message) (code string, field, component int, text string) {
	if v := strings.TrimSpace(m.Version()); v != "" && !isV2Version(v) {
		return hl7v2.ErrCodeUnsupportedVersion, 12, 0, "unsupported version; this listener takes HL7 v2 (MSH-12 2.1 to 2.9, such as 2.4 or 2.5.1)"
	}
	if ids := in.cfg.ProcessingIDs; len(ids) > 0 && !slices.Contains(ids, strings.ToUpper(strings.TrimSpace(m.ProcessingID()))) {
		return hl7v2.ErrCodeUnsupportedProcessingID, 11, 0, "unsupported processing id; this listener takes " + strings.Join(ids, ", ")
	}
	if in.types == nil {
		return "", 0, 0, ""
	}
	typ, ev := m.Segment("MSH").Component(9, 1, 1, 1), m.Event()
	if in.types[typ+"^"+ev] || ev != "" && in.types[typ+"^*"] {
		return "", 0, 0, ""
	}
	// The code received is quoted: "A28 " padded with a space, or "a28",
	// reads as taken in the list that follows unless the text shows it.
	for t := range in.types {
		if strings.HasPrefix(t, typ+"^") {
			return hl7v2.ErrCodeUnsupportedEvent, 9, 2, "unsupported event " + quoteSent(ev) + "; this listener takes " + in.typeList
		}
	}
	return hl7v2.ErrCodeUnsupportedMessageType, 9, 1, "unsupported message type " + quoteSent(typ) + "; this listener takes " + in.typeList
}

// quoteSent quotes a code as sent, up to 20 bytes, for an ACK's text
// (which goes to the sender alone, never to the log).
func quoteSent(code string) string {
	if len(code) > 20 {
		code = code[:20]
	}
	return strconv.Quote(code)
}

// isV2Version reports whether v, an MSH-12.1, names an HL7 v2 version:
// 2.1 to 2.9, optionally followed by dotted numbers (2.3.1, 2.5.1).
func isV2Version(v string) bool {
	rest, ok := strings.CutPrefix(v, "2.")
	if !ok || rest == "" || rest[0] < '1' || rest[0] > '9' {
		return false
	}
	// Then ".digits" any number of times, read in place: this runs for
	// every message.
	for rest = rest[1:]; rest != ""; {
		if rest[0] != '.' {
			return false
		}
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 1 {
			return false
		}
		rest = rest[n:]
	}
	return true
}

// receive parses, stores and acknowledges one message. It returns the
// acknowledgement, its code and the message's MSH-15 ("" when it did not
// parse). The acknowledgement is nil for an acknowledgement received that
// the input does not relay: it is refused, and not answered.
func (in *Inbound) receive(ctx context.Context, span trace.Span, payload []byte, start time.Time) ([]byte, hl7v2.AckCode, string) {
	m, err := hl7v2.Parse(payload)
	if err != nil {
		ack, code := in.unparseable(ctx, payload, err)
		return ack, code, ""
	}
	cond := m.AcceptAckType()
	// Built once: the type is joined from MSH-9 (or EVN-1) each time.
	typ := m.MessageType()
	if span.IsRecording() {
		// Not made for a span that records nothing (no exporter): the
		// attributes would be built for every message and dropped.
		span.SetAttributes(attribute.String("junction.message_type", typ))
	}
	if missing := missingField(m, typ); missing != 0 {
		code := m.RejectCode()
		f := fault.Newf(fault.CodeHL7Required, "MSH-%d is required", missing).WithHL7(hl7v2.ErrCodeRequiredField)
		// Kept for ops like unparseable input: the sender's resend of a
		// message Junction cannot identify would be rejected the same way.
		in.quarantine(ctx, payload, f.Code)
		in.log.Warn("message rejected", "adapter", in.name, "reason", string(f.Code), "field", fmt.Sprintf("MSH-%d", missing), "code", string(code))
		return in.ack(m, code, hl7v2.AckError{Segment: "MSH", Sequence: 1, Field: missing, Code: hl7v2.ErrCodeRequiredField, Severity: "E", Text: f.Msg}), code, cond
	}
	if field, limit := longHeaderField(m, typ); field != 0 {
		// These travel with the message through the store, in headers
		// JetStream bounds (64 KiB together); no real value is near.
		code := m.RejectCode()
		f := fault.Newf(fault.CodeHL7Parse, "MSH-%d is longer than %d characters", field, limit).WithHL7(hl7v2.ErrCodeValueTooLong)
		in.quarantine(ctx, payload, f.Code)
		in.log.Warn("message rejected", "adapter", in.name, "reason", string(f.Code), "field", fmt.Sprintf("MSH-%d", field), "code", string(code))
		return in.ack(m, code, hl7v2.AckError{Segment: "MSH", Sequence: 1, Field: field, Code: hl7v2.ErrCodeValueTooLong, Severity: "E", Text: f.Msg}), code, cond
	}
	if n := len(m.Segments()); n > in.cfg.MaxSegments {
		code := m.RejectCode()
		f := fault.Newf(fault.CodeHL7TooManySegments, "message of more than %d segments", in.cfg.MaxSegments).WithHL7(hl7v2.ErrCodeValueTooLong)
		in.quarantine(ctx, payload, f.Code)
		in.log.Warn("message rejected", "adapter", in.name, "reason", string(f.Code), "segments", n, "code", string(code))
		return in.ack(m, code, hl7v2.AckError{Code: hl7v2.ErrCodeValueTooLong, Severity: "E", Text: f.Msg}), code, cond
	}
	if n := m.CountSegments("MSH"); n > 1 {
		// Two messages in one frame: acknowledging the first would leave
		// the rest unrouted, and the sender believing them delivered.
		code := m.RejectCode()
		f := fault.Newf(fault.CodeHL7Parse, "frame holds %d messages (MSH segments); send one message per frame", n).WithHL7(hl7v2.ErrCodeSegmentSequence)
		in.quarantine(ctx, payload, f.Code)
		in.log.Warn("message rejected", "adapter", in.name, "reason", string(f.Code), "msh_segments", n, "code", string(code))
		return in.ack(m, code, hl7v2.AckError{Segment: "MSH", Sequence: 2, Code: hl7v2.ErrCodeSegmentSequence, Severity: "E", Text: f.Msg}), code, cond
	}
	if errCode, field, component, text := in.unsupported(m); errCode != "" {
		code := m.RejectCode()
		if strings.EqualFold(strings.TrimSpace(m.Segment("MSH").Component(9, 1, 1, 1)), "ACK") {
			// An acknowledgement is never answered: a peer that
			// acknowledges whatever it receives would otherwise trade
			// rejections with this listener without end. Kept for ops, as
			// it is a misdirected answer, or one the input does not relay.
			in.quarantine(ctx, payload, fault.CodeHL7Unsupported)
			in.log.Warn("acknowledgement received and not answered: this listener takes messages, not answers to them", "adapter", in.name, "reason", string(fault.CodeHL7Unsupported))
			return nil, code, cond
		}
		// Kept for ops like other refused input: a sender whose MSH-15
		// forbids the answer would otherwise leave no trace of it.
		in.quarantine(ctx, payload, fault.CodeHL7Unsupported)
		in.log.Warn("message rejected", "adapter", in.name, "reason", string(fault.CodeHL7Unsupported), "hl7_error", errCode, "code", string(code))
		return in.ack(m, code, hl7v2.AckError{Segment: "MSH", Sequence: 1, Field: field, Component: component, Code: errCode, Severity: "E", Text: text}), code, cond
	}
	if !m.CharsetSupported() {
		// Every route translates the message first, and no translator
		// can decode it: acknowledged, it could only be dead-lettered.
		code := m.RejectCode()
		in.quarantine(ctx, payload, fault.CodeHL7Charset)
		in.log.Warn("message rejected", "adapter", in.name, "reason", string(fault.CodeHL7Charset), "hl7_error", hl7v2.ErrCodeTableValue, "code", string(code))
		return in.ack(m, code, hl7v2.AckError{Segment: "MSH", Sequence: 1, Field: 18, Code: hl7v2.ErrCodeTableValue, Severity: "E",
			Text: "unsupported character set (MSH-18); this listener takes ASCII, 8859/1 or UNICODE UTF-8"}), code, cond
	}
	if in.screen != nil {
		if ae := in.screen(m); ae != nil {
			code := m.ErrorCode()
			in.quarantine(ctx, payload, fault.CodeHL7Required)
			in.log.Warn("message rejected", "adapter", in.name, "reason", string(fault.CodeHL7Required), "hl7_error", ae.Code, "code", string(code))
			return in.ack(m, code, *ae), code, cond
		}
	}

	app, facility, ctrl := m.SendingApp(), m.SendingFacility(), m.ControlID()
	env := &envelope.Envelope{
		ID:          in.host.NewID(),
		Source:      in.name,
		ContentType: envelope.ContentTypeHL7v2,
		ReceivedAt:  start.UTC(),
		MessageType: typ,
		ControlID:   ctrl,
		Sender:      app + "|" + facility,
		DedupeKey:   app + "|" + facility + "|" + ctrl,
		Raw:         payload,
	}
	key := ""
	if in.patientKey != nil {
		key = in.patientKey(m)
	}
	if key == "" {
		key = env.DedupeKey
	}
	env.Partition = in.host.Partition(key)
	if span.IsRecording() {
		span.SetAttributes(attribute.String("junction.message_id", env.ID))
	}

	res, err := in.host.Ingest(ctx, env)
	if err != nil {
		code := hl7v2.AckAR
		if m.Enhanced() {
			code = hl7v2.AckCE
		}
		span.RecordError(err)
		text, level := notStoredText, slog.LevelWarn
		if fault.CodeOf(err) == fault.CodeBacklog {
			// Expected while routing is behind: the engine logs when
			// the input starts and stops refusing, and counts each.
			text, level = backlogText, slog.LevelDebug
		}
		in.log.Log(ctx, level, "message not stored", "adapter", in.name, "id", env.ID, "control_id", ctrl, "code", string(code), "error", err.Error())
		return in.ack(m, code, hl7v2.AckError{Code: hl7v2.ErrCodeInternal, Severity: "E", Text: text}), code, cond
	}
	code := m.AcceptCode()
	if res.Duplicate {
		// The trace names the message the audit trail has: the stored
		// original, not the id this resend was given and never stored
		// under.
		span.SetAttributes(attribute.String("junction.message_id", res.ID), attribute.Bool("junction.duplicate", true))
		in.metrics.Duplicates.WithLabelValues(in.name).Inc()
		in.log.Info("duplicate acknowledged again", "adapter", in.name, "id", res.ID, "control_id", ctrl)
	} else {
		in.log.Debug("message stored", "adapter", in.name, "id", res.ID, "control_id", ctrl, "type", env.MessageType)
	}
	return in.ack(m, code), code, cond
}

// Limits of the header values a message carries through the store: HL7
// v2.7's lengths of MSH-10 (ST, 199) and of MSH-3 and MSH-4 (HD, 227),
// which also bounds the message type and event.
const (
	maxControlID   = 199
	maxHeaderValue = 227
)

// longHeaderField returns the MSH field whose value, as the message's
// envelope keeps it, is longer than its limit, and that limit; 0 when
// none is. typ is the message's MessageType.
func longHeaderField(m *hl7v2.Message, typ string) (field, limit int) {
	switch {
	case len(m.ControlID()) > maxControlID:
		return 10, maxControlID
	case len(m.SendingApp()) > maxHeaderValue:
		return 3, maxHeaderValue
	case len(m.SendingFacility()) > maxHeaderValue:
		return 4, maxHeaderValue
	case len(typ) > maxHeaderValue:
		return 9, maxHeaderValue
	}
	return 0, 0
}

// missingField returns 9 or 10 when MSH-9 (typ, the message's
// MessageType) or MSH-10 is empty, else 0.
func missingField(m *hl7v2.Message, typ string) int {
	switch {
	case typ == "":
		return 9
	case m.ControlID() == "":
		return 10
	}
	return 0
}

// ack builds the answer to m: code, and an ERR segment for each of errs,
// the first of whose texts is MSA-3 too for versions before 2.7.
func (in *Inbound) ack(m *hl7v2.Message, code hl7v2.AckCode, errs ...hl7v2.AckError) []byte {
	opts := hl7v2.AckOptions{Code: code, Errors: errs, App: in.cfg.App, Facility: in.cfg.Facility}
	if len(errs) > 0 && !m.VersionAtLeast(7) {
		// MSA-3, the text message, is where senders before v2.4 (and
		// many since) look for why; v2.7 withdrew it for ERR alone.
		opts.Text = errs[0].Text
	}
	return hl7v2.BuildAck(m, opts)
}

// unparseable quarantines input that does not parse and builds its
// reject (see rejectRaw).
func (in *Inbound) unparseable(ctx context.Context, payload []byte, err error) ([]byte, hl7v2.AckCode) {
	f := fault.As(err)
	if f == nil {
		f = fault.Wrap(fault.Permanent, fault.CodeHL7Parse, "message does not parse", err)
	}
	in.quarantine(ctx, payload, f.Code)
	ae := hl7v2.AckError{Code: f.HL7Err, Severity: "E", Text: f.Msg}
	if ae.Code == "" {
		ae.Code = hl7v2.ErrCodeInternal
	}
	ack, code := in.rejectRaw(payload, ae)
	// As for the other refusals: the reason and the HL7 code, never the
	// input or the parser's text about it.
	in.log.Warn("message rejected", "adapter", in.name, "reason", string(f.Code), "hl7_error", ae.Code, "code", string(code))
	return ack, code
}

// rejectRaw answers input that was not parsed whole. When its header
// parses, the answer is a reject (AR, or CR in enhanced mode) naming the
// message (MSA-2 = MSH-10), so the sender can match it; otherwise a raw AR
// with an empty MSA-2.
func (in *Inbound) rejectRaw(payload []byte, ae hl7v2.AckError) ([]byte, hl7v2.AckCode) {
	// A header holding MLLP's block bytes (possible only in a frame that
	// broke the framing) would carry them into the reply and break its
	// frame: such input gets the raw AR.
	hdr := payload
	if i := bytes.IndexAny(payload, "\r\n"); i >= 0 {
		hdr = payload[:i]
	}
	framing := bytes.IndexByte(hdr, transport.StartBlock) >= 0 || bytes.IndexByte(hdr, transport.EndBlock) >= 0
	if h, err := hl7v2.ParseHeader(payload); err == nil && h.ControlID() != "" && !framing {
		code := h.RejectCode()
		return in.ack(h, code, ae), code
	}
	return hl7v2.BuildRawAck(hl7v2.AckOptions{Code: hl7v2.AckAR, Text: ae.Text, Errors: []hl7v2.AckError{ae}, App: in.cfg.App, Facility: in.cfg.Facility}), hl7v2.AckAR
}

// quarantine counts the rejection and keeps (the start of) raw for ops.
func (in *Inbound) quarantine(ctx context.Context, raw []byte, reason fault.Code) {
	in.metrics.Rejected.WithLabelValues(in.name, string(reason)).Inc()
	adapter.Quarantine(ctx, in.host, in.log, in.metrics, in.name, raw, string(reason))
}

// onFrameError handles a frame that is too large, malformed or cut short:
// the part read is counted and quarantined and, unless the sender has
// gone, a reject sent before the server closes the connection.
func (in *Inbound) onFrameError(ctx context.Context, _ *transport.ConnInfo, err error, partial []byte) []byte {
	in.metrics.Received.WithLabelValues(in.name).Inc()
	// Bytes outside a frame are no message: 100 (segment sequence
	// error), as for a frame without MSH, not 207, which tells the sender
	// to resend the same bytes later.
	reason, text, hl7err := fault.CodeFrameInvalid, "invalid MLLP frame: not a message between 0x0B and 0x1C 0x0D", hl7v2.ErrCodeSegmentSequence
	switch {
	case errors.Is(err, transport.ErrBusy):
		// Nothing is wrong with the message: it is not kept, only
		// counted, and the sender is told to resend.
		in.metrics.Rejected.WithLabelValues(in.name, string(fault.CodeFrameBusy)).Inc()
		in.log.Warn("input refused: listener busy with other large messages", "adapter", in.name, "reason", string(fault.CodeFrameBusy))
		ack, code := in.rejectRaw(partial, hl7v2.AckError{Code: hl7v2.ErrCodeInternal, Severity: "E", Text: "listener busy receiving other large messages; not stored, resend later"})
		in.metrics.Acks.WithLabelValues(in.name, string(code)).Inc()
		return ack
	case errors.Is(err, transport.ErrTooLarge):
		// Value too long, not 207: resending it unchanged can never
		// succeed, and 207 is what says "resend later" here.
		reason, hl7err = fault.CodeFrameTooLarge, hl7v2.ErrCodeValueTooLong
		text = fmt.Sprintf("message larger than %d bytes", in.cfg.MaxMessageBytes)
	case errors.Is(err, transport.ErrIncompleteFrame):
		// The message may be whole at the sender; the transport stalled.
		reason, hl7err = fault.CodeFrameIncomplete, hl7v2.ErrCodeInternal
		text = "incomplete MLLP frame: no end block (0x1C 0x0D) within the read timeout"
	}
	gone := errors.Is(err, io.ErrUnexpectedEOF) // the sender closed: nobody to answer
	if len(partial) > 0 {
		in.quarantine(ctx, partial, reason) // its start, and how much came
	} else {
		in.metrics.Rejected.WithLabelValues(in.name, string(reason)).Inc()
		in.log.Warn("input rejected", "adapter", in.name, "reason", string(reason))
	}
	if gone {
		return nil
	}
	ack, code := in.rejectRaw(partial, hl7v2.AckError{Code: hl7err, Severity: "E", Text: text})
	in.metrics.Acks.WithLabelValues(in.name, string(code)).Inc()
	return ack
}

// ListenAddress implements adapter.Listener: the listen setting.
func (c *InboundConfig) ListenAddress() string { return c.Listen }

// MaxInputBytes is the largest message this input stores.
func (c *InboundConfig) MaxInputBytes() int64 { return int64(c.MaxMessageBytes) }
