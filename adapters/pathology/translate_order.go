package pathology

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"

	"github.com/junction-fhir/junction/pkg/fhir"
)

// mapOrder maps one order group to its ServiceRequest, Specimens,
// DiagnosticReport and Observations.
func (b *builder) mapOrder(o *order) {
	obr := o.obr
	reqURL, reqID := b.ids(kind("ServiceRequest", o.index, 0))
	_, reportID := b.ids(kind("DiagnosticReport", o.index, 0))
	subject := models.Reference{Reference: &b.patientURL, Type: fhir.Ptr("Patient")}
	basedOn := []models.Reference{{Reference: fhir.Ptr(reqURL), Type: fhir.Ptr("ServiceRequest")}}
	code := b.testCode(obr, 4)

	placer := b.orderIdentifier(o, 2, "PLAC", "Placer Identifier", b.t.lab.PlacerOrderSystem)
	filler := b.orderIdentifier(o, 3, "FILL", "Filler Identifier", b.t.lab.FillerOrderSystem)
	o.key = b.orderKey(o, placer, filler)
	if o.key == "" {
		b.flag(DQOrderNumberMissing)
	}
	// Each resource gets its own slice: they are encoded separately.
	identifiers := func() []models.Identifier {
		var ids []models.Identifier
		if o.key != "" {
			ids = append(ids, b.resultKey(o.key))
		}
		for _, id := range []*models.Identifier{placer, filler} {
			if id != nil {
				ids = append(ids, *id)
			}
		}
		return ids
	}

	effective := b.dateTime(obr.Component(7, 1, 1, 1))
	end := b.dateTime(obr.Component(8, 1, 1, 1))
	if effective != nil && end != nil {
		// A start in the first pass of the hour the clocks repeat is
		// read so the period does not end before it starts (the
		// results and specimens it is the time of too).
		start := fhir.PeriodStartFromHL7(value(obr.Component(7, 1, 1, 1)), *effective, *end, b.t.loc)
		effective = &start
	}
	var issued *string
	if raw := value(obr.Component(22, 1, 1, 1)); raw != "" {
		if ts, ok := fhir.PastInstantFromHL7(raw, b.t.loc, b.env.ReceivedAt); ok {
			issued = &ts
			if fhir.AmbiguousLocal(raw, b.t.loc) {
				// A merging FHIR destination orders a report's
				// versions by issued, which may then be an hour out.
				b.flag(DQLocalTimeAmbiguous)
			}
		} else {
			b.flag(DQResultTimeInvalid)
		}
	}

	b.mapSpecimens(o, subject, basedOn, effective)

	report := &models.DiagnosticReport{
		Id:         fhir.Ptr(reportID),
		Meta:       fhir.MetaProfile(nhs.ProfileDiagnosticReportLab),
		Identifier: identifiers(),
		BasedOn:    basedOn,
		Status:     b.reportStatus(value(obr.Component(25, 1, 1, 1))),
		Category:   b.reportCategory(obr),
		Code:       code,
		Subject:    &subject,
		Issued:     issued,
		Specimen:   o.specRefs,
	}
	if end != nil && effective != nil {
		report.EffectivePeriod = &models.Period{Start: effective, End: end}
	} else {
		report.EffectiveDateTime = effective
	}
	for rep := 1; rep <= obr.Repetitions(32); rep++ {
		if ref := b.interpreter(obr, rep); ref != nil {
			report.ResultsInterpreter = append(report.ResultsInterpreter, *ref)
		}
	}
	for _, n := range o.notes {
		report.Extension = append(report.Extension, models.Extension{
			Url:             extDiagnosticNote,
			ValueAnnotation: &models.Annotation{Text: n},
		})
	}
	var specimen *models.Reference
	if len(o.specRefs) > 0 {
		specimen = &o.specRefs[0]
	}
	for i, obs := range o.observations {
		if statusOnlyFinal(obs.obx) {
			// The result was sent before; only its report is final now.
			b.flag(DQResultStatusOnly)
			// With no Observation to hold them, its notes are the report's.
			for _, n := range obs.notes {
				report.Extension = append(report.Extension, models.Extension{
					Url:             extDiagnosticNote,
					ValueAnnotation: &models.Annotation{Text: n},
				})
			}
			if key := observationKey(o, obs.obx); key != "" {
				id := b.resultKey(key)
				report.Result = append(report.Result, models.Reference{Identifier: &id, Type: fhir.Ptr("Observation")})
			}
			continue
		}
		url, _ := b.ids(kind("Observation", o.index, i+1))
		r, typ := fhir.Ptr2(url, "Observation")
		report.Result = append(report.Result, models.Reference{Reference: r, Type: typ})
		spec := specimen
		if obs.specimen > 0 && obs.specimen <= len(o.specRefs) {
			// An OBX after an SPM observes that specimen.
			spec = &o.specRefs[obs.specimen-1]
		}
		o.obsRes = append(o.obsRes, b.mapObservation(o, i+1, obs, subject, basedOn, spec, effective, issued))
		o.obsURLs = append(o.obsURLs, url)
	}
	o.report = report

	o.request = &models.ServiceRequest{
		Id:         fhir.Ptr(reqID),
		Meta:       fhir.MetaProfile(nhs.ProfileServiceRequestLab),
		Identifier: identifiers(),
		Status:     b.requestStatus(o, report.Status),
		Intent:     requestIntent(obr),
		Code:       &code,
		Subject:    subject,
		Specimen:   o.specRefs,
	}
	o.request.BasedOn = b.parentOrder(obr)
	for _, n := range o.orcNotes {
		o.request.Note = append(o.request.Note, models.Annotation{Text: n})
	}
	if o.orc != nil {
		o.request.AuthoredOn = b.dateTime(o.orc.Component(9, 1, 1, 1))
		o.request.Requester = b.practitioner(o.orc, 12, 1)
	}
	if o.request.Requester == nil {
		o.request.Requester = b.practitioner(obr, 16, 1)
	}
}

