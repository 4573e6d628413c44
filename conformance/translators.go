package conformance

import (
	"fmt"
	"sort"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// v2Adapters maps an HL7 v2 message type (MSH-9.1) to the adapter type
// whose translator handles it. A type is used only when a factory of that
// name is registered, so "pathology" takes ORU messages as soon as it is
// compiled in.
var v2Adapters = map[string]string{
	"ADT": "pas",
	"ORU": "pathology",
	"OML": "pathology",
	"ORM": "pathology",
	"OUL": "pathology",
}

// AdapterFor returns the adapter type that translates HL7 v2 messages of
// type msgType (MSH-9.1, such as "ADT"), or "".
func AdapterFor(msgType string) string { return v2Adapters[msgType] }

// Translators holds the HL7 v2 translators of the registered adapters,
// built with their default configurations.
type Translators struct {
	byType map[string]adapter.Translator
}

// NewTranslators builds, with default configuration, the translator of
// every registered factory that AdapterFor names. Factories that fail to
// build are reported in the error but do not stop the others.
func NewTranslators(factories []adapter.Factory) (*Translators, error) {
	t := &Translators{byType: map[string]adapter.Translator{}}
	wanted := map[string]bool{}
	for _, typ := range v2Adapters {
		wanted[typ] = true
	}
	var errs []error
	for _, f := range factories {
		tf, ok := f.(adapter.TranslatorFactory)
		if !ok || !wanted[f.Type()] {
			continue
		}
		tr, err := tf.NewTranslator(tf.NewConfig())
		if err != nil {
			errs = append(errs, fmt.Errorf("adapter %s: %w", f.Type(), err))
			continue
		}
		t.byType[f.Type()] = tr
	}
	if len(errs) > 0 {
		return t, fmt.Errorf("conformance: building translators: %v", errs)
	}
	return t, nil
}

// Types returns the adapter types with a translator, sorted.
func (t *Translators) Types() []string {
	out := make([]string, 0, len(t.byType))
	for k := range t.byType {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Get returns the translator of an adapter type, or nil.
func (t *Translators) Get(typ string) adapter.Translator { return t.byType[typ] }

// For returns the adapter type and translator for raw by its MSH-9, or
// "" and nil when raw does not parse or no registered adapter takes its
// message type.
func (t *Translators) For(raw []byte) (string, adapter.Translator) {
	typ := MessageType(raw)
	a := AdapterFor(typ)
	if tr := t.byType[a]; tr != nil {
		return a, tr
	}
	return "", nil
}

// MessageType returns MSH-9.1 of raw, or "" when raw does not parse.
func MessageType(raw []byte) string {
	m, err := hl7v2.Parse(raw)
	if err != nil {
		return ""
	}
	if msh := m.Segment("MSH"); msh != nil {
		return msh.Component(9, 1, 1, 1)
	}
	return ""
}

// Result is the outcome of one translation.
type Result struct {
	Translation *adapter.Translation
	// Err is the translator's error; nil on success.
	Err error
	// Panicked is true when the translator panicked; Err is then a fault
	// with code fault.CodePanic. The panic value is not kept, since it
	// may hold message data.
	Panicked bool
}

// Translate runs tr on env, turning a panic into a result.
func Translate(tr adapter.Translator, env *envelope.Envelope) (res Result) {
	defer func() {
		if p := recover(); p != nil {
			res = Result{Err: fault.New(fault.CodePanic, "translator panicked"), Panicked: true}
		}
	}()
	out, err := tr.Translate(env)
	if err == nil && (out == nil || len(out.Bundle) == 0) {
		err = fault.New(fault.CodeInternal, "translator returned no bundle and no error")
	}
	return Result{Translation: out, Err: err}
}

// Reason returns the safe explanation of a translation error: the
// fault's code and message, never its caller-only detail. ok is false
// when err carries no fault code or no message, that is, when the
// rejection does not say why.
func Reason(err error) (reason string, ok bool) {
	f := fault.As(err)
	if f == nil {
		return "error without a fault code", false
	}
	if f.Code == "" || f.Msg == "" {
		return "fault without a code or message", false
	}
	return string(f.Code) + ": " + f.Msg, true
}
