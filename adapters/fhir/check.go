package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/nhs"
)

// decodeAs checks that raw decodes into the samply model T: the JSON
// types match the model and every coded element with a required binding
// holds a known code.
func decodeAs[T any](raw []byte) error {
	var v T
	return json.Unmarshal(unescapeASCII(raw), &v)
}

// unescapeASCII returns raw with each \u escape of a printable ASCII
// character other than a quote or backslash written as the character
// itself. The samply models compare a code's JSON text as it is written,
// so "m\u0061le", valid JSON for "male", would be refused as an unknown
// gender; the body stored and routed is not changed.
func unescapeASCII(raw []byte) []byte {
	i := bytes.Index(raw, []byte(`\u`))
	if i < 0 {
		return raw
	}
	// Read every escape from the first backslash on: in "\\u0061" the
	// backslash is escaped, and the u is a letter.
	i = bytes.IndexByte(raw, '\\')
	out := make([]byte, 0, len(raw))
	out = append(out, raw[:i]...)
	for i < len(raw) {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			out = append(out, c)
			i++
			continue
		}
		if raw[i+1] == 'u' && i+6 <= len(raw) {
			if r, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16); err == nil && r >= 0x20 && r < 0x7f && r != '"' && r != '\\' {
				out = append(out, byte(r))
				i += 6
				continue
			}
		}
		// Any other escape, copied whole so its second byte is not
		// read as the start of one.
		out = append(out, c, raw[i+1])
		i += 2
	}
	return out
}

// checker decodes a resource of one type into its samply model (decode)
// and names the model's Go type, whose JSON names are FHIR's element names.
type checker struct {
	decode func([]byte) error
	typ    reflect.Type
}

// checkAs returns the checker of the samply model T.
func checkAs[T any]() checker { return checker{decode: decodeAs[T], typ: reflect.TypeFor[T]()} }

// checkers holds the resource types whose structure this adapter checks
// with the samply models. Single resources of other types are refused;
// inside a Bundle, entries of other valid R4 types are accepted unchecked.
var checkers = map[string]checker{
	"AllergyIntolerance":         checkAs[models.AllergyIntolerance](),
	"Appointment":                checkAs[models.Appointment](),
	"Binary":                     checkAs[models.Binary](),
	"Bundle":                     checkAs[models.Bundle](),
	"CarePlan":                   checkAs[models.CarePlan](),
	"CareTeam":                   checkAs[models.CareTeam](),
	"Communication":              checkAs[models.Communication](),
	"Composition":                checkAs[models.Composition](),
	"Condition":                  checkAs[models.Condition](),
	"Consent":                    checkAs[models.Consent](),
	"Device":                     checkAs[models.Device](),
	"DiagnosticReport":           checkAs[models.DiagnosticReport](),
	"DocumentReference":          checkAs[models.DocumentReference](),
	"Encounter":                  checkAs[models.Encounter](),
	"EpisodeOfCare":              checkAs[models.EpisodeOfCare](),
	"Flag":                       checkAs[models.Flag](),
	"HealthcareService":          checkAs[models.HealthcareService](),
	"Immunization":               checkAs[models.Immunization](),
	"Location":                   checkAs[models.Location](),
	"Medication":                 checkAs[models.Medication](),
	"MedicationAdministration":   checkAs[models.MedicationAdministration](),
	"MedicationDispense":         checkAs[models.MedicationDispense](),
	"MedicationRequest":          checkAs[models.MedicationRequest](),
	"MedicationStatement":        checkAs[models.MedicationStatement](),
	"MessageHeader":              checkAs[models.MessageHeader](),
	"Observation":                checkAs[models.Observation](),
	"Organization":               checkAs[models.Organization](),
	"Patient":                    checkAs[models.Patient](),
	"Practitioner":               checkAs[models.Practitioner](),
	"PractitionerRole":           checkAs[models.PractitionerRole](),
	"Procedure":                  checkAs[models.Procedure](),
	"Provenance":                 checkAs[models.Provenance](),
	"QuestionnaireResponse":      checkAs[models.QuestionnaireResponse](),
	"RelatedPerson":              checkAs[models.RelatedPerson](),
	"ServiceRequest":             checkAs[models.ServiceRequest](),
	"Specimen":                   checkAs[models.Specimen](),
	"Task":                       checkAs[models.Task](),
	"DetectedIssue":              checkAs[models.DetectedIssue](),
	"FamilyMemberHistory":        checkAs[models.FamilyMemberHistory](),
	"ImagingStudy":               checkAs[models.ImagingStudy](),
	"List":                       checkAs[models.List](),
	"OperationOutcome":           checkAs[models.OperationOutcome](),
	"CommunicationRequest":       checkAs[models.CommunicationRequest](),
	"Goal":                       checkAs[models.Goal](),
	"ClinicalImpression":         checkAs[models.ClinicalImpression](),
	"RiskAssessment":             checkAs[models.RiskAssessment](),
	"NutritionOrder":             checkAs[models.NutritionOrder](),
	"ImmunizationRecommendation": checkAs[models.ImmunizationRecommendation](),
}