// orderKey returns what names order o's results (see resultKey): which
// number it has (its filler order number, else its placer order number)
// with that number's system, value and assigning authority (see
// orderAuthority), and its test code (OBR-4.1),
// counted for the n-th order of the message with the same. It is "" when
// the order has neither number. A correction of the report comes with the
// same number and test, so it has the same key, while the reports a
// laboratory makes under one placer number (an order split into several
// accessions) or under one accession (several tests of one sample) each
// have their own, as have a placer number and a filler number that
// happen to be equal.
func (b *builder) orderKey(o *order, placer, filler *models.Identifier) string {
	kind, num, field := "filler", filler, 3
	if num == nil {
		kind, num, field = "placer", placer, 2
	}
	if num == nil {
		return ""
	}
	parts := []string{kind, *num.System, *num.Value, strings.TrimSpace(value(o.obr.Component(4, 1, 1, 1)))}
	if a := b.orderAuthority(o, field); a != "" {
		// Added only when there is one, so that keys made before it was
		// part of them stay the same for messages without.
		parts = append(parts, a)
	}
	return occurrence(b.orderKeys, keyParts(parts...))
}

// orderAuthority returns who assigned the order number in field (2, the
// placer's; 3, the filler's) of OBR, else of ORC, as orderIdentifier
// reads it: its namespace id and universal id (EI-2 to EI-4), or when it
// names none, the sending facility and application (MSH-4.1, MSH-3.1),
// which HL7 v2 takes as the authority then. Two laboratories on one input
// (a hospital's and a referral laboratory's) may number their accessions
// alike; with their authority in the key, one's results never update the
// other's, another patient's.
func (b *builder) orderAuthority(o *order, field int) string {
	seg := o.obr
	if strings.TrimSpace(value(seg.Component(field, 1, 1, 1))) == "" && o.orc != nil {
		seg = o.orc
	}
	var parts []string
	for c := 2; c <= 4; c++ {
		parts = append(parts, strings.ToUpper(strings.TrimSpace(value(seg.Component(field, 1, c, 1)))))
	}
	if parts[0] == "" && parts[1] == "" {
		msh := b.m.Segment("MSH")
		parts = []string{"MSH", strings.ToUpper(strings.TrimSpace(value(msh.Component(4, 1, 1, 1)))), strings.ToUpper(strings.TrimSpace(value(msh.Component(3, 1, 1, 1))))}
		if parts[1] == "" && parts[2] == "" {
			return ""
		}
	}
	return strings.Join(parts, "^")
}

// observationKey returns what names an observation of order o: the
// order's key, the observation's code (OBX-3.1) and sub-id (OBX-4),
// counted for the n-th observation of the order with the same (the lines
// of a report sent as several OBX of one code). It is "" when the order
// has no key.
func observationKey(o *order, obx *hl7v2.Segment) string {
	if o.key == "" {
		return ""
	}
	return occurrence(o.obsKeys, keyParts(o.key, strings.TrimSpace(value(obx.Component(3, 1, 1, 1))), strings.TrimSpace(value(obx.Field(4)))))
}

