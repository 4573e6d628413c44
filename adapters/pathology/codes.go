package pathology

import (
	"strconv"
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/hl7v2"

	"github.com/junction-fhir/junction/pkg/fhir"
)

// codeableConcept maps a CE, CWE or CNE value (repetition rep of field) to
// a CodeableConcept, or nil when it is empty:
//
//   - the identifier, text and coding system (components 1 to 3) as the
//     first coding, the alternate ones (4 to 6) as a second;
//   - text: the original text (CWE-9), else the first coding's text (or
//     the alternate's when there is no first code).
//
// Coding system names become URIs with codeSystemURI.
func (b *builder) codeableConcept(seg *hl7v2.Segment, field, rep int) *models.CodeableConcept {
	get := func(c int) string { return strings.TrimSpace(value(seg.Component(field, rep, c, 1))) }
	// The texts (CE-2, CE-5, CWE-9) are primitives: an "&" in one is the
	// sender's, unescaped ("U&E"), not a subcomponent separator.
	text := func(c int) string { return strings.TrimSpace(value(seg.ComponentText(field, rep, c))) }
	cc := &models.CodeableConcept{}
	if code := get(1); code != "" {
		cc.Coding = append(cc.Coding, coding3(b.codeSystemURI(get(3)), code, text(2)))
	}
	if code := get(4); code != "" {
		alt := coding3(b.codeSystemURI(get(6)), code, text(5))
		if !hasCoding(cc.Coding, *alt.System, code) {
			cc.Coding = append(cc.Coding, alt)
		}
	}
	t := text(9)
	if t == "" {
		t = text(2)
	}
	if t == "" && get(1) == "" {
		t = text(5)
	}
	cc.Text = fhir.Optional(t)
	if len(cc.Coding) == 0 && cc.Text == nil {
		return nil
	}
	return cc
}

// subCodeableConcept maps a CE held in the subcomponents of one component
// (as in OBR-15.1 and OBR-15.4 of v2.3 to v2.4), or nil when it is empty.
func (b *builder) subCodeableConcept(seg *hl7v2.Segment, field, comp int) *models.CodeableConcept {
	get := func(s int) string { return strings.TrimSpace(value(seg.Component(field, 1, comp, s))) }
	cc := &models.CodeableConcept{}
	if code := get(1); code != "" {
		cc.Coding = []models.Coding{{System: fhir.Ptr(b.codeSystemURI(get(3))), Code: fhir.Ptr(code), Display: fhir.Optional(get(2))}}
	}
	cc.Text = fhir.Optional(get(2))
	if len(cc.Coding) == 0 && cc.Text == nil {
		return nil
	}
	return cc
}

// testCode maps a test code (OBR-4, OBX-3), adding the code map's
// translations. An empty code becomes the data-absent-reason "unknown"
// with DQCodeMissing.
func (b *builder) testCode(seg *hl7v2.Segment, field int) models.CodeableConcept {
	cc := b.codeableConcept(seg, field, 1)
	if cc == nil {
		b.flag(DQCodeMissing)
		return models.CodeableConcept{Coding: []models.Coding{{
			System: fhir.Ptr(systemDataAbsent), Code: fhir.Ptr("unknown"), Display: fhir.Ptr("Unknown"),
		}}}
	}
	b.t.codes.apply(cc)
	return *cc
}

