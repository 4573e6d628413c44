package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// bundleIntegrity returns the first problem with how the entries of a
// Bundle name each other, and where it is: two entries with one fullUrl
// (FHIR's bdl-7, which allows it only for versions of one resource, with
// different meta.versionId), or a urn:uuid or urn:oid reference that no
// entry's fullUrl resolves. Such a reference means nothing outside the
// Bundle, so a destination would refuse the delivery later, or store a
// dangling reference; the sender is told now instead. Neither the
// reference nor the fullUrl is quoted.
func bundleIntegrity(entries []models.BundleEntry) (detail, expr string, bad bool) {
	type seen struct {
		entry   int
		version string
	}
	full := make(map[string]seen, len(entries))
	for i, e := range entries {
		if e.FullUrl == nil || *e.FullUrl == "" {
			continue
		}
		v := versionOf(e.Resource)
		if first, dup := full[*e.FullUrl]; dup && (v == "" || first.version == "" || v == first.version) {
			return fmt.Sprintf("entry %d has the fullUrl of entry %d: a Bundle's entries need fullUrls of their own (bdl-7)", i, first.entry),
				fmt.Sprintf("Bundle.entry[%d].fullUrl", i), true
		}
		full[*e.FullUrl] = seen{i, v}
	}
	for i, e := range entries {
		if !bytes.Contains(e.Resource, []byte(`"urn:`)) {
			continue
		}
		var res any
		if json.Unmarshal(e.Resource, &res) != nil {
			continue // the resource's own checks report it
		}
		if where, ok := danglingReference(res, fmt.Sprintf("Bundle.entry[%d].resource", i), full); ok {
			return "a urn:uuid or urn:oid reference that no entry's fullUrl resolves: such a reference means nothing outside the Bundle", where, true
		}
	}
	return "", "", false
}

// versionOf returns the meta.versionId of the resource raw, or "".
func versionOf(raw json.RawMessage) string {
	if !bytes.Contains(raw, []byte(`"versionId"`)) {
		return ""
	}
	var r struct {
		Meta struct {
			VersionID string `json:"versionId"`
		} `json:"meta"`
	}
	_ = json.Unmarshal(raw, &r)
	return r.Meta.VersionID
}

// danglingReference returns the path of the first Reference.reference in v
// (at path) that is a urn:uuid or urn:oid none of full's keys is, in
// document order of sorted keys. Within a Bundle that v carries (a
// document Bundle as an entry of a message Bundle, as ITK3 sends it),
// that Bundle's own entries' fullUrls resolve too: FHIR resolves a
// reference within the Bundle that holds it.
func danglingReference[T any](v any, path string, full map[string]T) (string, bool) {
	switch x := v.(type) {
	case map[string]any:
		if rt, _ := x["resourceType"].(string); rt == "Bundle" {
			full = withFullURLs(full, x["entry"])
		}
		if ref, ok := x["reference"].(string); ok && (strings.HasPrefix(ref, "urn:uuid:") || strings.HasPrefix(ref, "urn:oid:")) {
			if _, found := full[ref]; !found {
				return path + ".reference", true
			}
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if where, ok := danglingReference(x[k], path+"."+pathName(k), full); ok {
				return where, true
			}
		}
	case []any:
		for i, y := range x {
			if where, ok := danglingReference(y, path+"["+strconv.Itoa(i)+"]", full); ok {
				return where, true
			}
		}
	}
	return "", false
}

// pathName is the key k in a reported path: an element name as it is,
// anything else (which may be patient data in the wrong place) as "*".
func pathName(k string) string {
	if knownNames()[strings.ToLower(k)] {
		return k
	}
	return "*"
}

// withFullURLs returns full with the fullUrls of entries (a nested
// Bundle's entry list) added, or full itself when they add none.
func withFullURLs[T any](full map[string]T, entries any) map[string]T {
	list, _ := entries.([]any)
	var out map[string]T
	for _, x := range list {
		e, _ := x.(map[string]any)
		u, _ := e["fullUrl"].(string)
		if u == "" {
			continue
		}
		if _, ok := full[u]; ok {
			continue
		}
		if out == nil {
			out = make(map[string]T, len(full)+len(list))
			for k, v := range full {
				out[k] = v
			}
		}
		var zero T
		out[u] = zero
	}
	if out == nil {
		return full
	}
	return out
}