// SupportedResourceTypes lists, sorted, the types resource_types may name.
func SupportedResourceTypes() []string {
	out := make([]string, 0, len(checkers))
	for t := range checkers {
		if t != "Bundle" {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

func supportedType(t string) bool {
	_, ok := checkers[t]
	return ok
}

// depthOffset returns the offset of the first bracket nesting deeper than
// max, or -1. It looks only at brackets outside strings, so it is cheap and
// never recurses; syntax is checked later by the JSON decoder.
func depthOffset(b []byte, max int) int {
	depth := 0
	inString, escaped := false, false
	for i, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > max {
				return i
			}
		case '}', ']':
			depth--
		}
	}
	return -1
}

// utf8BOM is the byte order mark some Windows software puts before JSON.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// stripBOM returns b without a leading UTF-8 byte order mark.
func stripBOM(b []byte) []byte { return bytes.TrimPrefix(b, utf8BOM) }

// jsonError describes a decoding error by position only, so that neither
// logs nor replies echo payload content the error may quote.
func jsonError(err error) string {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		// Offset counts the bytes read, including the offending one; report
		// the 0-based position of that byte.
		pos := syn.Offset - 1
		if pos < 0 {
			pos = 0
		}
		return fmt.Sprintf("invalid JSON at offset %d: %s", pos, syntaxReason(syn.Error()))
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		// Value is a JSON kind, followed for a number out of the field's
		// range by the number itself: keep only the kind.
		got, _, _ := strings.Cut(typ.Value, " ")
		if typ.Field != "" {
			return fmt.Sprintf("wrong JSON type for %s at offset %d (want %s, got %s)", typ.Field, typ.Offset, jsonKind(typ.Type), got)
		}
		return fmt.Sprintf("wrong JSON type at offset %d (want %s, got %s)", typ.Offset, jsonKind(typ.Type), got)
	}
	return "invalid JSON"
}

// syntaxReason keeps the encoding/json syntax message only when it is one
// of the fixed texts that quote no input (such as "unexpected end of JSON
// input"); messages that quote a character are reduced to "unexpected
// character".
func syntaxReason(msg string) string {
	if strings.Contains(msg, "'") {
		return "unexpected character"
	}
	return msg
}

// fhirIdentifier is the part of a FHIR Identifier this package reads.
type fhirIdentifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

// identifiers decodes a resource's top-level identifier element, which is
// an array for most types and a single object for a few (Bundle,
// QuestionnaireResponse).
func identifiers(raw json.RawMessage) []fhirIdentifier {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil
	}
	if raw[0] == '{' {
		var one fhirIdentifier
		if json.Unmarshal(raw, &one) != nil {
			return nil
		}
		return []fhirIdentifier{one}
	}
	var many []fhirIdentifier
	if json.Unmarshal(raw, &many) != nil {
		return nil
	}
	return many
}

// patientRef is the part of a Reference this package reads.
type patientRef struct {
	Identifier *fhirIdentifier `json:"identifier"`
	Reference  string          `json:"reference"`
}

