package consent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// MaxDepth is how many levels of nested provisions the profile allows
// below Consent.provision.
const MaxDepth = 2

// Issue is one reason a Consent is outside the profile. Location is a
// FHIRPath-like expression such as "Consent.provision.provision[0].actor[0]";
// Code is a FHIR issue-type code. Messages never repeat the values sent.
type Issue struct {
	Code     string
	Location string
	Message  string
}

// String renders the issue as "location: message".
func (i Issue) String() string { return i.Location + ": " + i.Message }

// Issues is the list of problems found in a Consent.
type Issues []Issue

// Error joins the issues; Issues is an error so callers can return it.
func (is Issues) Error() string {
	parts := make([]string, len(is))
	for i, x := range is {
		parts[i] = x.String()
	}
	return "consent outside the Junction profile: " + strings.Join(parts, "; ")
}

// OperationOutcome renders the issues as a FHIR OperationOutcome, one error
// issue each, with the location as its expression.
func (is Issues) OperationOutcome() *models.OperationOutcome {
	oo := &models.OperationOutcome{}
	for _, x := range is {
		one := fhir.Outcome("error", x.Code, x.Message, x.Location)
		oo.Issue = append(oo.Issue, one.Issue...)
	}
	return oo
}

// parser collects issues while reading a Consent.
type parser struct {
	issues Issues
	// stored reads a Consent accepted before (by an earlier version):
	// the checks added since, that a purpose or class is one the engine
	// knows, are left out, so such a Consent still loads (and that
	// element matches nothing) rather than failing every decision for
	// the patient.
	stored bool
}

func (p *parser) add(code, loc, format string, args ...any) {
	p.issues = append(p.issues, Issue{Code: code, Location: loc, Message: fmt.Sprintf(format, args...)})
}

// ParsePolicy reads a FHIR R4 Consent (JSON) in the Junction profile. It
// returns every problem it finds; the Policy is only meaningful when there
// are none. See PROFILE.md.
func ParsePolicy(data []byte) (Policy, Issues) { return parsePolicy(data, false) }

// parseStored reads a Consent from the store (see parser.stored).
func parseStored(data []byte) (Policy, Issues) { return parsePolicy(data, true) }

func parsePolicy(data []byte, stored bool) (Policy, Issues) {
	p := parser{stored: stored}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var root map[string]any
	if err := dec.Decode(&root); err != nil || root == nil {
		p.add("structure", "Consent", "is not a JSON object")
		return Policy{}, p.issues
	}
	if dec.More() {
		p.add("structure", "Consent", "has trailing data after the JSON object")
	}
	pol := p.consent(root)
	return pol, p.issues
}

// consentKey reports whether the profile knows a Consent element.
// Elements it does not know are refused; informative ones are read for
// validity only.
func consentKey(k string) bool {
	switch k {
	case "resourceType", "id", "meta", "text", "language", "extension", "identifier",
		"status", "scope", "category", "patient", "dateTime", "performer", "organization",
		"sourceAttachment", "sourceReference", "policy", "policyRule", "verification", "provision":
		return true
	}
	return false
}

// provisionKey reports whether the profile knows a provision element.
func provisionKey(k string) bool {
	switch k {
	case "id", "extension", "type", "period", "actor", "action", "securityLabel",
		"purpose", "class", "code", "dataPeriod", "provision":
		return true
	}
	return false
}

// actorKey reports whether the profile knows an actor element.
func actorKey(k string) bool {
	switch k {
	case "id", "extension", "role", "reference":
		return true
	}
	return false
}

func (p *parser) unknown(obj map[string]any, known func(string) bool, loc string) {
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if !known(k) {
			p.add("not-supported", loc+"."+k, "element is outside the Junction Consent profile")
		}
	}
}

func (p *parser) consent(root map[string]any) Policy {
	var pol Policy
	if rt, _ := root["resourceType"].(string); rt != "Consent" {
		p.add("invalid", "Consent.resourceType", "must be Consent")
		return pol
	}
	p.unknown(root, consentKey, "Consent")
	if id, ok := root["id"]; ok {
		s, _ := id.(string)
		if !validID(s) {
			p.add("value", "Consent.id", "must be a FHIR id (1 to 64 letters, digits, '-' or '.')")
		}
		pol.ID = s
	}
	switch st, _ := root["status"].(string); st {
	case "draft", "proposed", "active", "rejected", "inactive", "entered-in-error":
		pol.Status = st
	case "":
		p.add("required", "Consent.status", "is required")
	default:
		p.add("code-invalid", "Consent.status", "must be a Consent status code")
	}
	p.scope(root["scope"])
	if cats, ok := root["category"].([]any); !ok || len(cats) == 0 {
		p.add("required", "Consent.category", "needs at least one category")
	}
	pol.Patient = p.patient(root["patient"])
	if pol.Patient != "" && strings.Contains(pol.ID, pol.Patient) {
		// The id names the deciding rule in audit records.
		p.add("value", "Consent.id", "must not contain the patient's NHS number")
	}
	if v, ok := root["dateTime"]; ok {
		if _, _, err := parseDateTime(v); err != nil {
			p.add("value", "Consent.dateTime", "must be a FHIR dateTime")
		}
	}
	prov, ok := root["provision"].(map[string]any)
	if !ok {
		p.add("required", "Consent.provision", "is required and must be an object")
		return pol
	}
	pol.Root = p.provision(prov, "Consent.provision", 0)
	return pol
}