// keyParts joins the parts of a key with a separator no HL7 v2 value
// holds, so that no two different lists of parts make the same key.
func keyParts(parts ...string) string { return strings.Join(parts, "\x1f") }

// occurrence counts key in seen and returns it, the n-th time with n.
func occurrence(seen map[string]int, key string) string {
	seen[key]++
	if n := seen[key]; n > 1 {
		return keyParts(key, "#"+strconv.Itoa(n))
	}
	return key
}

// resultKey returns the result key identifier of key: in the lab's result
// key system, its value the first 32 hex digits of a SHA-256 of key, so
// that the numbers, systems and codes in it need no escaping and cannot
// run together. It comes first among a resource's identifiers, so a fhir
// destination updates the resource by it.
func (b *builder) resultKey(key string) models.Identifier {
	sum := sha256.Sum256([]byte("junction-lab-result-key-v1\x1f" + key))
	return models.Identifier{System: fhir.Ptr(b.t.lab.ResultKeySystem), Value: fhir.Ptr(hex.EncodeToString(sum[:16]))}
}

// orderIdentifier maps the placer (field 2) or filler (field 3) order
// number of OBR, else of ORC: EI-1 is the value, the universal id
// (EI-3, EI-4) the system when it is a URI, else the configured system.
func (b *builder) orderIdentifier(o *order, field int, typeCode, display, system string) *models.Identifier {
	seg := o.obr
	if strings.TrimSpace(value(seg.Component(field, 1, 1, 1))) == "" {
		seg = o.orc
	}
	if seg == nil {
		return nil
	}
	v := strings.TrimSpace(value(seg.Component(field, 1, 1, 1)))
	if v == "" {
		return nil
	}
	if u := pas.UniversalID(seg, field, 2); u != "" {
		system = u
	}
	return &models.Identifier{
		Type: &models.CodeableConcept{Coding: []models.Coding{{
			System: fhir.Ptr(systemV2IDType), Code: fhir.Ptr(typeCode), Display: fhir.Ptr(display),
		}}},
		System: fhir.Ptr(system),
		Value:  fhir.Ptr(v),
	}
}

// requestIntent is reflex-order for an order the laboratory generated
// from an earlier result (OBR-11 G, as HL7 table 0065 has it: a reflex
// test, a susceptibility run on a culture), else order.
func requestIntent(obr *hl7v2.Segment) models.RequestIntent {
	if strings.EqualFold(strings.TrimSpace(value(obr.Component(11, 1, 1, 1))), "G") {
		return models.RequestIntentReflexOrder
	}
	return models.RequestIntentOrder
}

// parentOrder maps OBR-29, the order a reflex or susceptibility report
// is a child of, to logical references to its ServiceRequest by the
// parent's placer (EIP-1) and filler (EIP-2) numbers, as the v2-to-FHIR
// mapping maps it (OBR[ServiceRequest], basedOn): identifiers as this
// order's own are made, so they match the parent's.
func (b *builder) parentOrder(obr *hl7v2.Segment) []models.Reference {
	var refs []models.Reference
	for _, p := range []struct {
		comp                   int
		typeCode, display, sys string
	}{
		{1, "PLAC", "Placer Identifier", b.t.lab.PlacerOrderSystem},
		{2, "FILL", "Filler Identifier", b.t.lab.FillerOrderSystem},
	} {
		id := eiFromSubcomponents(obr, 29, p.comp)
		if id == nil {
			continue
		}
		if id.System == nil {
			id.System = fhir.Ptr(p.sys)
		}
		id.Type = &models.CodeableConcept{Coding: []models.Coding{{
			System: fhir.Ptr(systemV2IDType), Code: fhir.Ptr(p.typeCode), Display: fhir.Ptr(p.display),
		}}}
		refs = append(refs, models.Reference{Type: fhir.Ptr("ServiceRequest"), Identifier: id})
	}
	return refs
}

// reportCategory is the UK Core laboratory category (LAB in HL7 table
// 0074) and, when OBR-24 names another diagnostic service section, that
// section too.
func (b *builder) reportCategory(obr *hl7v2.Segment) []models.CodeableConcept {
	cats := []models.CodeableConcept{{Coding: []models.Coding{{
		System: fhir.Ptr(systemV2Section), Code: fhir.Ptr("LAB"), Display: fhir.Ptr("Laboratory"),
	}}}}
	if s := strings.ToUpper(strings.TrimSpace(value(obr.Component(24, 1, 1, 1)))); s != "" && s != "LAB" && validCode(s) {
		cats = append(cats, models.CodeableConcept{Coding: []models.Coding{{System: fhir.Ptr(systemV2Section), Code: fhir.Ptr(s)}}})
	}
	return cats
}

