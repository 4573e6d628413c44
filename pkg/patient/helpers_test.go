package patient

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// localSystem is the synthetic local identifier system of the tests.
const localSystem = "https://fhir.example-trust.nhs.uk/Id/local-patient-identifier"

// testHashKey keys the tests' indexes.
var testHashKey = []byte("patient-test-key-0123456789")

// startJetStream runs an embedded JetStream server for the test.
func startJetStream(tb testing.TB) jetstream.JetStream { return jstest.Start(tb, "patient-test") }

// openIndex opens an index in its own bucket on js.
func openIndex(tb testing.TB, js jetstream.JetStream, bucket string) *Index {
	tb.Helper()
	ix, err := Open(tb.Context(), js, Config{Bucket: bucket, HashKey: testHashKey})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return ix
}

// num returns the i-th synthetic NHS number, checked valid.
func num(tb testing.TB, i int) string {
	tb.Helper()
	n := nhs.TestNumber(i)
	if !nhs.ValidNumber(n) {
		tb.Fatalf("TestNumber(%d) is not valid", i)
	}
	return n
}

// local returns a synthetic local identifier.
func local(v string) Identifier { return Identifier{System: localSystem, Value: v} }

// base is the receipt time of message 0.
var base = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// src returns the Source of message i: received i minutes after base,
// with a time-sortable id.
func src(i int) Source {
	return Source{MessageID: fmt.Sprintf("01TESTMSG%017d", i), Received: base.Add(time.Duration(i) * time.Minute)}
}

// pat describes a Patient for bundle.
type pat struct {
	url        string
	nhsNumber  string
	ids        []Identifier
	family     string
	given      []string
	birthDate  string
	gender     string
	postcode   string
	ods        string // GP practice, as a contained Organization entry
	gmp        string // GP, as a Practitioner entry
	odsLogical string // GP practice, as a logical reference
	replacedBy string // url of the survivor
	restricted bool
	cleared    []string // elements marked deleted (nhs.JunctionExtClearedElement)
}

// bundle builds a message bundle (JSON-shaped maps, as after decoding)
// with a MessageHeader of event and the patients.
func bundle(tb testing.TB, event string, pats ...pat) map[string]any {
	tb.Helper()
	entries := []any{map[string]any{
		"fullUrl": "urn:uuid:header",
		"resource": map[string]any{
			"resourceType": "MessageHeader",
			"eventCoding":  map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": event},
		},
	}}
	var extra []any
	for i, p := range pats {
		if p.url == "" {
			p.url = fmt.Sprintf("urn:uuid:patient-%d", i)
		}
		res := map[string]any{"resourceType": "Patient", "id": fmt.Sprintf("patient-%d", i)}
		var ids []any
		if p.nhsNumber != "" {
			ids = append(ids, map[string]any{"system": nhs.SystemNHSNumber, "value": p.nhsNumber})
		}
		for _, id := range p.ids {
			ids = append(ids, map[string]any{"system": id.System, "value": id.Value})
		}
		if ids != nil {
			res["identifier"] = ids
		}
		if p.family != "" || p.given != nil {
			var given []any
			for _, g := range p.given {
				given = append(given, g)
			}
			res["name"] = []any{map[string]any{"use": "official", "family": p.family, "given": given}}
		}
		if p.birthDate != "" {
			res["birthDate"] = p.birthDate
		}
		if p.gender != "" {
			res["gender"] = p.gender
		}
		if p.postcode != "" {
			res["address"] = []any{map[string]any{"use": "home", "postalCode": p.postcode}}
		}
		var gps []any
		if p.ods != "" {
			u := fmt.Sprintf("urn:uuid:org-%d", i)
			gps = append(gps, map[string]any{"reference": u, "type": "Organization"})
			extra = append(extra, map[string]any{"fullUrl": u, "resource": map[string]any{
				"resourceType": "Organization",
				"identifier":   []any{map[string]any{"system": nhs.SystemODSOrganization, "value": p.ods}},
			}})
		}
		if p.odsLogical != "" {
			gps = append(gps, map[string]any{"type": "Organization",
				"identifier": map[string]any{"system": nhs.SystemODSOrganization, "value": p.odsLogical}})
		}
		if p.gmp != "" {
			u := fmt.Sprintf("urn:uuid:gp-%d", i)
			gps = append(gps, map[string]any{"reference": u, "type": "Practitioner"})
			extra = append(extra, map[string]any{"fullUrl": u, "resource": map[string]any{
				"resourceType": "Practitioner",
				"identifier":   []any{map[string]any{"system": nhs.SystemGMP, "value": p.gmp}},
			}})
		}
		if gps != nil {
			res["generalPractitioner"] = gps
		}
		if p.replacedBy != "" {
			res["active"] = false
			res["link"] = []any{map[string]any{"type": "replaced-by", "other": map[string]any{"reference": p.replacedBy, "type": "Patient"}}}
		}
		for _, c := range p.cleared {
			exts, _ := res["extension"].([]any)
			res["extension"] = append(exts, map[string]any{"url": nhs.JunctionExtClearedElement, "valueCode": c})
		}
		if p.restricted {
			res["meta"] = map[string]any{"security": []any{map[string]any{"system": systemConfidentiality, "code": "R"}}}
		}
		entries = append(entries, map[string]any{"fullUrl": p.url, "resource": res})
	}
	b := map[string]any{"resourceType": "Bundle", "type": "message", "entry": append(entries, extra...)}
	// Round-trip through JSON so the shapes are exactly those decoded.
	data, err := json.Marshal(b)
	if err != nil {
		tb.Fatalf("encoding bundle: %v", err)
	}
	out, err := decodeBundle(data)
	if err != nil {
		tb.Fatalf("decoding bundle: %v", err)
	}
	return out
}
