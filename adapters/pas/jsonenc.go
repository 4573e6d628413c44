package pas

import "github.com/junction-fhir/junction/pkg/fhir"

// pasJSON is how the translator writes resources: the bytes
// fhir.MarshalResource gives (empty elements pruned, "<", ">" and "&"
// escaped as encoding/json escapes them).
var pasJSON = fhir.EncodeOptions{Prune: true, EscapeHTML: true}

// appendResource appends the FHIR JSON of a samply model resource to buf,
// the same bytes fhir.MarshalResource gives, written in one pass by the
// translator's fhir.ModelEncoder. fhir.MarshalResource marshals with
// encoding/json, re-compacts the nested MarshalJSON output, validates and
// prunes, several passes that made up most of the translation time.
// TestAppendResourceMatchesMarshal keeps the two equal.
func (t *Translator) appendResource(buf []byte, resource any) []byte {
	return t.enc.AppendResource(buf, resource, pasJSON)
}
