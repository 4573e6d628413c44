package consent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/jsonmap"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// Source gives the engine a patient's Consents and opt-out state. Store
// implements it.
type Source interface {
	// Policies returns the patient's stored Consents, any status.
	Policies(ctx context.Context, patientKey string) ([]Policy, error)
	// OptOut returns the patient's national data opt-out state at now.
	OptOut(ctx context.Context, patientKey string, now time.Time) (OptOutStatus, error)
}

// Engine is the consent engine as a Decider: it loads the patient's
// Consents and opt-out state from Source, evaluates every resource of the
// bundle for the destination, and returns a decision with one verdict per
// bundle entry. It is safe for concurrent use once set up.
type Engine struct {
	// Source supplies Consents and opt-out state.
	Source Source
	// Destinations maps route destination names to receivers. A name not
	// listed is a receiver with no ODS code and no allow-list.
	Destinations map[string]Destination
	// Now returns the time of decisions; nil means time.Now.
	Now func() time.Time
	// eval is the evaluator; tests break it on purpose.
	eval Evaluator
}

// ResourceDecision is the verdict on one bundle entry.
type ResourceDecision struct {
	// Index is the entry's position in Bundle.entry.
	Index        int
	ResourceType string
	Verdict
	// Nested lists, for the resources the entry carries (by their place
	// in nestedResources' order), the top-level elements each loses when
	// the entry goes redacted: a restricted patient's Patient inside a
	// document Bundle loses its address as it would as an entry.
	Nested map[int][]string `json:"nested,omitempty"`
}

// Decide implements Decider. The outcome is Permit when every entry is
// permitted, Deny when none may go, and Redact otherwise: the caller then
// sends Apply(bundle, decision). Errors come only from Source.
//
// The patient is req.PatientKey when it is a valid NHS number; a key that
// is not (a local identifier) leaves the patient unknown to the gates
// that need an NHS number, as a missing one does. A bundle about more
// than one patient (an NHS number on a second Patient, or on a merge's
// retired Patient) is decided for each of them, and each entry gets the
// most restrictive of their verdicts: one patient's refusal is never
// overridden by another's consent.
func (e *Engine) Decide(ctx context.Context, req Request) (Decision, error) {
	now := time.Now()
	if e.Now != nil {
		now = e.Now()
	}
	entries := bundleResources(req.Bundle)
	var patients nhsNumbers
	if rt, _ := req.Bundle["resourceType"].(string); rt == "Bundle" && req.BundlePatients != nil {
		// Those the caller found in the entries already: the same
		// patients in the same order as bundlePatients finds.
		patients.add(req.PatientKey)
		for _, n := range req.BundlePatients {
			patients.add(n)
		}
	} else {
		patients = nhsNumbers(bundlePatients(req.PatientKey, entries))
	}
	for _, n := range req.OtherPatients {
		patients.add(n)
	}
	if len(patients) == 0 || req.UnidentifiedPatient {
		patients = append(patients, "")
	}
	if len(patients) > MaxPatients {
		// Deciding for each would cost patients x entries evaluations and
		// two store reads a patient, per destination, while the
		// partition waits: such a bundle is refused whole.
		return tooManyPatients(entries, req.SkipConsent), nil
	}
	var dec Decision
	for i, patient := range patients {
		d, err := e.decideFor(ctx, req, patient, entries, now)
		if err != nil {
			return Decision{}, err
		}
		if i == 0 {
			dec = d
			continue
		}
		dec = stricter(dec, d, len(entries))
	}
	if slices.ContainsFunc(dec.Resources, func(r ResourceDecision) bool { return r.Outcome == Deny }) {
		// Only an entry withheld has the others looked at for what
		// refers to it, by the references that name each.
		for i := range entries {
			entries[i].refs = fhir.EntryRefs(entries[i].raw)
		}
	}
	changed := false
	for {
		dependents := withholdDependents(&dec, entries)
		supported := withholdSupporting(&dec, entries)
		if !dependents && !supported {
			break
		}
		changed = true
	}
	if changed {
		summarise(&dec)
	}
	return dec, nil
}

