package pathology

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestEncoderMatchesModels checks that the bundles written with the
// translator's fhir.ModelEncoder are byte for byte those written with
// encoding/json (fhir.MarshalResource and the models' MarshalJSON), over
// every golden input, the corpus samples and a message with strings that
// need escaping.
func TestEncoderMatchesModels(t *testing.T) {
	fast := newTestTranslator(t)
	slow := newTestTranslator(t)
	slow.viaModels = true
	files, _ := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	for _, pattern := range []string{"ms-fhir-converter/messages/*ORU*.hl7", "ms-fhir-converter/messages/LRI*.hl7"} {
		more, _ := filepath.Glob(filepath.Join(corporaDir, pattern))
		files = append(files, more...)
	}
	tricky := []byte("MSH|^~\\&|LAB|RX1|EPR|RX1|20240715093512||ORU^R01|C<1>&\"|P|2.5.1||||||UNICODE UTF-8\r" +
		"PID|1||9990000018^^^NHS^NH||O\\X0A\\BRIEN<b>^AL\\T\\EX\u2028\xff||19800101|M\r" +
		"OBR|1|P<1>|F&1|X<Y^Odd <test> & more^L|||20240715081500\r" +
		"NTE|1|L|Note with \"quotes\", \\E\\ and <tags> & \u2029.\r" +
		"OBX|1|NM|A&B^Ratio <1>^L||<5|mmol/L|<10|L|||F\r" +
		"OBX|2|ST|TXT^Text^L||a\\X09\\b <c> & d||||||F\r")
	n := 0
	check := func(name string, raw []byte) {
		a, errA := fast.Translate(testEnvelope(name, raw))
		b, errB := slow.Translate(testEnvelope(name, raw))
		if (errA == nil) != (errB == nil) {
			t.Fatalf("%s: errors %v and %v", name, errA, errB)
		}
		if errA != nil {
			if name == "tricky" {
				t.Fatalf("tricky message: %v", errA)
			}
			return
		}
		if name == "tricky" {
			for _, want := range []string{`"comparator":"<"`, `<b>`, `AL&EX\u2028\ufffd`, `\"quotes\"`, `\t`} {
				if !bytes.Contains(a.Bundle, []byte(want)) {
					t.Errorf("tricky message does not exercise %s: %s", want, a.Bundle)
				}
			}
		}
		n++
		if diff := cmp.Diff(string(b.Bundle), string(a.Bundle)); diff != "" {
			t.Errorf("%s: encoder differs from encoding/json (-models +encoder):\n%s", name, diff)
		}
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		check(filepath.Base(f), raw)
		check(filepath.Base(f)+" (CR)", bytes.ReplaceAll(raw, []byte("\n"), []byte("\r")))
	}
	check("tricky", tricky)
	if n < 2*len(goldenCases) {
		t.Errorf("only %d messages compared", n)
	}
}
