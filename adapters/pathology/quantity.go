package pathology

import (
	"encoding/json"
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/hl7v2"

	"github.com/junction-fhir/junction/pkg/fhir"
)

// decimal returns s as a FHIR decimal (a JSON number) with the digits as
// sent: a leading "+" and leading zeros are dropped, a missing integer part
// becomes "0" and a trailing point is dropped ("+007.50" is "7.50", ".5" is
// "0.5"). It reports false when s is not a plain decimal number.
func decimal(s string) (string, bool) {
	s = strings.TrimSpace(s)
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	intPart, frac, hasPoint := strings.Cut(s, ".")
	if intPart == "" && frac == "" || !(intPart == "" || allDigits(intPart)) || !(frac == "" || allDigits(frac)) {
		return "", false
	}
	if len(intPart) > 30 || len(frac) > 30 {
		return "", false
	}
	intPart = strings.TrimLeft(intPart, "0")
	if intPart == "" {
		intPart = "0"
	}
	out := intPart
	if hasPoint && frac != "" {
		out += "." + frac
	}
	if neg {
		out = "-" + out
	}
	return out, true
}

// unit is the unit of a quantity, from OBX-6.
type unit struct {
	text, code string // code is the UCUM code, "" when the unit is not UCUM
}

// ucumAliases are unit spellings common in UK laboratory feeds that are not
// UCUM, with the UCUM code of the same meaning.
var ucumAliases = map[string]string{
	"x10^9/L": "10*9/L", "x10^9/l": "10*9/L", "x10*9/L": "10*9/L", "x10e9/L": "10*9/L",
	"x10^12/L": "10*12/L", "x10^12/l": "10*12/L", "x10*12/L": "10*12/L", "x10e12/L": "10*12/L",
	"10^9/L": "10*9/L", "10^9/l": "10*9/L", "10^12/L": "10*12/L", "10^12/l": "10*12/L",
	"IU/L": "[IU]/L", "IU/l": "[IU]/L", "iu/L": "[IU]/L", "mIU/L": "m[IU]/L", "mIU/l": "m[IU]/L",
	"IU/mL": "[IU]/mL", "mIU/mL": "m[IU]/mL", "uIU/mL": "u[IU]/mL", "kIU/L": "k[IU]/L",
	"mmHg": "mm[Hg]", "sec": "s", "secs": "s", "hrs": "h", "hr": "h", "mins": "min",
	"ratio": "{ratio}", "mL/min/1.73m2": "mL/min/{1.73_m2}", "ml/min/1.73m2": "mL/min/{1.73_m2}",
}

// unitOf reads OBX-6 (a CE/CWE): the unit as sent (OBX-6.1, else OBX-6.2)
// is the text; it is also the UCUM code when OBX-6.3 says UCUM or names no
// system and it is a well-formed UCUM expression, a few common non-UCUM
// spellings map to their UCUM code (ucumAliases), and a micro sign or
// Greek mu is UCUM's "u" ("µmol/L" is umol/L). Otherwise the
// unit has text only, with DQUnitNotUCUM.
//
// A power of ten sent with its caret unescaped ("x10^9/L", which reads as
// OBX-6.1 "x10" and OBX-6.2 "9/L", so the unit would be "x10") is read
// as the sender meant it: OBX-6.1 ending in "10", OBX-6.2 starting with a
// digit and no OBX-6.3 are one unit.
func (b *builder) unitOf(obx *hl7v2.Segment) unit {
	code := strings.TrimSpace(value(obx.Component(6, 1, 1, 1)))
	text := strings.TrimSpace(value(obx.Component(6, 1, 2, 1)))
	if strings.HasSuffix(code, "10") && text != "" && text[0] >= '0' && text[0] <= '9' &&
		strings.TrimSpace(value(obx.Component(6, 1, 3, 1))) == "" {
		code = code + "^" + text
	}
	if code == "" {
		code = text
	}
	if code == "" {
		return unit{}
	}
	if alias, ok := ucumAliases[code]; ok {
		return unit{text: code, code: alias}
	}
	// A unit OBX-6.3 places in another coding system is that system's,
	// even when it reads like a UCUM expression ("1" in METRIC).
	system := strings.TrimSpace(value(obx.Component(6, 1, 3, 1)))
	// The micro sign (U+00B5, Latin-1 0xB5) or Greek mu for UCUM's "u":
	// "µmol/L", as UK laboratories write bilirubin and creatinine.
	if micro := strings.NewReplacer("\u00b5", "u", "\u03bc", "u").Replace(code); micro != code &&
		(system == "" || strings.EqualFold(system, "UCUM")) && isUCUM(micro) {
		return unit{text: code, code: micro}
	}
	if strings.EqualFold(system, "UCUM") || system == "" && isUCUM(code) {
		return unit{text: code, code: code}
	}
	b.flag(DQUnitNotUCUM)
	return unit{text: code}
}

