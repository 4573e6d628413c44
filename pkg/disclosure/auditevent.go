package disclosure

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/consent"
)

// Code systems and profiles of the AuditEvents, after IHE Basic Audit Log
// Patterns (BALP).
const (
	systemDCM          = "http://dicom.nema.org/resources/ontology/DCM"
	systemLifecycle    = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
	systemOutcome      = "http://terminology.hl7.org/CodeSystem/audit-event-outcome"
	systemSourceType   = "http://terminology.hl7.org/CodeSystem/security-source-type"
	systemEntityType   = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	systemObjectRole   = "http://terminology.hl7.org/CodeSystem/object-role"
	systemSCT          = "http://snomed.info/sct"
	systemSecurityRole = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
	systemParticipant  = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
	systemRoleClass    = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
	systemAuthZ        = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
	systemResourceType = "http://hl7.org/fhir/resource-types"
	systemNHSNumber    = "https://fhir.nhs.uk/Id/nhs-number"
	systemODS          = "https://fhir.nhs.uk/Id/ods-organization-code"
	systemMessageID    = "https://junction-fhir.github.io/message-id"
	systemRule         = "https://junction-fhir.github.io/consent-rule"

	profileDisclosure = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PrivacyDisclosure.Source"
)

// Page is one page of a patient's entries, as Search returns it.
type Page struct {
	Entries []Entry
	// More says that other entries follow.
	More bool
	// Unreadable lists the runs of audit stream messages read for the
	// page that the store counts but cannot produce (its files are
	// damaged there): entries recorded in them are missing.
	Unreadable []audit.SeqRange
}

// Search returns the patient's entries (releases and refusals) timed from
// from to to that come after cursor after, in audit stream order, at most
// count of them. Every page scans the audit stream as Build does:
// withholdings and views do not apply, since this is the audit log.
func Search(ctx context.Context, js jetstream.JetStream, patient string, from, to time.Time, after Cursor, count int, dir Directory) (Page, error) {
	if patient == "" {
		return Page{}, errors.New("audit event search: no patient")
	}
	b := NewBuilder(patient, dir)
	unreadable, err := collect(ctx, js, b, from, to, DefaultLookback)
	if err != nil {
		return Page{}, fmt.Errorf("audit event search: %w", err)
	}
	p := Page{Unreadable: unreadable}
	all := Within(b.Entries(), from, to)
	sort.SliceStable(all, func(i, j int) bool { return all[j].At.After(all[i].At) })
	for _, e := range all {
		if !e.At.After(after) {
			continue
		}
		if len(p.Entries) == count {
			p.More = true
			return p, nil
		}
		p.Entries = append(p.Entries, e)
	}
	return p, nil
}

// AuditEvent returns entry e as a FHIR R4 AuditEvent for the patient with
// NHS number nhsNumber. A release follows the BALP Privacy Disclosure at
// Source profile (DICOM Export, ISO 21089 disclose); a refusal follows
// the BALP authorization decision by consent pattern (Security Alert,
// AuthZ-Consent, execute, failed), without claiming that profile, whose
// client and user agents a routing decision does not have.
func AuditEvent(e Entry, nhsNumber string) map[string]any {
	ev := map[string]any{
		"resourceType": "AuditEvent",
		"id":           EventID(e),
		"recorded":     e.Time.UTC().Format(time.RFC3339Nano),
		"source": map[string]any{
			"site":     "Junction",
			"observer": map[string]any{"display": "Junction"},
			"type":     []any{coding(systemSourceType, "4", "Application Server")},
		},
	}
	if p := purpose(e.Purpose); p != nil {
		ev["purposeOfEvent"] = []any{p}
	}
	patientEntity := map[string]any{
		"what": map[string]any{"identifier": map[string]any{"system": systemNHSNumber, "value": nhsNumber}},
		"type": coding(systemEntityType, "1", "Person"),
		"role": coding(systemObjectRole, "1", "Patient"),
	}
	var details []any
	add := func(k, v string) {
		if v != "" {
			details = append(details, map[string]any{"type": k, "valueString": v})
		}
	}
	add("route", e.Route)
	add("legal-basis", e.LegalBasis)
	add("classes", strings.Join(e.Classes, " "))
	if e.Redacted > 0 {
		add("redacted", strconv.Itoa(e.Redacted))
	}
	add("opt-out-gate", strconv.FormatBool(e.OptOutGate))
	if e.ResentAsStored {
		add("resent-as-stored", "true")
	}
	message := map[string]any{
		"what": map[string]any{"identifier": map[string]any{"system": systemMessageID, "value": e.MessageID}},
		"type": coding(systemEntityType, "2", "System Object"),
		"role": coding(systemObjectRole, "4", "Domain Resource"),
	}
	if len(details) > 0 {
		message["detail"] = details
	}
	junction := map[string]any{"display": "Junction"}
	if e.Kind == KindRelease {
		ev["meta"] = map[string]any{"profile": []any{profileDisclosure}}
		ev["type"] = coding(systemDCM, "110106", "Export")
		ev["subtype"] = []any{coding(systemLifecycle, "disclose", "Disclose Record Lifecycle Event")}
		ev["action"] = "R"
		ev["outcome"] = "0"
		if e.Redacted > 0 {
			ev["outcomeDesc"] = fmt.Sprintf("sent with %d resources withheld or stripped by consent", e.Redacted)
		}
		agents := []any{
			agent(coding(systemDCM, "110153", "Source Role ID"), junction, e.Source.Name),
			agent(coding(systemDCM, "110152", "Destination Role ID"), orgRef(e.Recipient), e.Recipient.Name),
		}
		if e.Source.ODS != "" {
			agents = append(agents, agent(coding(systemSCT, "159541003", "Record keeping/library clerk"), orgRef(e.Source), ""))
		}
		ev["agent"] = agents
		ev["entity"] = []any{patientEntity, message}
		return ev
	}
	ev["type"] = coding(systemDCM, "110113", "Security Alert")
	ev["subtype"] = []any{coding(systemAuthZ, "AuthZ-Consent", "Authorization Decision using Roles and Consent")}
	ev["action"] = "E"
	ev["outcome"] = "8"
	if e.Reason != "" {
		ev["outcomeDesc"] = "consent refused: " + e.Reason
	}
	ev["agent"] = []any{
		agent(coding(systemSecurityRole, "authserver", "authorization server"), junction, ""),
		agent(coding(systemDCM, "110150", "Application"), map[string]any{"display": "Junction route " + e.Route}, ""),
		agent(coding(systemParticipant, "IRCP", "information recipient"), orgRef(e.Recipient), e.Recipient.Name),
		agent(coding(systemRoleClass, "PROV", "healthcare provider"), orgRef(e.Recipient), ""),
	}
	rule := map[string]any{
		"what": map[string]any{"identifier": map[string]any{"system": systemRule, "value": e.Rule}},
		"type": coding(systemEntityType, "2", "System Object"),
	}
	if id := consentID(e.Rule); id != "" {
		rule["what"] = map[string]any{"reference": "Consent/" + id}
		rule["type"] = coding(systemResourceType, "Consent", "Consent")
	}
	entities := []any{patientEntity}
	if e.Rule != "" {
		entities = append(entities, rule)
	}
	ev["entity"] = append(entities, message)
	return ev
}

