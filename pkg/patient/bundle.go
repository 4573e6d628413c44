package patient

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// systemConfidentiality is the code system of the R (restricted) label.
const systemConfidentiality = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"

// patientData is what the index takes from one Patient resource.
type patientData struct {
	nhsNumber  string // valid and normalised, or ""
	ids        []Identifier
	droppedIDs int // local identifiers beyond MaxLocalIdentifiers
	family     string
	given      []string
	birthDate  string
	gender     string
	postcode   string
	deceased   *bool
	gpPractice string
	gp         string
	restricted bool
	// cleared* mark elements the message deleted (HL7 v2's explicit
	// null), from nhs.JunctionExtClearedElement.
	clearedAddress, clearedGP, clearedDeceased bool
	replacedBy                                 string // reference to the survivor, for a merged record
	// flags are the bundle's Flag resources about this patient.
	flags []flagData
	// flagsOnly marks a patient known only as the subject of Flags (by
	// NHS number), with no Patient resource: its demographics are left
	// alone.
	flagsOnly bool
}

// flagData is what the index takes from one Flag resource.
type flagData struct {
	flag Flag // Source is set when applied
	// cleared is a Flag no longer in force (status inactive or
	// entered-in-error): it ends the flag at clearedAt, or at the
	// message's receipt when zero.
	cleared   bool
	clearedAt time.Time
}

// merge is one old record merged into a survivor.
type merge struct {
	old      patientData
	survivor patientData
}

// plan is what one message bundle asks of the index.
type plan struct {
	event    string // MessageHeader.eventCoding.code, "" when absent
	patients []patientData
	merges   []merge
	// unresolved counts merged Patients whose survivor is not in the
	// bundle.
	unresolved int
	// droppedIDs counts local identifiers left out (MaxLocalIdentifiers).
	droppedIDs int
}

// MaxLocalIdentifiers is how many local identifiers of one Patient the
// index takes from a message; the rest are left out and counted. A
// patient has a handful; a message with thousands (a sender's fault, or
// an attack) would otherwise cost one store write each, for every
// retry.
const MaxLocalIdentifiers = 32

// ParseError reports a bundle the index cannot read. Its message never
// holds patient data.
type ParseError struct{ Reason string }

func (e *ParseError) Error() string { return "patient index: bundle: " + e.Reason }

// decodeBundle decodes JSON bundle bytes into JSON-shaped maps.
func decodeBundle(data []byte) (map[string]any, error) {
	var b map[string]any
	if err := json.Unmarshal(data, &b); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, &ParseError{Reason: fmt.Sprintf("invalid JSON at offset %d", syn.Offset)}
		}
		return nil, &ParseError{Reason: "not a JSON object"}
	}
	return b, nil
}

// parseBundle reads the Patients of a FHIR R4 Bundle (as JSON-shaped
// maps) and their merges.
func parseBundle(b map[string]any) (plan, error) {
	if str(b, "resourceType") != "Bundle" {
		return plan{}, &ParseError{Reason: "resourceType is not Bundle"}
	}
	entries, _ := b["entry"].([]any)
	byRef := bundleRefs(entries)
	var p plan
	var all []patientData
	urlOf := map[string]int{} // every reference form of a Patient to its index in all
	for _, e := range entries {
		em, _ := e.(map[string]any)
		res := obj(em, "resource")
		if res == nil {
			continue
		}
		switch str(res, "resourceType") {
		case "MessageHeader":
			if p.event == "" {
				p.event = str(obj(res, "eventCoding"), "code")
			}
		case "Patient":
			pd := readPatient(res, byRef)
			p.droppedIDs += pd.droppedIDs
			if u := str(em, "fullUrl"); u != "" {
				urlOf[u] = len(all)
			}
			if id := str(res, "id"); id != "" {
				urlOf["Patient/"+id] = len(all)
			}
			all = append(all, pd)
		}
	}
	var flagOnly map[string]int // NHS number to its index in all
	for _, e := range entries {
		em, _ := e.(map[string]any)
		res := obj(em, "resource")
		if str(res, "resourceType") != "Flag" {
			continue
		}
		fd, ok := readFlag(res)
		if !ok {
			p.unresolved++
			continue
		}
		subject := obj(res, "subject")
		if i, ok := urlOf[str(subject, "reference")]; ok {
			all[i].flags = append(all[i].flags, fd)
			continue
		}
		id := obj(subject, "identifier")
		n := nhs.Normalize(str(id, "value"))
		if str(id, "system") != nhs.SystemNHSNumber || !nhs.ValidNumber(n) {
			p.unresolved++ // a Flag whose patient the index cannot know
			continue
		}
		i, ok := flagOnly[n]
		if !ok {
			if flagOnly == nil {
				flagOnly = map[string]int{}
			}
			i = len(all)
			flagOnly[n] = i
			all = append(all, patientData{nhsNumber: n, flagsOnly: true})
		}
		all[i].flags = append(all[i].flags, fd)
	}
	for _, pd := range all {
		if pd.replacedBy == "" {
			p.patients = append(p.patients, pd)
			continue
		}
		i, ok := urlOf[pd.replacedBy]
		if !ok || all[i].replacedBy != "" {
			p.unresolved++
			continue
		}
		p.merges = append(p.merges, merge{old: pd, survivor: all[i]})
	}
	return p, nil
}

