package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/mllp"
	"github.com/junction-fhir/junction/pkg/route"
	"github.com/junction-fhir/junction/pkg/rules"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/tlsconf/tlstest"
)

// cliRun runs the CLI in process and returns its exit code and output.
func cliRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// shippedRoutes is the absolute path of the repository's routes/.
func shippedRoutes(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "routes"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shipped routes: %v", err)
	}
	return p
}

// cliConfig writes a config that keeps the default inputs and
// destinations, with data under a temp dir and the given routes.
func cliConfig(t *testing.T, routes ...string) string {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %q\nroutes:\n", filepath.Join(dir, "data"))
	for _, r := range routes {
		fmt.Fprintf(&b, "  - %q\n", r)
	}
	path := filepath.Join(dir, "junction.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeConfig writes text as dir/junction.yaml and returns the file's
// path and the config loaded from it.
func writeConfig(t *testing.T, dir, text string) (string, *config.Config) {
	t.Helper()
	path := writeFile(t, dir, "junction.yaml", text)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, cfg
}

// withStore opens the store of cfg, runs fn on it and closes it, so that
// a command run afterwards can open the same data directory.
func withStore(t *testing.T, cfg *config.Config, fn func(st *store.Store)) {
	t.Helper()
	st, err := store.Open(t.Context(), cfg.NATS, cfg.DataDir, config.Secrets{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fn(st)
}

// cliRoute returns a route file: a direct-care route named name from
// input source, matching match, to the fhir-store destination, followed
// by tests (a "tests:" section, or "").
func cliRoute(name, source, match, tests string) string {
	return "name: " + name + "\nsource:\n  adapter: " + source + "\nmatch: " + match + `
consent:
  purpose: direct-care
  legal_basis: direct-care
  default: permit
destinations:
  - name: fhir-store
` + tests
}

// cliWrite writes content to the file at path, making its directory,
// and returns path.
func cliWrite(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCLIUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{"no arguments", nil, 2, "Usage: junction <command> [flags]", ""},
		{"help", []string{"help"}, 0, "Usage: junction <command> [flags]", ""},
		{"-h", []string{"-h"}, 0, "Commands:", ""},
		{"--help", []string{"--help"}, 0, "Run 'junction <command> --help'", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `junction: unknown command "frobnicate"`},
		{"unknown flag", []string{"lint", "--frobnicate"}, 2, "", "flag provided but not defined: -frobnicate"},
		{"send without files", []string{"send"}, 2, "", "Usage: junction send [flags] FILE..."},
		{"audit without subcommand", []string{"audit"}, 2, "", "Usage: junction audit trail"},
		{"audit unknown subcommand", []string{"audit", "nope"}, 2, "", `unknown subcommand "nope" (trail, find, deadletters, quarantine, reconcile, verify, disclosures, keygen)`},
		{"audit trail without id", []string{"audit", "trail"}, 2, "", "Usage: junction audit trail [flags] MESSAGE-ID"},
		{"version", []string{"version"}, 0, "junction dev\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cliRun(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
			if !strings.Contains(out, tt.inStdout) {
				t.Errorf("stdout %q does not contain %q", out, tt.inStdout)
			}
			if !strings.Contains(errOut, tt.inStderr) {
				t.Errorf("stderr %q does not contain %q", errOut, tt.inStderr)
			}
		})
	}
}

// TestCLIHelpEveryCommand checks that every command, and every audit
// subcommand, answers --help with its usage and exit code 0, without
// doing anything else (serve must not start).
func TestCLIHelpEveryCommand(t *testing.T) {
	var cases [][]string
	for _, c := range commands() {
		cases = append(cases, []string{c.name, "--help"}, []string{c.name, "-h"})
	}
	cases = append(cases, []string{"audit", "trail", "--help"}, []string{"audit", "find", "--help"}, []string{"audit", "deadletters", "--help"}, []string{"audit", "reconcile", "--help"}, []string{"audit", "verify", "--help"}, []string{"audit", "keygen", "--help"})
	if len(cases) < 2*8 {
		t.Fatalf("only %d commands", len(cases)/2)
	}
	for _, args := range cases {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errOut := cliRun(t, args...)
			if code != 0 {
				t.Errorf("exit %d, want 0\nstderr: %s", code, errOut)
			}
			want := "Usage: junction " + strings.Join(args[:len(args)-1], " ")
			if !strings.Contains(out+errOut, want) {
				t.Errorf("output does not contain %q:\n%s%s", want, out, errOut)
			}
		})
	}
}

// loadShipped loads the shipped routes without the CLI.
func loadShipped(t *testing.T) []*route.Route {
	t.Helper()
	env, err := rules.NewEnv(rules.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := route.LoadAll([]string{shippedRoutes(t)}, env, nil, route.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return loaded
}

func TestCLILintShippedRoutes(t *testing.T) {
	routes := shippedRoutes(t)
	cfg := cliConfig(t, routes)
	// Every route and every expression is listed, with its position.
	wants := []string{"ok: 3 inputs, 2 destinations, 5 routes\n"}
	for _, r := range loadShipped(t) {
		wants = append(wants, fmt.Sprintf("route %s (%s): source %s, %d destinations\n", r.Name, r.File, r.Source, len(r.Destinations)))
		for _, c := range r.Programs {
			wants = append(wants, fmt.Sprintf("  %s %s: estimated cost ", c.Pos, c.Where))
		}
	}
	if len(wants) < 6 {
		t.Fatalf("only %d expected lines", len(wants))
	}
	for name, args := range map[string][]string{
		"routes from the config": {"lint", "-c", cfg},
		"routes as arguments":    {"lint", "-c", cliConfig(t, t.TempDir()), routes},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := cliRun(t, args...)
			if code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
			}
			for _, want := range wants {
				if !strings.Contains(out, want) {
					t.Errorf("stdout does not contain %q:\n%s", want, out)
				}
			}
			if errOut != "" {
				t.Errorf("stderr not empty for the shipped routes:\n%s", errOut)
			}
		})
	}
}

// TestCLILintWarnsOfCostAboveLimit: an expression whose worst case is
// within max_estimated_cost but above cost_limit loads, with a warning at
// it: a message large enough would be stopped at run time.
func TestCLILintWarnsOfCostAboveLimit(t *testing.T) {
	dir := t.TempDir()
	routeFile := cliWrite(t, filepath.Join(dir, "r.yaml"), cliRoute("costly", "pas", `bundle.entry.all(a, bundle.entry.all(b, a.fullUrl != ""))`, ""))
	code, out, errOut := cliRun(t, "lint", "-c", cliConfig(t, dir))
	if code != 0 || !strings.HasSuffix(out, "ok: 3 inputs, 2 destinations, 1 routes\n") {
		t.Errorf("exit %d, want 0\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if want := routeFile + ":4:8: warning: match: estimated worst-case cost "; !strings.HasPrefix(errOut, want) || !strings.Contains(errOut, "is above rules.cost_limit 1000000") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("stderr: want one warning starting %q naming the cost limit, got:\n%s", want, errOut)
	}
}

// TestCLILintWarnsOfUnroutedRelay: lint warns, at the relay entry in the
// config, of each type an input relays that no route names, since those
// messages would be acknowledged and sent nowhere; not when routes name
// them, nor when route files are given apart from the config's.
func TestCLILintWarnsOfUnroutedRelay(t *testing.T) {
	tests := []struct {
		name   string
		events string // the relaying route's source.events; "" for no such route
		args   bool   // lint the route file given, not the config's routes
		want   []string
	}{
		{"no route names them", "", false, []string{
			":3:49: warning: inputs.pas.relay[0]: no route names ORM^O01:",
			":3:58: warning: inputs.pas.relay[1]: no route names SIU^*:",
			":3:65: warning: inputs.pas.relay[2]: no route names ADT^*:",
		}},
		{"one event of each named", "[ORM^O01, SIU^S12, ADT^A17]", false, nil},
		{"every event of a type named", "[SIU^*, ORM^O01]", false, []string{
			":3:65: warning: inputs.pas.relay[2]: no route names ADT^*:",
		}},
		{"a translated event is not a relayed one", "[ADT^A01, ORM^O01, SIU^*]", false, []string{
			":3:65: warning: inputs.pas.relay[2]: no route names ADT^*:",
		}},
		{"route files given", "", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			routes := filepath.Join(dir, "routes")
			if err := os.Mkdir(routes, 0o700); err != nil {
				t.Fatal(err)
			}
			cliWrite(t, filepath.Join(routes, "adt.yaml"), cliRoute("adt", "pas", "true", ""))
			if tt.events != "" {
				cliWrite(t, filepath.Join(routes, "relay.yaml"), "name: relay\nsource: {adapter: pas, events: "+tt.events+"}\n"+
					"consent: {purpose: direct-care, legal_basis: direct-care, default: permit}\n"+
					"destinations:\n  - name: lis\n    payload: raw\n")
			}
			cfg := cliWrite(t, filepath.Join(dir, "junction.yaml"), fmt.Sprintf("data_dir: %q\ninputs:\n"+
				// The trust's own systems: placeholders are warned of too.
				"  pas: {type: pas, listen: 127.0.0.1:0, relay: [ORM^O01, SIU^*, ADT^*], dialect: {local_identifier_system: 'https://fhir.rx1.nhs.uk/Id/local-patient-identifier', visit_number_system: 'https://fhir.rx1.nhs.uk/Id/visit-number'}}\n"+
				"destinations:\n  fhir-store: {type: file, dir: out}\n  lis: {type: mllp, address: 127.0.0.1:1}\n"+
				"routes: [%q]\n", filepath.Join(dir, "data"), routes))
			args := []string{"lint", "-c", cfg}
			if tt.args {
				args = append(args, filepath.Join(routes, "adt.yaml"))
			}
			code, out, errOut := cliRun(t, args...)
			if code != 0 || !strings.Contains(out, "ok: 1 inputs, 2 destinations") {
				t.Fatalf("exit %d, want 0\nstdout: %s\nstderr: %s", code, out, errOut)
			}
			lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
			if errOut == "" {
				lines = nil
			}
			if len(lines) != len(tt.want) {
				t.Fatalf("stderr has %d lines, want %d:\n%s", len(lines), len(tt.want), errOut)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], cfg+w) || !strings.HasSuffix(lines[i], "such messages are acknowledged and then sent nowhere (filtered); name it in a route's source.events, or take it off relay") {
					t.Errorf("stderr line %d:\n%s\nwant it to start %q and say where such messages go", i, lines[i], cfg+w)
				}
			}
		})
	}
}

