package conformance

import (
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// Categories of a mapping inventory disagreement beyond us-only,
// uk-override, not-supported and differs (see cdc.go).
const (
	// catChoice: Junction's value follows a documented mapping choice
	// of its own where the guide leaves room or is silent.
	catChoice = "choice"
	// catInventory: the expected value departs from the guide or from
	// FHIR R4, and Junction follows the guide.
	catInventory = "inventory"
	// catGap: Junction departs from the guide; a candidate fix in the
	// translator, listed in conformance/README.md.
	catGap = "gap"
)

// rsLocalSystem is the system ReportStream gives codes sent with coding
// system L or 99zzz (HL7 table 0396 local codes).
const rsLocalSystem = "https://terminology.hl7.org/CodeSystem-v2-0396.html#v2-0396-99zzzorL"

// cdcContext is what a rule may read about a case: its message and
// Junction's values by element path.
type cdcContext struct {
	msg *hl7v2.Message
	got map[string][]string
}

// values returns component comp of every repetition of field of every
// segment named seg, trimmed and without empty values.
func (c *cdcContext) values(seg string, field, comp int) []string {
	if c.msg == nil {
		return nil
	}
	var out []string
	for _, s := range c.msg.SegmentsNamed(seg) {
		for rep := 1; rep <= s.Repetitions(field); rep++ {
			if v := strings.TrimSpace(s.Component(field, rep, comp, 1)); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// has reports whether want is component comp of one of the given fields
// of a segment named seg.
func (c *cdcContext) has(want, seg string, comp int, fields ...int) bool {
	for _, f := range fields {
		for _, v := range c.values(seg, f, comp) {
			if v == want {
				return true
			}
		}
	}
	return false
}

// empty reports whether field of every segment named seg is empty.
func (c *cdcContext) empty(seg string, field int) bool {
	return len(c.values(seg, field, 1)) == 0
}

// cdcRule explains one kind of disagreement where Junction emits an
// element with another value than the expected bundle.
type cdcRule struct {
	// id names the rule in the scorecard.
	id string
	// cat is the category the rule puts a disagreement in.
	cat string
	// paths are the element paths the rule applies to: a path ending in
	// "*" is a prefix, one starting with "*" a suffix; none applies to
	// every path.
	paths []string
	// match reports whether the rule explains the expected value want,
	// given Junction's values have of the same element.
	match func(c *cdcContext, want string, have []string) bool
	// reason is the explanation given with each disagreement.
	reason string
}

// applies reports whether r applies to the element path.
func (r cdcRule) applies(path string) bool {
	if len(r.paths) == 0 {
		return true
	}
	for _, p := range r.paths {
		prefix, isPrefix := strings.CutSuffix(p, "*")
		suffix, isSuffix := strings.CutPrefix(p, "*")
		if p == path || isPrefix && strings.HasPrefix(path, prefix) || isSuffix && strings.HasSuffix(path, suffix) {
			return true
		}
	}
	return false
}

// cdcRules are the explained disagreements, tried in order after the
// us-only and uk-override markers. Each was found by reading the cases
// against the HL7 v2-to-FHIR guide (hl7-v2-to-fhir in the corpora) and
// Junction's documented mapping; see conformance/README.md.
var cdcRules = []cdcRule{
	// UK rules and the feed's dialect.
	{id: "local-code-system", cat: catUKOverride,
		match:  func(_ *cdcContext, want string, _ []string) bool { return want == rsLocalSystem },
		reason: "local codes (coding system L, 99zzz) take the lab dialect's local_code_system; ReportStream writes its own table 0396 URL"},
	{id: "time-zone", cat: catUKOverride,
		match:  func(_ *cdcContext, want string, have []string) bool { return sameWallClock(want, have) },
		reason: "a time sent without an offset is read in the dialect's time_zone (Europe/London by default); ReportStream reads it as UTC"},
	{id: "address-district", cat: catUKOverride, paths: []string{"Patient.address.district"},
		match:  func(c *cdcContext, want string, _ []string) bool { return c.has(want, "PID", 9, 11) },
		reason: "English feeds send the county in XAD-4, mapped to district; XAD-9 (US county code) is not mapped"},
	{id: "human-language", cat: catUKOverride, paths: []string{"Patient.communication.language.coding.code"},
		match: func(c *cdcContext, want string, _ []string) bool {
			return c.has(want, "PID", 1, 15) || c.has(want, "PID", 4, 15)
		},
		reason: "PID-15 (ISO 639-1, from the NHS Data Dictionary list) is written as a BCP 47 tag, lower case, as UK Core requires; ReportStream keeps the code as sent"},

	// Junction's own mapping choices.
	{id: "request-status", cat: catChoice, paths: []string{"ServiceRequest.status"},
		match: func(c *cdcContext, want string, _ []string) bool { return want == "unknown" && c.empty("ORC", 5) },
		reason: "without ORC-5, ServiceRequest.status follows the report status OBR-25 (completed once final, otherwise active); " +
			"the guide maps ORC-5, else ORC-1 (RE has no map), and ReportStream writes unknown"},
	{id: "observation-status-n", cat: catChoice, paths: []string{"Observation.status"},
		match: func(c *cdcContext, want string, _ []string) bool {
			return want == "unknown" && c.has("N", "OBX", 1, 11)
		},
		reason: "OBX-11 N (not asked) is a final record with dataAbsentReason not-asked; the guide's status map has no N and ReportStream writes unknown"},
	{id: "specimen-accession", cat: catChoice, paths: []string{"Specimen.identifier.value", "Specimen.accessionIdentifier.value"},
		match: func(c *cdcContext, want string, _ []string) bool {
			return c.has(want, "SPM", 1, 30) || anyEqual(want, c.got["Specimen.accessionIdentifier.value"])
		},
		reason: "SPM-2.2 (filler assigned specimen id) is the accessionIdentifier, the laboratory's accession number; " +
			"the guide makes it a second identifier and takes accessionIdentifier from SPM-30"},
	{id: "telecom-format", cat: catChoice, paths: []string{"*telecom.value"},
		match:  func(_ *cdcContext, want string, have []string) bool { return sameDigits(want, have) },
		reason: "a phone number is built from XTN-5, XTN-6 and XTN-7 as the guide's XTN map does; ReportStream takes XTN-12"},
	{id: "encounter-location-status", cat: catChoice, paths: []string{"Encounter.location.status"},
		match: func(_ *cdcContext, want string, have []string) bool {
			fixed := []string{"active", "planned", "completed"}
			return slices.Contains(fixed, want) && len(have) == 1 && slices.Contains(fixed, have[0])
		},
		reason: "only PV1-3 is a location (PV1-6 on A02 transfers), with a status following the encounter's (planned, active, completed once discharged); " +
			"the guide also maps PV1-6, -11, -42 and -43, each with a fixed status"},

	// Elements the case fills that Junction does not map, where Junction
	// emits the same element from another field.
	{id: "order-identifiers", cat: catNotSupported, paths: []string{"ServiceRequest.identifier.value", "DiagnosticReport.identifier.value"},
		match: func(c *cdcContext, want string, _ []string) bool {
			return c.has(want, "ORC", 1, 4, 33) || c.has(want, "OBR", 1, 53)
		},
		reason: "ORC-4 (placer group number) and ORC-33, OBR-53 (alternate placer order numbers) are not mapped"},
	{id: "specimen-identifiers", cat: catNotSupported, paths: []string{"Specimen.identifier.value"},
		match: func(c *cdcContext, want string, _ []string) bool {
			return c.has(want, "SPM", 1, 3, 31, 32) || c.has(want, "SPM", 2, 3)
		},
		reason: "SPM-3 (parent ids), SPM-31 (other ids) and SPM-32 (shipment id) are not mapped"},
	{id: "related-person-contact", cat: catNotSupported, paths: []string{"RelatedPerson.*"},
		match: func(c *cdcContext, want string, _ []string) bool {
			return c.has(want, "NK1", 1, 30) || c.has(want, "NK1", 3, 32) || c.has(want, "NK1", 1, 32) ||
				c.has(want, "NK1", 12, 31, 40, 41)
		},
		reason: "NK1-30 to NK1-32 (contact person's name, telephone, address) and NK1-40, NK1-41 (business and contact telephones) are not mapped"},
	{id: "patient-telecom", cat: catNotSupported, paths: []string{"Patient.telecom.value"},
		match:  func(c *cdcContext, want string, _ []string) bool { return c.has(want, "PID", 4, 40) },
		reason: "PID-40 (patient telecommunication information, v2.6+) is not mapped"},
	{id: "alternate-visit", cat: catNotSupported, paths: []string{"Encounter.identifier.value"},
		match:  func(c *cdcContext, want string, _ []string) bool { return c.has(want, "PV1", 1, 50) },
		reason: "PV1-50 (alternate visit id) is not mapped; the Encounter identifier is PV1-19"},
	{id: "receiving-network", cat: catNotSupported, paths: []string{"MessageHeader.destination.*"},
		match:  func(c *cdcContext, _ string, _ []string) bool { return !c.empty("MSH", 25) },
		reason: "MSH-25 (receiving network address), which the guide prefers for the destination, is not mapped; destination is MSH-5 and MSH-6"},
	{id: "second-alternate-code", cat: catNotSupported, paths: []string{"*code.coding.code", "*code.coding.display"},
		match: func(c *cdcContext, want string, _ []string) bool {
			return c.has(want, "OBR", 10, 4) || c.has(want, "OBR", 11, 4) || c.has(want, "OBX", 10, 3) || c.has(want, "OBX", 11, 3)
		},
		reason: "CWE-10 to CWE-12 (second alternate code) are not mapped"},

	// Expected values that depart from the guide or FHIR R4.
	{id: "hd-not-an-oid", cat: catInventory, paths: []string{"MessageHeader.destination.endpoint"},
		match:  func(_ *cdcContext, want string, _ []string) bool { return badURN(want) },
		reason: "the expected endpoint is urn:oid or urn:uuid of a universal id that is no OID or UUID; Junction falls back to its urn:hl7v2 name"},
	{id: "marital-status", cat: catInventory, paths: []string{"Patient.maritalStatus.coding.code", "Patient.maritalStatus.coding.display"},
		match: func(c *cdcContext, want string, _ []string) bool {
			return c.has(want, "PID", 1, 16) || c.has(want, "PID", 2, 16) || c.has(want, "PID", 4, 16) || c.has(want, "PID", 5, 16)
		},
		reason: "ReportStream keeps the table 0002 code; Junction maps it to v3 MaritalStatus by the guide's MaritalStatus concept map"},
	{id: "report-status-empty", cat: catInventory, paths: []string{"DiagnosticReport.status"},
		match: func(c *cdcContext, want string, _ []string) bool {
			return want == "entered-in-error" && c.empty("OBR", 25)
		},
		reason: "OBR-25 is empty, which the guide does not map; ReportStream writes entered-in-error, Junction unknown (status is required) with a data quality flag"},
	{id: "absent-reason-x", cat: catInventory, paths: []string{"Observation.dataAbsentReason.coding.code"},
		match:  func(_ *cdcContext, want string, _ []string) bool { return want == "cannot-be-obtained" },
		reason: "cannot-be-obtained (from a note in the guide's status map) is not in R4's data-absent-reason code system; Junction gives OBX-11 X not-performed"},
	{id: "reflex-intent", cat: catInventory, paths: []string{"ServiceRequest.intent"},
		match:  func(c *cdcContext, want string, _ []string) bool { return want == "order" && c.has("G", "OBR", 1, 11) },
		reason: "OBR-11 is G (a generated order), which the guide's OBR[ServiceRequest] map gives intent reflex-order; ReportStream writes order"},
	{id: "time-format", cat: catInventory, paths: []string{"Observation.valueTime"},
		match:  func(_ *cdcContext, want string, _ []string) bool { return !fhirTime.MatchString(want) },
		reason: "the expected value is the HL7 TM as sent, not a FHIR time (hh:mm:ss)"},

	// Junction departs from the guide: candidate fixes.
	{id: "orc-identifiers-first", cat: catGap, paths: []string{"ServiceRequest.identifier.value", "DiagnosticReport.identifier.value"},
		match: func(c *cdcContext, want string, _ []string) bool {
			return c.has(want, "ORC", 1, 2, 3) && (!c.empty("OBR", 2) || !c.empty("OBR", 3))
		},
		reason: "Junction takes placer and filler numbers from OBR-2, OBR-3 before ORC-2, ORC-3; the guide's ORC[DiagnosticReport] map takes ORC first"},
	{id: "sn-as-string", cat: catGap, paths: []string{"Observation.valueString"},
		match:  func(c *cdcContext, _ string, _ []string) bool { return c.has("SN", "OBX", 1, 2) },
		reason: "an SN the guide keeps as text joins its components with spaces (\"- 1 + 3\"); Junction joins them without"},
	{id: "vr-as-string", cat: catGap, paths: []string{"Observation.valueString"},
		match:  func(c *cdcContext, _ string, _ []string) bool { return c.has("VR", "OBX", 1, 2) },
		reason: "the guide writes a VR as OBX-5.1 \"-\" OBX-5.2; Junction keeps the component separator"},
	{id: "unit-other-system", cat: catGap, paths: []string{"Observation.valueQuantity.unit", "Observation.valueQuantity.system"},
		match: func(c *cdcContext, _ string, _ []string) bool {
			sys := c.values("OBX", 6, 3)
			return len(sys) > 0 && !strings.EqualFold(sys[0], "UCUM")
		},
		reason: "when OBX-6.3 names a system other than UCUM, Junction writes OBX-6.1 as the unit (no longer as a UCUM code); the guide takes the unit from OBX-6.2"},
}

// fhirTime matches the FHIR time type.
var fhirTime = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?$`)

// oid and uuid match the identifiers urn:oid and urn:uuid name.
var (
	oid  = regexp.MustCompile(`^[0-2](\.(0|[1-9][0-9]*))+$`)
	uuid = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// badURN reports whether s is a urn:oid or urn:uuid whose id is no OID or
// UUID.
func badURN(s string) bool {
	if id, ok := strings.CutPrefix(s, "urn:oid:"); ok {
		return !oid.MatchString(id)
	}
	if id, ok := strings.CutPrefix(s, "urn:uuid:"); ok {
		return !uuid.MatchString(id)
	}
	return false
}

// sameDigits reports whether want holds the same digits as one of have
// (a phone number written another way).
func sameDigits(want string, have []string) bool {
	digits := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, s)
	}
	d := digits(want)
	if d == "" {
		return false
	}
	for _, h := range have {
		if digits(h) == d {
			return true
		}
	}
	return false
}

// sameWallClock reports whether want and one of have are date-times with
// the same clock reading and different offsets.
func sameWallClock(want string, have []string) bool {
	const layout = "2006-01-02T15:04:05.999999999Z07:00"
	tw, err := time.Parse(layout, want)
	if err != nil {
		return false
	}
	for _, h := range have {
		th, err := time.Parse(layout, h)
		if err != nil {
			continue
		}
		_, ow := tw.Zone()
		_, oh := th.Zone()
		if ow != oh && tw.Add(time.Duration(ow)*time.Second).Equal(th.Add(time.Duration(oh)*time.Second)) {
			return true
		}
	}
	return false
}

// explain returns the first rule explaining a disagreement at path, or
// false.
func explain(c *cdcContext, path, want string, have []string) (cdcRule, bool) {
	for _, r := range cdcRules {
		if r.applies(path) && (r.match == nil || r.match(c, want, have)) {
			return r, true
		}
	}
	return cdcRule{}, false
}