// withholdDependents withholds, with the verdict of the resource they
// are about, the resources whose subject or patient is a withheld
// resource (the Observations of a withheld Patient): sent without their
// subject they would be clinical data about nobody, which a receiver
// updating by identifier would store detached from its patient. It
// reports whether it withheld any.
func withholdDependents(dec *Decision, entries []entry) bool {
	if len(dec.Resources) != len(entries) || !slices.ContainsFunc(dec.Resources, func(r ResourceDecision) bool { return r.Outcome == Deny }) {
		return false
	}
	changed := false
	for again := true; again; {
		again = false
		for i, e := range entries {
			if dec.Resources[i].Outcome == Deny {
				continue
			}
			for _, key := range [...]string{"subject", "patient"} {
				ref, _ := e.body[key].(map[string]any)
				r, _ := ref["reference"].(string)
				j := -1
				if r != "" {
					j = slices.IndexFunc(entries, func(o entry) bool { return slices.Contains(o.refs, r) })
				}
				if j < 0 || j == i || dec.Resources[j].Outcome != Deny {
					continue
				}
				by := dec.Resources[j]
				dec.Resources[i].Verdict = Verdict{Outcome: Deny, Gate: by.Gate, Rule: by.Rule, ConsentSkipped: by.ConsentSkipped,
					Reason: fmt.Sprintf("its %s is withheld entry %d (%s)", key, by.Index, by.ResourceType)}
				again, changed = true, true
				break
			}
		}
	}
	return changed
}

// supporting lists the resource types that describe where, by whom or
// with what care was given rather than being care themselves.
var supporting = map[string]bool{
	"Location": true, "Practitioner": true, "PractitionerRole": true, "Organization": true,
	"HealthcareService": true, "Device": true, "Endpoint": true,
}

// withholdSupporting withholds, with the verdict of the resource they
// served, the supporting resources (supporting) that only withheld
// resources refer to (the Location and Practitioner of a withheld
// Encounter): sent alone they would tell what was withheld ("WARD 1,
// BED 2" of an admission). One another sent resource refers to stays;
// references from the MessageHeader and Provenance, which are about the
// message's content rather than uses of it, do not count. It reports
// whether it withheld any.
func withholdSupporting(dec *Decision, entries []entry) bool {
	if len(dec.Resources) != len(entries) || !slices.ContainsFunc(dec.Resources, func(r ResourceDecision) bool { return r.Outcome == Deny }) {
		// Nothing withheld (the usual case): nothing to look for, and no
		// walk of every resource on each decision.
		return false
	}
	bookkeeping := func(t string) bool { return t == "MessageHeader" || t == "Provenance" }
	changed := false
	for again := true; again; {
		again = false
		for i, e := range entries {
			if dec.Resources[i].Outcome == Deny || !supporting[e.res.Type] || len(e.refs) == 0 {
				continue
			}
			names := func(ref string) bool { return slices.Contains(e.refs, ref) }
			var by *ResourceDecision
			usedBySent := false
			for j, o := range entries {
				if j == i || !fhir.RefersTo(o.body, names) {
					continue
				}
				switch {
				case dec.Resources[j].Outcome == Deny:
					if by == nil {
						by = &dec.Resources[j]
					}
				case !bookkeeping(o.res.Type):
					usedBySent = true
				}
			}
			if by == nil || usedBySent {
				continue
			}
			dec.Resources[i].Verdict = Verdict{Outcome: Deny, Gate: by.Gate, Rule: by.Rule, ConsentSkipped: by.ConsentSkipped,
				Reason: fmt.Sprintf("used only by withheld entry %d (%s)", by.Index, by.ResourceType)}
			again, changed = true, true
		}
	}
	return changed
}

// MaxPatients is the most patients (distinct NHS numbers) a bundle may be
// about for consent to decide it; one about more is denied whole.
const MaxPatients = 20

// tooManyPatients denies every entry for MaxPatients.
func tooManyPatients(entries []entry, skip bool) Decision {
	v := Verdict{Outcome: Deny, Gate: GateConsent, Rule: "gate:too-many-patients", ConsentSkipped: skip,
		Reason: fmt.Sprintf("the bundle is about more than %d patients; send one message per patient", MaxPatients)}
	dec := Decision{ConsentSkipped: skip}
	for i, e := range entries {
		dec.Resources = append(dec.Resources, ResourceDecision{Index: i, ResourceType: e.res.Type, Verdict: v})
	}
	summarise(&dec)
	return dec
}