// patientKeys are what a body says about its patient.
type patientKeys struct {
	// NHS is the first NHS number found (normalised, not checked).
	NHS string
	// First is the first identifier value of the first patient found.
	First string
	// Local is the first identifier value that is not an NHS number, of
	// the first patient that has one.
	Local string
	// Found reports whether a patient was found at all.
	Found bool
	// Referenced reports a subject or patient given only as a literal
	// reference (Patient/123): about a patient, but not one this body
	// identifies, so consent cannot look their choices up.
	Referenced bool
}

// patientKeysOf finds the patient of a resource: a Patient's own
// identifiers, or for other types the identifier in subject or patient.
// For a Bundle it looks at its Patient entries, and when there are none at
// the subject or patient of each entry.
func patientKeysOf(body []byte, resourceType string) patientKeys {
	if resourceType != "Bundle" {
		return keysOfResource(body, resourceType)
	}
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if json.Unmarshal(body, &b) != nil {
		return patientKeys{}
	}
	var out patientKeys
	// Patients first, then references from other resources.
	for pass := 0; pass < 2; pass++ {
		for _, e := range b.Entry {
			var head struct {
				ResourceType string `json:"resourceType"`
			}
			if json.Unmarshal(e.Resource, &head) != nil {
				continue
			}
			if (pass == 0) != (head.ResourceType == "Patient") {
				continue
			}
			k := keysOfResource(e.Resource, head.ResourceType)
			out.Referenced = out.Referenced || k.Referenced
			if !k.Found {
				continue
			}
			if out.First == "" {
				out.First = k.First
			}
			if out.Local == "" {
				out.Local = k.Local
			}
			out.Found = true
			if k.NHS != "" {
				out.NHS = k.NHS
				return out
			}
		}
		if out.Found {
			return out
		}
	}
	return out
}

func keysOfResource(raw []byte, resourceType string) patientKeys {
	var r struct {
		Identifier json.RawMessage `json:"identifier"`
		Subject    *patientRef     `json:"subject"`
		Patient    *patientRef     `json:"patient"`
	}
	if json.Unmarshal(raw, &r) != nil {
		return patientKeys{}
	}
	var ids []fhirIdentifier
	var k patientKeys
	if resourceType == "Patient" {
		ids = identifiers(r.Identifier)
	} else {
		for _, ref := range []*patientRef{r.Subject, r.Patient} {
			switch {
			case ref == nil:
			case ref.Identifier != nil:
				ids = append(ids, *ref.Identifier)
			case len(nhs.SearchedNumbers(ref.Reference)) > 0:
				// A conditional reference by NHS number
				// (Patient?identifier=...|...) identifies the patient.
				ids = append(ids, fhirIdentifier{System: nhs.SystemNHSNumber, Value: nhs.SearchedNumbers(ref.Reference)[0]})
			case strings.HasPrefix(ref.Reference, "Patient/"):
				k.Referenced = true
			}
		}
	}
	for _, id := range ids {
		if id.Value == "" {
			continue
		}
		k.Found = true
		if k.First == "" {
			k.First = id.Value
		}
		if id.System == nhs.SystemNHSNumber {
			if k.NHS == "" {
				k.NHS = nhs.Normalize(id.Value)
			}
		} else if k.Local == "" {
			k.Local = id.Value
		}
	}
	if resourceType == "Patient" {
		k.Found = true
	}
	return k
}

// jsonKind names, in JSON's terms, what a value decoded into t must be,
// rather than the Go type (such as []fhir.HumanName) a sender cannot
// know.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another type"
}