// codeSystemURI maps an HL7 coding system name (table 0396) to a FHIR code
// system URI:
//
//   - a name lab.coding_systems maps: what it maps to;
//   - none, "L", "LOCAL" and the local names "99zzz": the lab's local code
//     system;
//   - LN: LOINC; SCT, SNOMED, SNOMEDCT, SNOMED-CT: SNOMED CT; UCUM;
//     I10: ICD-10; HL7nnnn: the terminology.hl7.org v2 table nnnn;
//   - any other name: "urn:hl7v2:coding-system:" and the name, which is
//     not a registered URI but keeps codes of different systems apart.
func (b *builder) codeSystemURI(name string) string {
	if uri, ok := b.t.systems[strings.ToUpper(name)]; ok && name != "" {
		return uri
	}
	switch strings.ToUpper(name) {
	case "", "L", "LOCAL":
		return b.t.lab.LocalCodeSystem
	case "LN", "LOINC":
		return systemLOINC
	case "SCT", "SNOMED", "SNOMEDCT", "SNOMED-CT":
		return systemSNOMED
	case "UCUM":
		return systemUCUM
	case "I10":
		return "http://hl7.org/fhir/sid/icd-10"
	}
	if len(name) == 7 && strings.EqualFold(name[:3], "HL7") && allDigits(name[3:]) {
		return "http://terminology.hl7.org/CodeSystem/v2-" + name[3:]
	}
	if len(name) >= 2 && name[:2] == "99" {
		return b.t.lab.LocalCodeSystem
	}
	return "urn:hl7v2:coding-system:" + pas.EscapeURN(name)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// formattedText turns a raw FT, TX or ST field (every repetition, escape
// sequences in place) into plain text: repetitions are joined with line
// feeds, the FT formatting commands .sp (line feeds) and .br are kept as
// line breaks, the other formatting commands (\H\, \N\, .in, .ti, .sk,
// .ce, .fi, .nf) are dropped, and hl7v2.Unescape decodes the rest, which
// is then decoded to UTF-8 from the message's character set (MSH-18).
// Component separators sent unescaped stay in the text as they are.
func (b *builder) formattedText(raw string) string {
	raw = value(raw)
	if raw == "" {
		return ""
	}
	if strings.IndexByte(raw, b.d.Repetition) < 0 {
		return b.textRepetition(raw)
	}
	var out strings.Builder
	for i, rep := range strings.Split(raw, string(b.d.Repetition)) {
		if i > 0 {
			out.WriteByte('\n')
		}
		out.WriteString(b.textRepetition(rep))
	}
	return out.String()
}

// isSpace reports whether seq, an escape sequence's text, is the FT
// command .sp: alone, or with a count, written "2", " 2" or "+2".
func isSpace(seq string) bool {
	arg, ok := strings.CutPrefix(seq, ".sp")
	if !ok {
		return false
	}
	arg = strings.TrimPrefix(strings.TrimSpace(arg), "+")
	if arg == "" {
		return true
	}
	_, err := strconv.Atoi(arg)
	return err == nil && arg[0] != '-' && arg[0] != '+'
}

// textRepetition decodes one repetition of a text field.
func (b *builder) textRepetition(raw string) string {
	e := b.d.Escape
	if e == 0 || strings.IndexByte(raw, e) < 0 {
		return b.m.Charset().Decode(raw)
	}
	var out strings.Builder
	out.Grow(len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != e {
			out.WriteByte(c)
			i++
			continue
		}
		j := strings.IndexByte(raw[i+1:], e)
		if j < 0 {
			out.WriteString(raw[i:])
			break
		}
		seq := raw[i+1 : i+1+j]
		end := i + 1 + j + 1
		switch {
		case seq == "H" || seq == "N":
		case isSpace(seq):
			// ".sp <number>"; some systems leave out the space, or write
			// the number signed as .in and .ti take it.
			n := 1
			if v, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(seq[len(".sp"):]), "+")); err == nil && v > 1 {
				n = min(v, 10)
			}
			for k := 0; k < n; k++ {
				out.WriteByte('\n')
			}
		case seq == ".ce":
			// Ends the line (and centres the next): a line break, so the
			// text on either side does not run together.
			out.WriteByte('\n')
		case strings.HasPrefix(seq, ".sk"):
			// Skip n spaces to the right.
			n := 1
			if v, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(seq, ".sk"))); err == nil && v > 1 {
				n = min(v, 80)
			}
			out.WriteString(strings.Repeat(" ", n))
		case strings.HasPrefix(seq, ".in") || strings.HasPrefix(seq, ".ti") || seq == ".fi" || seq == ".nf":
		default:
			out.WriteString(raw[i:end])
		}
		i = end
	}
	return b.m.Charset().Decode(hl7v2.Unescape(out.String(), b.d))
}