// validCode reports whether s fits the FHIR code type: no leading or
// trailing space and no runs of whitespace.
func validCode(s string) bool {
	return s != "" && strings.TrimSpace(s) == s && !strings.Contains(s, "  ") && !strings.ContainsAny(s, "\t\r\n")
}

// requestStatus maps ORC-5 (HL7 table 0038) to ServiceRequest.status: CA,
// DC, RP revoked; CM completed; ER entered-in-error; HD on-hold; IP, SC, A
// active. Without ORC-5 it follows the report: completed once final,
// corrected, amended or appended, revoked when cancelled, otherwise
// active.
func (b *builder) requestStatus(o *order, report models.DiagnosticReportStatus) models.RequestStatus {
	if o.orc != nil {
		switch strings.ToUpper(value(o.orc.Component(5, 1, 1, 1))) {
		case "CA", "DC", "RP":
			return models.RequestStatusRevoked
		case "CM":
			return models.RequestStatusCompleted
		case "ER":
			return models.RequestStatusEnteredInError
		case "HD":
			return models.RequestStatusOnHold
		case "IP", "SC", "A":
			return models.RequestStatusActive
		}
	}
	switch report {
	case models.DiagnosticReportStatusFinal, models.DiagnosticReportStatusCorrected,
		models.DiagnosticReportStatusAmended, models.DiagnosticReportStatusAppended:
		return models.RequestStatusCompleted
	case models.DiagnosticReportStatusCancelled:
		return models.RequestStatusRevoked
	case models.DiagnosticReportStatusEnteredInError:
		return models.RequestStatusEnteredInError
	}
	return models.RequestStatusActive
}

// practitioner maps an XCN (repetition rep of field) to a logical
// reference: the identifier (XCN-1, with the GMC or GMP system when XCN-9
// or XCN-13 says so) and the name as display. It returns nil when both are
// empty.
func (b *builder) practitioner(seg *hl7v2.Segment, field, rep int) *models.Reference {
	get := func(c, s int) string { return strings.TrimSpace(value(seg.Component(field, rep, c, s))) }
	return personReference(get(1, 1), get(2, 1), get(3, 1), get(6, 1), get(9, 1), get(13, 1))
}

// interpreter maps an OBR-32 repetition (NDL, whose first component is a
// CNN held in subcomponents) to a logical reference.
func (b *builder) interpreter(obr *hl7v2.Segment, rep int) *models.Reference {
	get := func(s int) string { return strings.TrimSpace(value(obr.Component(32, rep, 1, s))) }
	return personReference(get(1), get(2), get(3), get(6), get(9), "")
}

// personReference builds a reference to a practitioner known by id and
// name only.
func personReference(id, family, given, prefix, authority, idType string) *models.Reference {
	var name []string
	for _, p := range [...]string{prefix, given, family} {
		if p != "" {
			name = append(name, p)
		}
	}
	if id == "" && len(name) == 0 {
		return nil
	}
	ref := &models.Reference{Type: fhir.Ptr("Practitioner"), Display: fhir.Optional(strings.Join(name, " "))}
	if id != "" {
		ident := &models.Identifier{Value: fhir.Ptr(id)}
		switch {
		case strings.EqualFold(authority, "GMC") || strings.EqualFold(idType, "GMC"):
			ident.System = fhir.Ptr(nhs.SystemGMC)
		case strings.EqualFold(authority, "GMP") || strings.EqualFold(idType, "GMP"):
			ident.System = fhir.Ptr(nhs.SystemGMP)
		}
		ref.Identifier = ident
	}
	return ref
}

// mapSpecimens builds the order's Specimens: one per SPM when the order
// has SPM segments (v2.5 and later), else one from OBR-15 and OBR-14 when
// either is sent (v2.3 and v2.4: a received time alone still says the
// laboratory had the sample), else none.
func (b *builder) mapSpecimens(o *order, subject models.Reference, request []models.Reference, collected *string) {
	add := func(s *models.Specimen) {
		n := len(o.specRes) + 1
		url, id := b.ids(kind("Specimen", o.index, n))
		s.Id = fhir.Ptr(id)
		if o.key != "" {
			s.Identifier = append([]models.Identifier{b.resultKey(keyParts(o.key, "specimen", strconv.Itoa(n)))}, s.Identifier...)
		}
		s.Meta = fhir.MetaProfile(nhs.ProfileSpecimen)
		s.Subject = &subject
		s.Request = request
		o.specRes = append(o.specRes, s)
		o.specRefs = append(o.specRefs, fhir.Ref(url, "Specimen"))
	}
	for _, sp := range o.specimens {
		s := b.specimenFromSPM(sp.spm)
		for _, n := range sp.notes {
			s.Note = append(s.Note, models.Annotation{Text: n})
		}
		add(s)
	}
	if len(o.specimens) > 0 || strings.TrimSpace(value(o.obr.Field(15))) == "" && strings.TrimSpace(value(o.obr.Field(14))) == "" {
		return
	}
	s := &models.Specimen{
		Type:         b.subCodeableConcept(o.obr, 15, 1),
		ReceivedTime: b.dateTime(o.obr.Component(14, 1, 1, 1)),
	}
	site := b.subCodeableConcept(o.obr, 15, 4)
	if collected != nil || site != nil {
		s.Collection = &models.SpecimenCollection{CollectedDateTime: collected, BodySite: site}
	}
	add(s)
}