// keyProblem finds, in valid JSON doc, what the models' decoder would
// read differently from the rest of Junction: an object holding two keys
// that are the same but for case (encoding/json matches keys to fields
// without regard to case and keeps the last, where FHIR JSON and
// Junction's own reader keep the first), a key that is not ASCII (the
// decoder also matches some other letters, such as ſ to s), a key spelled
// like resourceType in another case, and a number too large for a
// float64 (which routing cannot read). It returns the offset of the first
// such key or number and what is wrong, or -1. The reason names a key
// only when it is a plain element name, never a value.
//
// It scans the bytes once without decoding them (doc was checked for
// syntax before), so it costs little beside the other checks.
func keyProblem(doc []byte) (int, string) {
	// One frame per open container. In an object, expectKey says a key
	// comes next; keys holds its keys so far, and set replaces keys once
	// there are many, so an object of very many keys stays linear.
	type frame struct {
		object, expectKey bool
		keys              [][]byte
		set               map[string]bool
	}
	const manyKeys = 32
	var frames []frame
	depth := 0
	// member ends a value in the innermost container: in an object, a key
	// comes next.
	member := func() {
		if depth > 0 && frames[depth-1].object {
			frames[depth-1].expectKey = true
		}
	}
	for i := 0; i < len(doc); {
		switch c := doc[i]; c {
		case ' ', '\t', '\n', '\r', ',', ':':
			i++
		case '{', '[':
			member() // after this container, a key comes next
			if depth == len(frames) {
				frames = append(frames, frame{})
			}
			f := &frames[depth]
			f.object, f.expectKey, f.keys, f.set = c == '{', c == '{', f.keys[:0], nil
			depth++
			i++
		case '}', ']':
			depth--
			i++
		case '"':
			end, escaped := stringEnd(doc, i)
			if depth == 0 || !frames[depth-1].object || !frames[depth-1].expectKey {
				member() // a string value
				i = end
				continue
			}
			f := &frames[depth-1]
			f.expectKey = false
			key := doc[i+1 : end-1]
			if escaped {
				var k string
				if json.Unmarshal(doc[i:end], &k) != nil {
					return i, "a key that cannot be read"
				}
				key = []byte(k)
			}
			if !isASCII(string(key)) {
				// FHIR element names are ASCII; encoding/json would
				// match some other letters to them (ſ to s).
				return i, "a key that is not ASCII: FHIR element names are"
			}
			if f.set == nil {
				for _, k := range f.keys {
					if bytes.EqualFold(k, key) {
						return i, "an object holds the key " + elementName(string(key)) + " twice (or twice in different cases)"
					}
				}
				f.keys = append(f.keys, key)
				if len(f.keys) > manyKeys {
					f.set = make(map[string]bool, 2*manyKeys)
					for _, k := range f.keys {
						f.set[strings.ToLower(string(k))] = true
					}
				}
			} else {
				fold := strings.ToLower(string(key))
				if f.set[fold] {
					return i, "an object holds the key " + elementName(string(key)) + " twice (or twice in different cases)"
				}
				f.set[fold] = true
			}
			if bytes.EqualFold(key, []byte("resourceType")) && string(key) != "resourceType" {
				return i, "key " + elementName(string(key)) + " is not resourceType: FHIR element names are case-sensitive"
			}
			i = end
		default: // a number, true, false or null
			start := i
			for i < len(doc) && !jsonDelimiter(doc[i]) {
				i++
			}
			if lit := doc[start:i]; (c == '-' || c >= '0' && c <= '9') && (len(lit) > 300 || bytes.ContainsAny(lit, "eE")) {
				// Only an exponent, or more digits than a float64 spans,
				// can be out of its range.
				if _, err := strconv.ParseFloat(string(lit), 64); err != nil {
					return start, "a number too large to read"
				}
			}
			member()
		}
	}
	return -1, ""
}

// stringEnd returns the offset just past the JSON string that starts
// with the quote at doc[i], and whether it holds an escape.
func stringEnd(doc []byte, i int) (int, bool) {
	escaped := false
	for j := i + 1; j < len(doc); {
		k := bytes.IndexAny(doc[j:], "\"\\")
		if k < 0 {
			return len(doc), escaped
		}
		j += k
		if doc[j] == '"' {
			return j + 1, escaped
		}
		escaped = true
		j += 2 // the backslash and the character it escapes
	}
	return len(doc), escaped
}

// jsonDelimiter reports whether c ends a JSON number or literal.
func jsonDelimiter(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r', ':':
		return true
	}
	return false
}

