package pathology

import (
	"encoding/json"
	"strings"
)

// The order encoder reads FHIR JSON into these small structs rather than
// the full models: it needs few elements, and unknown or extra elements
// (extensions, profiles, narrative) must never stop an order.

type fhirEntry struct {
	FullURL  string          `json:"fullUrl"`
	Resource json.RawMessage `json:"resource"`
}

type fhirBundle struct {
	ResourceType string      `json:"resourceType"`
	Entry        []fhirEntry `json:"entry"`
}

type fhirResourceHead struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
}

type fhirCoding struct {
	System  string `json:"system"`
	Code    string `json:"code"`
	Display string `json:"display"`
}

type fhirConcept struct {
	Coding []fhirCoding `json:"coding"`
	Text   string       `json:"text"`
}

type fhirIdentifier struct {
	System   string       `json:"system"`
	Value    string       `json:"value"`
	Type     *fhirConcept `json:"type"`
	Assigner *fhirRef     `json:"assigner"`
}

type fhirRef struct {
	Reference  string          `json:"reference"`
	Type       string          `json:"type"`
	Identifier *fhirIdentifier `json:"identifier"`
	Display    string          `json:"display"`
}

type fhirPeriod struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

type fhirName struct {
	Use    string   `json:"use"`
	Text   string   `json:"text"`
	Family string   `json:"family"`
	Given  []string `json:"given"`
	Prefix []string `json:"prefix"`
	Suffix []string `json:"suffix"`
}

type fhirAddress struct {
	Use        string   `json:"use"`
	Line       []string `json:"line"`
	City       string   `json:"city"`
	District   string   `json:"district"`
	PostalCode string   `json:"postalCode"`
	Country    string   `json:"country"`
}

type fhirTelecom struct {
	System string `json:"system"`
	Value  string `json:"value"`
	Use    string `json:"use"`
}

type fhirPatient struct {
	Identifier []fhirIdentifier `json:"identifier"`
	Name       []fhirName       `json:"name"`
	Gender     string           `json:"gender"`
	BirthDate  string           `json:"birthDate"`
	Address    []fhirAddress    `json:"address"`
	Telecom    []fhirTelecom    `json:"telecom"`
}

type fhirNote struct {
	Text string `json:"text"`
}

type fhirServiceRequest struct {
	Identifier         []fhirIdentifier `json:"identifier"`
	Status             string           `json:"status"`
	Intent             string           `json:"intent"`
	Priority           string           `json:"priority"`
	Code               *fhirConcept     `json:"code"`
	Subject            fhirRef          `json:"subject"`
	Encounter          *fhirRef         `json:"encounter"`
	OccurrenceDateTime string           `json:"occurrenceDateTime"`
	OccurrencePeriod   *fhirPeriod      `json:"occurrencePeriod"`
	AuthoredOn         string           `json:"authoredOn"`
	Requester          *fhirRef         `json:"requester"`
	ReasonCode         []fhirConcept    `json:"reasonCode"`
	Specimen           []fhirRef        `json:"specimen"`
	Note               []fhirNote       `json:"note"`
}

type fhirSpecimen struct {
	Identifier          []fhirIdentifier `json:"identifier"`
	AccessionIdentifier *fhirIdentifier  `json:"accessionIdentifier"`
	Status              string           `json:"status"`
	Type                *fhirConcept     `json:"type"`
	ReceivedTime        string           `json:"receivedTime"`
	Request             []fhirRef        `json:"request"`
	Collection          *struct {
		CollectedDateTime string       `json:"collectedDateTime"`
		CollectedPeriod   *fhirPeriod  `json:"collectedPeriod"`
		Method            *fhirConcept `json:"method"`
		BodySite          *fhirConcept `json:"bodySite"`
	} `json:"collection"`
}

type fhirPractitioner struct {
	Identifier []fhirIdentifier `json:"identifier"`
	Name       []fhirName       `json:"name"`
}

type fhirPractitionerRole struct {
	Practitioner *fhirRef `json:"practitioner"`
	Organization *fhirRef `json:"organization"`
}

type fhirOrganization struct {
	Identifier []fhirIdentifier `json:"identifier"`
	Name       string           `json:"name"`
}

type fhirEncounter struct {
	Identifier []fhirIdentifier `json:"identifier"`
	Class      *fhirCoding      `json:"class"`
	Period     *fhirPeriod      `json:"period"`
	Location   []struct {
		Location fhirRef `json:"location"`
	} `json:"location"`
}

// bundleIndex is an order bundle's entries, found by fullUrl and by
// "Type/id".
type bundleIndex struct {
	entries []indexedEntry
	byURL   map[string]int
}

type indexedEntry struct {
	fullURL string
	typ     string
	id      string
	raw     json.RawMessage
}

// indexBundle indexes the entries of b.
func indexBundle(b *fhirBundle) (*bundleIndex, error) {
	ix := &bundleIndex{byURL: map[string]int{}}
	for _, e := range b.Entry {
		if len(e.Resource) == 0 {
			continue
		}
		var h fhirResourceHead
		if err := json.Unmarshal(e.Resource, &h); err != nil {
			return nil, err
		}
		i := len(ix.entries)
		ix.entries = append(ix.entries, indexedEntry{fullURL: e.FullURL, typ: h.ResourceType, id: h.ID, raw: e.Resource})
		if e.FullURL != "" {
			if _, dup := ix.byURL[e.FullURL]; !dup {
				ix.byURL[e.FullURL] = i
			}
		}
		if h.ResourceType != "" && h.ID != "" {
			k := h.ResourceType + "/" + h.ID
			if _, dup := ix.byURL[k]; !dup {
				ix.byURL[k] = i
			}
		}
	}
	return ix, nil
}

// resolve returns the entry a reference points to, of type typ, or nil.
// A reference matches an entry by fullUrl, by "Type/id", or, when it is
// an absolute URL, by its last two path segments.
func (ix *bundleIndex) resolve(ref *fhirRef, typ string) *indexedEntry {
	if ref == nil || ref.Reference == "" {
		return nil
	}
	i, ok := ix.byURL[ref.Reference]
	if !ok {
		parts := strings.Split(strings.TrimRight(ref.Reference, "/"), "/")
		if n := len(parts); n >= 2 {
			i, ok = ix.byURL[parts[n-2]+"/"+parts[n-1]]
		}
	}
	if !ok || ix.entries[i].typ != typ {
		return nil
	}
	return &ix.entries[i]
}

// refersTo reports whether ref points at entry e.
func (ix *bundleIndex) refersTo(ref fhirRef, e *indexedEntry) bool {
	got := ix.resolve(&ref, e.typ)
	return got != nil && got == e
}

// ofType returns the entries of one resource type, in bundle order.
func (ix *bundleIndex) ofType(typ string) []*indexedEntry {
	var out []*indexedEntry
	for i := range ix.entries {
		if ix.entries[i].typ == typ {
			out = append(out, &ix.entries[i])
		}
	}
	return out
}
