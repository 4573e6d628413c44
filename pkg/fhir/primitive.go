package fhir

// ExtensionPatientBirthTime is the URL of the FHIR core extension that
// gives the time of birth on Patient.birthDate.
const ExtensionPatientBirthTime = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"

// InsertPrimitiveExtension returns obj, the JSON of one resource as
// AppendResource or MarshalResource write it, with an extension added to
// its top-level primitive element: `"_element":{"extension":[{"url":url,
// valueKey:value}]}` is inserted right after the element's member, such as
// "_birthDate" after "birthDate". valueKey is the extension's value[x]
// member ("valueDateTime") and value a JSON string value. The samply
// models have no members for the extensions of primitives, so this is how
// a translator writes one. It reports false, with obj unchanged, when obj
// has no top-level member element whose value is a string. obj may be
// the tail of a larger buffer: the insertion grows obj in place.
func InsertPrimitiveExtension(obj []byte, element, url, valueKey, value string) ([]byte, bool) {
	at := primitiveEnd(obj, element)
	if at < 0 {
		return obj, false
	}
	ext := make([]byte, 0, 64+len(element)+len(url)+len(valueKey)+len(value))
	ext = append(ext, ',')
	ext = appendString(ext, "_"+element, true)
	ext = append(ext, `:{"extension":[{"url":`...)
	ext = appendString(ext, url, true)
	ext = append(ext, ',')
	ext = appendString(ext, valueKey, true)
	ext = append(ext, ':')
	ext = appendString(ext, value, true)
	ext = append(ext, "}]}"...)
	n := len(obj)
	obj = append(obj, ext...)
	copy(obj[at+len(ext):], obj[at:n])
	copy(obj[at:], ext)
	return obj, true
}

// primitiveEnd returns the offset just after the string value of the
// top-level member key of the JSON object obj, or -1 if there is none.
// obj must be valid JSON.
func primitiveEnd(obj []byte, key string) int {
	depth := 0
	expectKey := false
	for i := 0; i < len(obj); i++ {
		switch c := obj[i]; c {
		case '"':
			j := stringEnd(obj, i)
			if j < 0 {
				return -1
			}
			if depth == 1 && expectKey {
				expectKey = false
				if string(obj[i+1:j]) == key {
					k := j + 1
					for k < len(obj) && (obj[k] == ':' || isSpace(obj[k])) {
						k++
					}
					if k >= len(obj) || obj[k] != '"' {
						return -1
					}
					end := stringEnd(obj, k)
					if end < 0 {
						return -1
					}
					return end + 1
				}
			}
			i = j
		case '{', '[':
			depth++
			expectKey = c == '{' && depth == 1
		case '}', ']':
			depth--
		case ',':
			expectKey = depth == 1
		}
	}
	return -1
}

// stringEnd returns the offset of the quote that closes the JSON string
// opening at obj[i], or -1.
func stringEnd(obj []byte, i int) int {
	for j := i + 1; j < len(obj); j++ {
		switch obj[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return -1
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