// interpretations are the HL7 table 0078 flags that have the same code in
// the v3 ObservationInterpretation code system, with its display.
var interpretations = map[string]string{
	"<": "Off scale low", ">": "Off scale high", "A": "Abnormal", "AA": "Critical abnormal",
	"B": "Better", "CAR": "Carrier", "D": "Significant change down", "DET": "Detected",
	"E": "Equivocal", "EX": "outside threshold", "EXP": "Expected", "H": "High",
	"HH": "Critical high", "HU": "Significantly high", "I": "Intermediate",
	"IE": "Insufficient evidence", "IND": "Indeterminate", "L": "Low", "LL": "Critical low",
	"LU": "Significantly low", "MS": "moderately susceptible", "N": "Normal",
	"NCL": "No CLSI defined breakpoint", "ND": "Not detected", "NEG": "Negative",
	"NR": "Non-reactive", "NS": "Non-susceptible", "POS": "Positive", "R": "Resistant",
	"RR": "Reactive", "S": "Susceptible", "SDD": "Susceptible-dose dependent",
	"SYN-R": "Synergy - resistant", "SYN-S": "Synergy - susceptible", "U": "Significant change up",
	"UNE": "Unexpected", "VS": "very susceptible", "W": "Worse", "WR": "Weakly reactive",
}

// interpretation maps one OBX-8 flag (HL7 table 0078) to the v3
// ObservationInterpretation code of the same meaning. A flag with no v3
// code keeps the v2 table's system with DQInterpretationUnknown.
func (b *builder) interpretation(flag string) models.CodeableConcept {
	// The table's codes are upper case; "h" is sent for "H" by some.
	if display, ok := interpretations[strings.ToUpper(flag)]; ok {
		return *fhir.Concept(systemV3Interp, strings.ToUpper(flag), display)
	}
	// A code not in the table is kept as text: giving it the table's
	// system would claim a meaning it does not have.
	b.flag(DQInterpretationUnknown)
	return models.CodeableConcept{Text: fhir.Ptr(flag)}
}

// reportStatus maps OBR-25 (HL7 table 0123) to DiagnosticReport.status:
// O, I, S, N registered; A, R partial; P preliminary; F final; C, M
// corrected; X cancelled. Anything else is unknown, with
// DQReportStatusUnknown.
func (b *builder) reportStatus(code string) models.DiagnosticReportStatus {
	switch strings.ToUpper(code) {
	case "O", "I", "S", "N":
		return models.DiagnosticReportStatusRegistered
	case "A", "R":
		return models.DiagnosticReportStatusPartial
	case "P":
		return models.DiagnosticReportStatusPreliminary
	case "F":
		return models.DiagnosticReportStatusFinal
	case "C", "M":
		return models.DiagnosticReportStatusCorrected
	case "X":
		return models.DiagnosticReportStatusCancelled
	}
	b.flag(DQReportStatusUnknown)
	return models.DiagnosticReportStatusUnknown
}

// observationStatus maps OBX-11 (HL7 table 0085) to Observation.status:
// F, U, V, N final; C corrected; A, B amended; P, R, S preliminary; I, O
// registered; D, W entered-in-error; X cancelled. Anything else is
// unknown, with DQObservationStatusUnknown.
func (b *builder) observationStatus(code string) models.ObservationStatus {
	switch strings.ToUpper(code) {
	case "F", "U", "V", "N":
		return models.ObservationStatusFinal
	case "C":
		return models.ObservationStatusCorrected
	case "A", "B":
		return models.ObservationStatusAmended
	case "P", "R", "S":
		return models.ObservationStatusPreliminary
	case "I", "O":
		return models.ObservationStatusRegistered
	case "D", "W":
		return models.ObservationStatusEnteredInError
	case "X":
		return models.ObservationStatusCancelled
	}
	b.flag(DQObservationStatusUnknown)
	return models.ObservationStatusUnknown
}

// coding3 returns a Coding with its strings made in one allocation, and
// no display when display is empty.
func coding3(system, code, display string) models.Coding {
	s, c, d := fhir.Ptr3(system, code, display)
	return models.Coding{System: s, Code: c, Display: fhir.NonEmpty(d)}
}
