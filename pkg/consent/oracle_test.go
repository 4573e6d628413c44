package consent

import (
	"fmt"
	"time"

	"pgregory.net/rapid"
)

// The universe of the property tests: small enough that random cases hit
// every interaction, large enough for every rule to matter.

// Synthetic patients (999 range, valid check digits).
const (
	patientA = "9990000018"
	patientB = "9990000026"
)

var (
	uActors   = []string{"AAA01", "BBB02", "CCC03"}
	uPurposes = []Purpose{PurposeDirectCare, PurposeSafeguarding, PurposeResearch, PurposePlanning, PurposePublicHealth}
	uBases    = []LegalBasis{BasisDirectCare, BasisSafeguarding, BasisS251, BasisExplicitConsent, BasisStatutory}
	uClasses  = []string{"Patient", "Observation", "Encounter", "RelatedPerson"}
	uCodes    = []Coding{{System: "http://snomed.info/sct", Code: "1001"}, {System: "http://snomed.info/sct", Code: "1002"}}
	uLabels   = []Coding{
		{System: SystemConfidentiality, Code: "N"},
		{System: SystemConfidentiality, Code: "R"},
		{System: SystemConfidentiality, Code: "V"},
		{System: SystemRestricted, Code: LabelGRA},
		{System: SystemRestricted, Code: LabelHFEA},
		{System: SystemRestricted, Code: LabelSexualHealth},
		{System: SystemRestricted, Code: LabelSafeguarding},
		{System: "http://terminology.hl7.org/CodeSystem/v3-ActCode", Code: "PSY"},
	}
	uClearances = []Clearance{ClearV, ClearGRA, ClearHFEA, ClearR, ClearSexualHealth, ClearSafeguarding, ClearRestrictedPatient}
	uDays       = 10
	uEpoch      = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

func day(i int) time.Time { return uEpoch.AddDate(0, 0, i) }

// genPurposeCoding draws a purpose as a Consent would code it.
func genPurposeCoding(t *rapid.T, label string) Coding {
	p := rapid.SampledFrom(uPurposes).Draw(t, label)
	cs := p.codings()
	return cs[rapid.IntRange(0, len(cs)-1).Draw(t, label+"-system")]
}

func genPeriod(t *rapid.T, label string) Period {
	var p Period
	if rapid.Bool().Draw(t, label+"-has-start") {
		p.Start = day(rapid.IntRange(0, uDays-1).Draw(t, label+"-start"))
	}
	if rapid.Bool().Draw(t, label+"-has-end") {
		lo := 1
		if !p.Start.IsZero() {
			lo = int(p.Start.Sub(uEpoch)/(24*time.Hour)) + 1
		}
		p.End = day(rapid.IntRange(lo, uDays).Draw(t, label+"-end"))
	}
	return p
}

// sometimes draws a list only now and then, so most conditions are empty.
func sometimes[V any](t *rapid.T, label string, gen *rapid.Generator[V]) []V {
	if rapid.IntRange(0, 3).Draw(t, label+"-present") != 0 {
		return nil
	}
	return rapid.SliceOfN(gen, 1, 2).Draw(t, label)
}

func genProvision(t *rapid.T, path string, depth int) Provision {
	p := Provision{Path: path, Type: rapid.SampledFrom([]ProvisionType{ProvisionPermit, ProvisionDeny}).Draw(t, path+"-type")}
	if rapid.IntRange(0, 3).Draw(t, path+"-period?") == 0 {
		p.Period = genPeriod(t, path+"-period")
	}
	if rapid.IntRange(0, 4).Draw(t, path+"-dataPeriod?") == 0 {
		p.DataPeriod = genPeriod(t, path+"-dataPeriod")
	}
	p.Actors = sometimes(t, path+"-actors", rapid.SampledFrom(uActors))
	if rapid.IntRange(0, 3).Draw(t, path+"-purposes?") == 0 {
		p.Purposes = []Coding{genPurposeCoding(t, path+"-purpose")}
	}
	p.Classes = sometimes(t, path+"-classes", rapid.SampledFrom(uClasses))
	p.Codes = sometimes(t, path+"-codes", rapid.SampledFrom(uCodes))
	p.Labels = sometimes(t, path+"-labels", rapid.SampledFrom(uLabels))
	if depth < MaxDepth {
		n := rapid.IntRange(0, 2).Draw(t, path+"-children")
		for i := range n {
			p.Provisions = append(p.Provisions, genProvision(t, fmt.Sprintf("%s.provision[%d]", path, i), depth+1))
		}
	}
	return p
}

func genPolicy(t *rapid.T, id, patient string) Policy {
	return Policy{
		ID:      id,
		Status:  rapid.SampledFrom([]string{"active", "active", "active", "inactive", "draft"}).Draw(t, id+"-status"),
		Patient: patient,
		Root:    genProvision(t, "Consent.provision", 0),
	}
}

// genInput draws a message context for patientA, with its Consents.
func genInput(t *rapid.T) Input {
	in := Input{
		Now:         day(rapid.IntRange(0, uDays-1).Draw(t, "now")).Add(12 * time.Hour),
		Patient:     rapid.SampledFrom([]string{patientA, patientA, patientA, patientA, ""}).Draw(t, "patient"),
		OptOut:      OptOutStatus{OptedOut: rapid.Bool().Draw(t, "opted-out"), Stale: rapid.IntRange(0, 4).Draw(t, "stale") == 4},
		Restricted:  rapid.IntRange(0, 3).Draw(t, "restricted") == 3,
		Purpose:     rapid.SampledFrom(uPurposes).Draw(t, "purpose"),
		Basis:       rapid.SampledFrom(uBases).Draw(t, "basis"),
		SkipConsent: rapid.IntRange(0, 5).Draw(t, "skip") == 5,
		Default:     rapid.SampledFrom([]Outcome{Permit, Deny, ""}).Draw(t, "default"),
		Destination: Destination{
			Name:  "dest",
			ODS:   rapid.SampledFrom(append([]string{""}, uActors...)).Draw(t, "dest-ods"),
			Allow: sometimes(t, "allow", rapid.SampledFrom(uClearances)),
		},
	}
	n := rapid.IntRange(0, 3).Draw(t, "consents")
	for i := range n {
		in.Policies = append(in.Policies, genPolicy(t, fmt.Sprintf("c%d", i), patientA))
	}
	return in
}

func genResource(t *rapid.T) Resource {
	r := Resource{
		Type:   rapid.SampledFrom(uClasses).Draw(t, "res-type"),
		Labels: sometimes(t, "res-labels", rapid.SampledFrom(uLabels)),
		Codes:  sometimes(t, "res-codes", rapid.SampledFrom(uCodes)),
	}
	if rapid.IntRange(0, 3).Draw(t, "res-dated") != 0 {
		r.Date = day(rapid.IntRange(0, uDays-1).Draw(t, "res-date")).Add(time.Hour)
	}
	return r
}

// oracleVerdict is the oracle's answer: whether the resource may go, and
// whether it goes stripped.
type oracleVerdict struct {
	forbidden bool
	strip     bool
	why       string
}

// oracle decides by brute force, written apart from the engine: it lists
// every provision of every Consent with its ancestors, keeps those whose
// whole chain holds, and applies the rules of PROFILE.md as a list of
// reasons to forbid.
func oracle(in Input, r Resource) oracleVerdict {
	allowed := map[Clearance]bool{}
	for _, c := range in.Destination.Allow {
		allowed[c] = true
	}
	supported := map[string]bool{
		"direct-care/direct-care": true, "safeguarding/safeguarding": true,
		"s251/research": true, "s251/planning": true,
		"explicit-consent/direct-care": true, "explicit-consent/research": true, "explicit-consent/planning": true,
		"statutory/public-health": true, "statutory/safeguarding": true,
	}
	if !supported[string(in.Basis)+"/"+string(in.Purpose)] {
		return oracleVerdict{forbidden: true, why: "basis"}
	}
	if in.SkipConsent && in.Basis != BasisSafeguarding && in.Basis != BasisStatutory {
		return oracleVerdict{forbidden: true, why: "skip"}
	}
	legalLabel := map[Coding]Clearance{
		{System: SystemConfidentiality, Code: "V"}:  ClearV,
		{System: SystemRestricted, Code: LabelGRA}:  ClearGRA,
		{System: SystemRestricted, Code: LabelHFEA}: ClearHFEA,
	}
	protectedLabel := map[Coding]Clearance{
		{System: SystemConfidentiality, Code: "R"}:          ClearR,
		{System: SystemRestricted, Code: LabelSexualHealth}: ClearSexualHealth,
		{System: SystemRestricted, Code: LabelSafeguarding}: ClearSafeguarding,
	}
	for _, l := range r.Labels {
		if c, ok := legalLabel[l]; ok && !allowed[c] {
			return oracleVerdict{forbidden: true, why: "legal label"}
		}
	}
	if (in.Purpose == PurposeResearch || in.Purpose == PurposePlanning) && in.Basis != BasisExplicitConsent {
		if in.OptOut.Stale || in.OptOut.OptedOut || in.Patient == "" {
			return oracleVerdict{forbidden: true, why: "opt-out"}
		}
	}
	var needOpen []Clearance
	for _, l := range r.Labels {
		if c, ok := protectedLabel[l]; ok && !allowed[c] {
			needOpen = append(needOpen, c)
		}
	}
	if in.SkipConsent {
		if len(needOpen) > 0 {
			return oracleVerdict{forbidden: true, why: "protected label, skip"}
		}
	} else {
		leaves := oracleLeaves(in, r)
		nDeny := 0
		for _, lf := range leaves {
			if lf.Type == ProvisionDeny {
				nDeny++
			}
		}
		if nDeny > 0 {
			return oracleVerdict{forbidden: true, why: "consent deny"}
		}
		if len(leaves) == 0 && (in.Basis == BasisExplicitConsent || in.Default != Permit) {
			return oracleVerdict{forbidden: true, why: "no consent"}
		}
		for _, c := range needOpen {
			opened := false
			for _, lf := range leaves {
				for _, l := range lf.Labels {
					if protectedLabel[l] == c {
						opened = true
					}
				}
			}
			if !opened {
				return oracleVerdict{forbidden: true, why: "protected label"}
			}
		}
	}
	strip := in.Restricted && !allowed[ClearRestrictedPatient] && (r.Type == "Patient" || r.Type == "RelatedPerson")
	return oracleVerdict{strip: strip}
}

// flatNode is one provision with the indices of its ancestors.
type flatNode struct {
	prov   Provision
	chain  []int // indices into the flat list, root first, excluding self
	parent int   // -1 for a root
}

// oracleLeaves returns the deepest applicable provisions of the patient's
// in-force Consents.
func oracleLeaves(in Input, r Resource) []Provision {
	var leaves []Provision
	for _, pol := range in.Policies {
		if pol.Status != "active" || pol.Patient != in.Patient || in.Patient == "" {
			continue
		}
		var flat []flatNode
		var walk func(p Provision, parent int, chain []int, depth int)
		walk = func(p Provision, parent int, chain []int, depth int) {
			if depth > MaxDepth {
				return
			}
			flat = append(flat, flatNode{prov: p, chain: chain, parent: parent})
			me := len(flat) - 1
			next := append(append([]int(nil), chain...), me)
			for _, c := range p.Provisions {
				walk(c, me, next, depth+1)
			}
		}
		walk(pol.Root, -1, nil, 0)
		holds := make([]bool, len(flat))
		for i, n := range flat {
			holds[i] = oracleMatch(n.prov, in, r)
		}
		applicable := make([]bool, len(flat))
		for i, n := range flat {
			applicable[i] = holds[i]
			for _, a := range n.chain {
				applicable[i] = applicable[i] && holds[a]
			}
		}
		for i := range flat {
			if !applicable[i] {
				continue
			}
			childApplies := false
			for j, m := range flat {
				if m.parent == i && applicable[j] {
					childApplies = true
				}
			}
			if !childApplies {
				leaves = append(leaves, flat[i].prov)
			}
		}
	}
	return leaves
}

// within reports start <= t < end, with zero bounds open, by Unix time.
func within(p Period, t time.Time) bool {
	u := t.UnixNano()
	if !p.Start.IsZero() && u < p.Start.UnixNano() {
		return false
	}
	if !p.End.IsZero() && u >= p.End.UnixNano() {
		return false
	}
	return true
}

func oracleMatch(p Provision, in Input, r Resource) bool {
	if !within(p.Period, in.Now) {
		return false
	}
	if len(p.Actors) > 0 {
		found := false
		for _, a := range p.Actors {
			found = found || (a == in.Destination.ODS && a != "")
		}
		if !found {
			return false
		}
	}
	if len(p.Purposes) > 0 {
		found := false
		for _, c := range p.Purposes {
			switch {
			case c.System == SystemPurpose && c.Code == string(in.Purpose):
				found = true
			case c.System == SystemActReason:
				alias := map[string]Purpose{"TREAT": PurposeDirectCare, "HRESCH": PurposeResearch, "HOPERAT": PurposePlanning, "PUBHLTH": PurposePublicHealth}
				if a, ok := alias[c.Code]; ok && a == in.Purpose {
					found = true
				}
			}
		}
		if !found {
			return false
		}
	}
	if len(p.Classes) > 0 {
		found := false
		for _, c := range p.Classes {
			found = found || c == r.Type
		}
		if !found {
			return false
		}
	}
	if len(p.Codes) > 0 && !oracleOverlap(p.Codes, r.Codes) {
		return false
	}
	if len(p.Labels) > 0 && !oracleOverlap(p.Labels, r.Labels) {
		return false
	}
	if !p.DataPeriod.Start.IsZero() || !p.DataPeriod.End.IsZero() {
		if r.Date.IsZero() || !within(p.DataPeriod, r.Date) {
			return false
		}
	}
	return true
}

func oracleOverlap(a, b []Coding) bool {
	set := map[string]bool{}
	for _, x := range a {
		set[x.System+"|"+x.Code] = true
	}
	for _, y := range b {
		if set[y.System+"|"+y.Code] {
			return true
		}
	}
	return false
}
