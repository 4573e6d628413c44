package route

import (
	"slices"

	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// LocalKeyPrefix marks a translation's patient key that reads as an NHS
// number but is a local identifier (see LocalKey).
const LocalKeyPrefix = "local:"

// LocalKey returns a translation's patient key key, marked with
// LocalKeyPrefix when it reads as a valid NHS number that bundle does
// not name as one: a hospital number of ten digits that happens to pass
// the check digit. Unmarked, consent would decide for, and the audit
// trail name, the patient who has that NHS number, another person;
// marked, the key is a local identifier, decided by the NHS number the
// patient index knows for it. The router and route tests both mark it.
func LocalKey(key string, bundle map[string]any) string {
	n := nhs.Normalize(key)
	if !nhs.ValidNumber(n) || namesNHSNumber(bundle, n) {
		return key
	}
	return LocalKeyPrefix + key
}

// namesNHSNumber reports whether bundle names NHS number n as one: on a
// Patient entry's identifier with the UK Core system (looked at first, as
// it is where a translation's key comes from), or anywhere
// consent.BundleNHSNumbers finds one.
func namesNHSNumber(bundle map[string]any, n string) bool {
	entries, _ := bundle["entry"].([]any)
	for _, e := range entries {
		em, _ := e.(map[string]any)
		res, _ := em["resource"].(map[string]any)
		if res["resourceType"] != "Patient" {
			continue
		}
		ids, _ := res["identifier"].([]any)
		for _, x := range ids {
			id, _ := x.(map[string]any)
			if v, _ := id["value"].(string); id["system"] == nhs.SystemNHSNumber && nhs.Normalize(v) == n {
				return true
			}
		}
	}
	return slices.Contains(consent.BundleNHSNumbers(bundle), n)
}
