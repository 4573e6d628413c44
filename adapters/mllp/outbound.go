package mllp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	transport "github.com/junction-fhir/junction/pkg/mllp"
)

// Type is the destination type name used in config files.
const Type = "mllp"

// StatusSent is the receipt status of a message delivered without an
// acknowledgement, as its MSH-15 asked (OutboundConfig.AcceptAck msh15).
const StatusSent = "sent"

// Outbound defaults.
const (
	DefaultAckTimeout     = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
)

// OutboundTLSConfig configures outbound TLS. CA, Cert and Key are secret
// references ("file:PATH" or "env:NAME" holding PEM).
type OutboundTLSConfig struct {
	// CA verifies the receiver's certificate; the system roots when empty.
	CA string `yaml:"ca"`
	// Cert and Key are our client certificate, for mutual TLS.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName overrides the name checked in the receiver's certificate
	// (default: the host of address).
	ServerName string `yaml:"server_name"`
}

// OutboundConfig configures an MLLP destination.
type OutboundConfig struct {
	// Address is the receiver's host:port (required).
	Address string `yaml:"address"`
	// TLS, when set, connects over TLS.
	TLS *OutboundTLSConfig `yaml:"tls"`
	// AckTimeout bounds the wait for the acknowledgement (default 30s).
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// ConnectTimeout bounds connecting (default 10s).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxReplyBytes limits the acknowledgement's size (default 1 MiB).
	MaxReplyBytes int `yaml:"max_reply_bytes"`
	// AcceptAck says when an answer is awaited: AcceptAckAlways (the
	// default) for every message, whatever its MSH-15; AcceptAckMSH15 as
	// the message's MSH-15 asks, for receivers that honour it: NE is
	// delivered once written, ER once ack_timeout passes with no error
	// answered (set a short ack_timeout), SU and AL (or empty) wait for
	// the answer as always.
	AcceptAck string `yaml:"accept_ack"`
}

// DefaultOutboundConfig returns the defaults.
func DefaultOutboundConfig() OutboundConfig {
	return OutboundConfig{
		AckTimeout:     DefaultAckTimeout,
		ConnectTimeout: DefaultConnectTimeout,
		MaxReplyBytes:  DefaultMaxMessageBytes,
		AcceptAck:      AcceptAckAlways,
	}
}

// Validate returns every problem with c.
func (c *OutboundConfig) Validate() []error {
	var errs []error
	if c.Address == "" {
		errs = append(errs, errors.New("address: required"))
	} else if err := adapter.CheckHostPort(c.Address, false); err != nil {
		errs = append(errs, fmt.Errorf("address: %w", err))
	}
	if c.AckTimeout <= 0 {
		errs = append(errs, errors.New("ack_timeout: must be positive"))
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, errors.New("connect_timeout: must be positive"))
	}
	if c.MaxReplyBytes <= 0 {
		errs = append(errs, errors.New("max_reply_bytes: must be positive"))
	}
	switch c.AcceptAck {
	case "", AcceptAckAlways, AcceptAckMSH15:
	default:
		errs = append(errs, fmt.Errorf("accept_ack: %q is not always or msh15", c.AcceptAck))
	}
	if t := c.TLS; t != nil {
		if (t.Cert == "") != (t.Key == "") {
			errs = append(errs, errors.New("tls.cert, tls.key: set both or neither"))
		}
		errs = checkRef(errs, "tls.ca", t.CA)
		errs = checkRef(errs, "tls.cert", t.Cert)
		errs = checkRef(errs, "tls.key", t.Key)
	}
	return errs
}

// OutboundFactory builds MLLP destinations (type "mllp").
type OutboundFactory struct{}

var (
	_ adapter.OutboundFactory = OutboundFactory{}
	_ adapter.ContentTaker    = OutboundFactory{}
)

// Type returns "mllp".
func (OutboundFactory) Type() string { return Type }

// TakesContent reports whether contentType is HL7 v2, the only payload an
// MLLP destination forwards.
func (OutboundFactory) TakesContent(contentType string) bool {
	return contentType == envelope.ContentTypeHL7v2
}

// NewConfig returns an *OutboundConfig holding the defaults.
func (OutboundFactory) NewConfig() any {
	c := DefaultOutboundConfig()
	return &c
}

// NewOutbound returns a destination for cfg, an *OutboundConfig.
func (OutboundFactory) NewOutbound(_ context.Context, set adapter.Settings, cfg any) (adapter.Outbound, error) {
	switch c := cfg.(type) {
	case *OutboundConfig:
		if c == nil {
			return nil, fault.New(fault.CodeConfig, "mllp: nil outbound config")
		}
		return NewOutbound(set, *c)
	case OutboundConfig:
		return NewOutbound(set, c)
	default:
		return nil, fault.Newf(fault.CodeConfig, "mllp: config is %T, want *mllp.OutboundConfig", cfg)
	}
}