// decideFor decides req for one patient ("" when unknown).
func (e *Engine) decideFor(ctx context.Context, req Request, patient string, entries []entry, now time.Time) (Decision, error) {
	purpose, basis := Purpose(req.Purpose), LegalBasis(req.LegalBasis)
	// Only what the evaluation reads is loaded, each a store read per
	// message and destination: Consents unless the route skips them, and
	// the opt-out state only for purposes the opt-out applies to.
	var pols []Policy
	var opt OptOutStatus
	if patient != "" && e.Source != nil {
		var err error
		if !req.SkipConsent {
			if pols, err = e.Source.Policies(ctx, patient); err != nil {
				return Decision{}, fmt.Errorf("loading consents: %w", err)
			}
		}
		if OptOutApplies(purpose, basis) {
			if opt, err = e.Source.OptOut(ctx, patient, now); err != nil {
				return Decision{}, fmt.Errorf("loading opt-out state: %w", err)
			}
		}
	} else if e.Source == nil {
		opt.Stale = true
	}
	dest, ok := e.Destinations[req.Destination]
	if !ok {
		dest = Destination{Name: req.Destination}
	}
	in := Input{
		Now: now, Patient: patient, Policies: pols, OptOut: opt,
		Restricted: req.Restricted || restrictedInBundle(entries),
		Purpose:    purpose, Basis: basis,
		SkipConsent: req.SkipConsent, Destination: dest, Default: req.Default,
	}
	dec := e.decideEntries(in, req.SkipConsent, entries)
	if req.Opaque && dec.Outcome == Permit {
		// What the message carries beyond its entries: if that may not
		// go, nothing goes, since it cannot be taken out of the message.
		// (A message denied or redacted already is refused whole as it
		// is, for the entries named.)
		if v := e.eval.Evaluate(in, Resource{Opaque: true}); v.Outcome == Deny {
			if v.Gate == GateConsent && !strings.HasPrefix(v.Rule, "consent:none:") && !strings.HasPrefix(v.Rule, "gate:") {
				// A provision of the patient's Consent denied.
				v.Reason += " what the message, sent as it came, may hold beyond its translation"
			}
			return opaqueDenied(v, entries), nil
		}
	}
	return dec, nil
}

// decideEntries decides each of entries for in, or, when there are none,
// the message as a whole.
func (e *Engine) decideEntries(in Input, skip bool, entries []entry) Decision {
	if len(entries) == 0 {
		v := e.eval.Evaluate(in, Resource{})
		if v.Outcome == Redact {
			v.Outcome = Permit
		}
		return Decision{Outcome: v.Outcome, Reason: v.Reason, Rule: v.Rule, ConsentSkipped: v.ConsentSkipped}
	}
	dec := Decision{ConsentSkipped: skip}
	for i, ent := range entries {
		rd := ResourceDecision{Index: i, ResourceType: ent.res.Type, Verdict: e.eval.Evaluate(in, ent.res)}
		for k, n := range ent.nested {
			nv := e.eval.Evaluate(in, n)
			if nv.Outcome == Redact {
				if rd.Nested == nil {
					rd.Nested = map[int][]string{}
				}
				rd.Nested[k] = nv.Strip
			}
			rd.Verdict = carrierVerdict(rd.Verdict, nv)
		}
		if rd.Outcome == Deny {
			rd.Nested = nil
		}
		dec.Resources = append(dec.Resources, rd)
	}
	summarise(&dec)
	return dec
}

// opaqueDenied is the decision denying every entry with v, the verdict
// on an opaque message's untranslated data (Request.Opaque).
func opaqueDenied(v Verdict, entries []entry) Decision {
	dec := Decision{Outcome: Deny, Reason: v.Reason, Rule: v.Rule, ConsentSkipped: v.ConsentSkipped}
	if len(entries) == 0 {
		return dec
	}
	for i, ent := range entries {
		dec.Resources = append(dec.Resources, ResourceDecision{Index: i, ResourceType: ent.res.Type, Verdict: v})
	}
	summarise(&dec)
	return dec
}

// summarise sets the decision's outcome, rule and reason from its
// per-resource verdicts.
func summarise(dec *Decision) {
	denied, redacted := 0, 0
	var first *ResourceDecision
	for i := range dec.Resources {
		switch dec.Resources[i].Outcome {
		case Deny:
			denied++
		case Redact:
			redacted++
		}
		if first == nil && dec.Resources[i].Outcome != Permit {
			first = &dec.Resources[i]
		}
	}
	n := len(dec.Resources)
	switch {
	case denied == n:
		dec.Outcome, dec.Rule = Deny, first.Rule
		dec.Reason = first.Reason
	case denied == 0 && redacted == 0:
		dec.Outcome, dec.Rule = Permit, dec.Resources[0].Rule
		dec.Reason = fmt.Sprintf("all %d resources permitted", n)
	default:
		dec.Outcome, dec.Rule = Redact, first.Rule
		dec.Reason = fmt.Sprintf("%d of %d resources withheld, %d stripped; first: %s", denied, n, redacted, first.Reason)
	}
}

