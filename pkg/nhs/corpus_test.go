package nhs

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/google/go-cmp/cmp"
)

const ukCoreDir = "../../../shared/corpora/uk-core"

func ukCore(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(ukCoreDir); errors.Is(err, fs.ErrNotExist) {
		corpustest.Missing(t, "UK Core corpus not present at %s; skipping the URL checks", ukCoreDir)
	}
	return ukCoreDir
}

// conformance is the part of a FHIR XML conformance resource we check.
type conformance struct {
	URL struct {
		Value string `xml:"value,attr"`
	} `xml:"url"`
	Concept []struct {
		Code struct {
			Value string `xml:"value,attr"`
		} `xml:"code"`
		Display struct {
			Value string `xml:"value,attr"`
		} `xml:"display"`
	} `xml:"concept"`
}

func readConformance(t *testing.T, path string) conformance {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var c conformance
	if err := xml.Unmarshal(b, &c); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return c
}

func TestCanonicalURLsMatchUKCore(t *testing.T) {
	dir := ukCore(t)
	tests := []struct {
		file string
		want string
	}{
		{"structuredefinitions/UKCore-Patient.xml", ProfilePatient},
		{"structuredefinitions/UKCore-Encounter.xml", ProfileEncounter},
		{"structuredefinitions/UKCore-MessageHeader.xml", ProfileMessageHeader},
		{"structuredefinitions/UKCore-Bundle.xml", ProfileBundle},
		{"structuredefinitions/Extension-UKCore-NHSNumberVerificationStatus.xml", ExtNHSNumberVerificationStatus},
		{"codesystems/CodeSystem-UKCore-NHSNumberVerificationStatusEngland.xml", CodeSystemNHSNumberVerificationStatusEngland},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			got := readConformance(t, filepath.Join(dir, tt.file)).URL.Value
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("canonical URL (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIdentifierSystemsUsedByUKCore(t *testing.T) {
	dir := ukCore(t)
	var all strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".xml") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		all.Write(b)
		return nil
	})
	if err != nil {
		t.Fatalf("walk corpus: %v", err)
	}
	text := all.String()
	for _, sys := range []string{SystemNHSNumber, SystemODSOrganization, SystemODSSite, SystemGMC, SystemGMP, SystemSDSUserID} {
		t.Run(sys, func(t *testing.T) {
			if !strings.Contains(text, `"`+sys+`"`) {
				t.Errorf("identifier system %s does not occur in UK Core", sys)
			}
		})
	}
}

func TestVerificationStatusDisplaysMatchUKCore(t *testing.T) {
	dir := ukCore(t)
	cs := readConformance(t, filepath.Join(dir, "codesystems/CodeSystem-UKCore-NHSNumberVerificationStatusEngland.xml"))
	want := map[string]string{}
	for _, c := range cs.Concept {
		want[c.Code.Value] = c.Display.Value
	}
	got := map[string]string{}
	for code := range want {
		if d, ok := VerificationStatusDisplay(code); ok {
			got[code] = d
		}
	}
	// Codes the corpus does not define must be unknown here too.
	for i := range 100 {
		code := fmt.Sprintf("%02d", i)
		if _, inCorpus := want[code]; inCorpus {
			continue
		}
		if d, ok := VerificationStatusDisplay(code); ok {
			got[code] = d
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("verification status displays (-want +got):\n%s", diff)
	}
}

func TestVerificationStatusDisplay(t *testing.T) {
	tests := []struct {
		code string
		ok   bool
	}{
		{"01", true}, {"08", true}, {"1", false}, {"09", false}, {"", false},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			d, ok := VerificationStatusDisplay(tt.code)
			if ok != tt.ok || (ok && d == "") {
				t.Errorf("VerificationStatusDisplay(%q) = %q,%v; want ok=%v", tt.code, d, ok, tt.ok)
			}
		})
	}
}