// elementName quotes key when it is the name of an element of a resource
// this adapter checks (or that name with the leading underscore of a
// primitive's extensions, or a resource type), and otherwise describes it
// without its content: a key that is no element name may be patient data
// a sender's mapping put in the wrong place ("smithjohn9990000018").
func elementName(key string) string {
	// Another case of a known name is the mistake being reported.
	if knownNames()[strings.ToLower(strings.TrimPrefix(key, "_"))] || isResourceType(key) {
		return strconv.Quote(key)
	}
	return "(not shown)"
}

// knownNames returns the JSON names, in lower case, of every element of
// the checked models and the types they hold, gathered once.
var knownNames = sync.OnceValue(func() map[string]bool {
	names := map[string]bool{"resourcetype": true}
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for f := range t.Fields() {
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
				names[strings.ToLower(name)] = true
			}
			walk(f.Type)
		}
	}
	for _, c := range checkers {
		walk(c.typ)
	}
	return names
})

// isASCII reports whether s holds only ASCII characters.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// fhirJSONProblem finds, in valid JSON doc, what FHIR JSON does not allow
// though JSON does: null other than as an array's item (where it lines a
// repeating primitive's items up with their extensions), an empty object
// or array, an empty string, and a string holding a control character
// other than tab, line feed and carriage return. It returns the offset of
// the first and what it is, or -1. It never quotes the value.
//
// Like keyProblem it scans the bytes once without decoding them.
func fhirJSONProblem(doc []byte) (int, string) {
	// For each open container: whether it is an array, and whether it
	// has no member yet.
	var array, empty []bool
	for i := 0; i < len(doc); {
		switch c := doc[i]; c {
		case ' ', '\t', '\n', '\r', ',', ':':
			i++
		case '{', '[':
			if n := len(empty); n > 0 {
				empty[n-1] = false
			}
			array, empty = append(array, c == '['), append(empty, true)
			i++
		case '}', ']':
			n := len(empty) - 1
			if empty[n] {
				if c == '}' {
					return i, "an empty object: FHIR JSON has none (leave the element out)"
				}
				return i, "an empty array: FHIR JSON has none (leave the element out)"
			}
			array, empty = array[:n], empty[:n]
			i++
		case '"':
			end, escaped := stringEnd(doc, i)
			// A key is followed by a colon; a value is not.
			j := end
			for j < len(doc) && (doc[j] == ' ' || doc[j] == '\t' || doc[j] == '\n' || doc[j] == '\r') {
				j++
			}
			isKey := j < len(doc) && doc[j] == ':'
			if !isKey {
				if n := len(empty); n > 0 {
					empty[n-1] = false
				}
				if end-i == 2 {
					return i, "an empty string: FHIR JSON has none (leave the element out)"
				}
				if escaped {
					var v string
					if json.Unmarshal(doc[i:end], &v) == nil {
						if strings.IndexFunc(v, isControlRune) >= 0 {
							return i, "a string holding a control character: FHIR strings may not"
						}
						if loneSurrogate(doc[i:end], v) {
							return i, "a string holding an unpaired surrogate escape (\\uD800 to \\uDFFF): it is no Unicode text"
						}
					}
				}
			}
			i = end
		default: // a number, true, false or null
			start := i
			for i < len(doc) && !jsonDelimiter(doc[i]) {
				i++
			}
			n := len(empty)
			if c == 'n' && (n == 0 || !array[n-1]) {
				return start, "null: FHIR JSON has none but as an array's item (leave the element out)"
			}
			if n > 0 {
				empty[n-1] = false
			}
		}
	}
	return -1, ""
}

// loneSurrogate reports whether the JSON string raw, decoded as v, held
// an escaped surrogate that pairs with none: encoding/json decodes it as
// U+FFFD, which raw then does not hold itself (as bytes or an escape).
func loneSurrogate(raw []byte, v string) bool {
	return strings.ContainsRune(v, utf8.RuneError) &&
		!bytes.Contains(raw, []byte(string(utf8.RuneError))) && !bytes.Contains(bytes.ToLower(raw), []byte(`\ufffd`))
}

// isControlRune reports whether r is a control character FHIR strings
// may not hold.
func isControlRune(r rune) bool { return r < 0x20 && r != '\t' && r != '\n' && r != '\r' }
