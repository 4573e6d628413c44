package pathology

import (
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// mapObservation maps one OBX, with its notes, to an Observation:
//
//   - status OBX-11 (see observationStatus); category laboratory; code
//     OBX-3 with the code map's translations; subject the Patient;
//     basedOn the order's ServiceRequest; specimen the Specimen of the
//     SPM the OBX follows (v2.5's SPECIMEN group), else the order's
//     first Specimen.
//   - effectiveDateTime OBX-14, else OBR-7; issued OBR-22.
//   - value from OBX-2 and OBX-5 (see setValue), or a dataAbsentReason
//     when there is none.
//   - interpretation every OBX-8; referenceRange OBX-7; method OBX-17;
//     note every NTE after the OBX; OBX-4 in the observation-v2-subid
//     extension (original-sub-identifier).
func (b *builder) mapObservation(o *order, item int, obs *observation, subject models.Reference,
	basedOn []models.Reference, specimen *models.Reference, effective, issued *string) *models.Observation {
	obx := obs.obx
	_, id := b.ids(kind("Observation", o.index, item))
	ob := &models.Observation{
		Id:         fhir.Ptr(id),
		Identifier: b.observationIdentifiers(o, obx),
		Meta:       fhir.MetaProfile(nhs.ProfileObservationLab),
		BasedOn:    basedOn,
		Status:     b.observationStatus(value(obx.Component(11, 1, 1, 1))),
		Category:   fhir.Concepts(systemObsCategory, "laboratory", "Laboratory"),
		Code:       b.testCode(obx, 3),
		Subject:    &subject,
		Issued:     issued,
		Specimen:   specimen,
		Method:     b.codeableConcept(obx, 17, 1),
		Performer:  b.performers(obx),
	}
	ob.EffectiveDateTime = b.dateTime(obx.Component(14, 1, 1, 1))
	if ob.EffectiveDateTime == nil {
		ob.EffectiveDateTime = effective
	}
	u := b.setValue(ob, obx)
	if !hasValue(ob) && len(ob.Component) == 0 {
		ob.DataAbsentReason = absentReason(ob.Status, value(obx.Component(11, 1, 1, 1)))
	}
	for rep := 1; rep <= obx.Repetitions(8); rep++ {
		if f := strings.TrimSpace(value(obx.Component(8, rep, 1, 1))); f != "" {
			ob.Interpretation = append(ob.Interpretation, b.interpretation(f))
		}
	}
	if text := strings.TrimSpace(b.formattedText(obx.Field(7))); text != "" {
		rr := models.ObservationReferenceRange{Text: fhir.Ptr(text)}
		rr.Low, rr.High = referenceRange(text, u)
		ob.ReferenceRange = []models.ObservationReferenceRange{rr}
	}
	for _, n := range obs.notes {
		ob.Note = append(ob.Note, models.Annotation{Text: n})
	}
	if sub := strings.TrimSpace(value(obx.Field(4))); sub != "" {
		// OBX-4 groups results (the susceptibilities of one organism);
		// kept as the v2-to-FHIR mapping keeps it, for receivers that
		// know the laboratory's use of it.
		ob.Extension = append(ob.Extension, models.Extension{Url: extObservationSubID, Extension: []models.Extension{
			{Url: "original-sub-identifier", ValueString: fhir.Ptr(sub)},
		}})
	}
	return ob
}

// performers maps who produced the result to Observation.performer, as
// logical references (identifier and display, no resource in the
// bundle), in the v2-to-FHIR mapping's order: the responsible observers
// of OBX-16 (every repetition) as Practitioners, then the performing
// laboratory as an Organization, from OBX-23 (XON: name XON-1, code
// XON-10, else XON-3) or, when OBX-23 is empty, OBX-15 (the producer's
// ID, CWE: code CWE-1, name CWE-2). A code is an ODS code
// (nhs.SystemODSOrganization) when the assigning authority (XON-6) says
// ODS, or when none is given and the code has an ODS code's shape, as the
// pas adapter reads a GP practice; any other code keeps no system.
// OBX-24 (the laboratory's address) and OBX-25 (its medical director)
// are not mapped.
func (b *builder) performers(obx *hl7v2.Segment) []models.Reference {
	var out []models.Reference
	for rep := 1; rep <= obx.Repetitions(16); rep++ {
		if ref := b.practitioner(obx, 16, rep); ref != nil {
			out = append(out, *ref)
		}
	}
	get := func(field, c int) string { return strings.TrimSpace(value(obx.Component(field, 1, c, 1))) }
	name, code, authority := get(23, 1), get(23, 10), get(23, 6)
	if code == "" {
		code = get(23, 3)
	}
	if name == "" && code == "" {
		name, code, authority = get(15, 2), get(15, 1), ""
	}
	if ref := organizationReference(code, name, authority); ref != nil {
		out = append(out, *ref)
	}
	return out
}

// organizationReference builds a logical reference to an organisation
// known by code and name only, or nil when both are empty.
func organizationReference(code, name, authority string) *models.Reference {
	if code == "" && name == "" {
		return nil
	}
	ref := &models.Reference{Type: fhir.Ptr("Organization"), Display: fhir.Optional(name)}
	if code != "" {
		ident := &models.Identifier{Value: fhir.Ptr(code)}
		if strings.EqualFold(authority, "ODS") || authority == "" && nhs.LooksLikeODSCode(code) {
			ident.System = fhir.Ptr(nhs.SystemODSOrganization)
		}
		ref.Identifier = ident
	}
	return ref
}

// observationIdentifiers returns the observation's result key and its
// OBX-21 instance identifier, with its universal id as system when sent.
func (b *builder) observationIdentifiers(o *order, obx *hl7v2.Segment) []models.Identifier {
	var ids []models.Identifier
	if key := observationKey(o, obx); key != "" {
		ids = append(ids, b.resultKey(key))
	}
	if v := strings.TrimSpace(value(obx.Component(21, 1, 1, 1))); v != "" {
		id := models.Identifier{Value: fhir.Ptr(v)}
		if u := pas.UniversalID(obx, 21, 2); u != "" {
			id.System = fhir.Ptr(u)
		}
		ids = append(ids, id)
	}
	return ids
}

// hasValue reports whether ob has a value[x] or a value extension.
func hasValue(ob *models.Observation) bool {
	return ob.ValueQuantity != nil || ob.ValueCodeableConcept != nil || ob.ValueString != nil ||
		ob.ValueRange != nil || ob.ValueRatio != nil || ob.ValueTime != nil ||
		ob.ValueDateTime != nil || ob.ValuePeriod != nil ||
		slices.ContainsFunc(ob.Extension, func(e models.Extension) bool { return e.Url == extObservationValue })
}

// absentReason says why an observation has no value: not-performed when
// it was cancelled (X), not-asked (N), temp-unknown while the result is
// pending, else unknown.
func absentReason(status models.ObservationStatus, v2 string) *models.CodeableConcept {
	code, display := "unknown", "Unknown"
	switch {
	case strings.EqualFold(v2, "N"):
		code, display = "not-asked", "Not Asked"
	case status == models.ObservationStatusCancelled:
		code, display = "not-performed", "Not Performed"
	case status == models.ObservationStatusRegistered || status == models.ObservationStatusPreliminary:
		code, display = "temp-unknown", "Temporarily Unknown"
	}
	return &models.CodeableConcept{Coding: []models.Coding{{System: fhir.Ptr(systemDataAbsent), Code: fhir.Ptr(code), Display: fhir.Ptr(display)}}}
}

// setValue maps OBX-5 by its type OBX-2 and returns the unit read from
// OBX-6 (for the reference range):
//
//   - NM: valueQuantity with the OBX-6 unit; a leading comparator ("<5")
//     becomes Quantity.comparator; anything else not a number is kept as
//     valueString with DQNumericValueInvalid.
//   - SN: valueQuantity (with comparator), valueRange (n1 "-" n2) or
//     valueRatio (n1 ":" or "/" n2); "2+" and "<>" forms as valueString.
//   - ST, TX, FT: valueString, every repetition, line by line, formatting
//     and escape sequences decoded; with a unit in OBX-6, a value that
//     reads as a number (with or without a comparator) is valueQuantity
//     in that unit, and other text keeps the unit after it (textValue).
//     SN sent as plain text ("<5") is read the same way.
//   - CE, CWE, CNE: valueCodeableConcept; IS, ID: a code with no system.
//   - DT, DTM, TS: valueDateTime; TM: valueTime; DR: valuePeriod.
//   - NR: valueRange.
//   - ED, RP: an Attachment in the R5 backport extension
//     extension-Observation.value (R4 Observation.value has no
//     Attachment): ED with contentType from its type and subtype and the
//     data as base64 (Base64 sent as is, Hex and ASCII re-encoded); RP
//     with the pointer as url.
//   - anything else, or no OBX-2: as ST, with DQValueTypeUnsupported.
//
// A repeating OBX-5 of a type other than text is one value a repetition,
// as Observation.component (each with the Observation's code), as the
// HL7 v2-to-FHIR mapping maps a repeating OBX-5 (OBX[Observation-
// Component]): "A~RHPOS" for a blood group keeps both. ED and RP values
// use the first repetition only (DQValueRepetitionsDropped when more were
// sent).
func (b *builder) setValue(ob *models.Observation, obx *hl7v2.Segment) unit {
	typ := strings.ToUpper(strings.TrimSpace(value(obx.Component(2, 1, 1, 1))))
	var u unit
	switch typ {
	case "NM", "SN", "NR", "ST", "TX", "FT", "":
		u = b.unitOf(obx)
	default:
		if !knownValueType[typ] {
			u = b.unitOf(obx)
		}
	}
	reps := obx.Repetitions(5)
	if reps == 0 || obx.IsNull(5) {
		return u
	}
	if reps > 1 && componentValueType[typ] {
		for rep := 1; rep <= reps; rep++ {
			var one models.Observation
			b.setValueRep(&one, obx, typ, u, rep)
			if !hasValue(&one) {
				continue
			}
			ob.Component = append(ob.Component, models.ObservationComponent{
				Code: ob.Code, ValueQuantity: one.ValueQuantity, ValueCodeableConcept: one.ValueCodeableConcept,
				ValueString: one.ValueString, ValueRange: one.ValueRange, ValueRatio: one.ValueRatio,
				ValueTime: one.ValueTime, ValueDateTime: one.ValueDateTime, ValuePeriod: one.ValuePeriod,
			})
		}
		return u
	}
	if reps > 1 && (typ == "ED" || typ == "RP") {
		b.flag(DQValueRepetitionsDropped)
	}
	b.setValueRep(ob, obx, typ, u, 1)
	return u
}

// componentValueType lists the OBX-2 types whose repetitions become
// components (setValue); the text types join their repetitions as lines.
var componentValueType = map[string]bool{
	"NM": true, "SN": true, "NR": true, "CE": true, "CWE": true, "CNE": true,
	"IS": true, "ID": true, "DT": true, "DTM": true, "TS": true, "TM": true, "DR": true,
}

// setValueRep maps repetition rep of OBX-5 by its type typ (see setValue);
// the text types and ED and RP map the whole field.
func (b *builder) setValueRep(ob *models.Observation, obx *hl7v2.Segment, typ string, u unit, rep int) {
	reps := obx.Repetitions(5)
	comp := func(c int) string { return strings.TrimSpace(value(obx.Component(5, rep, c, 1))) }
	switch typ {
	case "NM":
		raw := b.formattedText(obx.Repetition(5, rep))
		cmp, rest := splitComparator(raw)
		if v, ok := decimal(rest); ok {
			ob.ValueQuantity = quantity(v, u)
			if cmp != "" {
				ob.ValueQuantity.Comparator = fhir.Ptr(comparators[cmp])
			}
		} else if strings.TrimSpace(raw) != "" {
			b.flag(DQNumericValueInvalid)
			ob.ValueString = fhir.Ptr(strings.TrimSpace(raw))
		}
	case "SN":
		if comp(2) == "" && comp(3) == "" && comp(4) == "" {
			// "<5" sent as text rather than as SN components ("<^5").
			if b.textQuantity(ob, comp(1), u) {
				break
			}
		}
		b.structuredNumeric(ob, comp(1), comp(2), comp(3), comp(4), u)
	case "NR":
		lo, ok1 := decimal(comp(1))
		hi, ok2 := decimal(comp(2))
		switch {
		case (ok1 || comp(1) == "") && (ok2 || comp(2) == "") && (ok1 || ok2):
			r := &models.Range{}
			if ok1 {
				r.Low = quantity(lo, u)
			}
			if ok2 {
				r.High = quantity(hi, u)
			}
			ob.ValueRange = r
		case comp(1) != "" || comp(2) != "":
			b.flag(DQNumericValueInvalid)
			ob.ValueString = fhir.Ptr(strings.Trim(comp(1)+"-"+comp(2), "-"))
		}
	case "ST", "TX", "FT":
		b.textValue(ob, obx, reps, u)
	case "CE", "CWE", "CNE":
		ob.ValueCodeableConcept = b.codeableConcept(obx, 5, rep)
	case "IS", "ID":
		if c := comp(1); c != "" {
			ob.ValueCodeableConcept = &models.CodeableConcept{Coding: []models.Coding{{Code: fhir.Ptr(c)}}, Text: fhir.Ptr(c)}
		}
	case "DT", "DTM", "TS":
		if raw := comp(1); raw != "" {
			if v, invalid := optionalDateTime(raw, b); !invalid {
				ob.ValueDateTime = v
			} else {
				b.flag(DQValueInvalid)
			}
		}
	case "TM":
		if raw := comp(1); raw != "" {
			if v, ok := timeOfDay(raw); ok {
				ob.ValueTime = &v
			} else {
				b.flag(DQValueInvalid)
			}
		}
	case "DR":
		start, errStart := optionalDateTime(value(obx.Component(5, rep, 1, 1)), b)
		end, errEnd := optionalDateTime(value(obx.Component(5, rep, 2, 1)), b)
		if errStart || errEnd {
			b.flag(DQValueInvalid)
		} else if start != nil || end != nil {
			if start != nil && end != nil {
				from := fhir.PeriodStartFromHL7(value(obx.Component(5, rep, 1, 1)), *start, *end, b.t.loc)
				start = &from
			}
			ob.ValuePeriod = &models.Period{Start: start, End: end}
		}
	case "ED":
		if att, ok := b.encapsulated(obx); ok {
			ob.Extension = append(ob.Extension, models.Extension{Url: extObservationValue, ValueAttachment: att})
		} else {
			b.flag(DQValueInvalid)
		}
	case "RP":
		if att, ok := b.pointer(obx); ok {
			ob.Extension = append(ob.Extension, models.Extension{Url: extObservationValue, ValueAttachment: att})
		} else {
			b.flag(DQValueInvalid)
		}
	default:
		b.flag(DQValueTypeUnsupported)
		b.textValue(ob, obx, reps, u)
	}
}

// knownValueType lists the OBX-2 types setValue maps by their own rules.
var knownValueType = map[string]bool{
	"NM": true, "SN": true, "NR": true, "ST": true, "TX": true, "FT": true, "CE": true, "CWE": true, "CNE": true,
	"IS": true, "ID": true, "DT": true, "DTM": true, "TS": true, "TM": true, "DR": true, "ED": true, "RP": true,
}

// textValue maps a value sent as text (ST, TX, FT, or a missing or unknown
// OBX-2). With a unit in OBX-6 the value is a measurement the sender typed
// as text: one that reads as a number, with or without a comparator
// ("14.2", "<5"), becomes valueQuantity in that unit; any other keeps the
// unit after the text ("see comment mmol/L" is better than losing it).
func (b *builder) textValue(ob *models.Observation, obx *hl7v2.Segment, reps int, u unit) {
	text := b.formattedText(obx.Field(5))
	if strings.TrimSpace(text) == "" {
		return
	}
	if u.text == "" {
		ob.ValueString = &text
		return
	}
	if reps == 1 && b.textQuantity(ob, text, u) {
		return
	}
	withUnit := strings.TrimRight(text, " \n") + " " + u.text
	ob.ValueString = &withUnit
}

// textQuantity sets valueQuantity from text that reads as a number with an
// optional comparator, and reports whether it did.
func (b *builder) textQuantity(ob *models.Observation, text string, u unit) bool {
	cmp, rest := splitComparator(strings.TrimSpace(text))
	v, ok := decimal(rest)
	if !ok {
		return false
	}
	ob.ValueQuantity = quantity(v, u)
	if cmp != "" {
		ob.ValueQuantity.Comparator = fhir.Ptr(comparators[cmp])
	}
	return true
}

// optionalDateTime converts a date/time value (raw, "" for none) and
// reports whether it is invalid. A time in the hour the feed's zone skips
// or repeats is flagged DQLocalTimeAmbiguous, as result times are.
func optionalDateTime(raw string, b *builder) (*string, bool) {
	if raw == "" {
		return nil, false
	}
	v, err := fhir.DateTimeFromHL7(raw, b.t.loc)
	if err != nil {
		return nil, true
	}
	if fhir.AmbiguousLocal(raw, b.t.loc) {
		b.flag(DQLocalTimeAmbiguous)
	}
	return &v, false
}

// structuredNumeric maps an SN value: comparator, first number, separator
// or suffix, second number.
func (b *builder) structuredNumeric(ob *models.Observation, cmp, n1, sep, n2 string, u unit) {
	if cmp == "" && n1 == "" && sep == "" && n2 == "" {
		return
	}
	v1, ok1 := decimal(n1)
	v2, ok2 := decimal(n2)
	plain := cmp == "" || cmp == "="
	_, knownCmp := comparators[cmp]
	switch {
	case sep == "" && n2 == "" && ok1 && (plain || knownCmp):
		ob.ValueQuantity = quantity(v1, u)
		if knownCmp {
			ob.ValueQuantity.Comparator = fhir.Ptr(comparators[cmp])
		}
	case sep == "-" && ok1 && ok2 && plain:
		ob.ValueRange = &models.Range{Low: quantity(v1, u), High: quantity(v2, u)}
	case (sep == ":" || sep == "/") && ok1 && ok2 && plain:
		ob.ValueRatio = &models.Ratio{Numerator: quantity(v1, u), Denominator: quantity(v2, unit{})}
	case sep == "." && ok1 && allDigits(n2) && plain && !strings.Contains(n1, "."):
		v, _ := decimal(n1 + "." + n2)
		ob.ValueQuantity = quantity(v, u)
	default:
		if !ok1 || !(cmp == "<>" || sep == "+" && n2 == "") {
			b.flag(DQNumericValueInvalid)
		}
		ob.ValueString = fhir.Ptr(cmp + n1 + sep + n2)
	}
}

// timeOfDay converts an HL7 TM (HH[MM[SS[.S+]]][+/-ZZZZ]) to a FHIR time.
// An offset is dropped: FHIR time has none.
func timeOfDay(raw string) (string, bool) {
	if i := strings.IndexAny(raw, "+-"); i >= 0 {
		raw = raw[:i]
	}
	main, frac, hasFrac := strings.Cut(raw, ".")
	if !allDigits(main) || len(main)%2 != 0 || len(main) > 6 || hasFrac && (len(main) != 6 || !allDigits(frac) || len(frac) > 9) {
		return "", false
	}
	for len(main) < 6 {
		main += "00"
	}
	hh, mm, ss := main[0:2], main[2:4], main[4:6]
	if hh > "23" || mm > "59" || ss > "59" {
		return "", false
	}
	out := hh + ":" + mm + ":" + ss
	if hasFrac {
		out += "." + frac
	}
	return out, true
}

// encapsulated maps an ED value: source application ^ type of data ^
// data subtype ^ encoding ^ data. It reports false when the data is
// missing or does not decode.
func (b *builder) encapsulated(obx *hl7v2.Segment) (*models.Attachment, bool) {
	typ := strings.TrimSpace(value(obx.Component(5, 1, 2, 1)))
	sub := strings.TrimSpace(value(obx.Component(5, 1, 3, 1)))
	enc := strings.ToUpper(strings.TrimSpace(value(obx.Component(5, 1, 4, 1))))
	data := value(obx.Component(5, 1, 5, 1))
	if data == "" {
		return nil, false
	}
	var encoded string
	switch enc {
	case "BASE64":
		clean := strings.Map(func(r rune) rune {
			if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
				return -1
			}
			return r
		}, data)
		if _, err := base64.StdEncoding.DecodeString(clean); err != nil {
			return nil, false
		}
		encoded = clean
	case "HEX":
		raw, err := hex.DecodeString(strings.TrimSpace(data))
		if err != nil {
			return nil, false
		}
		encoded = base64.StdEncoding.EncodeToString(raw)
	case "A", "":
		encoded = base64.StdEncoding.EncodeToString([]byte(data))
	default:
		return nil, false
	}
	return &models.Attachment{ContentType: mediaType(typ, sub), Data: &encoded}, true
}

