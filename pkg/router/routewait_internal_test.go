package router

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/route"
	"github.com/junction-fhir/junction/pkg/rules"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// outboundLost is a JetStream whose asynchronous writes of outbound
// messages are sent where no stream listens, so their futures fail (as a
// write the store refuses or never answers does); every other write goes
// through.
type outboundLost struct{ jetstream.JetStream }

func (o outboundLost) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if strings.HasPrefix(m.Subject, store.SubjOutbound+".") {
		lost := nats.NewMsg("junction-test.nowhere")
		lost.Header, lost.Data = m.Header, m.Data
		return o.JetStream.PublishMsgAsync(lost, opts...)
	}
	return o.JetStream.PublishMsgAsync(m, opts...)
}

// fixedTranslator translates every message to one Bundle.
type fixedTranslator struct{}

func (fixedTranslator) Translate(*envelope.Envelope) (*adapter.Translation, error) {
	return &adapter.Translation{Bundle: []byte(`{"resourceType":"Bundle","type":"collection","entry":[]}`), Event: "A01"}, nil
}

// catalogOf is a route.Catalog of one source and one destination.
type catalogOf struct{ source, destination string }

func (c catalogOf) HasSource(name string) bool      { return name == c.source }
func (c catalogOf) HasDestination(name string) bool { return name == c.destination }

// TestRouteWaitsForItsWrites: the message pipeline's route worker issues
// its outbound and audit writes asynchronously and must wait for every
// one before its batch is acknowledged. With the outbound write failing,
// handle returns the error, so the message is routed again rather than
// acknowledged with its payload stored nowhere.
func TestRouteWaitsForItsWrites(t *testing.T) {
	js := testStore(t)
	ctx := t.Context()
	env, err := rules.NewEnv(rules.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "route.yaml")
	src := "name: r\nsource: {adapter: pas}\nmatch: \"true\"\n" +
		"consent: {purpose: direct-care, legal_basis: direct-care, default: permit}\n" +
		"destinations:\n  - name: out\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	rt, err := route.Load(path, env, catalogOf{"pas", "out"})
	if err != nil {
		t.Fatal(err)
	}
	r := &Router{o: Options{Metrics: telemetry.NewMetrics(prometheus.NewRegistry()), Logger: slog.New(slog.DiscardHandler), Decider: consent.DefaultPolicy{}},
		js: outboundLost{js}, audit: audit.NewWriter(js), prop: propagation.TraceContext{}}
	w := newRouteWorker(r, rt, newSharedTranslator(fixedTranslator{}, nil))

	// One message, as the route stage reads it from the ingress stream.
	e := testEnv("M1", "pas")
	m := nats.NewMsg(store.SubjIngress + ".pas.0")
	m.Header, m.Data = e.Header(), e.Raw
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	ingress, err := js.Stream(ctx, store.StreamIngress)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ingress.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Next()
	if err != nil {
		t.Fatal(err)
	}

	err = w.handle(context.Background(), []jetstream.Msg{got})
	if err == nil || !strings.Contains(err.Error(), "storing routing results") {
		t.Fatalf("handle with the outbound write failing = %v, want its error", err)
	}
}