func (p *parser) scope(v any) {
	cc, ok := v.(map[string]any)
	if !ok {
		p.add("required", "Consent.scope", "is required")
		return
	}
	for _, c := range codings(cc) {
		if c.System == SystemConsentScope && c.Code == "patient-privacy" {
			return
		}
	}
	p.add("value", "Consent.scope", "must be %s#patient-privacy", SystemConsentScope)
}

func (p *parser) patient(v any) string {
	ref, ok := v.(map[string]any)
	if !ok {
		p.add("required", "Consent.patient", "is required")
		return ""
	}
	id, _ := ref["identifier"].(map[string]any)
	sys, _ := id["system"].(string)
	val, _ := id["value"].(string)
	if sys != nhs.SystemNHSNumber {
		p.add("value", "Consent.patient.identifier", "must be an identifier in %s", nhs.SystemNHSNumber)
		return ""
	}
	if !nhs.ValidNumber(val) {
		p.add("value", "Consent.patient.identifier.value", "is not a valid NHS number")
		return ""
	}
	return nhs.Normalize(val)
}

func (p *parser) provision(obj map[string]any, loc string, depth int) Provision {
	pr := Provision{Path: loc}
	p.unknown(obj, provisionKey, loc)
	switch t, _ := obj["type"].(string); t {
	case "permit", "deny":
		pr.Type = ProvisionType(t)
	case "":
		p.add("required", loc+".type", "is required at every level (deny or permit)")
	default:
		p.add("code-invalid", loc+".type", "must be deny or permit")
	}
	if v, ok := obj["period"]; ok {
		pr.Period = p.period(v, loc+".period")
	}
	if v, ok := obj["dataPeriod"]; ok {
		pr.DataPeriod = p.period(v, loc+".dataPeriod")
	}
	for i, a := range p.list(obj, "actor", loc) {
		pr.Actors = append(pr.Actors, p.actor(a, fmt.Sprintf("%s.actor[%d]", loc, i)))
	}
	for i, a := range p.list(obj, "action", loc) {
		p.action(a, fmt.Sprintf("%s.action[%d]", loc, i))
	}
	for i, c := range p.list(obj, "securityLabel", loc) {
		pr.Labels = append(pr.Labels, p.coding(c, fmt.Sprintf("%s.securityLabel[%d]", loc, i)))
	}
	for i, c := range p.list(obj, "purpose", loc) {
		l := fmt.Sprintf("%s.purpose[%d]", loc, i)
		cd := p.coding(c, l)
		// A purpose no route declares would match nothing: a refusal
		// written with one would silently refuse nothing.
		if !p.stored && cd.System != "" && cd.Code != "" && !knownPurpose(cd) {
			p.add("code-invalid", l, "is not a purpose routes declare (%s codes %s; or v3-ActReason %s)",
				SystemPurpose, strings.Join(purposeCodes(), ", "), strings.Join(actReasonCodes(), ", "))
		}
		pr.Purposes = append(pr.Purposes, cd)
	}
	for i, c := range p.list(obj, "class", loc) {
		l := fmt.Sprintf("%s.class[%d]", loc, i)
		cd := p.coding(c, l)
		if cd.System != SystemResourceTypes && cd.System != "" {
			p.add("value", l+".system", "must be %s", SystemResourceTypes)
		}
		var rt models.ResourceType
		if !p.stored && cd.System == SystemResourceTypes && cd.Code != "" && (rt.UnmarshalJSON([]byte(strconv.Quote(cd.Code))) != nil || rt.Code() != cd.Code) {
			p.add("code-invalid", l+".code", "is not a FHIR resource type (they are case-sensitive, such as Encounter)")
		}
		pr.Classes = append(pr.Classes, cd.Code)
	}
	for i, c := range p.list(obj, "code", loc) {
		l := fmt.Sprintf("%s.code[%d]", loc, i)
		cc, ok := c.(map[string]any)
		cds := codings(cc)
		if !ok || len(cds) == 0 {
			p.add("value", l, "must be a CodeableConcept with at least one coding")
			continue
		}
		for j, cd := range cds {
			if cd.System == "" || cd.Code == "" {
				p.add("value", fmt.Sprintf("%s.coding[%d]", l, j), "needs system and code")
			}
		}
		pr.Codes = append(pr.Codes, cds...)
	}
	children := p.list(obj, "provision", loc)
	if len(children) > 0 && depth >= MaxDepth {
		p.add("not-supported", loc+".provision", "nests deeper than %d levels of provisions", MaxDepth)
		return pr
	}
	for i, c := range children {
		l := fmt.Sprintf("%s.provision[%d]", loc, i)
		co, ok := c.(map[string]any)
		if !ok {
			p.add("structure", l, "must be an object")
			continue
		}
		pr.Provisions = append(pr.Provisions, p.provision(co, l, depth+1))
	}
	return pr
}