// pointer maps an RP value: pointer ^ application id ^ type of data ^
// subtype. The pointer must be an absolute URI.
func (b *builder) pointer(obx *hl7v2.Segment) (*models.Attachment, bool) {
	p := strings.TrimSpace(value(obx.Component(5, 1, 1, 1)))
	if checkURI(p) != nil {
		return nil, false
	}
	return &models.Attachment{
		Url:         &p,
		ContentType: mediaType(value(obx.Component(5, 1, 3, 1)), value(obx.Component(5, 1, 4, 1))),
	}, true
}

// mediaTypes maps HL7 table 0191 types of data to MIME top-level types.
var mediaTypes = map[string]string{
	"AP": "application", "APPLICATION": "application", "IM": "image", "IMAGE": "image",
	"AU": "audio", "AUDIO": "audio", "TEXT": "text", "TX": "text", "VIDEO": "video",
	"MULTIPART": "multipart",
}

// mediaType builds a MIME type from an HL7 type of data and subtype
// ("AP", "PDF" gives "application/pdf"), or nil when either is missing or
// not a token.
func mediaType(typ, sub string) *string {
	top, ok := mediaTypes[strings.ToUpper(strings.TrimSpace(typ))]
	sub = strings.ToLower(strings.TrimSpace(sub))
	if !ok || sub == "" {
		return nil
	}
	for i := 0; i < len(sub); i++ {
		c := sub[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.') {
			return nil
		}
	}
	return fhir.Ptr(top + "/" + sub)
}