// bundleRefs is the entries of a bundle, to resolve references to them.
type bundleRefs []any

// resolve returns the resource of the last entry whose fullUrl, or
// resourceType and id as "Type/id", is ref, or nil. A bundle's
// references are few (a Patient's GP and practice), so each is looked
// for along the entries rather than every entry indexed by both forms.
func (es bundleRefs) resolve(ref string) map[string]any {
	if ref == "" {
		return nil
	}
	for i := len(es) - 1; i >= 0; i-- {
		em, _ := es[i].(map[string]any)
		res := obj(em, "resource")
		if res == nil {
			continue
		}
		if str(em, "fullUrl") == ref {
			return res
		}
		t, id := str(res, "resourceType"), str(res, "id")
		if t != "" && id != "" && len(ref) == len(t)+1+len(id) && ref[:len(t)] == t && ref[len(t)] == '/' && ref[len(t)+1:] == id {
			return res
		}
	}
	return nil
}

// readPatient reads one Patient resource; byRef resolves references to
// the bundle's Organization and Practitioner entries.
func readPatient(res map[string]any, byRef bundleRefs) patientData {
	var pd patientData
	for _, x := range list(res, "identifier") {
		id, _ := x.(map[string]any)
		system, value := str(id, "system"), strings.TrimSpace(str(id, "value"))
		if value == "" {
			continue
		}
		if system == nhs.SystemNHSNumber {
			n := nhs.Normalize(value)
			if pd.nhsNumber == "" && nhs.ValidNumber(n) {
				pd.nhsNumber = n
			}
			continue
		}
		if system == "" {
			continue // a value without a system identifies nothing
		}
		li := Identifier{System: system, Value: value}
		switch {
		case slices.Contains(pd.ids, li):
		case len(pd.ids) >= MaxLocalIdentifiers:
			pd.droppedIDs++
		default:
			pd.ids = append(pd.ids, li)
		}
	}
	pd.readName(list(res, "name"))
	pd.birthDate = str(res, "birthDate")
	pd.gender = str(res, "gender")
	pd.postcode = postcode(list(res, "address"))
	if d, ok := res["deceasedBoolean"].(bool); ok {
		pd.deceased = &d
	} else if str(res, "deceasedDateTime") != "" {
		t := true
		pd.deceased = &t
	}
	for _, x := range list(obj(res, "meta"), "security") {
		c, _ := x.(map[string]any)
		if str(c, "system") == systemConfidentiality && str(c, "code") == "R" {
			pd.restricted = true
		}
	}
	for _, x := range list(res, "generalPractitioner") {
		ref, _ := x.(map[string]any)
		pd.readGP(ref, byRef)
	}
	for _, x := range list(res, "extension") {
		e, _ := x.(map[string]any)
		if str(e, "url") != nhs.JunctionExtClearedElement {
			continue
		}
		switch str(e, "valueCode") {
		case "address":
			pd.clearedAddress = true
		case "generalPractitioner":
			pd.clearedGP = true
		case "deceased":
			pd.clearedDeceased = true
		}
	}
	for _, x := range list(res, "link") {
		l, _ := x.(map[string]any)
		if str(l, "type") == "replaced-by" {
			if r := str(obj(l, "other"), "reference"); r != "" && pd.replacedBy == "" {
				pd.replacedBy = r
			}
		}
	}
	return pd
}

