package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// adt returns a synthetic ADT message with segments joined by eol.
func adt(event, control, eol string) string {
	return strings.Join([]string{
		"MSH|^~\\&|PAS|RX1|EPR|RX1|20240715093512||ADT^" + event + "|" + control + "|P|2.4",
		"EVN|" + event + "|20240715093500",
		"PID|1||" + nhs.TestNumber(7) + "^^^NHS^NH~H123^^^RX1^MR||CONVERTTEST^ALEX||19700101|M",
		"PV1|1|I|WARD5^BAY2^BED3^RX1||||||||||||||||V0001",
	}, eol) + eol
}

// convertRun runs convert in process.
func convertRun(t *testing.T, stdin string, factories []adapter.Factory, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := convert(args, strings.NewReader(stdin), &out, &errOut, factories)
	switch e := err.(type) {
	case nil:
		code = 0
	case exitError:
		code = e.code
	default:
		if err == errUsage {
			code = 2
		} else {
			t.Fatalf("convert: %v", err)
		}
	}
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// bundles decodes JSON lines into bundles.
func bundles(t *testing.T, stdout string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		if line == "" {
			continue
		}
		var b map[string]any
		if err := json.Unmarshal([]byte(line), &b); err != nil {
			t.Fatalf("output line is not JSON: %v", err)
		}
		if b["resourceType"] != "Bundle" {
			t.Fatalf("output line is a %v, want a Bundle", b["resourceType"])
		}
		out = append(out, b)
	}
	return out
}