// EventID is the AuditEvent id of an entry: its message and cursor.
func EventID(e Entry) string {
	return fmt.Sprintf("%s-%d-%d", e.MessageID, e.At.Seq, e.At.Index)
}

// consentID returns the Consent id a consent rule names
// ("consent:<id>:<path>"), or "".
func consentID(rule string) string {
	rest, ok := strings.CutPrefix(rule, "consent:")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ":")
	switch id {
	case "", "none", "skipped":
		return ""
	}
	for _, c := range id {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return ""
		}
	}
	if len(id) > 64 {
		return ""
	}
	return id
}

func coding(system, code, display string) map[string]any {
	c := map[string]any{"system": system, "code": code}
	if display != "" {
		c["display"] = display
	}
	return c
}

// agent is one AuditEvent agent; network names the Junction input or
// destination it was reached through, when there is one.
func agent(typ map[string]any, who map[string]any, network string) map[string]any {
	a := map[string]any{"type": map[string]any{"coding": []any{typ}}, "who": who, "requestor": false}
	if network != "" {
		a["network"] = map[string]any{"address": network}
	}
	return a
}

// orgRef refers to an organisation by ODS code when it has one.
func orgRef(o Org) map[string]any {
	r := map[string]any{}
	if o.ODS != "" {
		r["identifier"] = map[string]any{"system": systemODS, "value": o.ODS}
	}
	if o.Name != "" {
		r["display"] = o.Name
	}
	return r
}

// purpose is the purposeOfEvent of a route purpose.
func purpose(p string) map[string]any {
	if p == "" {
		return nil
	}
	var codings []any
	for _, c := range consent.Purpose(p).Codings() {
		codings = append(codings, map[string]any{"system": c.System, "code": c.Code})
	}
	return map[string]any{"coding": codings, "text": p}
}

// SearchBundle is a FHIR searchset Bundle of the entries' AuditEvents;
// next, when set, is the URL of the following page.
func SearchBundle(p Page, nhsNumber, self, next string) map[string]any {
	links := []any{map[string]any{"relation": "self", "url": self}}
	if next != "" {
		links = append(links, map[string]any{"relation": "next", "url": next})
	}
	b := map[string]any{"resourceType": "Bundle", "type": "searchset", "link": links}
	out := make([]any, 0, len(p.Entries)+1)
	for _, e := range p.Entries {
		out = append(out, map[string]any{"resource": AuditEvent(e, nhsNumber), "search": map[string]any{"mode": "match"}})
	}
	if len(p.Unreadable) > 0 {
		// A search that could not read everything says so, as FHIR
		// search does: an OperationOutcome entry in mode "outcome".
		oo := map[string]any{"resourceType": "OperationOutcome", "issue": []any{map[string]any{
			"severity": "warning", "code": "incomplete", "diagnostics": IncompleteNote(p.Unreadable),
		}}}
		out = append(out, map[string]any{"resource": oo, "search": map[string]any{"mode": "outcome"}})
	}
	if len(out) > 0 {
		b["entry"] = out
	}
	return b
}