// readFlag reads a Flag resource: its first coding with a system and a
// code, its period, whether it is still in force, and as origin the ODS
// code of its author when the author is identified by one (never a
// person). It reports false for a Flag without a usable code or status.
func readFlag(res map[string]any) (flagData, bool) {
	var fd flagData
	for _, x := range list(obj(res, "code"), "coding") {
		c, _ := x.(map[string]any)
		if system, code := str(c, "system"), str(c, "code"); system != "" && code != "" {
			fd.flag.System, fd.flag.Code, fd.flag.Display = system, code, str(c, "display")
			break
		}
	}
	if fd.flag.Code == "" {
		return fd, false
	}
	period := obj(res, "period")
	start, startOK := flagTime(str(period, "start"), false)
	end, endOK := flagTime(str(period, "end"), true)
	if !startOK || !endOK {
		return fd, false
	}
	fd.flag.Start, fd.flag.End = start, end
	switch str(res, "status") {
	case "active":
	case "inactive", "entered-in-error":
		fd.cleared, fd.clearedAt = true, end
	default:
		return fd, false
	}
	if id := obj(obj(res, "author"), "identifier"); str(id, "system") == nhs.SystemODSOrganization && str(id, "value") != "" {
		fd.flag.Origin = "ods:" + str(id, "value")
	}
	return fd, true
}

// flagTime parses a FHIR dateTime of a Flag's period: empty is open (zero
// time). A date, year-month or year alone (an English calendar span,
// fhir.DateSpan; a time without a zone is read in England too) stands
// for the span it names: as a start, its first instant; as an end (end true), the
// first instant after it, since a Period's end includes every time that
// matches it, so a flag ending "2026-07-31" applies all that day.
func flagTime(s string, end bool) (time.Time, bool) {
	if s == "" {
		return time.Time{}, true
	}
	from, until, err := fhir.DateSpan(s, true)
	if err != nil {
		return time.Time{}, false
	}
	if end && len(s) <= len(time.DateOnly) {
		return until, true
	}
	return from, true
}

// readName takes the first official name, else the first name.
func (pd *patientData) readName(names []any) {
	var pick map[string]any
	for _, x := range names {
		n, _ := x.(map[string]any)
		if n == nil {
			continue
		}
		if pick == nil || str(n, "use") == "official" && str(pick, "use") != "official" {
			pick = n
		}
	}
	if pick == nil {
		return
	}
	pd.family = str(pick, "family")
	for _, g := range list(pick, "given") {
		if s, ok := g.(string); ok && s != "" {
			pd.given = append(pd.given, s)
		}
	}
}

// postcode returns the postcode of the first home address that has one,
// else of the first address that has one.
func postcode(addresses []any) string {
	first := ""
	for _, x := range addresses {
		a, _ := x.(map[string]any)
		pc := strings.ToUpper(strings.TrimSpace(str(a, "postalCode")))
		if pc == "" {
			continue
		}
		if str(a, "use") == "home" {
			return pc
		}
		if first == "" {
			first = pc
		}
	}
	return first
}

// readGP reads one generalPractitioner reference: an Organization with an
// ODS code gives the practice, a Practitioner with a GMP code the GP. The
// reference may resolve to a bundle entry or carry a logical identifier.
func (pd *patientData) readGP(ref map[string]any, byRef bundleRefs) {
	typ := str(ref, "type")
	var ids []any
	if target := byRef.resolve(str(ref, "reference")); target != nil {
		typ = str(target, "resourceType")
		ids = list(target, "identifier")
	} else if id := obj(ref, "identifier"); id != nil {
		ids = []any{id}
	}
	for _, x := range ids {
		id, _ := x.(map[string]any)
		system, value := str(id, "system"), strings.TrimSpace(str(id, "value"))
		switch {
		case value == "":
		case typ == "Organization" && system == nhs.SystemODSOrganization && pd.gpPractice == "":
			pd.gpPractice = strings.ToUpper(value)
		case typ == "Practitioner" && system == nhs.SystemGMP && pd.gp == "":
			pd.gp = strings.ToUpper(value)
		}
	}
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func obj(m map[string]any, k string) map[string]any {
	o, _ := m[k].(map[string]any)
	return o
}

func list(m map[string]any, k string) []any {
	l, _ := m[k].([]any)
	return l
}