func TestConvert(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.hl7", adt("A01", "C1", "\r"))
	mixed := writeFile(t, dir, "mixed.hl7", "\xEF\xBB\xBF"+adt("A01", "C1", "\r\n")+adt("A03", "C2", "\n")+adt("A08", "C3", "\r"))
	// The bad message sits between two good ones, on line 5.
	bad := writeFile(t, dir, "bad.hl7", adt("A01", "C1", "\n")+adt("A99", "C2", "\n")+adt("A03", "C3", "\n"))
	oru := writeFile(t, dir, "notadt.hl7", "MSH|^~\\&|LAB|RX1|EPR|RX1|20240715093512||SIU^S12|C9|P|2.4\nPID|1||H1^^^RX1^MR||SECRETNAME^X\n")
	empty := writeFile(t, dir, "empty.hl7", "no message here\n")

	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantOut    int
		wantErr    []string
		notInErr   []string
		wantEvents []string
	}{
		{name: "one good message", args: []string{good}, wantOut: 1},
		{name: "mixed line endings and bom", args: []string{mixed}, wantOut: 3},
		{name: "bad among good", args: []string{bad}, wantCode: 1, wantOut: 2,
			wantErr: []string{bad + ":5: hl7.unsupported-message: ADT event not supported"}, notInErr: []string{"CONVERTTEST", nhs.TestNumber(7)}},
		{name: "stdin", args: []string{"-"}, stdin: adt("A01", "C1", "\n") + adt("A03", "C2", "\n"), wantOut: 2},
		{name: "no adapter for type", args: []string{oru, good}, wantCode: 1, wantOut: 1,
			wantErr: []string{oru + ":1: no adapter translates SIU messages"}, notInErr: []string{"SECRETNAME"}},
		{name: "forced source type rejects", args: []string{"--source-type", "pas", oru}, wantCode: 1,
			wantErr: []string{oru + ":1: hl7.unsupported-message: pas translates ADT messages only"}, notInErr: []string{"SECRETNAME"}},
		{name: "file without message", args: []string{empty}, wantCode: 1, wantErr: []string{empty + ":1: no HL7 v2 message"}},
		{name: "missing file", args: []string{filepath.Join(dir, "absent.hl7"), good}, wantCode: 1, wantOut: 1, wantErr: []string{"absent.hl7: cannot read"}},
		{name: "unknown source type", args: []string{"--source-type", "nope", good}, wantCode: 2, wantErr: []string{`"nope" is not an adapter type`}},
		{name: "no files", args: nil, wantCode: 2, wantErr: []string{"no input files"}},
		{name: "bad received", args: []string{"--received", "yesterday", good}, wantCode: 2, wantErr: []string{"RFC 3339"}},
		{name: "help", args: []string{"--help"}, wantCode: 0, wantErr: []string{"Convert HL7 v2 messages to FHIR offline", "-source-type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := convertRun(t, tt.stdin, all.Factories(), tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			if got := len(bundles(t, stdout)); got != tt.wantOut {
				t.Errorf("%d bundles, want %d; stderr:\n%s", got, tt.wantOut, stderr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			for _, w := range tt.notInErr {
				if strings.Contains(stderr, w) {
					t.Errorf("stderr holds message content %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestConvertReproducible checks that ids and output are stable across
// runs and distinct across messages, and that --received is applied.
func TestConvertReproducible(t *testing.T) {
	dir := t.TempDir()
	// No MSH-7: the bundle's timestamp is the receipt time.
	noTime := strings.Replace(adt("A01", "C1", "\r"), "|20240715093512|", "||", 1)
	f := writeFile(t, dir, "two.hl7", noTime+noTime)
	_, out1, _ := convertRun(t, "", all.Factories(), f)
	_, out2, _ := convertRun(t, "", all.Factories(), f)
	if out1 != out2 {
		t.Fatal("two runs over the same file differ")
	}
	bs := bundles(t, out1)
	if len(bs) != 2 || bs[0]["id"] == nil || bs[0]["id"] == bs[1]["id"] {
		t.Fatalf("bundle ids %v and %v: want present and distinct", bs[0]["id"], bs[1]["id"])
	}
	_, out3, _ := convertRun(t, "", all.Factories(), "--received", "2030-05-06T07:08:09Z", f)
	if out3 == out1 {
		t.Error("--received did not change the output")
	}
}

func TestConvertDialect(t *testing.T) {
	dir := t.TempDir()
	msg := writeFile(t, dir, "a.hl7", adt("A01", "C1", "\n"))
	good := writeFile(t, dir, "dialect.yaml", "local_identifier_system: https://fhir.convert-test.nhs.uk/Id/mrn\n")
	unknown := writeFile(t, dir, "unknown.yaml", "local_identifier_system: https://x.nhs.uk/Id/mrn\ncolour: blue\n")
	invalid := writeFile(t, dir, "invalid.yaml", "time_zone: Mars/Olympus\n")

	code, out, stderr := convertRun(t, "", all.Factories(), "--source-type", "pas", "--dialect", good, msg)
	if code != 0 || !strings.Contains(out, "https://fhir.convert-test.nhs.uk/Id/mrn") {
		t.Errorf("dialect not applied: code %d, stderr %s", code, stderr)
	}
	code, _, stderr = convertRun(t, "", all.Factories(), "--source-type", "pas", "--dialect", unknown, msg)
	if code != 2 || !strings.Contains(stderr, unknown+":2:") || !strings.Contains(stderr, "colour") {
		t.Errorf("unknown key: code %d, stderr %s; want exit 2 and %s:2:", code, stderr, unknown)
	}
	code, _, stderr = convertRun(t, "", all.Factories(), "--source-type", "pas", "--dialect", invalid, msg)
	if code != 2 || !strings.Contains(stderr, "time_zone") {
		t.Errorf("invalid dialect: code %d, stderr %s", code, stderr)
	}
	code, _, stderr = convertRun(t, "", all.Factories(), "--dialect", good, msg)
	if code != 2 || !strings.Contains(stderr, "--dialect needs --source-type") {
		t.Errorf("dialect without source type: code %d, stderr %s", code, stderr)
	}
}

// panicky is a translator factory whose translator panics.
type panicky struct{}

func (panicky) Type() string   { return "pas" }
func (panicky) NewConfig() any { return &struct{}{} }
func (panicky) NewTranslator(any) (adapter.Translator, error) {
	return panicTranslator{}, nil
}

type panicTranslator struct{}

func (panicTranslator) Translate(*envelope.Envelope) (*adapter.Translation, error) {
	panic("boom CONVERTTEST")
}

func TestConvertPanic(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "a.hl7", adt("A01", "C1", "\n")+adt("A01", "C2", "\n"))
	code, out, stderr := convertRun(t, "", []adapter.Factory{panicky{}}, f)
	if code != 1 || out != "" {
		t.Errorf("code %d, stdout %q; want 1 and nothing", code, out)
	}
	if strings.Count(stderr, "internal.panic") != 2 || strings.Contains(stderr, "CONVERTTEST") {
		t.Errorf("stderr:\n%s\nwant two internal.panic lines without the panic value", stderr)
	}
}

func TestConvertDispatch(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "a.hl7", adt("A01", "C1", "\r"))
	code, stdout, stderr := cliRun(t, "convert", f)
	if code != 0 || len(bundles(t, stdout)) != 1 {
		t.Fatalf("junction convert: code %d, stderr %s", code, stderr)
	}
}

// oru returns a synthetic ORU^R01 with one local test code, HB.
func oru(eol string) string {
	return strings.Join([]string{
		"MSH|^~\\&|LIMS|RX1LAB|EPR|RX1|20240715093512||ORU^R01^ORU_R01|L1|P|2.5.1",
		"PID|1||" + nhs.TestNumber(7) + "^^^NHS^NH~L123^^^RX1^MR||CONVERTTEST^ALEX||19700101|M",
		"OBR|1|PL1|FL1|FBC^Full blood count^L|||20240715081500||||||||||||||||||F",
		"OBX|1|NM|HB^Haemoglobin^L||140|g/L|130-170|N|||F",
	}, eol) + eol
}

// conceptMap returns a synthetic ConceptMap from the local code system
// source to SNOMED CT: HB to the given code, with the given equivalence.
func conceptMap(source, code, equivalence string) string {
	return `{"resourceType":"ConceptMap","status":"draft","group":[{"source":"` + source +
		`","target":"http://snomed.info/sct","element":[{"code":"HB","target":[{"code":"` + code +
		`","display":"Haemoglobin test","equivalence":"` + equivalence + `"}]}]}]}`
}

// TestConvertLab checks that --lab reads a pathology input's lab section,
// code maps included, and that --dialect still applies beside it.
func TestConvertLab(t *testing.T) {
	const local = "https://fhir.convert-test.nhs.uk/CodeSystem/lab"
	dir := t.TempDir()
	msg := writeFile(t, dir, "results.hl7", oru("\r"))
	adtMsg := writeFile(t, dir, "adt.hl7", adt("A01", "C1", "\r"))
	equivalent := writeFile(t, dir, "hb-equivalent.json", conceptMap(local, "1000001", "equivalent"))
	wider := writeFile(t, dir, "hb-wider.json", conceptMap(local, "1000002", "wider"))
	otherSystem := writeFile(t, dir, "hb-other-system.json", conceptMap("https://fhir.other.nhs.uk/CodeSystem/lab", "1000003", "equivalent"))
	notMap := writeFile(t, dir, "not-a-map.json", `{"resourceType":"ValueSet"}`)
	labYAML := func(name string, maps ...string) string {
		y := "local_code_system: " + local + "\ncode_maps:\n"
		for _, m := range maps {
			y += "  - " + m + "\n"
		}
		return writeFile(t, dir, name, y)
	}
	lab := labYAML("lab.yaml", equivalent, wider, otherSystem)
	noMaps := labYAML("lab-no-maps.yaml")
	missing := labYAML("lab-missing.yaml", filepath.Join(dir, "absent.json"))
	invalid := labYAML("lab-invalid.yaml", notMap)
	unknown := writeFile(t, dir, "lab-unknown.yaml", "local_code_system: "+local+"\ncolour: blue\n")
	patientDialect := writeFile(t, dir, "dialect.yaml", "local_identifier_system: https://fhir.convert-test.nhs.uk/Id/mrn\n")

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		notInOut []string
		wantErr  []string
	}{
		{name: "code map adds its equivalent target", args: []string{"--source-type", "pathology", "--lab", lab, msg},
			wantOut:  []string{`"system":"` + local + `","code":"HB"`, `"system":"http://snomed.info/sct","code":"1000001"`},
			notInOut: []string{"1000002", "1000003"}},
		{name: "lab section without code maps", args: []string{"--source-type", "pathology", "--lab", noMaps, msg},
			wantOut: []string{`"system":"` + local + `","code":"HB"`}, notInOut: []string{"1000001"}},
		{name: "without --lab the placeholder system", args: []string{"--source-type", "pathology", msg},
			wantOut: []string{`"code":"HB"`}, notInOut: []string{local, "1000001"}},
		{name: "dialect and lab together", args: []string{"--source-type", "pathology", "--dialect", patientDialect, "--lab", lab, msg},
			wantOut: []string{"https://fhir.convert-test.nhs.uk/Id/mrn", `"code":"1000001"`}},
		{name: "unknown key", args: []string{"--source-type", "pathology", "--lab", unknown, msg},
			wantCode: 2, wantErr: []string{"--lab: ", unknown + ":2:", "colour"}},
		{name: "missing code map", args: []string{"--source-type", "pathology", "--lab", missing, msg},
			wantCode: 2, wantErr: []string{"lab.code_maps[0]", "absent.json"}},
		{name: "code map that is no ConceptMap", args: []string{"--source-type", "pathology", "--lab", invalid, msg},
			wantCode: 2, wantErr: []string{"lab.code_maps[0]", "want ConceptMap"}},
		{name: "adapter without a lab section", args: []string{"--source-type", "pas", "--lab", lab, adtMsg},
			wantCode: 2, wantErr: []string{"--lab: adapter pas: its config has no lab section"}},
		{name: "lab without source type", args: []string{"--lab", lab, msg},
			wantCode: 2, wantErr: []string{"--lab needs --source-type"}},
		{name: "lab with order output", args: []string{"--to", "hl7v2-order", "--lab", lab, msg},
			wantCode: 2, wantErr: []string{"--lab needs --to fhir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := convertRun(t, "", all.Factories(), tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			if tt.wantCode == 0 && len(bundles(t, stdout)) != 1 {
				t.Fatalf("want one bundle; stderr:\n%s", stderr)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(stdout, w) {
					t.Errorf("output lacks %s", w)
				}
			}
			for _, w := range tt.notInOut {
				if strings.Contains(stdout, w) {
					t.Errorf("output holds %s", w)
				}
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}
