package pas

import (
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fhir"
)

// Sizes of the chunks an arena allocates: one chunk of each holds an
// ADT^A01 with every mapped segment (PID, PD1, two NK1, PV1 with four
// doctors, two AL1, two DG1); bigger messages take more chunks.
const (
	arenaStrings = 192
	arenaMetas   = 12
	arenaCodes   = 16
	arenaIDs     = 8
	arenaText    = 1024
)

// arena hands out the small values one translation's models point to
// (strings, Metas, fullUrls and joined displays) from a few larger
// allocations. The models hold almost every string by pointer, and an
// allocation per pointer was, after the JSON encoding, the largest cost
// of a translation. The values of one translation live and die together;
// a model kept after it (Translator.Patient's) keeps the chunks it points
// into alive. The zero arena is ready to use; it is not safe for
// concurrent use.
type arena struct {
	strs  []string
	metas []metaSlot
	codes []conceptSlot
	ids   []models.Identifier
	// text holds fullUrls and displays back to back. Each is a substring
	// of text.String(); a full chunk is left to the strings made from it
	// and a new one started (reserve), so no byte handed out is written
	// again.
	text strings.Builder
	// small makes chunks a quarter of the size, for translations that
	// make only a Patient (Translator.Patient).
	small bool
}

// chunk returns how many values of a kind a new chunk holds, given the
// size for a whole ADT message.
func (a *arena) chunk(n int) int {
	if a.small {
		return max(n/4, 1)
	}
	return n
}

// metaSlot is a Meta with room for its one profile. The slots of
// arena.metas are those in use, in a chunk of capacity chunk(arenaMetas).
type metaSlot struct {
	meta    models.Meta
	profile [1]string
}

// conceptSlot is a CodeableConcept with room for its one Coding.
type conceptSlot struct {
	cc     [1]models.CodeableConcept
	coding [1]models.Coding
}

// concept returns a CodeableConcept of one Coding; an empty display is
// left out.
func (a *arena) concept(system, code, display string) *models.CodeableConcept {
	return &a.concepts(system, code, display)[0]
}

// concepts returns concept(system, code, display) as a slice of one, for
// elements that repeat.
func (a *arena) concepts(system, code, display string) []models.CodeableConcept {
	if len(a.codes) == 0 {
		a.codes = make([]conceptSlot, a.chunk(arenaCodes))
	}
	c := &a.codes[0]
	a.codes = a.codes[1:]
	c.coding[0] = models.Coding{System: a.str(system), Code: a.str(code), Display: a.optional(display)}
	c.cc[0].Coding = c.coding[:]
	return c.cc[:]
}

// identifier returns a slice of one Identifier of system and value.
func (a *arena) identifier(system, value string) []models.Identifier {
	if len(a.ids) == 0 {
		a.ids = make([]models.Identifier, a.chunk(arenaIDs))
	}
	out := a.ids[:1:1]
	a.ids = a.ids[1:]
	out[0] = models.Identifier{System: a.str(system), Value: a.str(value)}
	return out
}

// str returns a pointer to a copy of s.
func (a *arena) str(s string) *string {
	if len(a.strs) == 0 {
		a.strs = make([]string, a.chunk(arenaStrings))
	}
	p := &a.strs[0]
	*p = s
	a.strs = a.strs[1:]
	return p
}

// nonEmpty returns the strings of vs that are not empty, or nil.
func (a *arena) nonEmpty(vs ...string) []string {
	n := 0
	for _, v := range vs {
		if v != "" {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if len(a.strs) < n {
		a.strs = make([]string, max(a.chunk(arenaStrings), n))
	}
	out := a.strs[:0:n] // its capacity ends where the next value starts
	for _, v := range vs {
		if v != "" {
			out = append(out, v)
		}
	}
	a.strs = a.strs[n:]
	return out
}

// optional returns a pointer to a copy of s, or nil when s is empty.
func (a *arena) optional(s string) *string {
	if s == "" {
		return nil
	}
	return a.str(s)
}

// ref returns a Reference to url of type typ.
func (a *arena) ref(url, typ string) models.Reference {
	return models.Reference{Reference: a.str(url), Type: a.str(typ)}
}

// meta returns a Meta naming profile. Resources of one profile share
// it: the models are only read once built.
func (a *arena) meta(profile string) *models.Meta {
	for i := range a.metas {
		if a.metas[i].profile[0] == profile {
			return &a.metas[i].meta
		}
	}
	if len(a.metas) == cap(a.metas) {
		a.metas = make([]metaSlot, 0, a.chunk(arenaMetas))
	}
	a.metas = append(a.metas, metaSlot{profile: [1]string{profile}})
	m := &a.metas[len(a.metas)-1]
	m.meta.Profile = m.profile[:]
	return &m.meta
}

// reserve makes room for n more bytes of text without moving what the
// current chunk holds, starting a new chunk when it is full.
func (a *arena) reserve(n int) {
	if a.text.Cap()-a.text.Len() < n {
		a.text = strings.Builder{} // earlier strings keep the old chunk
		a.text.Grow(max(n, a.chunk(arenaText)))
	}
}

// urn returns fhir.DeterministicURN(parts...).
func (a *arena) urn(parts ...string) string {
	var buf [len("urn:uuid:") + 36]byte
	return a.bytes(fhir.AppendDeterministicURN(buf[:0], parts...))
}

// bytes returns a string of b.
func (a *arena) bytes(b []byte) string {
	a.reserve(len(b))
	start := a.text.Len()
	a.text.Write(b)
	return a.text.String()[start:]
}

// join returns the parts that are not empty joined by sep.
func (a *arena) join(sep string, parts ...string) string {
	n, k := 0, 0
	for _, p := range parts {
		if p != "" {
			n += len(p)
			k++
		}
	}
	switch k {
	case 0:
		return ""
	case 1:
		for _, p := range parts {
			if p != "" {
				return p
			}
		}
	}
	a.reserve(n + (k-1)*len(sep))
	start := a.text.Len()
	for _, p := range parts {
		if p == "" {
			continue
		}
		if a.text.Len() > start {
			a.text.WriteString(sep)
		}
		a.text.WriteString(p)
	}
	return a.text.String()[start:]
}