// quantity builds a Quantity of the decimal v in u.
func quantity(v string, u unit) *models.Quantity {
	// One allocation for the Quantity and its strings.
	p := &struct {
		q            models.Quantity
		n            json.Number
		unit, system string
		code         string
	}{n: json.Number(v), unit: u.text, system: systemUCUM, code: u.code}
	p.q.Value = &p.n
	p.q.Unit = fhir.NonEmpty(&p.unit)
	if u.code != "" {
		p.q.System = &p.system
		p.q.Code = &p.code
	}
	return &p.q
}

// comparators maps the HL7 SN comparators to FHIR's.
var comparators = map[string]models.QuantityComparator{
	"<": models.QuantityComparatorLessThan, "<=": models.QuantityComparatorLessOrEquals,
	">=": models.QuantityComparatorGreaterOrEquals, ">": models.QuantityComparatorGreaterThan,
}

// splitComparator splits a leading comparator ("<", "<=", ">", ">=") off s.
func splitComparator(s string) (string, string) {
	s = strings.TrimSpace(s)
	for _, c := range [...]string{"<=", ">=", "<", ">"} {
		if strings.HasPrefix(s, c) {
			return c, strings.TrimSpace(s[len(c):])
		}
	}
	return "", s
}

// referenceRange parses OBX-7 text into low and high bounds in u: "3.5-5.0",
// "3.5 - 5.0", "3.5 to 5.0", "70_105", "<=5" (high 5), ">=60" (low 60).
// FHIR's bounds are inclusive, so a strict one ("<5", ">90") is none. Any
// other text gives no bounds (the caller keeps the text).
func referenceRange(text string, u unit) (low, high *models.Quantity) {
	if cmp, rest := splitComparator(text); cmp != "" {
		if cmp == "<" || cmp == ">" {
			return nil, nil
		}
		v, ok := decimal(rest)
		if !ok {
			return nil, nil
		}
		if cmp[0] == '<' {
			return nil, quantity(v, u)
		}
		return quantity(v, u), nil
	}
	s := strings.TrimSpace(text)
	// The first number may be negative, so look for the separator after
	// its first character.
	for _, sep := range [...]string{" to ", "_", "-"} {
		if len(s) < 2 {
			break
		}
		i := strings.Index(s[1:], sep)
		if i < 0 {
			continue
		}
		i++
		lo, ok1 := decimal(s[:i])
		hi, ok2 := decimal(s[i+len(sep):])
		if ok1 && ok2 {
			return quantity(lo, u), quantity(hi, u)
		}
		return nil, nil
	}
	return nil, nil
}