// specimenFromSPM maps an SPM segment:
//
//   - identifier: SPM-2.1 (placer assigned, type PGN) and SPM-2.2 (filler
//     assigned, type FGN), each with its universal id as system when
//     sent, as the HL7 v2-to-FHIR mapping of EIP has them;
//     accessionIdentifier: SPM-30 (its first repetition; the assigning
//     authority's universal id, CX-4.2 and CX-4.3, as system when sent);
//   - type SPM-4; collection.method SPM-7, bodySite SPM-8, collected
//     SPM-17 (a period when it has an end); receivedTime SPM-18;
//   - status from SPM-20 (Y available, N unavailable).
func (b *builder) specimenFromSPM(spm *hl7v2.Segment) *models.Specimen {
	s := &models.Specimen{
		Type:         b.codeableConcept(spm, 4, 1),
		ReceivedTime: b.dateTime(spm.Component(18, 1, 1, 1)),
	}
	for _, part := range []struct {
		comp          int
		code, display string
	}{{1, "PGN", "Placer Group Number"}, {2, "FGN", "Filler Group Number"}} {
		if id := eiFromSubcomponents(spm, 2, part.comp); id != nil {
			id.Type = &models.CodeableConcept{Coding: []models.Coding{{
				System: fhir.Ptr(systemV2IDType), Code: fhir.Ptr(part.code), Display: fhir.Ptr(part.display),
			}}}
			s.Identifier = append(s.Identifier, *id)
		}
	}
	if v := strings.TrimSpace(value(spm.Component(30, 1, 1, 1))); v != "" {
		s.AccessionIdentifier = &models.Identifier{Value: fhir.Ptr(v)}
		if u := pas.UniversalIDURI(strings.TrimSpace(value(spm.Component(30, 1, 4, 2))), value(spm.Component(30, 1, 4, 3))); u != "" {
			s.AccessionIdentifier.System = fhir.Ptr(u)
		}
	}
	c := &models.SpecimenCollection{
		Method:   b.codeableConcept(spm, 7, 1),
		BodySite: b.codeableConcept(spm, 8, 1),
	}
	start := b.dateTime(spm.Component(17, 1, 1, 1))
	if end := b.dateTime(spm.Component(17, 1, 2, 1)); end != nil && start != nil {
		from := fhir.PeriodStartFromHL7(value(spm.Component(17, 1, 1, 1)), *start, *end, b.t.loc)
		c.CollectedPeriod = &models.Period{Start: &from, End: end}
	} else {
		c.CollectedDateTime = start
	}
	if c.Method != nil || c.BodySite != nil || c.CollectedDateTime != nil || c.CollectedPeriod != nil {
		s.Collection = c
	}
	switch strings.ToUpper(value(spm.Component(20, 1, 1, 1))) {
	case "Y":
		s.Status = fhir.Ptr(models.SpecimenStatusAvailable)
	case "N":
		s.Status = fhir.Ptr(models.SpecimenStatusUnavailable)
	}
	return s
}

// eiFromSubcomponents maps an EI held in the subcomponents of component
// comp of field (as in SPM-2), or nil when its id is empty.
func eiFromSubcomponents(seg *hl7v2.Segment, field, comp int) *models.Identifier {
	v := strings.TrimSpace(value(seg.Component(field, 1, comp, 1)))
	if v == "" {
		return nil
	}
	id := &models.Identifier{Value: fhir.Ptr(v)}
	if u := pas.UniversalIDURI(strings.TrimSpace(value(seg.Component(field, 1, comp, 3))), value(seg.Component(field, 1, comp, 4))); u != "" {
		id.System = fhir.Ptr(u)
	}
	return id
}