// allPurposes lists the purposes routes declare.
var allPurposes = []Purpose{PurposeDirectCare, PurposeSafeguarding, PurposeResearch, PurposePlanning, PurposePublicHealth}

// knownPurpose reports whether c names one of the purposes.
func knownPurpose(c Coding) bool {
	for _, pu := range allPurposes {
		if slices.Contains(pu.codings(), c) {
			return true
		}
	}
	return false
}

func purposeCodes() []string {
	var out []string
	for _, pu := range allPurposes {
		out = append(out, string(pu))
	}
	return out
}

func actReasonCodes() []string {
	var out []string
	for _, pu := range allPurposes {
		if a := pu.actReason(); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// list returns obj[key] as a list, reporting a non-list.
func (p *parser) list(obj map[string]any, key, loc string) []any {
	v, ok := obj[key]
	if !ok {
		return nil
	}
	l, ok := v.([]any)
	if !ok || len(l) == 0 {
		p.add("structure", loc+"."+key, "must be a non-empty array")
		return nil
	}
	return l
}

func (p *parser) actor(v any, loc string) string {
	a, ok := v.(map[string]any)
	if !ok {
		p.add("structure", loc, "must be an object")
		return ""
	}
	p.unknown(a, actorKey, loc)
	role, _ := a["role"].(map[string]any)
	recipient := false
	for _, c := range codings(role) {
		if c.System == SystemParticipationType && c.Code == "IRCP" {
			recipient = true
		}
	}
	if !recipient {
		p.add("value", loc+".role", "must be %s#IRCP (information recipient)", SystemParticipationType)
	}
	ref, _ := a["reference"].(map[string]any)
	id, _ := ref["identifier"].(map[string]any)
	sys, _ := id["system"].(string)
	val, _ := id["value"].(string)
	if sys != nhs.SystemODSOrganization {
		p.add("value", loc+".reference.identifier", "must be an identifier in %s", nhs.SystemODSOrganization)
		return ""
	}
	if !nhs.LooksLikeODSCode(val) {
		p.add("value", loc+".reference.identifier.value", "is not an ODS organisation code")
		return ""
	}
	return val
}

func (p *parser) action(v any, loc string) {
	cc, _ := v.(map[string]any)
	cds := codings(cc)
	disclose := false
	for j, c := range cds {
		if c.System != SystemConsentAction {
			p.add("value", fmt.Sprintf("%s.coding[%d].system", loc, j), "must be %s", SystemConsentAction)
		}
		if c.Code == "disclose" {
			disclose = true
		}
	}
	if !disclose {
		p.add("not-supported", loc, "must include disclose: Junction decides disclosures only")
	}
}

func (p *parser) coding(v any, loc string) Coding {
	m, ok := v.(map[string]any)
	if !ok {
		p.add("structure", loc, "must be a Coding object")
		return Coding{}
	}
	c := Coding{}
	c.System, _ = m["system"].(string)
	c.Code, _ = m["code"].(string)
	if c.System == "" || c.Code == "" {
		p.add("required", loc, "needs system and code")
	}
	return c
}

func (p *parser) period(v any, loc string) Period {
	m, ok := v.(map[string]any)
	if !ok {
		p.add("structure", loc, "must be a Period object")
		return Period{}
	}
	var per Period
	if s, ok := m["start"]; ok {
		start, _, err := parseDateTime(s)
		if err != nil {
			p.add("value", loc+".start", "must be a FHIR dateTime")
		}
		per.Start = start
	}
	if s, ok := m["end"]; ok {
		_, end, err := parseDateTime(s)
		if err != nil {
			p.add("value", loc+".end", "must be a FHIR dateTime")
		}
		per.End = end
	}
	if !per.Start.IsZero() && !per.End.IsZero() && !per.Start.Before(per.End) {
		p.add("invariant", loc, "start must come before end")
	}
	return per
}

// validID reports whether s is a FHIR id.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// codings returns the codings of a CodeableConcept.
func codings(cc map[string]any) []Coding {
	l, _ := cc["coding"].([]any)
	var out []Coding
	for _, x := range l {
		m, _ := x.(map[string]any)
		s, _ := m["system"].(string)
		c, _ := m["code"].(string)
		out = append(out, Coding{System: s, Code: c})
	}
	return out
}

// parseDateTime reads a FHIR date or dateTime and returns the first
// instant it covers and the first instant after it. A date, month or
// year is that English calendar span (fhir.DateSpan): a Consent ending
// "2026-07-31" still applies at 23:30 BST that day, and no longer at
// 00:30 BST the next.
func parseDateTime(v any) (from, until time.Time, err error) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, time.Time{}, fmt.Errorf("dateTime is not a string")
	}
	from, until, err = fhir.DateSpan(s, false)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("dateTime is not in FHIR form")
	}
	return from, until, nil
}