// stricter combines the decisions for two patients of one bundle: each
// entry keeps the more restrictive verdict (Deny over Redact over
// Permit; two redactions strip what either strips).
func stricter(a, b Decision, entries int) Decision {
	if entries == 0 {
		if rank(b.Outcome) > rank(a.Outcome) {
			return b
		}
		return a
	}
	out := Decision{ConsentSkipped: a.ConsentSkipped || b.ConsentSkipped}
	for i := range a.Resources {
		ra, rb := a.Resources[i], b.Resources[i]
		switch {
		case rank(rb.Outcome) > rank(ra.Outcome):
			ra = rb
		case ra.Outcome == Redact && rb.Outcome == Redact:
			ra.Strip = union(ra.Strip, rb.Strip)
			if len(rb.Nested) > 0 {
				nested := maps.Clone(ra.Nested)
				if nested == nil {
					nested = map[int][]string{}
				}
				for k, els := range rb.Nested {
					nested[k] = union(nested[k], els)
				}
				ra.Nested = nested
			}
		}
		out.Resources = append(out.Resources, ra)
	}
	summarise(&out)
	return out
}

// carrierVerdict combines the verdict v of an entry whose resource
// carries others (a Bundle's entries, a Parameters' resources, contained
// ones) with the verdict nv of one it carries: the stricter goes. A
// nested redaction makes the entry redacted, keeping what the entry
// itself loses (v.Strip); what the carried resource loses is kept apart
// (ResourceDecision.Nested).
func carrierVerdict(v, nv Verdict) Verdict {
	if rank(nv.Outcome) <= rank(v.Outcome) {
		return v
	}
	if nv.Outcome == Redact {
		nv.Strip = v.Strip
		nv.Rule += ":nested"
	}
	return nv
}

// union returns the elements of a, then those of b not in a.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, el := range b {
		if !slices.Contains(out, el) {
			out = append(out, el)
		}
	}
	return out
}

// rank orders outcomes from the least to the most restrictive.
func rank(o Outcome) int {
	switch o {
	case Permit:
		return 0
	case Redact:
		return 1
	}
	return 2
}

// bundlePatients returns the distinct NHS numbers the decision is about:
// key when it is a valid NHS number, then, in bundle order, every patient
// an entry names (see nhsNumbers.addResource).
func bundlePatients(key string, entries []entry) []string {
	var out nhsNumbers
	out.add(key)
	for _, e := range entries {
		out.addResource(e.body)
	}
	return out
}

// BundleNHSNumbers returns the distinct valid NHS numbers, normalised, of
// every patient a decoded Bundle's entries (or the resource itself, when
// it is not a Bundle) name, in entry order (within an entry, a Patient's
// own numbers, then those it refers to, sorted): the patients whose data it carries,
// as Decide counts them (see nhsNumbers.addResource). It reads the maps;
// it never parses JSON.
func BundleNHSNumbers(bundle map[string]any) []string {
	var out nhsNumbers
	if rt, _ := bundle["resourceType"].(string); rt != "Bundle" {
		out.addResource(bundle)
		return out
	}
	list, _ := bundle["entry"].([]any)
	for _, x := range list {
		out.addResource(entryResource(x))
	}
	return out
}

// entryResource returns the resource of a Bundle entry x, or nil.
func entryResource(x any) map[string]any {
	m, _ := x.(map[string]any)
	body, _ := m["resource"].(map[string]any)
	return body
}

// EntryNHSNumbers returns what BundleNHSNumbers finds in each entry of a
// decoded Bundle, entry by entry, or nil when bundle is not a Bundle.
// JoinNHSNumbers of them is BundleNHSNumbers of the Bundle, and of those
// of some of its entries, in order, BundleNHSNumbers of a Bundle of those
// entries: a transform that only drops entries needs no new walk of the
// resources to say whose data what it sends carries.
func EntryNHSNumbers(bundle map[string]any) [][]string {
	if rt, _ := bundle["resourceType"].(string); rt != "Bundle" {
		return nil
	}
	list, _ := bundle["entry"].([]any)
	out := make([][]string, len(list))
	for i, x := range list {
		var l nhsNumbers
		l.addResource(entryResource(x))
		out[i] = l
	}
	return out
}