func TestCLILintErrors(t *testing.T) {
	dir := t.TempDir()
	bad := cliWrite(t, filepath.Join(dir, "bad.yaml"), "name: bad\nsource:\n  adapter: pas\nmatch: |\n  msg.event == \"A01\" &&\n    nhsNumberValid(nhsnumber(bundle))\nconsent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\ndestinations:\n  - name: nowhere\n")
	// One route without a legal basis, one whose basis does not support
	// its purpose and skips the consent gate: every problem at once.
	consentDir := filepath.Join(dir, "consent")
	noBasis := cliWrite(t, filepath.Join(consentDir, "no-basis.yaml"), "name: no-basis\nsource:\n  adapter: pas\nconsent:\n  purpose: direct-care\n  default: permit\ndestinations:\n  - name: fhir-store\n")
	wrongBasis := cliWrite(t, filepath.Join(consentDir, "wrong-basis.yaml"), "name: wrong-basis\nsource:\n  adapter: pas\nconsent:\n  purpose: research\n  legal_basis: direct-care\n  default: deny\ndestinations:\n  - name: fhir-store\n")
	badSkip := cliWrite(t, filepath.Join(consentDir, "bad-skip.yaml"), "name: bad-skip\nsource:\n  adapter: pas\nconsent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\n  skip_consent_gate: true\ndestinations:\n  - name: fhir-store\n")
	badCfg := cliWrite(t, filepath.Join(dir, "bad-config.yaml"), "data_dir: x\nhttp:\n  lisen: 0.0.0.0:8080\n")
	invalidCfg := cliWrite(t, filepath.Join(dir, "invalid-config.yaml"), fmt.Sprintf("data_dir: x\nroutes: [%q]\nhttp:\n  listen: 0.0.0.0:8080\nrouter:\n  batch: 0\n", shippedRoutes(t)))
	badTokens := cliWrite(t, filepath.Join(dir, "bad-tokens.yaml"), fmt.Sprintf("data_dir: x\nroutes: [%q]\nhttp:\n  tokens:\n    - {name: a, role: operator, token: env:A}\n    - name: a\n      role: wizard\n      token: plain-text\n", shippedRoutes(t)))
	mixedCfg := cliWrite(t, filepath.Join(dir, "mixed-config.yaml"), fmt.Sprintf("routes: [%q]\nhttp:\n  listen: 127.0.0.1:99999\n  lisen: x\nrouter:\n  batch: 0\ninputs:\n  pas:\n    type: pas\n    tls: {cert: env:JUNCTION_CLI_TEST_UNSET_CERT,\n      key: %q}\n  pathology:\n    type: pathology\n  fhir:\n    type: fhir\n",
		shippedRoutes(t), "file:"+filepath.Join(dir, "no-such-key.pem")))
	inputCfg := cliWrite(t, filepath.Join(dir, "input-config.yaml"), fmt.Sprintf("data_dir: x\nroutes: [%q]\ninputs:\n  pas: {type: pas}\n  fhir: {type: fhir}\n  pathology:\n    type: pathology\n    processing_ids: [P, Q]\n    lab:\n      local_code_sytem: https://x.example/cs\n", shippedRoutes(t)))
	exposedCfg := filepath.Join(dir, "exposed-fhir.yaml")
	t.Setenv("JUNCTION_CLI_TEST_ADMIN", "an-admin-token-for-the-cli-test")
	cliWrite(t, exposedCfg, fmt.Sprintf("data_dir: x\nroutes: [%q]\nhttp:\n  listen: 0.0.0.0:8080\n  admin_token: env:JUNCTION_CLI_TEST_ADMIN\ninputs:\n  pas:\n    type: pas\n  pathology:\n    type: pathology\n  fhir:\n    type: fhir\n", shippedRoutes(t)))
	inputsDir := filepath.Join(dir, "inputs")
	noInput := cliWrite(t, filepath.Join(inputsDir, "no-input.yaml"), "name: no-input\nsource:\n  adapter: pas\nconsent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\ndestinations:\n  - name: fhir-store\ntests:\n  - {name: t, input: {file: testdata/nope.hl7}, expect: {deliver: [fhir-store]}}\n")
	// A payload a destination cannot send: FHIR to MLLP, v2 to a FHIR
	// server, a FHIR post unchanged to MLLP.
	payloadDir := filepath.Join(dir, "payload")
	payloadRoute := cliWrite(t, filepath.Join(payloadDir, "payload.yaml"), "name: payload\nsource: {adapter: pas}\nconsent: {purpose: direct-care, legal_basis: direct-care, default: permit}\ndestinations:\n  - name: ris\n  - name: ehr\n    payload: raw\n  - name: files\n    payload: raw\n")
	// A v2 input unchanged to MLLP is what payload: raw is for.
	rawRoute := cliWrite(t, filepath.Join(payloadDir, "raw.yaml"), "name: raw\nsource: {adapter: pas}\nconsent: {purpose: direct-care, legal_basis: direct-care, default: permit}\ndestinations:\n  - name: ris\n    payload: raw\n")
	fhirRawRoute := cliWrite(t, filepath.Join(payloadDir, "fhir-raw.yaml"), "name: fhir-raw\nsource: {adapter: fhir}\nconsent: {purpose: direct-care, legal_basis: direct-care, default: permit}\ndestinations:\n  - name: ris\n    payload: raw\n  - name: ehr\n    payload: raw\n")
	payloadCfg := cliWrite(t, filepath.Join(dir, "payload-config.yaml"), fmt.Sprintf("data_dir: x\nroutes: [%q]\ninputs:\n  pas: {type: pas}\n  fhir: {type: fhir}\ndestinations:\n  ris: {type: mllp, address: 127.0.0.1:2577}\n  ehr: {type: fhir, url: http://127.0.0.1:9999/fhir}\n  files: {type: file, dir: out}\n", payloadDir))
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"payload a destination does not take", []string{"lint", "-c", payloadCfg}, []string{
			payloadRoute + `:5:11: destinations[0]: destination "ris" does not take application/fhir+json, which payload fhir sends from input "pas": set payload: raw to send the input unchanged`,
			payloadRoute + `:7:14: destinations[1]: destination "ehr" does not take application/hl7-v2, which payload raw sends from input "pas": leave payload out (or fhir) to send the translation`,
			fhirRawRoute + `:6:14: destinations[0]: destination "ris" does not take application/fhir+json, which payload raw sends from input "fhir"`,
		}},
		{"broken route", []string{"lint", "-c", cliConfig(t, bad)}, []string{
			bad + ":6:20: match: undeclared reference to 'nhsnumber' (did you mean \"nhsNumber\"?)",
			bad + `:12:11: destinations[0].name: no destination named "nowhere" in the config`,
		}},
		{"broken route given as argument", []string{"lint", "-c", cliConfig(t, shippedRoutes(t)), bad}, []string{
			bad + ":6:20: match: undeclared reference to 'nhsnumber' (did you mean \"nhsNumber\"?)",
		}},
		{"routes without purpose and legal basis", []string{"lint", "-c", cliConfig(t, consentDir)}, []string{
			badSkip + ":8:22: consent.skip_consent_gate: only a safeguarding or statutory legal basis may skip the consent gate, not direct-care",
			noBasis + `:5:3: missing required field "legal_basis" in consent`,
			wrongBasis + ":6:16: consent.legal_basis: consent legal basis direct-care does not support purpose research",
		}},
		{"broken config", []string{"lint", "-c", badCfg}, []string{
			badCfg + `:3:3: unknown field "lisen" in http (did you mean "listen"?)`,
		}},
		// The route files' own errors come with the config's, though
		// the names they use cannot be checked against a broken config.
		{"broken config and broken route", []string{"lint", "-c", badCfg, bad}, []string{
			badCfg + `:3:3: unknown field "lisen" in http (did you mean "listen"?)`,
			bad + ":6:20: match: undeclared reference to 'nhsnumber' (did you mean \"nhsNumber\"?)",
		}},
		{"invalid settings", []string{"lint", "-c", invalidCfg}, []string{
			invalidCfg + ":3:1: http.tokens: at least one token is required when http.listen (0.0.0.0:8080) is not a loopback address, since the admin API shows patient data",
			invalidCfg + ":6:10: router.batch: must be 1 to 1000, got 0",
		}},
		{"exposed FHIR endpoint without a token", []string{"lint", "-c", exposedCfg}, []string{
			exposedCfg + ":12:5: inputs.fhir: bearer_token: required when http.listen is not a loopback address, since anyone reaching the endpoint could post patient data; or set http.tls.client_ca so client certificates authenticate senders; set allow_unauthenticated: true only when something in front authenticates senders",
		}},
		{"invalid tokens", []string{"lint", "-c", badTokens}, []string{
			badTokens + ":6:13: http.tokens[1] (a): name: used by another token",
			badTokens + `:6:7: http.tokens[1] (a): unknown role "wizard"; roles are operator, integration_engineer, auditor, patient_service`,
			badTokens + ":8:14: http.tokens[1] (a): token: must be a reference (env:NAME or file:PATH), never the token itself",
		}},
		// Decoding errors do not hide the rest: settings and secret
		// references are checked too, every error at once.
		{"decoding, settings and secrets at once", []string{"lint", "-c", mixedCfg}, []string{
			mixedCfg + `:4:3: unknown field "lisen" in http (did you mean "listen"?)`,
			mixedCfg + `:3:11: http.listen: port "99999" must be a number from 0 to 65535`,
			mixedCfg + ":6:10: router.batch: must be 1 to 1000, got 0",
			mixedCfg + ":10:17: inputs.pas.tls.cert: cannot resolve secret reference: environment variable JUNCTION_CLI_TEST_UNSET_CERT is not set",
			mixedCfg + ":11:12: inputs.pas.tls.key: cannot resolve secret reference: reading secret file: open " + filepath.Join(dir, "no-such-key.pem") + ": no such file or directory",
		}},
		// A misspelt key in an input's settings hides none of its other
		// problems.
		{"an input's unknown key and its settings at once", []string{"lint", "-c", inputCfg}, []string{
			inputCfg + `:10:7: unknown field "local_code_sytem" in inputs.pathology.lab (did you mean "local_code_system"?)`,
			inputCfg + `:8:25: inputs.pathology: processing_ids[1]: "Q" is not an HL7 processing id (P, T or D)`,
		}},
		{"route test input missing", []string{"lint", "-c", cliConfig(t, noInput)}, []string{
			noInput + ":11:29: tests[0].input.file: cannot read " + filepath.Join(dir, "inputs", "testdata", "nope.hl7") + ": no such file or directory",
		}},
		{"missing config", []string{"lint", "-c", filepath.Join(dir, "none.yaml")}, []string{
			"reading config: open " + filepath.Join(dir, "none.yaml") + ": no such file or directory",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cliRun(t, tt.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w+"\n") {
					t.Errorf("stderr does not contain the line %q:\n%s", w, errOut)
				}
			}
			// In the order of the files and lines they are at.
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if !slices.IsSortedFunc(lines, comparePos) {
				t.Errorf("stderr is not in file and line order:\n%s", errOut)
			}
			if strings.Contains(out, "ok:") {
				t.Errorf("stdout says ok:\n%s", out)
			}
		})
	}
	// What the destinations do take is not refused: a v2 input unchanged
	// to a file or MLLP, a FHIR post unchanged to a FHIR server.
	t.Run("payload a destination takes", func(t *testing.T) {
		_, _, errOut := cliRun(t, "lint", "-c", payloadCfg)
		for _, a := range []string{payloadRoute + ":9:", fhirRawRoute + ":8:", rawRoute} {
			if strings.Contains(errOut, a) {
				t.Errorf("stderr has a line starting %q:\n%s", a, errOut)
			}
		}
	})
}

