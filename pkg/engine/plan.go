// Package engine assembles Junction from its configuration: it plans
// (decodes and validates every adapter's settings, loads and compiles
// routes, all errors at once, no I/O beyond reading files), then starts the
// store, destinations, routes and listeners in that order, and drains them
// in reverse.
package engine

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/route"
	"github.com/junction-fhir/junction/pkg/rules"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// Registry is the compiled-in adapter factories, by direction and type:
// one type name (such as "fhir") may have an inbound and an outbound side.
type Registry struct {
	inbound  map[string]adapter.InboundFactory
	outbound map[string]adapter.OutboundFactory
}

// NewRegistry indexes factories by type. An inbound factory must also
// build translators.
func NewRegistry(fs ...adapter.Factory) Registry {
	r := Registry{inbound: map[string]adapter.InboundFactory{}, outbound: map[string]adapter.OutboundFactory{}}
	for _, f := range fs {
		if in, ok := f.(adapter.InboundFactory); ok {
			if _, ok := f.(adapter.TranslatorFactory); ok {
				r.inbound[f.Type()] = in
			}
		}
		if out, ok := f.(adapter.OutboundFactory); ok {
			r.outbound[f.Type()] = out
		}
	}
	return r
}

// PlannedInput is a validated inbound adapter instance.
type PlannedInput struct {
	Name       string
	Factory    adapter.InboundFactory
	Config     any
	Translator adapter.Translator
}

// PlannedDestination is a validated outbound adapter instance.
type PlannedDestination struct {
	Name    string
	Factory adapter.OutboundFactory
	Config  any
	Spec    *config.Component
}

// InternalDestination reports whether destination name keeps what it is
// given inside Junction (adapter.InternalFactory).
func (p *Plan) InternalDestination(name string) bool {
	d, ok := p.Destinations[name]
	if !ok {
		return false
	}
	f, ok := d.Factory.(adapter.InternalFactory)
	return ok && f.Internal()
}

// Plan is a validated configuration, ready to start.
type Plan struct {
	Config       *config.Config
	Rules        *rules.Env
	Inputs       map[string]*PlannedInput
	Destinations map[string]*PlannedDestination
	Routes       []*route.Route
}

// HasSource implements route.Catalog: the input is in the config, even
// if its settings are wrong (that is reported once, against the input).
func (p *Plan) HasSource(name string) bool { _, ok := p.Config.Inputs[name]; return ok }

// SourceEvents implements route.EventCatalog: the message types the
// input's translator says it translates.
func (p *Plan) SourceEvents(name string) ([]string, bool) {
	in := p.Inputs[name]
	if in == nil {
		return nil, false
	}
	el, ok := in.Translator.(adapter.EventLister)
	if !ok {
		return nil, false
	}
	return el.Events(), true
}

// SourceRelays implements route.RelayCatalog: the message types the
// input relays untranslated (adapter.RelayLister).
func (p *Plan) SourceRelays(name string) []string {
	in := p.Inputs[name]
	if in == nil {
		return nil
	}
	if rl, ok := in.Translator.(adapter.RelayLister); ok {
		return rl.RelayTypes()
	}
	return nil
}

// UnroutedRelays returns a warning for each entry of an input's relay
// setting that no route of the plan names, at the entry in the config:
// the input stores and acknowledges such messages, and then every route
// filters them, so they go nowhere.
func (p *Plan) UnroutedRelays() []string {
	var warns []string
	for _, name := range sortedKeys(p.Inputs) {
		for i, pattern := range p.SourceRelays(name) {
			if slices.ContainsFunc(p.Routes, func(r *route.Route) bool { return r.Source == name && r.NamesRelayed(pattern) }) {
				continue
			}
			path := fmt.Sprintf("relay[%d]", i)
			var at yamlx.Pos
			if c := p.Config.Inputs[name]; c != nil {
				at = c.Settings.PosOf(path)
			}
			warns = append(warns, fmt.Sprintf("%swarning: inputs.%s.%s: no route names %s: such messages are acknowledged and then sent nowhere (filtered); name it in a route's source.events, or take it off relay",
				posPrefix(at), name, path, pattern))
		}
	}
	return warns
}

