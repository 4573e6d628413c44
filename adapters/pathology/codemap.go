package pathology

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fhir"
)

// maxCodeMapBytes bounds one code map file.
const maxCodeMapBytes = 64 << 20

// codeKey is a source coding of a code map.
type codeKey struct{ system, code string }

// codeMap holds the targets of every mapped source coding, from every
// configured ConceptMap, in file, group, element and target order.
type codeMap map[codeKey][]models.Coding

// conceptMapFile is the part of a FHIR R4 ConceptMap the translator uses.
type conceptMapFile struct {
	ResourceType string `json:"resourceType"`
	Group        []struct {
		Source  string `json:"source"`
		Target  string `json:"target"`
		Element []struct {
			Code   string `json:"code"`
			Target []struct {
				Code        string `json:"code"`
				Display     string `json:"display"`
				Equivalence string `json:"equivalence"`
			} `json:"target"`
		} `json:"element"`
	} `json:"group"`
}

// equivalences are the ConceptMap equivalence codes of R4; those marked
// true make a target a translation that may sit beside the source in one
// CodeableConcept.
var equivalences = map[string]bool{
	"relatedto": false, "equivalent": true, "equal": true, "wider": false,
	"subsumes": false, "narrower": false, "specializes": false,
	"inexact": false, "unmatched": false, "disjoint": false,
}

// loadCodeMaps reads the ConceptMap files at paths and returns their
// merged targets, with every problem found (each naming its file and
// position; code maps are configuration, not patient data).
func loadCodeMaps(paths []string) (codeMap, []error) {
	var errs []error
	m := codeMap{}
	for i, p := range paths {
		where := fmt.Sprintf("lab.code_maps[%d]", i)
		if strings.TrimSpace(p) == "" {
			errs = append(errs, fmt.Errorf("%s: empty path", where))
			continue
		}
		raw, err := readBounded(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		errs = append(errs, m.add(raw, fmt.Sprintf("%s (%s)", where, p))...)
	}
	return m, errs
}

// readBounded reads a file of at most maxCodeMapBytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open code map: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxCodeMapBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read code map: %w", err)
	}
	if len(raw) > maxCodeMapBytes {
		return nil, fmt.Errorf("code map is larger than %d bytes", maxCodeMapBytes)
	}
	return raw, nil
}

// add merges the ConceptMap in raw into m and returns its problems.
func (m codeMap) add(raw []byte, where string) []error {
	var cm conceptMapFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&cm); err != nil {
		return []error{fmt.Errorf("%s: not a JSON ConceptMap: %w", where, err)}
	}
	if cm.ResourceType != "ConceptMap" {
		return []error{fmt.Errorf("%s: resourceType is %q, want ConceptMap", where, cm.ResourceType)}
	}
	var errs []error
	for gi, g := range cm.Group {
		gw := fmt.Sprintf("%s: group[%d]", where, gi)
		if err := checkURI(g.Source); err != nil {
			errs = append(errs, fmt.Errorf("%s.source: %w", gw, err))
		}
		if err := checkURI(g.Target); err != nil {
			errs = append(errs, fmt.Errorf("%s.target: %w", gw, err))
		}
		for ei, e := range g.Element {
			ew := fmt.Sprintf("%s.element[%d]", gw, ei)
			if strings.TrimSpace(e.Code) == "" {
				errs = append(errs, fmt.Errorf("%s.code: required", ew))
			}
			for ti, t := range e.Target {
				tw := fmt.Sprintf("%s.target[%d]", ew, ti)
				use, known := equivalences[t.Equivalence]
				if !known {
					errs = append(errs, fmt.Errorf("%s.equivalence: %q is not an R4 ConceptMap equivalence", tw, t.Equivalence))
					continue
				}
				if t.Code == "" {
					if use {
						errs = append(errs, fmt.Errorf("%s.code: required with equivalence %q", tw, t.Equivalence))
					}
					continue
				}
				if !use || g.Source == "" || g.Target == "" || e.Code == "" {
					continue
				}
				k := codeKey{g.Source, e.Code}
				c := models.Coding{System: fhir.Ptr(g.Target), Code: fhir.Ptr(t.Code), Display: fhir.Optional(t.Display)}
				if !hasCoding(m[k], g.Target, t.Code) {
					m[k] = append(m[k], c)
				}
			}
		}
	}
	return errs
}

// apply adds to cc the targets of its codings that are not already there.
func (m codeMap) apply(cc *models.CodeableConcept) {
	if len(m) == 0 || cc == nil {
		return
	}
	n := len(cc.Coding)
	for i := 0; i < n; i++ {
		c := cc.Coding[i]
		if c.System == nil || c.Code == nil {
			continue
		}
		for _, t := range m[codeKey{*c.System, *c.Code}] {
			if !hasCoding(cc.Coding, *t.System, *t.Code) {
				cc.Coding = append(cc.Coding, t)
			}
		}
	}
}

// hasCoding reports whether cs holds a coding with system and code.
func hasCoding(cs []models.Coding, system, code string) bool {
	for _, c := range cs {
		if c.System != nil && c.Code != nil && *c.System == system && *c.Code == code {
			return true
		}
	}
	return false
}
