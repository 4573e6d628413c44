package pathology

import (
	"context"
	"fmt"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
)

// correlateTimeout bounds the store lookups that link one result message
// to its orders.
const correlateTimeout = 10 * time.Second

// BindStore implements adapter.StoreBinder: with the engine's store open,
// results are linked to the orders Junction sent (DiagnosticReport.basedOn
// names the original ServiceRequest), through the correlation index the
// pathology destination writes.
func (t *Translator) BindStore(ctx context.Context, set adapter.Settings) (adapter.Translator, error) {
	if set.JS == nil {
		return t, nil
	}
	kv, err := NewKVStore(ctx, set.JS, "", 0, set.Buckets)
	if err != nil {
		return nil, fmt.Errorf("pathology: %w", err)
	}
	needCorrelation(set, kv)
	return &correlatingTranslator{Translator: t, c: NewCorrelator(kv, "").KeyedBy(set.KeyedHash)}, nil
}

// correlatingTranslator translates results, then correlates them.
type correlatingTranslator struct {
	*Translator
	c *Correlator
}

// Translate translates env and links its reports to their orders. A
// store failure is transient: the message is tried again.
func (t *correlatingTranslator) Translate(env *envelope.Envelope) (*adapter.Translation, error) {
	tr, err := t.Translator.Translate(env)
	if err != nil || tr.Relayed {
		return tr, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), correlateTimeout)
	defer cancel()
	if _, err := t.c.CorrelateTranslation(ctx, tr); err != nil {
		if fault.As(err) != nil {
			return nil, err
		}
		return nil, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "correlating results with their orders", err)
	}
	return tr, nil
}

var (
	_ adapter.StoreBinder      = (*Translator)(nil)
	_ adapter.DataQualityCoder = (*correlatingTranslator)(nil)
)