// TestCLILintAdapterSettings checks that an adapter's own validation
// errors say where the setting is, once each, and that routes reading
// the input are not told it is missing.
func TestCLILintAdapterSettings(t *testing.T) {
	// The reference resolves, so only the settings' own errors show.
	t.Setenv("CERT", "not checked here")
	cfg := cliWrite(t, filepath.Join(t.TempDir(), "junction.yaml"), fmt.Sprintf("data_dir: %q\nroutes: [%q]\ninputs:\n  pas:\n    type: pas\n    max_connections: 0\n    tls:\n      cert: env:CERT\n  fhir:\n    type: fhir\n  pathology:\n    type: pathology\n    listen: 127.0.0.1:2576\n",
		filepath.Join(t.TempDir(), "data"), shippedRoutes(t)))
	code, _, errOut := cliRun(t, "lint", "-c", cfg)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	want := cfg + ":6:22: inputs.pas: max_connections: must be positive\n" +
		cfg + ":7:5: inputs.pas: tls.key: required\n"
	if diff := cmp.Diff(want, errOut); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
}

func TestCLITestShippedRoutes(t *testing.T) {
	routes := shippedRoutes(t)
	// Count the shipped tests independently of the command.
	n := 0
	for _, r := range loadShipped(t) {
		n += len(r.Tests)
	}
	if n == 0 {
		t.Fatal("the shipped routes have no tests")
	}
	code, out, errOut := cliRun(t, "test", "-v", "-c", cliConfig(t, routes))
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if want := fmt.Sprintf("%d passed, 0 failed\n", n); !strings.HasSuffix(out, want) {
		t.Errorf("stdout does not end with %q:\n%s", want, out)
	}
	if got := strings.Count(out, "PASS "); got != n {
		t.Errorf("%d PASS lines, want %d:\n%s", got, n, out)
	}
	if strings.Contains(out, "updated ") {
		t.Errorf("test without --update updated files:\n%s", out)
	}
}

// adtFile is a synthetic ADT^A01 with LF segment ends, as an editor saves
// it.
func adtFile(ctrl, nhsNumber string) string {
	return "MSH|^~\\&|PAS|RX1|JUNCTION|RX1|20261123093000||ADT^A01^ADT_A01|" + ctrl + "|P|2.4\n" +
		"EVN|A01|20261123093000\n" +
		"PID|1||" + nhsNumber + "^^^NHS^NH||TESTPATIENT^ALEX||19800101|F\n" +
		"PV1|1|I|WARD1\n"
}