// PlaceholderWarnings returns a warning for each input or destination
// setting left at a placeholder system (adapter.PlaceholderUser) when a
// destination sends beyond Junction (any but a file or internal one): a
// receiver matches patients, visits, orders and codes on system and
// value, so two trusts sending it the same placeholder would have
// different patients' records merged there. With file destinations
// alone (the defaults), nothing leaves the machine and nothing is said.
func (p *Plan) PlaceholderWarnings() []string {
	var external []string
	for _, name := range sortedKeys(p.Destinations) {
		d := p.Destinations[name]
		if d.Spec != nil && d.Spec.Type != "file" && !p.InternalDestination(name) {
			external = append(external, name)
		}
	}
	if len(external) == 0 {
		return nil
	}
	var warns []string
	warn := func(kind, name string, cfg any, spec *config.Component) {
		pu, ok := cfg.(adapter.PlaceholderUser)
		if !ok {
			return
		}
		for _, path := range pu.Placeholders() {
			var at yamlx.Pos
			if spec != nil {
				at = spec.Settings.PosOf(path)
			}
			warns = append(warns, fmt.Sprintf("%swarning: %s.%s.%s: a placeholder system under %s: the receivers behind %s match records on system and value, so a second trust sending them the same placeholder would have its patients' records merged with yours; set your trust's own (https://fhir.<trust>.nhs.uk/...)",
				posPrefix(at), kind, name, path, adapter.PlaceholderDomain, strings.Join(external, ", ")))
		}
	}
	for _, name := range sortedKeys(p.Inputs) {
		warn("inputs", name, p.Inputs[name].Config, p.Config.Inputs[name])
	}
	for _, name := range sortedKeys(p.Destinations) {
		warn("destinations", name, p.Destinations[name].Config, p.Destinations[name].Spec)
	}
	return warns
}

// PayloadTaken implements route.PayloadCatalog: the content type a route
// on source sends dest, from the input's factory when raw
// (adapter.ContentStorer), and whether the destination's factory takes it
// and the other kind (adapter.ContentTaker). It returns "" when either is
// not known.
func (p *Plan) PayloadTaken(dest, source string, raw bool) (contentType string, taken, otherTaken bool) {
	d, in := p.Destinations[dest], p.Inputs[source]
	if d == nil || in == nil {
		return "", true, true
	}
	ct, ok := d.Factory.(adapter.ContentTaker)
	if !ok {
		return "", true, true
	}
	stored := ""
	if cs, ok := in.Factory.(adapter.ContentStorer); ok {
		stored = cs.StoresContent()
	}
	sent, other := envelope.ContentTypeFHIR, stored
	if raw {
		sent, other = stored, envelope.ContentTypeFHIR
	}
	if sent == "" {
		return "", true, true
	}
	return sent, ct.TakesContent(sent), other != "" && ct.TakesContent(other)
}

// HasDestination implements route.Catalog, as HasSource does.
func (p *Plan) HasDestination(name string) bool { _, ok := p.Config.Destinations[name]; return ok }

// Names implements route.NameCatalog: the inputs and destinations the
// config names.
func (p *Plan) Names() (sources, destinations []string) {
	return sortedKeys(p.Config.Inputs), sortedKeys(p.Config.Destinations)
}

// Translators returns each input's translator by input name.
func (p *Plan) Translators() map[string]adapter.Translator {
	m := map[string]adapter.Translator{}
	for n, in := range p.Inputs {
		m[n] = in.Translator
	}
	return m
}

// NewPlan validates cfg against the registry and loads the routes. It
// returns every problem found.
func NewPlan(cfg *config.Config, reg Registry) (*Plan, error) {
	return newPlan(cfg, reg, true, route.LoadOptions{})
}

// NewPlanChecked is NewPlan with the route checks in opts that serving
// does not need, for lint.
func NewPlanChecked(cfg *config.Config, reg Registry, opts route.LoadOptions) (*Plan, error) {
	return newPlan(cfg, reg, true, opts)
}

// CheckSettings reports what NewPlan would of cfg's settings, inputs and
// destinations, without loading its routes: for a config file with
// decoding errors of its own, so that the rest of its errors come with
// them (see CheckRoutesAlone for the routes).
func CheckSettings(cfg *config.Config, reg Registry) error {
	_, err := newPlan(cfg, reg, false, route.LoadOptions{})
	return err
}

