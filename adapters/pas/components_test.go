package pas

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// TestSplitComponentsMatchesComponent checks that every component a
// components gives is what hl7v2.Segment.Component gives, read the way
// the mappings read it, for every field and repetition of the golden
// inputs and of messages with escapes, subcomponents, explicit nulls,
// other delimiters and more components than a components keeps.
func TestSplitComponentsMatchesComponent(t *testing.T) {
	messages := map[string][]byte{
		"escapes and subcomponents": hl7(testMSH,
			`PID|1||H1^^^RX1&1.2.3&ISO^MR~\T\H2^^^RX1^MR||O\S\BRIEN^ANNE\R\MARIE^^^DR&X||19800101|F|||1 \F\ ROAD&FLAT 2^^TOWN^^ZZ99 1ZZ`,
			`PV1|1|I|  WARD1 ^""^BED\E\2^RX1^^^^^Day \T\ night unit|||^^^^^^^^^^^^^^^^^^X17`),
		"other delimiters":    []byte("MSH!@#$%!PAS!RX1!EPR!RX1!20240716101500!!ADT@A01!C1!P!2.5\rPID!1!!H1@@@RX1%1.2@MR#H2!!A$S$B@C%D\r"),
		"two delimiters only": []byte("MSH|^~|PAS|RX1|EPR|RX1|20240716101500||ADT^A01|C1|P|2.3\rPID|1||H1^^^RX1&X^MR\\T\\~H2\r"),
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		messages[filepath.Base(f)] = raw
	}
	for name, raw := range messages {
		t.Run(name, func(t *testing.T) {
			m, err := hl7v2.Parse(raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checked := 0
			for _, seg := range m.Segments() {
				for field := 3; field <= seg.FieldCount(); field++ {
					for rep := 1; rep <= max(seg.Repetitions(field), 1)+1; rep++ {
						cs := splitComponents(seg, m.Delimiters(), field, rep)
						for comp := 0; comp <= maxComponents+1; comp++ {
							want := strings.TrimSpace(value(seg.Component(field, rep, comp, 1)))
							if comp < 1 || comp > maxComponents {
								want = "" // outside what a components keeps
							}
							if got := cs.get(comp); got != want {
								t.Errorf("%s-%d rep %d comp %d: got %q, Component gives %q", seg.Name(), field, rep, comp, got, want)
							}
							checked++
						}
					}
				}
			}
			if checked == 0 {
				t.Error("nothing checked")
			}
		})
	}
}