func TestCLITestFailingAndUpdate(t *testing.T) {
	dir := t.TempDir()
	cliWrite(t, filepath.Join(dir, "testdata", "a01.hl7"), adtFile("MSG00001", "9990000018"))
	cliWrite(t, filepath.Join(dir, "r.yaml"), cliRoute("cli-route", "pas", "nhsNumberValid(nhsNumber(bundle))", `tests:
  - name: admission
    input: {file: testdata/a01.hl7}
    expect:
      deliver: [fhir-store]
      fhir:
        fhir-store: testdata/a01.fhir-store.json
`))
	cfg := cliConfig(t, dir)
	golden := filepath.Join(dir, "testdata", "a01.fhir-store.json")

	// Without the golden the test fails.
	code, out, _ := cliRun(t, "test", "-c", cfg)
	if code != 1 || !strings.Contains(out, "FAIL cli-route / admission\n") || !strings.HasSuffix(out, "0 passed, 1 failed\n") {
		t.Errorf("without golden: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "run with --update to create it") {
		t.Errorf("failure does not suggest --update:\n%s", out)
	}

	// --update writes it.
	code, out, errOut := cliRun(t, "test", "-c", cfg, "--update")
	if code != 0 || !strings.Contains(out, "updated "+golden+"\n") || !strings.HasSuffix(out, "1 passed, 0 failed\n") {
		t.Fatalf("--update: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	b, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct {
		ResourceType string
		Entry        []json.RawMessage
	}
	if err := json.Unmarshal(b, &bundle); err != nil || bundle.ResourceType != "Bundle" || len(bundle.Entry) == 0 {
		t.Errorf("golden is not a bundle with entries (%v):\n%s", err, b)
	}

	// Then it passes, and a changed golden fails again.
	if code, out, _ := cliRun(t, "test", "-c", cfg); code != 0 || !strings.HasSuffix(out, "1 passed, 0 failed\n") {
		t.Errorf("after update: exit %d\n%s", code, out)
	}
	cliWrite(t, golden, strings.Replace(string(b), "9990000018", "9990000042", 1))
	code, out, _ = cliRun(t, "test", "-c", cfg)
	if code != 1 || !strings.Contains(out, "fhir-store: payload differs from golden testdata/a01.fhir-store.json") {
		t.Errorf("changed golden: exit %d\n%s", code, out)
	}
}

// TestCLITestChecksFHIRInput: a route test's FHIR input is checked as the
// FHIR endpoint checks a post, so a test cannot pass with a resource the
// live input refuses; a test can expect that refusal by its code.
func TestCLITestChecksFHIRInput(t *testing.T) {
	dir := t.TempDir()
	// A decimal written as a JSON string: the FHIR models decode it, the
	// endpoint refuses it.
	bad := `{"resourceType": "Observation", "status": "final", "code": {"text": "weight"}, "valueQuantity": {"value": "72.5", "unit": "kg"}}`
	good := strings.Replace(bad, `"72.5"`, `72.5`, 1)
	routeFile := cliWrite(t, filepath.Join(dir, "r.yaml"), cliRoute("fhir-route", "fhir", `"true"`, `tests:
  - name: valid observation
    input:
      inline: '`+good+`'
    expect:
      deliver: [fhir-store]
  - name: refused observation
    input:
      inline: '`+bad+`'
    expect:
      deliver: [fhir-store]
  - name: refusal expected
    input:
      inline: '`+bad+`'
    expect:
      error: fhir.invalid-resource
`))
	code, out, errOut := cliRun(t, "test", "-v", "-c", cliConfig(t, dir))
	if code != 1 {
		t.Errorf("exit %d, want 1\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, want := range []string{
		"PASS fhir-route / valid observation\n",
		"FAIL fhir-route / refused observation\n    " + routeFile + ":19:7: input: fhir.invalid-resource: the FHIR input refuses it before storing (HTTP 400): ",
		"Observation.valueQuantity.value",
		"PASS fhir-route / refusal expected\n",
		"2 passed, 1 failed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
}

// TestCLITestPatientAsTheIndexMakesIt: a test that gives no patient
// record reads the one the patient index makes of its message, as the
// engine's routes do; with the index disabled, an unknown patient.
func TestCLITestPatientAsTheIndexMakesIt(t *testing.T) {
	dir := t.TempDir()
	cliWrite(t, filepath.Join(dir, "testdata", "a01.hl7"), adtFile("MSG00001", "9990000018"))
	cliWrite(t, filepath.Join(dir, "r.yaml"), cliRoute("known-patients", "pas", "has(patient.nhsNumber)", `tests:
  - name: first message
    input: {file: testdata/a01.hl7}
    expect:
      deliver: [fhir-store]
`))
	if code, out, errOut := cliRun(t, "test", "-c", cliConfig(t, dir)); code != 0 || !strings.HasSuffix(out, "1 passed, 0 failed\n") {
		t.Errorf("with the index: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	off := cliWrite(t, filepath.Join(t.TempDir(), "junction.yaml"), fmt.Sprintf("data_dir: %q\nroutes: [%q]\npatient_index:\n  enabled: false\n", filepath.Join(t.TempDir(), "data"), dir))
	code, out, _ := cliRun(t, "test", "-c", off)
	if code != 1 || !strings.Contains(out, "expected deliveries [fhir-store], got []") {
		t.Errorf("without the index: exit %d, want the test to fail as the patient is unknown\n%s", code, out)
	}
}

// TestCLITestChecksTestsAsLintDoes: junction test refuses tests that
// lint refuses (an unknown fault code expected, two tests of one name),
// at their file:line:col, rather than running them.
func TestCLITestChecksTestsAsLintDoes(t *testing.T) {
	dir := t.TempDir()
	cliWrite(t, filepath.Join(dir, "testdata", "a01.hl7"), adtFile("MSG00001", "9990000018"))
	routeFile := cliWrite(t, filepath.Join(dir, "r.yaml"), cliRoute("checked", "pas", "true", `tests:
  - name: t
    input: {file: testdata/a01.hl7}
    expect:
      error: cel.bad
  - name: t
    input: {file: testdata/a01.hl7}
    expect:
      deliver: [fhir-store]
`))
	code, out, errOut := cliRun(t, "test", "-c", cliConfig(t, dir))
	if code == 0 || strings.Contains(out, "passed") {
		t.Errorf("exit %d, want the tests refused before running\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, want := range []string{routeFile + ":15:14: ", routeFile + ":16:11: "} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks a problem at %q:\n%s", want, errOut)
		}
	}
}

// ackServer is an MLLP server that answers every message with code and
// records what it received.
type ackServer struct {
	srv   *mllp.Server
	mu    sync.Mutex
	got   [][]byte
	code  hl7v2.AckCode
	reply []byte // when set, sent instead of an ACK
	// honourMSH15 leaves messages unanswered as their MSH-15 asks: NE
	// always, ER when the answer is positive, SU when it is not.
	honourMSH15 bool
	// closeOn closes the connection, unanswered, on the message with
	// this MSH-10.
	closeOn string
}

func startAckServer(t *testing.T, code hl7v2.AckCode) *ackServer {
	t.Helper()
	a := &ackServer{code: code}
	a.srv = &mllp.Server{Addr: "127.0.0.1:0", Handler: mllp.HandlerFunc(func(_ context.Context, _ *mllp.ConnInfo, payload []byte) ([]byte, bool) {
		a.mu.Lock()
		a.got = append(a.got, payload)
		a.mu.Unlock()
		if a.reply != nil {
			return a.reply, false
		}
		m, err := hl7v2.Parse(payload)
		if err != nil {
			return hl7v2.BuildRawAck(hl7v2.AckOptions{Text: "unparseable"}), false
		}
		if m.ControlID() == a.closeOn {
			return nil, true
		}
		if cond := m.AcceptAckType(); a.honourMSH15 && (cond == "NE" || cond == "ER" && a.code.Accepted() || cond == "SU" && !a.code.Accepted()) {
			return nil, false // as Junction does with accept_ack: msh15
		}
		opts := hl7v2.AckOptions{Code: a.code, ControlID: "ACK1", App: "TEST"}
		if !a.code.Accepted() {
			opts.Text = "patient unknown"
		}
		return hl7v2.BuildAck(m, opts), false
	})}
	if err := a.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.srv.Serve(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = a.srv.Shutdown(sctx)
		cancel()
		<-done
	})
	return a
}

func (a *ackServer) addr() string { return a.srv.ListenAddr().String() }

func (a *ackServer) received() [][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][]byte(nil), a.got...)
}

func TestCLISend(t *testing.T) {
	dir := t.TempDir()
	two := cliWrite(t, filepath.Join(dir, "two.hl7"), "\ufeff"+adtFile("MSG00001", "9990000018")+"\n"+adtFile("MSG00002", "9990000042"))
	one := cliWrite(t, filepath.Join(dir, "one.hl7"), strings.ReplaceAll(adtFile("MSG00003", "9990000018"), "\n", "\r\n"))

	t.Run("AA", func(t *testing.T) {
		srv := startAckServer(t, hl7v2.AckAA)
		code, out, errOut := cliRun(t, "send", "--addr", srv.addr(), two, one)
		if code != 0 {
			t.Fatalf("exit %d\nstderr: %s", code, errOut)
		}
		want := two + " #1: AA MSG00001\n" + two + " #2: AA MSG00002\n" + one + " #1: AA MSG00003\n"
		if diff := cmp.Diff(want, out); diff != "" {
			t.Errorf("stdout (-want +got):\n%s", diff)
		}
		got := srv.received()
		if len(got) != 3 {
			t.Fatalf("server received %d messages, want 3", len(got))
		}
		for i, m := range got {
			if bytes.ContainsAny(m, "\n") || !bytes.HasPrefix(m, []byte("MSH|")) || !bytes.HasSuffix(m, []byte("PV1|1|I|WARD1\r")) {
				t.Errorf("message %d sent as %q, want CR segment ends and no BOM", i+1, m)
			}
		}
	})
	ne := cliWrite(t, filepath.Join(dir, "ne.hl7"), strings.Replace(adtFile("MSG00004", "9990000018"), "|P|2.4\n", "|P|2.4|||NE|NE\n", 1)+adtFile("MSG00005", "9990000042"))
	for _, honour := range []bool{false, true} {
		t.Run(fmt.Sprintf("MSH-15 NE to a receiver honouring it %v", honour), func(t *testing.T) {
			srv := startAckServer(t, hl7v2.AckAA)
			srv.honourMSH15 = honour
			code, out, errOut := cliRun(t, "send", "--addr", srv.addr(), "--timeout", "5s", ne)
			if code != 0 {
				t.Fatalf("exit %d\nstderr: %s", code, errOut)
			}
			first := ne + " #1: AA MSG00004\n"
			if honour {
				first = ne + " #1: sent; no acknowledgement within 2s, as MSH-15 NE asks\n"
			}
			if diff := cmp.Diff(first+ne+" #2: AA MSG00005\n", out); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if got := srv.received(); len(got) != 2 {
				t.Errorf("server received %d messages, want 2", len(got))
			}
		})
	}
	// ER asks for an answer only on errors, SU only on success: silence
	// means no error and not accepted.
	erSU := cliWrite(t, filepath.Join(dir, "ersu.hl7"), strings.Replace(adtFile("MSG00006", "9990000018"), "|P|2.4\n", "|P|2.4|||ER|NE\n", 1)+
		strings.Replace(adtFile("MSG00007", "9990000042"), "|P|2.4\n", "|P|2.4|||SU|NE\n", 1)+adtFile("MSG00008", "9990000018"))
	for _, tt := range []struct {
		code     hl7v2.AckCode
		want     []string
		wantExit int
	}{
		{hl7v2.AckAA, []string{"#1: sent; no acknowledgement within 2s, which under MSH-15 ER means no error", "#2: AA MSG00007", "#3: AA MSG00008"}, 0},
		{hl7v2.AckAE, []string{"#1: AE MSG00006 patient unknown", "#2: sent; no acknowledgement within 2s, which under MSH-15 SU means not accepted", "#3: AE MSG00008 patient unknown"}, 1},
	} {
		t.Run("MSH-15 ER and SU to a receiver honouring them, answering "+string(tt.code), func(t *testing.T) {
			srv := startAckServer(t, tt.code)
			srv.honourMSH15 = true
			code, out, errOut := cliRun(t, "send", "--addr", srv.addr(), "--timeout", "10s", erSU)
			if code != tt.wantExit {
				t.Errorf("exit %d, want %d\nstderr: %s", code, tt.wantExit, errOut)
			}
			want := ""
			for _, l := range tt.want {
				want += erSU + " " + l + "\n"
			}
			if diff := cmp.Diff(want, out); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("connection closed: the rest still sent", func(t *testing.T) {
		srv := startAckServer(t, hl7v2.AckAA)
		srv.closeOn = "MSG00001"
		code, out, _ := cliRun(t, "send", "--addr", srv.addr(), "--timeout", "5s", two, one)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], two+" #1: no acknowledgement: ") || lines[1] != two+" #2: AA MSG00002" || lines[2] != one+" #1: AA MSG00003" {
			t.Errorf("stdout:\n%s", out)
		}
	})
	t.Run("AE exits 1", func(t *testing.T) {
		srv := startAckServer(t, hl7v2.AckAE)
		code, out, _ := cliRun(t, "send", "--addr", srv.addr(), one)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		if want := one + " #1: AE MSG00003 patient unknown\n"; out != want {
			t.Errorf("stdout %q, want %q", out, want)
		}
	})
	t.Run("answer to another message", func(t *testing.T) {
		srv := startAckServer(t, hl7v2.AckAA)
		other, err := hl7v2.Parse([]byte(strings.ReplaceAll(adtFile("OTHER01", "9990000018"), "\n", "\r")))
		if err != nil {
			t.Fatal(err)
		}
		srv.reply = hl7v2.BuildAck(other, hl7v2.AckOptions{Code: hl7v2.AckAA, ControlID: "ACK1", App: "TEST"})
		code, out, _ := cliRun(t, "send", "--addr", srv.addr(), one)
		if code != 1 || out != one+" #1: answer is for another message (MSA-2 OTHER01, not MSH-10 MSG00003)\n" {
			t.Errorf("exit %d, stdout %q", code, out)
		}
	})
	t.Run("reply that is not an ACK", func(t *testing.T) {
		srv := startAckServer(t, hl7v2.AckAA)
		srv.reply = []byte("hello")
		code, out, _ := cliRun(t, "send", "--addr", srv.addr(), one)
		if code != 1 || !strings.HasPrefix(out, one+" #1: reply is not an ACK: ") {
			t.Errorf("exit %d, stdout %q", code, out)
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		srv := startAckServer(t, hl7v2.AckAA)
		addr := srv.addr()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.srv.Shutdown(sctx)
		code, _, errOut := cliRun(t, "send", "--addr", addr, "--timeout", "5s", one)
		if code != 1 || !strings.Contains(errOut, "junction send: connecting to "+addr) {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("reject without MSA-2", func(t *testing.T) {
		// As Junction answers a frame too large: no MSA-2 to compare.
		srv := startAckServer(t, hl7v2.AckAA)
		srv.reply = hl7v2.BuildRawAck(hl7v2.AckOptions{Code: hl7v2.AckAR, Text: "message larger than 4000 bytes"})
		code, out, _ := cliRun(t, "send", "--addr", srv.addr(), one)
		if code != 1 || out != one+" #1: AR  message larger than 4000 bytes\n" {
			t.Errorf("exit %d, stdout %q", code, out)
		}
	})
	t.Run("silence not positive", func(t *testing.T) {
		srv := startAckServer(t, hl7v2.AckAA)
		code, _, errOut := cliRun(t, "send", "--addr", srv.addr(), "--silence", "0s", one)
		if code != 1 || !strings.Contains(errOut, "--timeout and --silence must be positive") || len(srv.received()) != 0 {
			t.Errorf("exit %d, stderr %q, received %d", code, errOut, len(srv.received()))
		}
	})
	t.Run("missing file", func(t *testing.T) {
		srv := startAckServer(t, hl7v2.AckAA)
		code, _, errOut := cliRun(t, "send", "--addr", srv.addr(), filepath.Join(dir, "none.hl7"))
		if code != 1 || !strings.Contains(errOut, "no such file or directory") {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
}

func TestCLISendFHIR(t *testing.T) {
	var mu sync.Mutex
	var gotCT []string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte("Secret")) && r.Header.Get("Authorization") != "Bearer fhir-token-3e1-long-enough" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		gotCT = append(gotCT, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		mu.Unlock()
		if bytes.Contains(body, []byte("Broken")) {
			w.Header().Set("X-Junction-Quarantine-Id", "01QUAR")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"resourceType":"OperationOutcome"}`))
			return
		}
		w.Header().Set("X-Junction-Message-Id", "01TESTID")
		w.WriteHeader(http.StatusAccepted)
	}))
	defer ts.Close()
	dir := t.TempDir()
	good := cliWrite(t, filepath.Join(dir, "p.json"), `{"resourceType": "Patient"}`)
	bad := cliWrite(t, filepath.Join(dir, "b.json"), `{"resourceType": "Broken"}`)

	code, out, errOut := cliRun(t, "send", "--fhir", ts.URL+"/fhir/", good)
	if code != 0 || out != good+": 202 Accepted 01TESTID\n\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = cliRun(t, "send", "--fhir", ts.URL+"/fhir", bad)
	if code != 1 || !strings.Contains(out, "400 Bad Request quarantined as 01QUAR") || !strings.Contains(out, "OperationOutcome") {
		t.Errorf("exit %d, stdout %q, want the quarantine id to quote to ops", code, out)
	}
	// A token by reference, for an endpoint with a bearer_token.
	secret := cliWrite(t, filepath.Join(dir, "s.json"), `{"resourceType": "Patient", "id": "Secret"}`)
	t.Setenv("JUNCTION_CLI_FHIR_TOKEN", "fhir-token-3e1-long-enough")
	code, out, _ = cliRun(t, "send", "--fhir", ts.URL+"/fhir", secret)
	if code != 1 || !strings.Contains(out, "401 Unauthorized") {
		t.Errorf("no token: exit %d, stdout %q", code, out)
	}
	code, out, errOut = cliRun(t, "send", "--fhir", ts.URL+"/fhir", "--token", "env:JUNCTION_CLI_FHIR_TOKEN", secret)
	if code != 0 || !strings.Contains(out, "202 Accepted 01TESTID") {
		t.Errorf("with --token: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// With the engine's config, its FHIR input's token.
	cfg := cliWrite(t, filepath.Join(dir, "junction.yaml"), "http:\n  listen: "+strings.TrimPrefix(ts.URL, "http://")+"\ninputs:\n  fhir:\n    type: fhir\n    bearer_token: env:JUNCTION_CLI_FHIR_TOKEN\n")
	code, out, errOut = cliRun(t, "send", "-c", cfg, "--fhir", "", secret)
	if code != 0 || !strings.Contains(out, "202 Accepted 01TESTID") {
		t.Errorf("with -c: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A Bundle goes to [base]; so does a file whose type cannot be read,
	// for the endpoint to say what is wrong with it.
	bundle := cliWrite(t, filepath.Join(dir, "bundle.json"), "\ufeff"+`{"resourceType": "Bundle", "type": "collection"}`)
	notJSON := cliWrite(t, filepath.Join(dir, "x.json"), `{"resourceType": "../admin"}`)
	if code, out, errOut = cliRun(t, "send", "--fhir", ts.URL+"/fhir/", bundle, notJSON); code != 0 {
		t.Errorf("bundle: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"POST /fhir/Patient application/fhir+json", "POST /fhir/Broken application/fhir+json", "POST /fhir/Patient application/fhir+json", "POST /fhir/Patient application/fhir+json",
		"POST /fhir application/fhir+json", "POST /fhir application/fhir+json"}
	if diff := cmp.Diff(want, gotCT); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestSplitMessages(t *testing.T) {
	const (
		m1 = "MSH|^~\\&|A|B|||20260101||ADT^A01|1|P|2.4"
		m2 = "MSH|^~\\&|A|B|||20260101||ADT^A03|2|P|2.4"
	)
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"CR", m1 + "\rPID|1\r", []string{m1 + "\rPID|1\r"}},
		{"LF", m1 + "\nPID|1\n", []string{m1 + "\rPID|1\r"}},
		{"CRLF", m1 + "\r\nPID|1\r\n", []string{m1 + "\rPID|1\r"}},
		{"no final segment end", m1 + "\nPID|1", []string{m1 + "\rPID|1\r"}},
		{"two messages", m1 + "\nPID|1\n" + m2 + "\nPID|2\n", []string{m1 + "\rPID|1\r", m2 + "\rPID|2\r"}},
		{"blank lines between", m1 + "\r\n\r\nPID|1\r\n\r\n  \r\n" + m2 + "\r\n", []string{m1 + "\rPID|1\r", m2 + "\r"}},
		{"byte order mark", "\ufeff" + m1 + "\nPID|1\n", []string{m1 + "\rPID|1\r"}},
		{"mixed endings", m1 + "\r\nPID|1\n" + m2 + "\rPID|2", []string{m1 + "\rPID|1\r", m2 + "\rPID|2\r"}},
		{"lines before the first MSH are sent as they are", "EVN|A01\n" + m1 + "\n", []string{"EVN|A01\r", m1 + "\r"}},
		{"empty", "", nil},
		{"only blank", "\n\r\n \n", nil},
		{"batch envelope not sent", "FHS|^~\\&|LAB\nBHS|^~\\&|LAB\n" + m1 + "\nPID|1\n" + m2 + "\nBTS|2\nFTS|1\n", []string{m1 + "\rPID|1\r", m2 + "\r"}},
		{"batch trailer without fields", m1 + "\nBTS\nFTS\n", []string{m1 + "\r"}},
		{"segments named like the envelope kept", m1 + "\nBTSX|1\nZBHS|1\n", []string{m1 + "\rBTSX|1\rZBHS|1\r"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, m := range SplitMessages([]byte(tt.in)) {
				got = append(got, string(m))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// adminServer is a fake admin API that checks the bearer token. It
// returns the server and the calls it took of message trails (method
// and URI) and replays (method, URI and body), in order.
func adminServer(t *testing.T, token string) (*httptest.Server, *[]string) {
	t.Helper()
	var mu sync.Mutex
	var calls []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/messages/{id}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, "GET "+r.URL.RequestURI())
		mu.Unlock()
		// Like the engine: payloads unless the caller asks for none.
		payloads := `"input": {"stream": "JUNCTION_INGRESS", "seq": 4, "time": "2026-01-15T10:30:00Z", "body": "MSH|"}`
		if r.URL.Query().Get("payloads") == "false" {
			payloads = `"payloads_omitted": true`
		}
		_, _ = fmt.Fprintf(w, `{"id": %q, "trail": [{"time": "2026-01-15T10:30:00Z", "message_id": %q, "event": "received", "source": "pas", "outcome": "ok"},
			{"time": "2026-01-15T10:30:01.5Z", "message_id": %q, "event": "delivered", "route": "adt-to-fhir-store", "destination": "fhir-store", "outcome": "ok", "status": "written", "attempt": 1}],
			%s}`, r.PathValue("id"), r.PathValue("id"), r.PathValue("id"), payloads)
	})
	mux.HandleFunc("GET /api/messages", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, "GET "+r.URL.RequestURI())
		mu.Unlock()
		switch r.URL.Query().Get("control_id") {
		case "C1":
		case "C3": // refused: in the quarantine only
			_, _ = w.Write([]byte(`{"messages": [], "retained": "2026-01-10T00:00:00Z", "quarantined": [
				{"id": "01QUAR", "received_at": "2026-01-15T11:00:00Z", "source": "pas", "sender": "PAS|RX1", "message_type": "ADT^A01", "control_id": "C3", "state": "quarantined", "outcomes": ["hl7.required-segment-missing"]}]}`))
			return
		default:
			_, _ = w.Write([]byte(`{"messages": [], "retained": "2026-01-10T00:00:00Z"}`))
			return
		}
		_, _ = w.Write([]byte(`{"messages": [
			{"id": "01FIRST", "received_at": "2026-01-15T10:30:00Z", "source": "pas", "sender": "PAS|RX1", "message_type": "ADT^A01", "control_id": "C1", "state": "accepted", "outcomes": ["delivered", "dead_lettered"]},
			{"id": "01AGAIN", "received_at": "2026-01-15T10:31:00.25Z", "source": "pas", "sender": "PAS|RX1", "message_type": "ADT^A01", "control_id": "C1", "state": "resend", "original": "01FIRST"},
			{"id": "01LATEST", "received_at": "2026-01-15T10:32:00Z", "source": "pas", "sender": "PAS|RX1", "message_type": "ADT^A08", "control_id": "C1", "state": "accepted", "waiting": ["delivery adt -> ehr"]}],
			"quarantined": [{"id": "01QBETWEEN", "received_at": "2026-01-15T10:31:30Z", "source": "pas", "sender": "PAS|RX1", "message_type": "ADT^A01", "control_id": "C1", "state": "quarantined", "outcomes": ["hl7.required-segment-missing"]}],
			"retained": "2026-01-10T00:00:00Z"}`))
	})
	mux.HandleFunc("GET /api/reconcile", func(w http.ResponseWriter, r *http.Request) {
		since := ""
		if s := r.URL.Query().Get("since"); s != "" {
			mu.Lock()
			calls = append(calls, "GET "+r.URL.RequestURI())
			mu.Unlock()
			since = fmt.Sprintf(`, "since": %q`, s)
		}
		// One message pending for a day, one for a moment; of the two
		// delivered, one was dead-lettered at another destination.
		_, _ = fmt.Fprintf(w, `{"accepted": 5, "terminal": {"delivered": 2, "dead_lettered": 1, "duplicate": 1}, "pending": [
			{"id": "01OLD", "source": "pas", "received": %q, "waiting": ["delivery adt -> ehr"]},
			{"id": "01NEW", "source": "pas", "received": %q, "waiting": ["route adt"]}]%s}`,
			time.Now().Add(-24*time.Hour).Format(time.RFC3339), time.Now().Format(time.RFC3339), since)
	})
	mux.HandleFunc("GET /api/deadletters", func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query(); q.Get("limit") != "" || q.Get("since") != "" {
			mu.Lock()
			calls = append(calls, "GET "+r.URL.RequestURI())
			mu.Unlock()
		}
		detail := ""
		if r.URL.Query().Get("detail") == "true" {
			detail = `, "detail": "error invalid: bad birthDate"`
		}
		_, _ = w.Write([]byte(`[{"seq": 1, "time": "2026-01-15T10:30:00Z", "message_id": "01A", "stage": "delivery", "destination": "ehr", "code": "destination.rejected", "reason": "HTTP 400"` + detail + `}]`))
	})
	mux.HandleFunc("POST /api/replay", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls = append(calls, "POST "+r.URL.RequestURI()+" "+string(body))
		mu.Unlock()
		if strings.Contains(string(body), "01NONE") {
			_, _ = w.Write([]byte(`{"replayed": [], "skipped": [{"seq": 0, "time": "0001-01-01T00:00:00Z", "message_id": "01NONE", "stage": "ingress", "code": "", "reason": "", "why": "no message with this id"}]}`))
			return
		}
		_, _ = w.Write([]byte(`{"replayed": [{"seq": 1, "time": "2026-01-15T10:30:00Z", "message_id": "01A", "stage": "delivery", "destination": "ehr", "code": "destination.rejected", "reason": "x"}], "rerouted": ["01B"]}`))
	})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error": "admin token required"}`))
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts, &calls
}

func TestCLIAdminCommands(t *testing.T) {
	t.Setenv("JUNCTION_CLI_TEST_TOKEN", "test-token-long-enough")
	t.Setenv("JUNCTION_ADMIN_TOKEN", "")
	ts, calls := adminServer(t, "test-token-long-enough")
	tok := "env:JUNCTION_CLI_TEST_TOKEN"

	// The plain trail shows no payloads, so it asks for none (and is not
	// recorded as payload access); --json asks for them.
	code, out, errOut := cliRun(t, "audit", "trail", "--api", ts.URL, "--token", tok, "01TESTID")
	if code != 0 || !strings.HasPrefix(out, "message 01TESTID\n") || !strings.Contains(out, "delivered") ||
		!strings.Contains(out, "(payloads not fetched;") || strings.Contains(out, "MSH|") {
		t.Errorf("audit trail: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	// Columns line up whatever the widths of the times and places.
	if lines := strings.Split(out, "\n"); len(lines) < 3 || !strings.HasPrefix(lines[1], "2026-01-15T10:30:00.000000Z  received") ||
		!strings.HasPrefix(lines[2], "2026-01-15T10:30:01.500000Z  delivered") || strings.Index(lines[1], " ok") != strings.Index(lines[2], " ok") {
		t.Errorf("audit trail columns do not line up:\n%s", out)
	}
	if strings.Contains(out, " \n") {
		t.Errorf("audit trail has lines ending in spaces:\n%q", out)
	}
	code, out, _ = cliRun(t, "audit", "trail", "--json", "--api", ts.URL, "--token", tok, "01TESTID")
	if code != 0 || !strings.Contains(out, `"body": "MSH|"`) {
		t.Errorf("audit trail --json: exit %d\n%s", code, out)
	}
	if want := []string{"GET /api/messages/01TESTID?payloads=false", "GET /api/messages/01TESTID"}; !slices.Equal(*calls, want) {
		t.Errorf("audit trail requests: %q, want %q", *calls, want)
	}
	*calls = nil
	// A sender's control id: each receipt, what became of it, in columns.
	code, out, _ = cliRun(t, "audit", "find", "--control-id", "C1", "--sender", "PAS|RX1", "--since", "2026-01-15T00:00:00Z", "--api", ts.URL, "--token", tok)
	want := "2026-01-15T10:30:00.000000Z  01FIRST     pas  PAS|RX1  ADT^A01  C1  accepted, delivered, dead_lettered\n" +
		"2026-01-15T10:31:00.250000Z  01AGAIN     pas  PAS|RX1  ADT^A01  C1  resend of 01FIRST\n" +
		"2026-01-15T10:31:30.000000Z  01QBETWEEN  pas  PAS|RX1  ADT^A01  C1  refused and quarantined: hl7.required-segment-missing\n" +
		"2026-01-15T10:32:00.000000Z  01LATEST    pas  PAS|RX1  ADT^A08  C1  accepted, waiting for delivery adt -> ehr\n" +
		"3 received; junction audit trail ID shows where each went; 1 refused (listed above; junction audit quarantine shows the quarantine)\n"
	if code != 0 || out != want {
		t.Errorf("audit find: exit %d\n%s\nwant\n%s", code, out, want)
	}
	if want := []string{"GET /api/messages?control_id=C1&sender=PAS%7CRX1&since=2026-01-15T00%3A00%3A00Z"}; !slices.Equal(*calls, want) {
		t.Errorf("audit find requests: %q, want %q", *calls, want)
	}
	// With the engine's config instead of --api: its http.listen.
	cfg := filepath.Join(t.TempDir(), "junction.yaml")
	if err := os.WriteFile(cfg, []byte("http:\n  listen: "+strings.TrimPrefix(ts.URL, "http://")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out2, errOut := cliRun(t, "audit", "find", "-c", cfg, "--control-id", "C1", "--sender", "PAS|RX1", "--since", "2026-01-15T00:00:00Z", "--token", tok)
	if code != 0 || out2 != out || len(*calls) != 2 {
		t.Errorf("audit find -c: exit %d, requests %q\n%s%s", code, *calls, out2, errOut)
	}
	*calls = nil
	code, _, errOut = cliRun(t, "audit", "find", "--control-id", "C2", "--since", "2026-01-01T00:00:00Z", "--api", ts.URL, "--token", tok)
	if code != 1 || !strings.Contains(errOut, `no message with control id "C2" accepted since 2026-01-01T00:00:00Z (input is kept from 2026-01-10T00:00:00Z, the oldest stored)`) {
		t.Errorf("audit find of nothing, before the oldest kept: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = cliRun(t, "audit", "find", "--control-id", "C2", "--since", "2026-01-15T00:00:00Z", "--until", "2026-01-16T00:00:00Z", "--api", ts.URL, "--token", tok)
	if code != 1 || !strings.Contains(errOut, `no message with control id "C2" accepted between 2026-01-15T00:00:00Z and 2026-01-16T00:00:00Z`) {
		t.Errorf("audit find of nothing: exit %d, stderr %q", code, errOut)
	}
	// Refused, so never a message: the quarantined input is listed, and
	// the answer is still that none was accepted.
	code, out, errOut = cliRun(t, "audit", "find", "--control-id", "C3", "--since", "2026-01-15T00:00:00Z", "--api", ts.URL, "--token", tok)
	if code != 1 || out != "2026-01-15T11:00:00.000000Z  01QUAR  pas  PAS|RX1  ADT^A01  C3  refused and quarantined: hl7.required-segment-missing\n" ||
		!strings.Contains(errOut, `no message with control id "C3" accepted since 2026-01-15T00:00:00Z; 1 refused (listed above;`) {
		t.Errorf("audit find of a refused message: exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}
	if code, _, errOut = cliRun(t, "audit", "find", "--api", ts.URL, "--token", tok); code != 2 || !strings.Contains(errOut, "give --control-id, or --since") {
		t.Errorf("audit find without a control id or a window: exit %d, want 2, stderr %q", code, errOut)
	}
	// A window with no end given ends now, not at the start of this
	// second, which would leave out a message received just before.
	*calls = nil
	asked := time.Now().UTC()
	cliRun(t, "audit", "find", "--since", "2h", "--api", ts.URL, "--token", tok)
	if len(*calls) != 1 {
		t.Fatalf("audit find --since alone made requests %q, want one", *calls)
	}
	q, _ := url.ParseQuery(strings.TrimPrefix((*calls)[0], "GET /api/messages?"))
	until, err := time.Parse(time.RFC3339, q.Get("until"))
	if q.Get("since") == "" || err != nil || until.Before(asked) || until.After(time.Now().Add(time.Second)) {
		t.Errorf("audit find --since alone asked %q, want since and until now", (*calls)[0])
	}
	*calls = nil
	code, _, errOut = cliRun(t, "audit", "find", "--since", "2026-01-15T10:00:00Z", "--until", "2026-01-15T10:05:00Z", "--api", ts.URL, "--token", tok)
	if code != 1 || !strings.Contains(errOut, "no message accepted between 2026-01-15T10:00:00Z and 2026-01-15T10:05:00Z") ||
		!slices.Equal(*calls, []string{"GET /api/messages?since=2026-01-15T10%3A00%3A00Z&until=2026-01-15T10%3A05%3A00Z"}) {
		t.Errorf("audit find of a window: exit %d, stderr %q, requests %q", code, errOut, *calls)
	}
	*calls = nil
	code, out, _ = cliRun(t, "audit", "reconcile", "--api", ts.URL, "--token", tok)
	if code != 1 || !strings.Contains(out, "accepted 5\n  finished        3\n    delivered       2\n") || !strings.Contains(out, "\n    dead_lettered   1\n") ||
		!strings.Contains(out, "\n  pending         2 (1 older than 15m0s)") ||
		!strings.Contains(out, "01OLD  pas") || !strings.Contains(out, "waiting for delivery adt -> ehr") || strings.Contains(out, "01NEW") {
		t.Errorf("audit reconcile: exit %d, want 1 for an orphan\n%s", code, out)
	}
	if !strings.Contains(out, "\n    waiting for delivery adt -> ehr: 1\n    waiting for route adt: 1\n") {
		t.Errorf("audit reconcile does not count what the pending wait for:\n%s", out)
	}
	// One destination's backlog.
	code, out, _ = cliRun(t, "audit", "reconcile", "--destination", "ehr", "--older-than", "0", "--api", ts.URL, "--token", tok)
	if code != 1 || !strings.Contains(out, "pending         2, of which 1 wait for ehr (1 of those older than 0s)") ||
		!strings.Contains(out, "01OLD") || strings.Contains(out, "01NEW") || strings.Contains(out, "waiting for route adt: 1") {
		t.Errorf("audit reconcile --destination ehr: exit %d\n%s", code, out)
	}
	code, out, _ = cliRun(t, "audit", "reconcile", "--older-than", "48h", "--api", ts.URL, "--token", tok)
	if code != 0 || !strings.Contains(out, "(0 older than 48h0m0s)") {
		t.Errorf("audit reconcile --older-than 48h: exit %d, want 0\n%s", code, out)
	}
	// A window: asked of the API, and named in the report.
	*calls = nil
	code, out, _ = cliRun(t, "audit", "reconcile", "--since", "2026-01-15T10:00:00Z", "--older-than", "48h", "--api", ts.URL, "--token", tok)
	if code != 0 || !strings.HasPrefix(out, "accepted 5 (received since 2026-01-15T10:00:00Z)\n") ||
		!slices.Equal(*calls, []string{"GET /api/reconcile?since=2026-01-15T10%3A00%3A00Z"}) {
		t.Errorf("audit reconcile --since: exit %d, requests %q\n%s", code, *calls, out)
	}
	*calls = nil
	if code, _, errOut := cliRun(t, "audit", "reconcile", "--since", "yesterday", "--api", ts.URL, "--token", tok); code == 0 || !strings.Contains(errOut, `"yesterday"`) || len(*calls) != 0 {
		t.Errorf("audit reconcile --since yesterday: exit %d, requests %q, want an error naming the value and no request\n%s", code, *calls, errOut)
	}
	code, out, _ = cliRun(t, "audit", "deadletters", "--api", ts.URL, "--token", tok)
	if code != 0 || !strings.HasSuffix(out, "1 dead letters\n") || !strings.Contains(out, "destination.rejected: HTTP 400") || strings.Contains(out, "detail") {
		t.Errorf("audit deadletters: exit %d\n%s", code, out)
	}
	code, out, _ = cliRun(t, "audit", "deadletters", "--detail", "--api", ts.URL, "--token", tok)
	if code != 0 || !strings.Contains(out, "destination.rejected: HTTP 400\n    detail: error invalid: bad birthDate\n") {
		t.Errorf("audit deadletters --detail: exit %d\n%s", code, out)
	}
	// A window and a limit reach the API as its query.
	before := len(*calls)
	code, out, _ = cliRun(t, "audit", "deadletters", "--since", "2026-01-01T00:00:00Z", "--until", "2026-02-01T00:00:00Z", "--limit", "5", "--api", ts.URL, "--token", tok)
	got := slices.Clone((*calls)[before:])
	*calls = (*calls)[:before]
	if code != 0 || len(got) != 1 || got[0] != "GET /api/deadletters?limit=5&since=2026-01-01T00%3A00%3A00Z&until=2026-02-01T00%3A00%3A00Z" {
		t.Errorf("audit deadletters --since --until --limit: exit %d, requests %v\n%s", code, got, out)
	}
	code, out, _ = cliRun(t, "audit", "deadletters", "--limit", "5", "--newest", "--api", ts.URL, "--token", tok)
	got = slices.Clone((*calls)[before:])
	*calls = (*calls)[:before]
	if code != 0 || len(got) != 1 || got[0] != "GET /api/deadletters?limit=5&newest=true" {
		t.Errorf("audit deadletters --limit --newest: exit %d, requests %v\n%s", code, got, out)
	}
	if code, _, errOut := cliRun(t, "audit", "deadletters", "--since", "yesterday", "--api", ts.URL, "--token", tok); code == 0 || !strings.Contains(errOut, `time "yesterday"`) {
		t.Errorf("audit deadletters --since yesterday: exit %d, stderr %q", code, errOut)
	}
	code, out, _ = cliRun(t, "replay", "--api", ts.URL, "--token", tok, "--id", "01A,01B", "--to", "ehr", "--since", "2026-01-01T00:00:00Z")
	if code != 0 || !strings.HasSuffix(out, "1 replayed, 1 rerouted, 0 left in place\n") || !strings.Contains(out, "replayed 01A (delivery stage, destination=ehr: destination.rejected)\n") {
		t.Errorf("replay: exit %d\n%s", code, out)
	}
	if len(*calls) != 1 || !strings.Contains((*calls)[0], `"ids":["01A","01B"]`) || !strings.Contains((*calls)[0], `"destinations":["ehr"]`) {
		t.Errorf("replay request bodies: %v", *calls)
	}
	// A replay that sends nothing again exits 1, saying why.
	code, out, _ = cliRun(t, "replay", "--api", ts.URL, "--token", tok, "--id", "01NONE")
	if code != 1 || out != "left 01NONE (ingress): no message with this id\n0 replayed, 0 rerouted, 1 left in place\n" {
		t.Errorf("replay of an unknown id: exit %d, want 1\n%s", code, out)
	}

	// Without the token the API refuses, and the CLI says so.
	code, _, errOut = cliRun(t, "audit", "deadletters", "--api", ts.URL)
	if code != 1 || !strings.Contains(errOut, "401 Unauthorized: admin token required") || !strings.Contains(errOut, "JUNCTION_ADMIN_TOKEN") {
		t.Errorf("no token: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = cliRun(t, "replay", "--api", ts.URL, "--token", tok, "--since", "yesterday")
	if code != 1 || !strings.Contains(errOut, `time "yesterday": use RFC 3339`) {
		t.Errorf("bad time: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = cliRun(t, "replay", "--api", ts.URL, "--token", tok)
	if code != 2 || !strings.Contains(errOut, "say what to replay") {
		t.Errorf("no filter: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = cliRun(t, "replay", "--route", "adt-to-fhir-store", "--api", ts.URL, "--token", "env:JUNCTION_CLI_TEST_UNSET")
	if code != 1 || !strings.Contains(errOut, "admin token: environment variable JUNCTION_CLI_TEST_UNSET is not set") {
		t.Errorf("unset token: exit %d, stderr %q", code, errOut)
	}
}

// TestCLIDefaultConfigMatchesShippedRoutes checks that the shipped routes
// load against the built-in defaults, which is what `serve` with no flags
// runs.
func TestCLIDefaultConfigMatchesShippedRoutes(t *testing.T) {
	p, err := plan("", []string{shippedRoutes(t)}, planChecks{secrets: true}, io.Discard)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	if len(p.Routes) != 5 {
		t.Errorf("%d routes planned, want 5", len(p.Routes))
	}
}

func isUpperOrDigit(c byte) bool { return c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

func FuzzSplitMessages(f *testing.F) {
	f.Add([]byte(adtFile("MSG00001", "9990000018")))
	f.Add([]byte("\ufeff" + adtFile("A", "9990000018") + "\r\n" + adtFile("B", "9990000042")))
	if b, err := os.ReadFile(filepath.Join("..", "..", "routes", "testdata", "adt_a01.hl7")); err == nil {
		f.Add(b)
	}
	// The shared corpora's HL7 v2 files, when present.
	corpora := filepath.Join("..", "..", "..", "shared", "corpora")
	for _, dir := range []string{"hapi-hl7v2", filepath.Join("ms-fhir-converter", "messages")} {
		entries, _ := os.ReadDir(filepath.Join(corpora, dir))
		for _, e := range entries {
			if info, err := e.Info(); err != nil || e.IsDir() || info.Size() > 64<<10 {
				continue
			}
			if b, err := os.ReadFile(filepath.Join(corpora, dir, e.Name())); err == nil && bytes.Contains(b, []byte("MSH|")) {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs := SplitMessages(data)
		var segs int
		for i, m := range msgs {
			if len(m) == 0 || m[len(m)-1] != '\r' || bytes.IndexByte(m, '\n') >= 0 {
				t.Fatalf("message %d is %q: want CR segment ends and no LF", i, m)
			}
			if i > 0 && !bytes.HasPrefix(m, []byte("MSH")) {
				t.Fatalf("message %d does not start with MSH: %q", i, m)
			}
			segs += bytes.Count(m, []byte("\r"))
		}
		// Every non-blank line of the input is sent once, but for the
		// batch envelope's.
		norm := bytes.ReplaceAll(bytes.TrimPrefix(data, []byte("\ufeff")), []byte("\r\n"), []byte("\n"))
		norm = bytes.ReplaceAll(norm, []byte("\r"), []byte("\n"))
		want := 0
		for _, l := range bytes.Split(norm, []byte("\n")) {
			envelope := false
			for _, name := range []string{"FHS", "BHS", "BTS", "FTS"} {
				if rest, ok := bytes.CutPrefix(l, []byte(name)); ok && (len(rest) == 0 || !isUpperOrDigit(rest[0])) {
					envelope = true
				}
			}
			if len(bytes.TrimSpace(l)) > 0 && !envelope {
				want++
			}
		}
		if segs != want {
			t.Fatalf("%d segments sent, want %d", segs, want)
		}
	})
}

func TestMemoryLimit(t *testing.T) {
	tests := []struct {
		name string
		mib  int
		env  string
		want int64
	}{
		{"config", 200, "", 200 << 20},
		{"none", 0, "", 0},
		{"GOMEMLIMIT wins", 200, "1GiB", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := memoryLimit(tt.mib, tt.env); got != tt.want {
				t.Errorf("memoryLimit(%d, %q) = %d, want %d", tt.mib, tt.env, got, tt.want)
			}
		})
	}
}

// TestParseTime: replay's window ends take RFC 3339 or a duration before
// now, and nothing else.
func TestParseTime(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{in: "", want: time.Time{}},
		{in: "2026-12-03T09:30:00Z", want: time.Date(2026, 12, 3, 9, 30, 0, 0, time.UTC)},
		{in: "2h", want: now.Add(-2 * time.Hour)},
		{in: "90m", want: now.Add(-90 * time.Minute)},
		{in: "0s", want: now},
		{in: "-2h", wantErr: true},
		{in: "yesterday", wantErr: true},
		{in: "2026-12-03", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseTime(tc.in, now)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseTime(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			}
			if !tc.wantErr && !got.Equal(tc.want) {
				t.Errorf("parseTime(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// TestParseFlagsAfterArguments checks that flags are read wherever they
// stand among the positional arguments, and that "--" ends them.
func TestParseFlagsAfterArguments(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantJSON bool
		wantAPI  string
		wantPos  []string
	}{
		{"flags first", []string{"--json", "--api", "http://x", "ID"}, true, "http://x", []string{"ID"}},
		{"flags after", []string{"ID", "--json"}, true, "", []string{"ID"}},
		{"flags between", []string{"A", "--api=http://y", "B", "-json"}, true, "http://y", []string{"A", "B"}},
		{"double dash", []string{"--json", "--", "-x", "--api"}, true, "", []string{"-x", "--api"}},
		{"double dash after an argument", []string{"A", "--", "--json"}, false, "", []string{"A", "--json"}},
		{"double dash as a flag's value", []string{"--api", "--", "ID", "--json"}, true, "--", []string{"ID"}},
		{"double dash after a boolean flag", []string{"--json", "--", "--api"}, true, "", []string{"--api"}},
		{"none", nil, false, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			js := fs.Bool("json", false, "")
			api := fs.String("api", "", "")
			if err := parse(fs, tt.args); err != nil {
				t.Fatal(err)
			}
			if *js != tt.wantJSON || *api != tt.wantAPI || strings.Join(fs.Args(), " ") != strings.Join(tt.wantPos, " ") {
				t.Errorf("json %v api %q args %q; want %v %q %q", *js, *api, fs.Args(), tt.wantJSON, tt.wantAPI, tt.wantPos)
			}
		})
	}
}

// TestCLIOverTLS: send and the admin commands reach an HTTPS listener,
// trusting the CA given by --tls-ca and presenting the client certificate
// of --tls-cert and --tls-key where the endpoint asks for one.
func TestCLIOverTLS(t *testing.T) {
	t.Setenv("JUNCTION_CLI_TEST_TOKEN", "test-token-long-enough")
	t.Setenv("JUNCTION_ADMIN_TOKEN", "")
	pki := tlstest.PKI(t)
	admin, _ := adminServer(t, "test-token-long-enough")
	cert, err := tls.LoadX509KeyPair(pki["server.crt"], pki["server.key"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(pki["ca"])
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/fhir") {
			admin.Config.Handler.ServeHTTP(w, r)
			return
		}
		if len(r.TLS.VerifiedChains) == 0 {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.Header().Set("X-Junction-Message-Id", "01TESTID")
		w.WriteHeader(http.StatusAccepted)
	}))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	// The refused handshakes below are expected; not logged.
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	defer ts.Close()
	patient := cliWrite(t, filepath.Join(t.TempDir(), "p.json"), `{"resourceType": "Patient"}`)
	tests := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"send with a client certificate", []string{"send", "--fhir", ts.URL + "/fhir", "--tls-ca", pki["ca"], "--tls-cert", pki["client.crt"], "--tls-key", pki["client.key"], patient}, 0, "202 Accepted 01TESTID"},
		{"send without one", []string{"send", "--fhir", ts.URL + "/fhir", "--tls-ca", pki["ca"], patient}, 1, "403 Forbidden"},
		{"send with a certificate but no key", []string{"send", "--fhir", ts.URL + "/fhir", "--tls-ca", pki["ca"], "--tls-cert", pki["client.crt"], patient}, 1, ""},
		{"send not trusting the server", []string{"send", "--fhir", ts.URL + "/fhir", patient}, 1, ""},
		{"admin command trusting the CA", []string{"audit", "trail", "--api", ts.URL, "--tls-ca", pki["ca"], "--token", "env:JUNCTION_CLI_TEST_TOKEN", "01TESTID"}, 0, "message 01TESTID"},
		{"admin command not trusting the server", []string{"audit", "trail", "--api", ts.URL, "--token", "env:JUNCTION_CLI_TEST_TOKEN", "01TESTID"}, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cliRun(t, tt.args...)
			if code != tt.code || !strings.Contains(out, tt.out) {
				t.Fatalf("exit %d, want %d; stdout %q (want %q); stderr %q", code, tt.code, out, tt.out, errOut)
			}
		})
	}
	// TLS files with a URL that is not https are a mistake, said as such.
	for _, args := range [][]string{
		{"send", "--fhir", "http://127.0.0.1:1/fhir", "--tls-ca", pki["ca"], patient},
		{"audit", "trail", "--api", "http://127.0.0.1:1", "--tls-ca", pki["ca"], "01TESTID"},
	} {
		t.Run(strings.Join(args[:2], " ")+" over plain http", func(t *testing.T) {
			if code, _, errOut := cliRun(t, args...); code == 0 || !strings.Contains(errOut, "this one is not https") {
				t.Fatalf("exit %d, stderr %q; want a refusal saying the URL is not https", code, errOut)
			}
		})
	}
}

// TestAuditReconcileOlderThanZeroListsEveryPending checks that
// --older-than 0 lists every pending message, including those received
// while the reconcile ran (after the command started, or stamped by a
// server whose clock is a little ahead), which a long reconcile on a busy
// engine always has.
func TestAuditReconcileOlderThanZeroListsEveryPending(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/reconcile", func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, `{"accepted": 2, "terminal": {"delivered": 1}, "pending": [
			{"id": "01DURING", "source": "pas", "received": %q, "waiting": ["route adt"]}]}`,
			time.Now().Add(2*time.Second).Format(time.RFC3339Nano))
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	t.Setenv("JUNCTION_ADMIN_TOKEN", "")
	t.Setenv("JUNCTION_CLI_TEST_TOKEN", "test-token-long-enough")
	tests := []struct {
		name      string
		olderThan string
		wantCode  int
		wantOut   []string
	}{
		{"zero lists every pending message", "0", 1, []string{"pending         1 (1 older than 0s)", "01DURING"}},
		{"a minute lists none received just now", "1m", 0, []string{"pending         1 (0 older than 1m0s)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := cliRun(t, "audit", "reconcile", "--older-than", tc.olderThan, "--api", ts.URL, "--token", "env:JUNCTION_CLI_TEST_TOKEN")
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d\n%s%s", code, tc.wantCode, out, errOut)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestAuditReconcileNamesLostRuns: a reconciliation that names ingest
// log batches the store lost, or runs of the ingress stream it cannot
// read, is printed with them (and when they were stored, where known),
// and the command exits 1: the acknowledged messages in them are not
// counted. Before, the unreadable ingress runs were not printed, and the
// command exited 0.
func TestAuditReconcileNamesLostRuns(t *testing.T) {
	tests := []struct {
		name, runs, want string
	}{
		{"lost ingest log batches", `"ingest_log_lost": [{"first": 36, "last": 71}]`, "lost ingest log batches 36-71"},
		{
			"unreadable ingress messages",
			`"ingress_unreadable": [{"first": 147, "last": 219, "after": "2026-01-15T10:00:00Z", "before": "2026-01-15T10:05:00Z"}]`,
			"unreadable ingress stream messages 147-219, stored between 2026-01-15T10:00:00Z and 2026-01-15T10:05:00Z",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /api/reconcile", func(w http.ResponseWriter, r *http.Request) {
				_, _ = fmt.Fprint(w, `{"accepted": 1, "terminal": {"delivered": 1}, "pending": [], `+tt.runs+`}`)
			})
			ts := httptest.NewServer(mux)
			defer ts.Close()
			t.Setenv("JUNCTION_ADMIN_TOKEN", "")
			t.Setenv("JUNCTION_CLI_TEST_TOKEN", "test-token-long-enough")
			code, out, errOut := cliRun(t, "audit", "reconcile", "--api", ts.URL, "--token", "env:JUNCTION_CLI_TEST_TOKEN")
			if code != 1 || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, want 1 and %q:\n%s%s", code, tt.want, out, errOut)
			}
		})
	}
}

// TestAuditFindNamesLostIngestLogBatches: batches of the window the
// store lost are said, with when they were acknowledged, beside a find
// that found nothing.
func TestAuditFindNamesLostIngestLogBatches(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/messages", func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprint(w, `{"messages": [], "lost": [{"first": 36, "last": 71, "after": "2026-01-15T10:00:00Z"}]}`)
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	t.Setenv("JUNCTION_ADMIN_TOKEN", "")
	t.Setenv("JUNCTION_CLI_TEST_TOKEN", "test-token-long-enough")
	code, out, errOut := cliRun(t, "audit", "find", "--control-id", "C1", "--since", "2026-01-15T00:00:00Z", "--api", ts.URL, "--token", "env:JUNCTION_CLI_TEST_TOKEN")
	if code == 0 || !strings.Contains(out, "ingest log batches 36-71, acknowledged between 2026-01-15T10:00:00Z and unknown, were lost") {
		t.Errorf("exit %d, want not 0 and the lost batches named:\n%s%s", code, out, errOut)
	}
}

// TestAuditFindExitsOneWhenBatchesWereLost: a find that lists messages
// beside ingest log batches of its window the store lost, or counts but
// cannot read, or beside quarantine entries it cannot read, names them
// and exits 1: messages, or refused input, of the window may be missing
// from the list. Before, it exited 0, and said nothing of the
// quarantine's.
func TestAuditFindExitsOneWhenBatchesWereLost(t *testing.T) {
	tests := []struct {
		name string
		runs string // the answer's runs
		want string
	}{
		{"ingest log", `"lost": [{"first": 1, "last": 73, "before": "2026-01-15T10:00:01Z"}]`,
			"ingest log batches 1-73, acknowledged between unknown and 2026-01-15T10:00:01Z, were lost"},
		{"quarantine", `"quarantine_lost": [{"first": 12, "last": 40, "after": "2026-01-15T09:00:00Z", "before": "2026-01-15T10:30:00Z"}]`,
			"quarantine entries 12-40, kept between 2026-01-15T09:00:00Z and 2026-01-15T10:30:00Z, cannot be read"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /api/messages", func(w http.ResponseWriter, r *http.Request) {
				_, _ = fmt.Fprint(w, `{"messages": [{"id": "01M1", "received_at": "2026-01-15T10:00:00Z", "source": "pas", "control_id": "C1", "state": "waiting"}], `+tc.runs+`}`)
			})
			ts := httptest.NewServer(mux)
			defer ts.Close()
			t.Setenv("JUNCTION_ADMIN_TOKEN", "")
			t.Setenv("JUNCTION_CLI_TEST_TOKEN", "test-token-long-enough")
			code, out, errOut := cliRun(t, "audit", "find", "--since", "2026-01-15T00:00:00Z", "--until", "2026-01-15T11:00:00Z", "--api", ts.URL, "--token", "env:JUNCTION_CLI_TEST_TOKEN")
			if code != 1 || !strings.Contains(out, "01M1") || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want 1, the message listed and the runs named:\n%s%s", code, out, errOut)
			}
		})
	}
}

// TestAuditFindSaysATrailIsIncomplete: a message found whose trail could
// not be read whole is listed with that said.
func TestAuditFindSaysATrailIsIncomplete(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/messages", func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprint(w, `{"messages": [{"id": "01M1", "received_at": "2026-01-15T10:00:00Z", "source": "pas", "control_id": "C1", "state": "unknown", "incomplete": "some audit records could not be read"}]}`)
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	t.Setenv("JUNCTION_ADMIN_TOKEN", "")
	t.Setenv("JUNCTION_CLI_TEST_TOKEN", "test-token-long-enough")
	code, out, errOut := cliRun(t, "audit", "find", "--control-id", "C1", "--since", "2026-01-15T00:00:00Z", "--api", ts.URL, "--token", "env:JUNCTION_CLI_TEST_TOKEN")
	if code != 0 || !strings.Contains(out, "unknown (trail incomplete: the store's files damaged)") {
		t.Errorf("exit %d, want 0 and the trail said incomplete:\n%s%s", code, out, errOut)
	}
}

// TestAdminCommandTrustsTheEngineCertificate: given the engine's config
// (-c), an admin command reaches its HTTPS listener on loopback although
// the certificate names only a Service's DNS name, as in the Helm chart's
// pods, by trusting exactly the certificate that config serves; another
// certificate must still verify for the address dialled.
func TestAdminCommandTrustsTheEngineCertificate(t *testing.T) {
	t.Setenv("JUNCTION_CLI_TEST_TOKEN", "test-token-long-enough")
	t.Setenv("JUNCTION_ADMIN_TOKEN", "")
	pki := tlstest.PKI(t)
	admin, _ := adminServer(t, "test-token-long-enough")
	serve := func(t *testing.T, name string) *httptest.Server {
		cert, err := tls.LoadX509KeyPair(pki[name+".crt"], pki[name+".key"])
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewUnstartedServer(admin.Config.Handler)
		ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		// The refused handshakes below are expected; not logged.
		ts.Config.ErrorLog = log.New(io.Discard, "", 0)
		ts.StartTLS()
		t.Cleanup(ts.Close)
		return ts
	}
	tests := []struct {
		name     string
		presents string // the certificate the listener serves
		certRef  string // the config's http.tls.cert; "" for the Service's
		extra    []string
		code     int
		errOut   string
	}{
		{"the configured certificate, naming only the Service", "service", "", nil, 0, ""},
		{"another certificate, not trusted", "server", "", nil, 1, "not the certificate the engine's config names"},
		{"another certificate, its CA trusted by --tls-ca", "server", "", []string{"--tls-ca", pki["ca"]}, 0, ""},
		{"a configured certificate this command cannot read, the CA trusted by --tls-ca", "server", "env:JUNCTION_CLI_TEST_UNSET_CERT", []string{"--tls-ca", pki["ca"]}, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := serve(t, tc.presents)
			cfg := filepath.Join(t.TempDir(), "junction.yaml")
			certRef := tc.certRef
			if certRef == "" {
				certRef = "file:" + pki["service.crt"]
			}
			cliWrite(t, cfg, fmt.Sprintf("http:\n  listen: %s\n  tls:\n    cert: %s\n    key: file:%s\n",
				strings.TrimPrefix(ts.URL, "https://"), certRef, pki["service.key"]))
			args := append([]string{"audit", "trail", "-c", cfg, "--token", "env:JUNCTION_CLI_TEST_TOKEN"}, tc.extra...)
			code, out, errOut := cliRun(t, append(args, "01TESTID")...)
			if code != tc.code || tc.code == 0 && !strings.Contains(out, "message 01TESTID") || !strings.Contains(errOut, tc.errOut) {
				t.Errorf("exit %d, want %d\nstdout %s\nstderr %s", code, tc.code, out, errOut)
			}
		})
	}
}

// TestAuditQuarantineNamesUnreadableEntries: a quarantine listing whose
// answer names entries the store cannot read (the
// Junction-Quarantine-Unreadable header) lists what it could read, names
// the runs with when the entries around them were kept, and exits 1:
// refused input may be missing from the list. Without the header it
// exits 0. Runs older than the header names, summed in the
// Junction-Quarantine-Unreadable-Omitted header, are said and exit 1
// too, also with no run named. Before, the runs were not named and it
// exited 0; then the sum was not said, and with no run named it exited
// 0.
func TestAuditQuarantineNamesUnreadableEntries(t *testing.T) {
	tests := []struct {
		name    string
		runs    string // the header's value; empty: none
		omitted string // the sum of runs not named; empty: none
		code    int
		want    []string
		absent  string
	}{
		{"unreadable runs", `[{"first": 1, "last": 73, "before": "2026-01-15T10:00:01Z"}, {"first": 147, "last": 219, "after": "2026-01-15T10:00:02Z", "before": "2026-01-15T10:00:03Z"}]`, "", 1,
			[]string{"quarantine entries 1-73, kept between unknown and 2026-01-15T10:00:01Z, cannot be read",
				"quarantine entries 147-219, kept between 2026-01-15T10:00:02Z and 2026-01-15T10:00:03Z, cannot be read"}, "more quarantine entries"},
		{"unreadable runs, older ones summed", `[{"first": 147, "last": 219, "after": "2026-01-15T10:00:02Z", "before": "2026-01-15T10:00:03Z"}]`, `{"runs": 3, "entries": 40, "first": 1, "last": 90}`, 1,
			[]string{"quarantine entries 147-219, kept between 2026-01-15T10:00:02Z and 2026-01-15T10:00:03Z, cannot be read",
				"40 more quarantine entries, in 3 older runs between entries 1 and 90, cannot be read"}, ""},
		{"only a sum", "", `{"runs": 1, "entries": 2, "first": 5, "last": 6}`, 1,
			[]string{"2 more quarantine entries, in 1 older run between entries 5 and 6, cannot be read"}, ""},
		{"none", "", "", 0, nil, "cannot be read"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /api/quarantine", func(w http.ResponseWriter, r *http.Request) {
				if tc.runs != "" {
					w.Header().Set("Junction-Quarantine-Unreadable", tc.runs)
				}
				if tc.omitted != "" {
					w.Header().Set("Junction-Quarantine-Unreadable-Omitted", tc.omitted)
				}
				_, _ = fmt.Fprint(w, `[{"seq": 74, "time": "2026-01-15T10:00:01Z", "id": "01QREAD", "source": "pas", "reason": "hl7.parse", "size": 10, "received": 10}]`)
			})
			ts := httptest.NewServer(mux)
			defer ts.Close()
			t.Setenv("JUNCTION_ADMIN_TOKEN", "")
			t.Setenv("JUNCTION_CLI_TEST_TOKEN", "test-token-long-enough")
			code, out, errOut := cliRun(t, "audit", "quarantine", "--api", ts.URL, "--token", "env:JUNCTION_CLI_TEST_TOKEN")
			if code != tc.code || !strings.Contains(out, "01QREAD") || !strings.Contains(out, "1 quarantined\n") {
				t.Errorf("exit %d, want %d and the entry listed:\n%s%s", code, tc.code, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not name %q:\n%s", w, out)
				}
			}
			if tc.absent != "" && strings.Contains(out, tc.absent) {
				t.Errorf("output says %q with nothing unreadable:\n%s", tc.absent, out)
			}
		})
	}
}
