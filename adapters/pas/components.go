package pas

import (
	"strings"

	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// maxComponents is how many components of one repetition a components
// keeps: more than any mapping reads (XCN-13 is the highest).
const maxComponents = 16

// components is one repetition of a field split into its components in
// one pass. The mappings read several components of each XCN, XPN, XAD
// and PL, and hl7v2.Segment.Component scans the field from its start for
// each one.
type components struct {
	raw [maxComponents]string
	d   hl7v2.Delimiters
	cs  hl7v2.Charset
}

// splitComponents splits repetition rep (from 1) of field of seg, whose
// message has delimiters d.
func splitComponents(seg *hl7v2.Segment, d hl7v2.Delimiters, field, rep int) components {
	c := components{d: d, cs: seg.Charset()}
	r := seg.Repetition(field, rep)
	for i := 0; i < maxComponents && r != ""; i++ {
		comp := r
		if j := strings.IndexByte(r, d.Component); j >= 0 {
			comp, r = r[:j], r[j+1:]
		} else {
			r = ""
		}
		c.raw[i] = comp
	}
	return c
}

// get returns component i (from 1) as the mappings read values:
// unescaped and decoded to UTF-8, without surrounding spaces, and "" for
// the explicit null. It is strings.TrimSpace(value(seg.Component(field,
// rep, i, 1))): the first subcomponent.
func (c *components) get(i int) string {
	if i < 1 || i > maxComponents {
		return ""
	}
	comp := c.raw[i-1]
	if c.d.Subcomponent != 0 {
		if j := strings.IndexByte(comp, c.d.Subcomponent); j >= 0 {
			comp = comp[:j]
		}
	}
	return strings.TrimSpace(value(c.cs.Decode(hl7v2.Unescape(comp, c.d))))
}

// text returns component i (from 1) as get does, but whole: a
// subcomponent separator in it is kept as the character it is. It is for
// components of a primitive type (CE-2 text, XON-1 name, PL-9
// description), where the separator is an "&" the sender did not escape
// (see hl7v2.Segment.ComponentText).
func (c *components) text(i int) string {
	if i < 1 || i > maxComponents {
		return ""
	}
	return strings.TrimSpace(value(c.cs.Decode(hl7v2.Unescape(c.raw[i-1], c.d))))
}