// ucumAtoms are the UCUM unit atoms accepted by isUCUM (case-sensitive).
var ucumAtoms = map[string]bool{
	"g": true, "L": true, "l": true, "m": true, "s": true, "min": true, "h": true, "d": true,
	"wk": true, "mo": true, "a": true, "mol": true, "eq": true, "U": true, "[IU]": true,
	"[iU]": true, "%": true, "Cel": true, "[degF]": true, "K": true, "Pa": true, "bar": true,
	"m[Hg]": true, "m[H2O]": true, "[pH]": true, "kat": true, "osm": true, "[arb'U]": true,
	"[ppm]": true, "[ppb]": true, "[ppth]": true, "[lb_av]": true, "[oz_av]": true,
	"[in_i]": true, "[ft_i]": true, "[HPF]": true, "[LPF]": true, "[drp]": true,
	"[CFU]": true, "[PFU]": true, "[FFU]": true, "[beth'U]": true, "[GPL'U]": true,
	"[MPL'U]": true, "[APL'U]": true, "t": true, "Ohm": true, "V": true, "A": true,
	"J": true, "W": true, "N": true, "Hz": true, "cal": true, "[Cal]": true, "deg": true,
	"gf": true, "[S]": true, "[mi_i]": true, "[yd_i]": true, "[gal_us]": true,
	"[foz_us]": true, "[pt_us]": true, "[qt_us]": true, "[pt_br]": true, "[foz_br]": true,
}

// ucumPrefixes are the UCUM metric prefixes.
var ucumPrefixes = [...]string{"da", "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "d", "c", "m", "u", "n", "p", "f", "a", "z", "y"}

// isUCUM reports whether s is a well-formed UCUM expression built from
// common atoms: products and quotients ("." and "/") of prefixed atoms with
// integer exponents, integer factors, 10*n and 10^n, parentheses and
// {annotations}. It checks syntax and atoms, not dimensions.
func isUCUM(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	p := ucumParser{s: s}
	if p.peek() == '/' {
		p.i++
	}
	if !p.term() {
		return false
	}
	return p.i == len(p.s)
}

type ucumParser struct {
	s     string
	i     int
	depth int
}

func (p *ucumParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *ucumParser) term() bool {
	if !p.component() {
		return false
	}
	for p.peek() == '.' || p.peek() == '/' {
		p.i++
		if !p.component() {
			return false
		}
	}
	return true
}

func (p *ucumParser) component() bool {
	switch c := p.peek(); {
	case c == '(':
		if p.depth > 8 {
			return false
		}
		p.i++
		p.depth++
		if !p.term() || p.peek() != ')' {
			return false
		}
		p.i++
		p.depth--
		p.exponent()
		return true
	case c == '{':
		return p.annotation()
	case c >= '0' && c <= '9':
		if strings.HasPrefix(p.s[p.i:], "10*") || strings.HasPrefix(p.s[p.i:], "10^") {
			p.i += 3
			return p.exponent()
		}
		for p.peek() >= '0' && p.peek() <= '9' {
			p.i++
		}
	default:
		start := p.i
		for {
			c := p.peek()
			if c == '[' {
				j := strings.IndexByte(p.s[p.i:], ']')
				if j < 0 {
					return false
				}
				p.i += j + 1
				continue
			}
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '%' || c == '\'' || c == '_' {
				p.i++
				continue
			}
			break
		}
		if !ucumSymbol(p.s[start:p.i]) {
			return false
		}
		p.exponent()
	}
	if p.peek() == '{' {
		return p.annotation()
	}
	return true
}

// exponent reads an optional signed integer exponent, reporting whether
// one was read.
func (p *ucumParser) exponent() bool {
	start := p.i
	if c := p.peek(); c == '+' || c == '-' {
		p.i++
	}
	digits := p.i
	for p.peek() >= '0' && p.peek() <= '9' {
		p.i++
	}
	if p.i == digits {
		p.i = start
		return false
	}
	return true
}

func (p *ucumParser) annotation() bool {
	j := strings.IndexByte(p.s[p.i:], '}')
	if j < 0 || strings.IndexByte(p.s[p.i+1:p.i+j], '{') >= 0 {
		return false
	}
	p.i += j + 1
	return true
}

// ucumSymbol reports whether sym is an atom, optionally prefixed.
func ucumSymbol(sym string) bool {
	if ucumAtoms[sym] {
		return true
	}
	for _, pre := range ucumPrefixes {
		if len(sym) > len(pre) && strings.HasPrefix(sym, pre) && ucumAtoms[sym[len(pre):]] {
			return true
		}
	}
	return false
}
