package pathology

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/junction-fhir/junction/adapters/mllp"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
)

// OrdersConfig configures an order destination: an MLLP destination (its
// settings at the top level) whose FHIR deliveries are encoded as order
// messages by the settings under "order".
type OrdersConfig struct {
	mllp.OutboundConfig `yaml:",inline"`
	// Order picks the message structure and fills MSH and order numbers.
	Order OrderOptions `yaml:"order"`
}

// DefaultOrdersConfig returns mllp.DefaultOutboundConfig and
// DefaultOrderOptions.
func DefaultOrdersConfig() OrdersConfig {
	return OrdersConfig{OutboundConfig: mllp.DefaultOutboundConfig(), Order: DefaultOrderOptions()}
}

// Validate returns every problem with the MLLP and order settings.
func (c *OrdersConfig) Validate() []error {
	errs := c.OutboundConfig.Validate()
	for _, err := range c.Order.Validate() {
		errs = append(errs, fmt.Errorf("order.%w", err))
	}
	return errs
}

// OrdersOutboundFactory builds order destinations (type "pathology", the
// outbound side of the pathology adapter).
type OrdersOutboundFactory struct{}

var _ adapter.OutboundFactory = OrdersOutboundFactory{}

// Type returns "pathology".
func (OrdersOutboundFactory) Type() string { return Type }

// NewConfig returns an *OrdersConfig holding the defaults.
func (OrdersOutboundFactory) NewConfig() any {
	c := DefaultOrdersConfig()
	return &c
}

// NewOutbound returns an order destination for cfg, an *OrdersConfig. With
// the engine's store in set, it records each order in the correlation
// index before sending it.
func (OrdersOutboundFactory) NewOutbound(ctx context.Context, set adapter.Settings, cfg any) (adapter.Outbound, error) {
	var c *OrdersConfig
	switch v := cfg.(type) {
	case *OrdersConfig:
		c = v
	case OrdersConfig:
		c = &v
	}
	if c == nil {
		return nil, fault.Newf(fault.CodeConfig, "pathology: destination config is %T, want *pathology.OrdersConfig", cfg)
	}
	var recorder OrderRecorder
	if set.JS != nil {
		// Record each order before it is sent, so results can be linked
		// to it (see Translator.BindStore).
		kv, err := NewKVStore(ctx, set.JS, "", 0, set.Buckets)
		if err != nil {
			return nil, fmt.Errorf("pathology: %w", err)
		}
		needCorrelation(set, kv)
		recorder = NewCorrelator(kv, c.Order.PlacerNamespace).KeyedBy(set.KeyedHash)
	}
	return NewOrdersOutbound(set, *c, recorder)
}

// OrdersOutbound sends FHIR order bundles to a laboratory as OML^O21 or
// ORM^O01 over MLLP. A delivery of HL7 v2 (a route's raw payload) is
// forwarded as it is, and its orders are not recorded, so results are
// not correlated with them. Acknowledgements are handled by mllp.Outbound: the
// ACK's MSA-2 must equal the MSH-10 sent, AA/CA succeed, AE/CE are
// permanent faults, and AR/CR (unless their ERR codes say the message is
// never taken as it is: hl7v2.NeverTaken), timeouts and network failures
// transient.
//
// MSH-10 is derived from the delivery's idempotency key, so every retry
// and replay of a delivery carries the same control id and a receiver
// that deduplicates by control id takes it once. MSH-7 is the time of
// each attempt.
type OrdersOutbound struct {
	mllp     *mllp.Outbound
	enc      *OrderEncoder
	recorder OrderRecorder
	now      func() time.Time
}

var _ adapter.Outbound = (*OrdersOutbound)(nil)

// NewOrdersOutbound returns an order destination. When recorder is not
// nil, the orders of each message are recorded with it before the message
// is sent (a failure to record is a transient fault and nothing is sent),
// so results can be correlated with them.
func NewOrdersOutbound(set adapter.Settings, cfg OrdersConfig, recorder OrderRecorder) (*OrdersOutbound, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "pathology: invalid order destination config", errors.Join(errs...))
	}
	enc, err := NewOrderEncoder(cfg.Order)
	if err != nil {
		return nil, err
	}
	out, err := mllp.NewOutbound(set, cfg.OutboundConfig)
	if err != nil {
		return nil, err
	}
	return &OrdersOutbound{mllp: out, enc: enc, recorder: recorder, now: time.Now}, nil
}

// Start starts the MLLP sender.
func (o *OrdersOutbound) Start(ctx context.Context) error { return o.mllp.Start(ctx) }

// Shutdown shuts the MLLP sender down.
func (o *OrdersOutbound) Shutdown(ctx context.Context) error { return o.mllp.Shutdown(ctx) }

// ControlIDFor returns the MSH-10 used for a delivery: 20 hexadecimal
// digits of the SHA-256 of its idempotency key (else of its message id
// and destination), stable across retries.
func ControlIDFor(d *adapter.Delivery) string {
	key := d.IdempotencyKey
	if key == "" {
		key = d.MessageID + "\x00" + d.Destination
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:10])
}

// Send encodes a FHIR delivery as an order message (forwarding HL7 v2 as
// it is), records its orders, sends it and waits for the ACK.
func (o *OrdersOutbound) Send(ctx context.Context, d *adapter.Delivery) (adapter.Receipt, error) {
	switch d.ContentType {
	case envelope.ContentTypeHL7v2:
		return o.mllp.Send(ctx, d)
	case envelope.ContentTypeFHIR:
	default:
		return adapter.Receipt{}, fault.Newf(fault.CodeConfig, "pathology: order destination takes FHIR or HL7 v2, got %q", d.ContentType)
	}
	enc, err := o.enc.Encode(d.Body, ControlIDFor(d), o.now())
	if err != nil {
		return adapter.Receipt{}, err
	}
	if o.recorder != nil {
		if err := o.recorder.RecordSent(ctx, enc.Orders); err != nil {
			return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "pathology: recording the order for correlation failed", err)
		}
	}
	v2 := *d
	v2.ContentType = envelope.ContentTypeHL7v2
	v2.Body = enc.Message
	return o.mllp.Send(ctx, &v2)
}