// Outbound forwards HL7 v2 messages to one MLLP receiver. It keeps one
// connection, made when first needed and again after any failure, and
// sends one message at a time on it, so the receiver sees messages in the
// order Send is called and every acknowledgement pairs with its message.
//
// An acknowledgement counts only if its MSA-2 equals the message's MSH-10.
// After a timeout or a mismatched acknowledgement the connection is
// closed, so a late acknowledgement can never be taken for the answer to
// the next message. AA and CA are success. AE and CE (the receiver found
// an error in the message) are permanent faults, except a CE (a commit
// error: the receiver could not take it into safe keeping) whose ERR
// codes are all 206 (record locked) or 207 (internal error), which is
// what a receiver whose store is down answers; an AE with 207 stays
// permanent, as many receivers use 207 for any application error. AR and
// CR (the receiver refused it, often because it is not ready) are
// transient faults, as are network failures and timeouts, except one
// whose ERR codes say the receiver never takes the message as it is
// (100-103 content errors, which many receivers answer AR; 104 too long;
// 200-203 type, event, processing id or version not supported:
// hl7v2.NeverTaken), which is permanent.
type Outbound struct {
	name string
	cfg  OutboundConfig
	tls  *tls.Config
	log  *slog.Logger

	// sem holds the right to use conn; a channel so waiting respects ctx.
	sem    chan struct{}
	conn   *transport.Client
	closed bool
	// unasked are the control ids of NE messages written on conn: a
	// receiver may answer them all the same, after the next message is
	// written, and such an answer is passed over, not taken for the
	// next message's.
	unasked []string
}

// maxUnasked bounds Outbound.unasked: the oldest are forgotten.
const maxUnasked = 64

var _ adapter.Outbound = (*Outbound)(nil)

// NewOutbound returns a destination for cfg. TLS secrets are resolved
// here, so a bad reference fails at start-up.
func NewOutbound(set adapter.Settings, cfg OutboundConfig) (*Outbound, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "mllp: invalid outbound config", errors.Join(errs...))
	}
	set = withDefaults(set)
	o := &Outbound{name: set.Name, cfg: cfg, log: set.Logger, sem: make(chan struct{}, 1)}
	if cfg.TLS != nil {
		t, err := clientTLS(set.Secrets, cfg.TLS)
		if err != nil {
			return nil, err
		}
		o.tls = t
	}
	return o, nil
}

// Start does nothing; the connection is made by the first Send.
func (o *Outbound) Start(context.Context) error { return nil }

// Shutdown waits for a send in progress (or for ctx to end), refuses
// further sends and closes the connection. It is safe without Start and
// idempotent.
func (o *Outbound) Shutdown(ctx context.Context) error {
	select {
	case o.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("mllp: shutdown %s: %w", o.name, ctx.Err())
	}
	defer func() { <-o.sem }()
	o.closed = true
	o.dropConn()
	return nil
}

// dropConn closes the connection; the caller holds sem.
func (o *Outbound) dropConn() {
	if o.conn != nil {
		_ = o.conn.Close()
		o.conn = nil
	}
	o.unasked = o.unasked[:0]
}

// passedOver reports whether reply answers an NE message written earlier
// on this connection (forgetting it), rather than the message sent.
func (o *Outbound) passedOver(reply []byte, ctrl string) bool {
	_, ackCtrl, _, err := hl7v2.ParseAck(reply)
	if err != nil || ackCtrl == ctrl {
		return false
	}
	i := slices.Index(o.unasked, ackCtrl)
	if i < 0 {
		return false
	}
	o.unasked = slices.Delete(o.unasked, i, i+1)
	return true
}