func newPlan(cfg *config.Config, reg Registry, withRoutes bool, opts route.LoadOptions) (*Plan, error) {
	var errs []error
	for _, e := range cfg.Validate() {
		if p := settingPos(e, cfg.PosOf, yamlx.Pos{}); p.Line > 0 {
			e = fmt.Errorf("%s%w", posPrefix(p), e)
		}
		errs = append(errs, e)
	}
	env, err := rules.NewEnv(cfg.Rules.Limits())
	if err != nil {
		return nil, err
	}
	p := &Plan{Config: cfg, Rules: env, Inputs: map[string]*PlannedInput{}, Destinations: map[string]*PlannedDestination{}}
	decode := func(where string, c *config.Component, f adapter.Factory) any {
		conf := f.NewConfig()
		decoded := true
		if !c.Settings.IsZero() {
			if err := c.Settings.Decode(conf); err != nil {
				errs = append(errs, err)
				var ye yamlx.Errors
				if !errors.As(err, &ye) {
					return nil
				}
				// Decoding goes on past each problem (an unknown key, a
				// key given twice, whose first value stands, a value of
				// the wrong type, which leaves the default): the rest
				// decoded, and its problems are reported too, so one
				// mistake hides none of the others, as in the core
				// settings.
				decoded = false
			}
		}
		if v, ok := conf.(adapter.Validator); ok {
			verrs := v.Validate()
			for _, e := range verrs {
				errs = append(errs, fmt.Errorf("%s%s: %w", posPrefix(settingPos(e, c.Settings.PosOf, c.Pos)), where, e))
			}
			if len(verrs) > 0 {
				return nil // building it would only report them again
			}
		}
		if !decoded {
			return nil
		}
		return conf
	}
	for _, name := range sortedKeys(cfg.Inputs) {
		c := cfg.Inputs[name]
		if c == nil {
			errs = append(errs, fmt.Errorf("inputs.%s: empty; give at least its type", name))
			continue
		}
		where := "inputs." + name
		if c.Type == "" && c.Pos.Line > 0 {
			// Read from a file without a type: config.Load has said
			// so, at the component.
			continue
		}
		inf, ok := reg.inbound[c.Type]
		if !ok {
			errs = append(errs, fmt.Errorf("%s%s.type: %q is not an inbound adapter type (have %v)", posPrefix(c.TypePos), where, c.Type, sortedKeys(reg.inbound)))
			continue
		}
		conf := decode(where, c, inf)
		if conf == nil {
			continue
		}
		if v, ok := conf.(adapter.ExposureValidator); ok && !config.IsLoopback(cfg.HTTP.Listen) {
			at := c.Pos
			if at.Line == 0 {
				// A default input, not in the file: http.listen, which
				// exposes it, is what the file says.
				at = cfg.PosOf("http.listen")
			}
			for _, e := range v.ValidateExposed(cfg.HTTP.ClientCertsVerified()) {
				errs = append(errs, fmt.Errorf("%s%s: %w", posPrefix(settingPos(e, c.Settings.PosOf, at)), where, e))
			}
		}
		tr, err := inf.(adapter.TranslatorFactory).NewTranslator(conf)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		p.Inputs[name] = &PlannedInput{Name: name, Factory: inf, Config: conf, Translator: tr}
	}
	errs = append(errs, sharedListenErrors(listeners(cfg, p.Inputs))...)
	for _, name := range sortedKeys(cfg.Destinations) {
		c := cfg.Destinations[name]
		if c == nil {
			errs = append(errs, fmt.Errorf("destinations.%s: empty; give at least its type", name))
			continue
		}
		where := "destinations." + name
		if c.Type == "" && c.Pos.Line > 0 {
			// Read from a file without a type: config.Load has said
			// so, at the component.
			continue
		}
		of, ok := reg.outbound[c.Type]
		if !ok {
			errs = append(errs, fmt.Errorf("%s%s.type: %q is not an outbound adapter type (have %v)", posPrefix(c.TypePos), where, c.Type, sortedKeys(reg.outbound)))
			continue
		}
		conf := decode(where, c, of)
		if conf == nil {
			continue
		}
		p.Destinations[name] = &PlannedDestination{Name: name, Factory: of, Config: conf, Spec: c}
	}
	if withRoutes {
		opts.PathPos = cfg.RoutePos
		routes, err := route.LoadAll(cfg.Routes, env, p, opts)
		if err != nil {
			errs = append(errs, err)
		}
		p.Routes = routes
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// CheckRoutesAlone loads cfg's route files for their own errors (strict
// decoding, CEL, consent declarations) without checking the inputs and
// destinations they name, for a config that has errors of its own and
// whose names cannot be trusted.
func CheckRoutesAlone(cfg *config.Config, opts route.LoadOptions) error {
	env, err := rules.NewEnv(cfg.Rules.Limits())
	if err != nil {
		return fmt.Errorf("checking routes: %w", err)
	}
	opts.PathPos = cfg.RoutePos
	_, err = route.LoadAll(cfg.Routes, env, anyName{}, opts)
	return err
}

// anyName is a route catalog that has every source and destination.
type anyName struct{}

func (anyName) HasSource(string) bool      { return true }
func (anyName) HasDestination(string) bool { return true }

// settingPos returns where the setting a validation error e names
// ("tls.key: required") is written, by posOf, else fallback. An entry
// named with its name in brackets and then a field of it
// ("http.tokens[1] (ops): name: used by another token") is placed at
// that field.
func settingPos(e error, posOf func(path string) yamlx.Pos, fallback yamlx.Pos) yamlx.Pos {
	path, rest, _ := strings.Cut(e.Error(), ": ")
	if base, _, ok := strings.Cut(path, " ("); ok && strings.HasSuffix(path, ")") {
		path = base
	}
	if !yamlx.IsPath(path) {
		return fallback
	}
	if field, _, ok := strings.Cut(rest, ": "); ok && yamlx.IsPath(field) && !strings.Contains(field, ".") {
		path += "." + field
	}
	if p := posOf(path); p.Line > 0 {
		return p
	}
	return fallback
}

func posPrefix(p yamlx.Pos) string {
	if p.Line == 0 {
		return ""
	}
	return p.String() + ": "
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}
