package fhir

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// Data-quality issue names reported by the translator.
const (
	IssueNHSNumberMissing = "nhs_number_missing"
	IssueNHSNumberInvalid = "nhs_number_invalid"
	// IssuePatientUnidentified: a resource names its patient only by a
	// literal reference (Patient/123) and nothing in the body identifies
	// them, so their Consents cannot be looked up.
	IssuePatientUnidentified = "patient_unidentified"
)

// DataQualityCodes implements adapter.DataQualityCoder.
func (Translator) DataQualityCodes() []string {
	return []string{IssueNHSNumberMissing, IssueNHSNumberInvalid, IssuePatientUnidentified}
}

// Translator turns what the inbound endpoint stored into a Bundle. It does
// no I/O. A Bundle is passed on as it came (without a byte order mark); a
// single resource is wrapped in a Bundle of type collection whose id is
// the Junction message id and whose one entry has the fullUrl
// urn:uuid:DeterministicUUID(message id, "entry", "0"), so translating the
// same message twice gives the same bytes.
type Translator struct {
	// input, when set, holds the configuration of the input whose posts
	// this translates, for CheckInput.
	input *inputChecks
}

var (
	_ adapter.Translator       = Translator{}
	_ adapter.InputChecker     = Translator{}
	_ adapter.DataQualityCoder = Translator{}
)

// inputChecks builds an input's checks when first asked: the engine never
// asks (its endpoint checks posts), so it does not load a schema twice.
type inputChecks struct {
	cfg  InboundConfig
	once sync.Once
	pc   postCheck
	err  error
}

func (c *inputChecks) get() (postCheck, error) {
	c.once.Do(func() { c.pc, c.err = newPostCheck(c.cfg) })
	return c.pc, c.err
}

// CheckInput implements adapter.InputChecker: it checks raw as the input
// checks a post before storing it (POST [base] for a Bundle, POST
// [base]/[type] for another resource), against the input's configuration,
// or the defaults for a Translator made without one. The error is a fault
// with the code the input would count, saying what it would answer.
func (t Translator) CheckInput(raw []byte) error {
	ic := t.input
	if ic == nil {
		ic = &inputChecks{cfg: DefaultInboundConfig()}
	}
	pc, err := ic.get()
	if err != nil {
		return err
	}
	rj, ok := rejection{}, true
	if int64(len(raw)) > pc.maxBody {
		rj, ok = tooLarge(pc.maxBody), false
	} else {
		pathType := ""
		if rt, err := jfhir.ResourceType(stripBOM(raw)); err == nil && rt != "Bundle" {
			pathType = rt
		}
		_, rj, ok = pc.check(raw, pathType)
	}
	if ok {
		return nil
	}
	msg := fmt.Sprintf("the FHIR input refuses it before storing (HTTP %d): %s", rj.status, rj.detail)
	if len(rj.expr) > 0 {
		msg += " (at " + strings.Join(rj.expr, ", ") + ")"
	}
	return fault.New(rj.code, msg)
}

// validID reports whether s is a valid FHIR id: 1 to 64 letters, digits,
// '-' or '.'.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Translate implements adapter.Translator.
func (Translator) Translate(env *envelope.Envelope) (*adapter.Translation, error) {
	if env == nil {
		return nil, fault.New(fault.CodeTranslate, "fhir: no message")
	}
	doc := stripBOM(env.Raw)
	rt, err := jfhir.ResourceType(doc)
	if err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeTranslate, "fhir: stored body is not a FHIR resource", err)
	}
	out := &adapter.Translation{}
	if rt == "Bundle" {
		var head struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(doc, &head); err != nil {
			return nil, fault.Wrap(fault.Permanent, fault.CodeTranslate, "fhir: stored Bundle does not decode", err).WithDetail(jsonError(err))
		}
		out.Bundle = doc
		out.Event = head.Type
	} else {
		b, err := wrapResource(env, doc)
		if err != nil {
			return nil, err
		}
		out.Bundle = b
		out.Event = rt
	}
	k := patientKeysOf(doc, rt)
	switch {
	case k.NHS != "" && nhs.ValidNumber(k.NHS):
		out.PatientKey = k.NHS
	case k.Local != "":
		out.PatientKey = k.Local
	default:
		out.PatientKey = k.First
	}
	if k.Found {
		switch {
		case k.NHS == "":
			out.DataQuality = append(out.DataQuality, IssueNHSNumberMissing)
		case !nhs.ValidNumber(k.NHS):
			out.DataQuality = append(out.DataQuality, IssueNHSNumberInvalid)
		}
	} else if k.Referenced {
		out.DataQuality = append(out.DataQuality, IssuePatientUnidentified)
	}
	return out, nil
}

// wrapResource returns a collection Bundle holding the one resource doc.
func wrapResource(env *envelope.Envelope, doc []byte) ([]byte, error) {
	full := "urn:uuid:" + jfhir.DeterministicUUID(env.ID, "entry", "0")
	b := models.Bundle{
		Type:  models.BundleTypeCollection,
		Entry: []models.BundleEntry{{FullUrl: &full, Resource: json.RawMessage(doc)}},
	}
	if validID(env.ID) {
		id := env.ID
		b.Id = &id
	}
	if !env.ReceivedAt.IsZero() {
		ts := env.ReceivedAt.UTC().Format(time.RFC3339Nano)
		b.Timestamp = &ts
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeTranslate, "fhir: wrap resource in a Bundle", err)
	}
	return raw, nil
}