// Send forwards d, which must hold one HL7 v2 message, and waits for its
// acknowledgement. The receipt's Status is the ACK code and Reply the ACK.
func (o *Outbound) Send(ctx context.Context, d *adapter.Delivery) (adapter.Receipt, error) {
	if d.ContentType != envelope.ContentTypeHL7v2 {
		return adapter.Receipt{}, fault.Newf(fault.CodeConfig,
			"mllp: destination forwards HL7 v2 only, got %q (FHIR to v2 is not supported yet)", d.ContentType)
	}
	m, err := hl7v2.Parse(d.Body)
	if err != nil {
		return adapter.Receipt{}, fault.Wrap(fault.Permanent, fault.CodeHL7Parse, "mllp: delivery is not an HL7 v2 message", err)
	}
	if m.ControlID() == "" {
		return adapter.Receipt{}, fault.New(fault.CodeHL7Required, "mllp: delivery has no MSH-10 control id").WithHL7(hl7v2.ErrCodeRequiredField)
	}
	// MSH-10 as sent, which MSA-2 must echo exactly (hl7v2.ParseAck).
	ctrl := m.Segment("MSH").Field(10)
	if bytes.IndexByte(d.Body, transport.EndBlock) >= 0 {
		return adapter.Receipt{}, fault.New(fault.CodeFrameInvalid, "mllp: delivery holds an MLLP end block byte and cannot be framed")
	}

	select {
	case o.sem <- struct{}{}:
	case <-ctx.Done():
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "mllp: send cancelled while waiting for the connection", ctx.Err())
	}
	defer func() { <-o.sem }()
	if o.closed {
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "mllp: destination shut down", nil)
	}
	if o.conn != nil && !o.conn.Idle() {
		// Closed by the receiver since the last reply (an idle timeout,
		// or a receiver that closes after each ACK), or holding an answer
		// nobody waits for: dial again rather than lose this attempt.
		o.dropConn()
	}
	if o.conn == nil {
		dctx, cancel := context.WithTimeout(ctx, o.cfg.ConnectTimeout)
		c, err := transport.Dial(dctx, o.cfg.Address, o.tls, o.cfg.MaxReplyBytes)
		cancel()
		if err != nil {
			msg := "mllp: connect failed"
			if why := fault.NetworkReason(err); why != "" {
				msg += ": " + why
			}
			return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, msg, err)
		}
		o.conn = c
	}
	asked := AcceptAckAlways
	if o.cfg.AcceptAck == AcceptAckMSH15 {
		asked = strings.ToUpper(strings.TrimSpace(m.AcceptAckType()))
	}
	sctx, cancel := context.WithTimeout(ctx, o.cfg.AckTimeout)
	if asked == "NE" {
		// Never answered: written is delivered. A receiver that answers
		// all the same leaves the answer unread, and the connection is
		// then dialled again before the next message (Idle).
		err := o.conn.Write(sctx, d.Body)
		cancel()
		if err != nil {
			o.dropConn()
			return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "mllp: write failed", err)
		}
		if len(o.unasked) == maxUnasked {
			o.unasked = slices.Delete(o.unasked, 0, 1)
		}
		o.unasked = append(o.unasked, ctrl)
		return adapter.Receipt{Status: StatusSent, Reply: "MSH-15 NE: no acknowledgement asked"}, nil
	}
	reply, err := o.conn.Send(sctx, d.Body)
	for err == nil && len(o.unasked) > 0 && o.passedOver(reply, ctrl) {
		reply, err = o.conn.Read(sctx)
	}
	cancel()
	if err != nil {
		o.dropConn()
		if asked == "ER" && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// Answered only on error, and none came within ack_timeout.
			return adapter.Receipt{Status: StatusSent, Reply: "MSH-15 ER: no error answered within ack_timeout"}, nil
		}
		msg := "mllp: no acknowledgement"
		if errors.Is(err, context.DeadlineExceeded) {
			msg = "mllp: acknowledgement timed out"
		}
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, msg, err)
	}
	code, ackCtrl, text, err := hl7v2.ParseAck(reply)
	if err != nil {
		o.dropConn()
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestAckMismatch, "mllp: reply is not an acknowledgement", err)
	}
	if ackCtrl != ctrl {
		// Out of step: whatever this answers, it is not our message.
		o.dropConn()
		return adapter.Receipt{}, (&fault.Error{Code: fault.CodeDestAckMismatch, Class: fault.Transient,
			Msg: "mllp: acknowledgement is for another message (MSA-2 differs from MSH-10)"}).
			WithDetail(fmt.Sprintf("sent MSH-10 %q, MSA-2 %q", ctrl, ackCtrl))
	}
	if !code.Accepted() {
		text = ackDetail(text, reply)
	}
	switch {
	case code.Accepted():
		return adapter.Receipt{Status: string(code), Reply: string(reply)}, nil
	case code == hl7v2.AckCE && hl7v2.RetryLater(hl7v2.AckErrorCodes(reply)):
		return adapter.Receipt{}, (&fault.Error{Code: fault.CodeDestRejected, Class: fault.Transient,
			Msg: fmt.Sprintf("mllp: receiver answered %s (cannot take it now)", code)}).WithDetail(text)
	case code.Errored():
		return adapter.Receipt{}, fault.Newf(fault.CodeDestRejected, "mllp: receiver answered %s", code).WithDetail(text)
	case code.Rejected() && hl7v2.NeverTaken(hl7v2.AckErrorCodes(reply)):
		return adapter.Receipt{}, fault.Newf(fault.CodeDestRejected, "mllp: receiver answered %s (it does not take this message)", code).WithDetail(text)
	case code.Rejected():
		return adapter.Receipt{}, (&fault.Error{Code: fault.CodeDestRejected, Class: fault.Transient,
			Msg: fmt.Sprintf("mllp: receiver answered %s", code)}).WithDetail(text)
	default:
		o.dropConn()
		return adapter.Receipt{}, (&fault.Error{Code: fault.CodeDestAckMismatch, Class: fault.Transient,
			Msg: "mllp: acknowledgement has an unknown MSA-1 code"}).WithDetail(text)
	}
}

// ackDetail is a refusal's detail: the acknowledgement's text (MSA-3, or
// its first ERR's) and what each ERR segment says, where, and the
// receiver's message to its user (hl7v2.AckErrorDetail), so whoever fixes
// the message need not ask the receiver which field it meant.
func ackDetail(text string, reply []byte) string {
	errs := hl7v2.AckErrorDetail(reply)
	switch {
	case errs == "":
		return text
	case text == "" || strings.Contains(errs, text):
		return errs
	}
	return text + " (" + errs + ")"
}