// JoinNHSNumbers returns the distinct NHS numbers of lists, each as
// BundleNHSNumbers or EntryNHSNumbers gives them, in the order first met.
func JoinNHSNumbers(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		for _, n := range l {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// addResource adds the NHS numbers of every patient a resource names: its
// own identifiers when it is a Patient, those of the Patients it contains,
// and every logical reference by NHS number anywhere in it
// (subject.identifier, patient.identifier, link.other.identifier, ...)
// or conditional reference searching by one
// (Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|...). A
// patient named only by a logical reference is still a patient whose
// data the resource carries: deciding for the first patient alone let an
// Observation about a second, who had refused, go with the first's
// permission. An Identifier list on any other resource (a RelatedPerson's
// own NHS number) is not a patient the data is about.
func (l *nhsNumbers) addResource(body map[string]any) {
	if rt, _ := body["resourceType"].(string); rt == "Patient" {
		l.addPatient(body)
	}
	// Those a Bundle or Parameters carries are its patients too.
	for _, n := range nestedResources(body) {
		if rt, _ := n["resourceType"].(string); rt == "Patient" {
			l.addPatient(n)
		}
	}
	// The walk visits map keys in Go's random order; what it finds is
	// sorted, so the patients (and so which decision is the base one, and
	// the audited rule) come out the same on every run and replay.
	var found nhsNumbers
	found.addReferences(body, 0)
	slices.Sort(found)
	for _, n := range found {
		l.add(n)
	}
}

// maxWalkDepth bounds addReferences on resources nested past any real
// FHIR structure (input depth is bounded at ingress as well).
const maxWalkDepth = 64

// addReferences adds the NHS numbers of the logical references in v, and
// of the Patients contained in it.
func (l *nhsNumbers) addReferences(v any, depth int) {
	if depth > maxWalkDepth {
		return
	}
	switch x := v.(type) {
	case map[string]any:
		// One pass over the members, with no lookups: the walk visits
		// every map of every resource, and most hold neither key.
		for k, child := range x {
			switch k {
			case "identifier":
				if id, ok := child.(map[string]any); ok {
					if sys, _ := id["system"].(string); nhs.IsNHSNumberSystem(sys) {
						val, _ := id["value"].(string)
						l.add(val)
					}
				}
			case "reference":
				// A conditional reference (Patient?identifier=<NHS number
				// system>|<number>) names its patient too.
				if ref, ok := child.(string); ok {
					for _, n := range nhs.SearchedNumbers(ref) {
						l.add(n)
					}
				}
			case "contained":
				list, _ := child.([]any)
				for _, c := range list {
					if m, ok := c.(map[string]any); ok {
						if rt, _ := m["resourceType"].(string); rt == "Patient" {
							l.addPatient(m)
						}
					}
				}
			}
			switch child.(type) {
			case map[string]any, []any:
				l.addReferences(child, depth+1)
			}
		}
	case []any:
		for _, child := range x {
			switch child.(type) {
			case map[string]any, []any:
				l.addReferences(child, depth+1)
			}
		}
	}
}

// nhsNumbers is a list of distinct valid NHS numbers, normalised, in the
// order first met.
type nhsNumbers []string

// add adds s if it is a valid NHS number not yet listed.
func (l *nhsNumbers) add(s string) {
	n := nhs.Normalize(s)
	if nhs.ValidNumber(n) && !slices.Contains(*l, n) {
		*l = append(*l, n)
	}
}

// addPatient adds each NHS number identifier of a Patient resource.
func (l *nhsNumbers) addPatient(body map[string]any) {
	ids, _ := body["identifier"].([]any)
	for _, x := range ids {
		m, _ := x.(map[string]any)
		if sys, _ := m["system"].(string); nhs.IsNHSNumberSystem(sys) {
			v, _ := m["value"].(string)
			l.add(v)
		}
	}
}

// entry is one bundle resource as the engine sees it.
type entry struct {
	res  Resource
	body map[string]any
	// nested are the resources body carries (see nestedResources), each
	// decided as well: the entry goes only as they all may.
	nested []Resource
	// raw is the Bundle entry.
	raw map[string]any
	// refs are the references that name it (fhir.EntryRefs of raw), found
	// only when an entry is withheld (see Decide).
	refs []string
}

// bundleResources reads Bundle.entry[].resource. The Bundle's own
// security labels (Bundle.meta.security) apply to every entry.
func bundleResources(bundle map[string]any) []entry {
	list, _ := bundle["entry"].([]any)
	out := make([]entry, 0, len(list))
	shared := securityLabels(bundle)
	for _, x := range list {
		m, _ := x.(map[string]any)
		body, _ := m["resource"].(map[string]any)
		res := ResourceOf(body)
		for _, l := range shared {
			// As on the Patient itself, R there marks the patient.
			if res.Type != "Patient" || !isRestrictedLabel(l) {
				res.Labels = append(res.Labels, l)
			}
		}
		ent := entry{res: res, body: body, raw: m}
		for _, n := range nestedResources(body) {
			nr := ResourceOf(n)
			nr.Labels = append(nr.Labels, res.Labels...) // the carrier's go with it
			ent.nested = append(ent.nested, nr)
		}
		out = append(out, ent)
	}
	return out
}

// nestedResources returns the resources body carries whole: those it
// contains, a Bundle's entries' resources (and their responses'
// outcomes), a Parameters' parameters' (and their parts'), and those
// these carry in turn, to maxWalkDepth levels. A message Bundle may carry
// a document Bundle as an entry (ITK3 does): the patients, labels and
// codes of what such an entry carries are what the decision is about.
func nestedResources(body map[string]any) []map[string]any {
	var out []map[string]any
	var walk func(body map[string]any, depth int)
	var params func(list []any, depth int)
	add := func(v any, depth int) {
		if r, ok := v.(map[string]any); ok {
			out = append(out, r)
			walk(r, depth+1)
		}
	}
	params = func(list []any, depth int) {
		if depth > maxWalkDepth {
			return
		}
		for _, x := range list {
			p, _ := x.(map[string]any)
			add(p["resource"], depth)
			part, _ := p["part"].([]any)
			params(part, depth+1)
		}
	}
	walk = func(body map[string]any, depth int) {
		if depth > maxWalkDepth {
			return
		}
		contained, _ := body["contained"].([]any)
		for _, c := range contained {
			add(c, depth)
		}
		switch rt, _ := body["resourceType"].(string); rt {
		case "Bundle":
			list, _ := body["entry"].([]any)
			for _, x := range list {
				m, _ := x.(map[string]any)
				add(m["resource"], depth)
				resp, _ := m["response"].(map[string]any)
				add(resp["outcome"], depth)
			}
		case "Parameters":
			list, _ := body["parameter"].([]any)
			params(list, depth)
		}
	}
	walk(body, 0)
	return out
}

// securityLabels returns a resource's meta.security codings.
func securityLabels(body map[string]any) []Coding {
	meta, _ := body["meta"].(map[string]any)
	sec, _ := meta["security"].([]any)
	out := make([]Coding, 0, len(sec))
	for _, x := range sec {
		m, _ := x.(map[string]any)
		s, _ := m["system"].(string)
		c, _ := m["code"].(string)
		out = append(out, Coding{System: s, Code: c})
	}
	return out
}

// isRestrictedLabel reports the R label, which on a Patient is how the
// Personal Demographics Service marks a restricted (S-flag) patient. As
// for data labels, the code's case and a missing system are forgiven.
func isRestrictedLabel(c Coding) bool {
	return (c.System == SystemConfidentiality || c.System == "") && strings.EqualFold(c.Code, "R")
}

// restrictedInBundle reports a Patient labelled R (restricted), among
// the entries or what they carry.
func restrictedInBundle(entries []entry) bool {
	restricted := func(body map[string]any) bool {
		rt, _ := body["resourceType"].(string)
		return rt == "Patient" && slices.ContainsFunc(securityLabels(body), isRestrictedLabel)
	}
	for _, e := range entries {
		if restricted(e.body) || len(e.nested) > 0 && slices.ContainsFunc(nestedResources(e.body), restricted) {
			return true
		}
	}
	return false
}

// ResourceOf reads what the engine needs from a FHIR resource: its type,
// meta.security labels (its own and those of the resources it contains,
// which go wherever it goes), the codings of its code element and its
// date (see PROFILE.md for which element gives the date of each type). A
// Patient's R label marks a restricted patient, not restricted data, so
// it is left out of the Patient's labels.
func ResourceOf(body map[string]any) Resource {
	var r Resource
	r.Type, _ = body["resourceType"].(string)
	for _, cd := range securityLabels(body) {
		if r.Type == "Patient" && isRestrictedLabel(cd) {
			continue
		}
		r.Labels = append(r.Labels, cd)
	}
	contained, _ := body["contained"].([]any)
	for _, x := range contained {
		m, _ := x.(map[string]any)
		r.Labels = append(r.Labels, securityLabels(m)...)
	}
	if code, ok := body["code"].(map[string]any); ok {
		r.Codes = codings(code)
	}
	r.Date = resourceDate(body)
	return r
}

// resourceDate returns the first date found among the elements that date
// common resource types.
func resourceDate(body map[string]any) time.Time {
	for _, path := range [][]string{
		{"effectiveDateTime"}, {"effectivePeriod", "start"}, {"period", "start"},
		{"performedDateTime"}, {"performedPeriod", "start"}, {"occurrenceDateTime"},
		{"onsetDateTime"}, {"recordedDate"}, {"authoredOn"}, {"issued"}, {"date"},
	} {
		var v any = body
		for _, k := range path {
			m, _ := v.(map[string]any)
			v = m[k]
		}
		if v == nil {
			continue
		}
		if t, _, err := parseDateTime(v); err == nil {
			return t
		}
	}
	return time.Time{}
}

// Apply returns a copy of bundle with the decision's redactions made:
// entries whose verdict is Deny are dropped, with every reference to them,
// and entries whose verdict is Redact lose the elements listed in Strip,
// are marked as deleting them (nhs.JunctionExtClearedElement, so a fhir
// destination merging into what it holds deletes what it held before)
// and are labelled REDACTED (fhir.SystemObservationValue) in
// meta.security. A decision without per-resource verdicts returns an
// unchanged copy.
func Apply(bundle map[string]any, d Decision) (map[string]any, error) {
	c, err := jsonmap.Clone(bundle)
	if err != nil {
		return nil, fmt.Errorf("copying bundle: %w", err)
	}
	out, _ := c.(map[string]any)
	if len(d.Resources) == 0 {
		return out, nil
	}
	list, _ := out["entry"].([]any)
	if len(list) != len(d.Resources) {
		return nil, fmt.Errorf("decision covers %d entries, bundle has %d", len(d.Resources), len(list))
	}
	dropped := map[string]bool{}
	kept := make([]any, 0, len(list))
	for i, x := range list {
		m, _ := x.(map[string]any)
		res, _ := m["resource"].(map[string]any)
		switch v := d.Resources[i]; v.Outcome {
		case Deny:
			for _, ref := range fhir.EntryRefs(m) {
				dropped[ref] = true
			}
			continue
		case Redact:
			for _, k := range v.Strip {
				delete(res, k)
			}
			markCleared(res, v.Strip)
			fhir.LabelRedacted(res)
			if len(v.Nested) > 0 {
				// The clone's carried resources, in the order the
				// decision numbered them.
				nested := nestedResources(res)
				for k, els := range v.Nested {
					if k >= len(nested) {
						return nil, fmt.Errorf("decision redacts carried resource %d of entry %d, which carries %d", k, i, len(nested))
					}
					for _, el := range els {
						delete(nested[k], el)
					}
					markCleared(nested[k], els)
					fhir.LabelRedacted(nested[k])
				}
			}
		}
		kept = append(kept, x)
	}
	out["entry"] = kept
	if len(dropped) > 0 {
		out = fhir.DropReferences(out, dropped).(map[string]any)
	}
	return out, nil
}

// markCleared adds to res a nhs.JunctionExtClearedElement mark for each of
// elements it does not already carry.
func markCleared(res map[string]any, elements []string) {
	exts, _ := res["extension"].([]any)
	have := map[string]bool{}
	for _, x := range exts {
		if e, _ := x.(map[string]any); e["url"] == nhs.JunctionExtClearedElement {
			if c, ok := e["valueCode"].(string); ok {
				have[c] = true
			}
		}
	}
	for _, el := range elements {
		if !have[el] {
			exts = append(exts, map[string]any{"url": nhs.JunctionExtClearedElement, "valueCode": el})
			have[el] = true
		}
	}
	if len(exts) > 0 {
		res["extension"] = exts
	}
}
