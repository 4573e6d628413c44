package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/router"
	"github.com/junction-fhir/junction/pkg/rules"
	"github.com/junction-fhir/junction/pkg/tlsconf/tlstest"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// writeConfig writes src to a config file in a temp dir.
func writeConfig(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "junction.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func errStrings(errs []error) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}

func names(m map[string]*Component) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func TestDefault(t *testing.T) {
	c := Default()
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatalf("Default().Validate() = %v", errStrings(errs))
	}
	if c.File() != "" {
		t.Errorf("File() = %q, want empty", c.File())
	}
	got := struct {
		DataDir, Level, Listen string
		Inputs, Destinations   []string
		Routes                 []string
		Limits                 rules.Limits
		Batch                  int
		AckWait, Shutdown      time.Duration
	}{c.DataDir, c.Log.Level, c.HTTP.Listen, names(c.Inputs), names(c.Destinations), c.Routes, c.Rules.Limits(), c.Router.Batch, c.Router.AckWait, c.ShutdownTimeout}
	want := got
	want.DataDir, want.Level, want.Listen = "data", "info", "127.0.0.1:8080"
	want.Inputs, want.Destinations, want.Routes = []string{"fhir", "pas", "pathology"}, []string{"data-quality", "fhir-store"}, []string{"routes"}
	want.Limits = rules.DefaultLimits()
	want.Batch, want.AckWait, want.Shutdown = 64, 10*time.Second, 30*time.Second
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if want := (ReconcileConfig{Interval: 5 * time.Minute, Lag: 15 * time.Minute}); c.Reconcile != want {
		t.Errorf("reconcile defaults %+v, want %+v", c.Reconcile, want)
	}
	// The default file destinations' settings decode as the file adapter
	// expects.
	for name, dir := range map[string]string{"fhir-store": "out/fhir-store", "data-quality": "out/data-quality"} {
		var s struct {
			Dir string `yaml:"dir"`
		}
		if err := c.Destinations[name].Settings.Decode(&s); err != nil || s.Dir != dir {
			t.Errorf("%s settings: dir %q, %v; want %q", name, s.Dir, err, dir)
		}
	}
}

// readmeConfig returns the YAML example of README.md's Configuration
// section.
func readmeConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatalf("reading README: %v", err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Configuration")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	_, block, ok := strings.Cut(sec, "```yaml\n")
	if !ok {
		t.Fatal("README.md's Configuration section has no yaml block")
	}
	block, _, ok = strings.Cut(block, "```")
	if !ok {
		t.Fatal("README.md's yaml block is not closed")
	}
	return block
}

// factoryFor finds the compiled-in factory of a type and direction.
func factoryFor(typ string, inbound bool) adapter.Factory {
	for _, f := range all.Factories() {
		if f.Type() != typ {
			continue
		}
		if _, ok := f.(adapter.InboundFactory); ok == inbound {
			return f
		}
	}
	return nil
}

// TestLoadREADMEExample keeps README.md true: every key of its documented
// configuration decodes strictly, the core here and each adapter's
// settings with that adapter's own config, and the values are those the
// README shows.
func TestLoadREADMEExample(t *testing.T) {
	path := writeConfig(t, readmeConfig(t))
	c, err := Load(path)
	if err != nil {
		t.Fatalf("README example does not load:\n%v", err)
	}
	if c.File() != path {
		t.Errorf("File() = %q, want %q", c.File(), path)
	}
	if errs := c.Validate(); len(errs) > 0 {
		t.Errorf("README example does not validate: %v", errStrings(errs))
	}
	// Documented defaults equal the real defaults.
	d := Default()
	type core struct {
		DataDir string
		Log     LogConfig
		HTTP    HTTPConfig
		Rules   RulesConfig
		Router  RouterConfig
		Routes  []string
		Shut    time.Duration
		Consent ConsentConfig
		Index   PatientIndexConfig
		Audit   AuditConfig
		Memory  int
		Tracing TracingConfig
	}
	// The README's consent destinations are an example, not a default.
	readmeConsent := c.Consent
	readmeConsent.Destinations = nil
	readmeConsent.Sources = nil
	if diff := cmp.Diff(core{d.DataDir, d.Log, d.HTTP, d.Rules, d.Router, d.Routes, d.ShutdownTimeout, d.Consent, d.PatientIndex, d.Audit, d.MemoryLimitMiB, d.Tracing},
		core{c.DataDir, c.Log, c.HTTP, c.Rules, c.Router, c.Routes, c.ShutdownTimeout, readmeConsent, c.PatientIndex, c.Audit, c.MemoryLimitMiB, c.Tracing}); diff != "" {
		t.Errorf("README's documented defaults differ from Default() (-default +readme):\n%s", diff)
	}
	wantNATS := d.NATS
	wantNATS.TLS = c.NATS.TLS // the README spells out empty TLS references
	if diff := cmp.Diff(wantNATS, c.NATS, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("README's nats settings differ from the defaults (-default +readme):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"fhir", "pas"}, names(c.Inputs)); diff != "" {
		t.Errorf("inputs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ehr", "fhir-store", "ris"}, names(c.Destinations)); diff != "" {
		t.Errorf("destinations (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(router.DefaultRetry(), c.Destinations["ehr"].Retry); diff != "" {
		t.Errorf("README's documented retry defaults differ (-default +readme):\n%s", diff)
	}
	for _, sec := range []struct {
		inbound bool
		m       map[string]*Component
	}{{true, c.Inputs}, {false, c.Destinations}} {
		for name, comp := range sec.m {
			t.Run(name, func(t *testing.T) {
				f := factoryFor(comp.Type, sec.inbound)
				if f == nil {
					t.Fatalf("no compiled-in adapter of type %q (inbound %v)", comp.Type, sec.inbound)
				}
				conf := f.NewConfig()
				if err := comp.Settings.Decode(conf); err != nil {
					t.Fatalf("settings do not decode:\n%v", err)
				}
				if v, ok := conf.(adapter.Validator); ok {
					if errs := v.Validate(); len(errs) > 0 {
						t.Errorf("settings do not validate: %v", errStrings(errs))
					}
				}
			})
		}
	}
}

func TestLoadOverDefaults(t *testing.T) {
	tests := []struct {
		name         string
		src          string
		inputs       []string
		destinations []string
		check        func(t *testing.T, c *Config)
	}{
		{
			name:         "absent sections keep the defaults",
			src:          "data_dir: /var/lib/junction\nrouter:\n  batch: 8\n",
			inputs:       []string{"fhir", "pas", "pathology"},
			destinations: []string{"data-quality", "fhir-store"},
			check: func(t *testing.T, c *Config) {
				if c.DataDir != "/var/lib/junction" || c.Router.Batch != 8 || c.Router.AckWait != 10*time.Second {
					t.Errorf("data_dir %q batch %d ack_wait %s", c.DataDir, c.Router.Batch, c.Router.AckWait)
				}
			},
		},
		{
			name:         "destinations replace the default set",
			src:          "destinations:\n  out:\n    type: file\n    dir: elsewhere\n",
			inputs:       []string{"fhir", "pas", "pathology"},
			destinations: []string{"out"},
			check: func(t *testing.T, c *Config) {
				if diff := cmp.Diff(router.DefaultRetry(), c.Destinations["out"].Retry); diff != "" {
					t.Errorf("retry without a retry key (-want +got):\n%s", diff)
				}
			},
		},
		{
			name:         "inputs replace the default set",
			src:          "inputs:\n  lab:\n    type: pas\n    listen: 127.0.0.1:2576\n",
			inputs:       []string{"lab"},
			destinations: []string{"data-quality", "fhir-store"},
		},
		{
			name:         "empty sets",
			src:          "inputs: {}\ndestinations: {}\n",
			inputs:       nil,
			destinations: nil,
		},
		{
			name:         "retry merges over the defaults",
			src:          "destinations:\n  ehr:\n    type: fhir\n    url: https://ehr.example.nhs.uk/fhir\n    retry: {max_attempts: 5, initial: 2s}\n",
			inputs:       []string{"fhir", "pas", "pathology"},
			destinations: []string{"ehr"},
			check: func(t *testing.T, c *Config) {
				want := router.DefaultRetry()
				want.MaxAttempts, want.Initial = 5, 2*time.Second
				if diff := cmp.Diff(want, c.Destinations["ehr"].Retry); diff != "" {
					t.Errorf("retry (-want +got):\n%s", diff)
				}
				var s struct {
					URL string `yaml:"url"`
				}
				if err := c.Destinations["ehr"].Settings.Decode(&s); err != nil || s.URL != "https://ehr.example.nhs.uk/fhir" {
					t.Errorf("settings without type and retry: url %q, %v", s.URL, err)
				}
				if c.Destinations["ehr"].Type != "fhir" {
					t.Errorf("type %q", c.Destinations["ehr"].Type)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(writeConfig(t, tt.src))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if diff := cmp.Diff(tt.inputs, names(c.Inputs)); diff != "" {
				t.Errorf("inputs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.destinations, names(c.Destinations)); diff != "" {
				t.Errorf("destinations (-want +got):\n%s", diff)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		// want holds the errors with "F" standing for the file.
		want []string
	}{
		{"unknown top key", "data_dri: x\n",
			[]string{`F:1:1: unknown field "data_dri" (did you mean "data_dir"?)`}},
		{"unknown nested key", "http:\n  lisen: 0.0.0.0:80\n",
			[]string{`F:2:3: unknown field "lisen" in http (did you mean "listen"?)`}},
		{"several at once", "log:\n  levl: debug\nrules:\n  timeout: 5\nnats:\n  replicas: three\n",
			[]string{
				`F:2:3: unknown field "levl" in log (did you mean "level"?)`,
				`F:4:12: rules.timeout: expected a duration such as 30s, got "5"`,
				`F:6:13: nats.replicas: expected an integer, got "three"`,
			}},
		{"retry unknown key", "destinations:\n  ehr:\n    type: fhir\n    retry:\n      max_attempt: 3\n",
			[]string{`F:5:7: unknown field "max_attempt" in destinations.ehr.retry (did you mean "max_attempts"?)`}},
		{"retry bad values", "destinations:\n  ehr:\n    type: fhir\n    retry: {initial: 5, multiplier: x}\n",
			[]string{
				`F:4:22: destinations.ehr.retry.initial: expected a duration such as 30s, got "5"`,
				`F:4:37: destinations.ehr.retry.multiplier: expected a number, got "x"`,
			}},
		{"retry not a mapping", "destinations:\n  ehr:\n    type: fhir\n    retry: 3\n",
			[]string{`F:4:12: destinations.ehr.retry: expected a mapping, got "3"`}},
		{"component not a mapping", "inputs:\n  pas: yes\n",
			[]string{`F:2:8: inputs.pas: expected a mapping with a type`}},
		{"component missing type", "destinations:\n  out:\n    dir: x\n",
			[]string{`F:3:5: missing required field "type" in destinations.out`}},
		{"component type not a name", "destinations:\n  out:\n    type: [file]\n  other:\n    type:\n",
			[]string{`F:3:11: destinations.out.type: expected an adapter type name`, `F:5:10: destinations.other.type: expected an adapter type name`}},
		{"component duplicate type", "destinations:\n  out:\n    type: file\n    type: fhir\n",
			[]string{`F:4:5: destinations.out: duplicate key "type"`}},
		{"component null", "inputs:\n  pas:\n  fhir: {type: fhir}\ndestinations:\n  gone: null\n",
			[]string{`F:2:3: inputs.pas: expected a mapping with a type, got null`, `F:5:3: destinations.gone: expected a mapping with a type, got null`}},
		{"syntax error", "http:\n  listen: [\n",
			[]string{`F:2:1: syntax error: did not find expected node content (at or after this line)`}},
		{"empty document", "",
			[]string{`F:1:1: empty document`}},
		{"keys written without a value", "data_dir:\nroutes:\ninputs:\ndestinations: ~\n",
			[]string{
				`F:1:10: data_dir: no value: give one, or leave the key out`,
				`F:2:8: routes: no value: give one, or leave the key out`,
				`F:3:8: inputs: no value: give one, or leave the key out`,
				`F:4:15: destinations: no value: give one, or leave the key out`,
			}},
		{"listen written without a value", "http:\n  listen:\n",
			[]string{`F:2:10: http.listen: no value: give one, or leave the key out`}},
		{"reconcile unknown key", "reconcile:\n  intervall: 5m\n",
			[]string{`F:2:3: unknown field "intervall" in reconcile (did you mean "interval"?)`}},
		{"reconcile values not durations", "reconcile:\n  interval: 5\n  lag: soon\n",
			[]string{
				`F:2:13: reconcile.interval: expected a duration such as 30s, got "5"`,
				`F:3:8: reconcile.lag: expected a duration such as 30s, got "soon"`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.src)
			c, err := Load(path)
			if err == nil {
				t.Fatalf("Load = %+v, want errors", c)
			}
			var ye yamlx.Errors
			if !errors.As(err, &ye) {
				t.Fatalf("error is %T, want yamlx.Errors: %v", err, err)
			}
			got := strings.Split(strings.ReplaceAll(err.Error(), path, "F"), "\n")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadPartial: a file with errors still gives the config as far as it
// decoded (for lint to go on to the route files), one that does not parse
// gives none.
func TestLoadPartial(t *testing.T) {
	c, err := Load(writeConfig(t, "routes: [my-routes]\nhttp:\n  lisen: x\n"))
	if err == nil || c == nil || !slices.Equal(c.Routes, []string{"my-routes"}) {
		t.Errorf("Load = %+v, %v; want the decoded routes with the error", c, err)
	}
	if c, err := Load(writeConfig(t, "routes: [my-routes\n")); err == nil || c != nil {
		t.Errorf("Load of a syntax error = %+v, %v; want no config", c, err)
	}
	// An error in routes itself leaves none, not the default ones, and
	// Validate does not say again that there are none.
	if c, err := Load(writeConfig(t, "routes: {a: b}\n")); err == nil || c == nil || len(c.Routes) != 0 {
		t.Errorf("Load with bad routes = %+v, %v; want the config with no routes", c, err)
	} else if errs := c.Validate(); len(errs) != 0 {
		t.Errorf("Validate after bad routes = %v, want nothing more", errStrings(errs))
	}
}

func TestLoadUnreadable(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load = %v, want a not-exist error", err)
	}
}

// TestComponentSettingsKeepSource checks that an adapter decoding its
// settings later reports errors with the component's path and exact
// positions, quoted strings included.
func TestComponentSettingsKeepSource(t *testing.T) {
	src := "destinations:\n  ehr:\n    type: fhir\n    url: \"https://\\tehr\"\n    retry: {max_attempts: 2}\n    mod: message\n"
	path := writeConfig(t, src)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		URL  yamlx.String `yaml:"url"`
		Mode string       `yaml:"mode"`
	}
	err = c.Destinations["ehr"].Settings.Decode(&s)
	want := path + `:6:5: unknown field "mod" in destinations.ehr (did you mean "mode"?)`
	if err == nil || err.Error() != want {
		t.Errorf("Decode error = %v, want %s", err, want)
	}
	// "\t" is two characters in the file and one in the value, so the
	// text after it is found only with the source kept.
	if got, want := s.URL.PosAt(strings.Index(s.URL.Value, "ehr")), (yamlx.Pos{File: path, Line: 4, Col: 21}); got != want {
		t.Errorf("PosAt = %v, want %v", got, want)
	}
	if got, want := c.Destinations["ehr"].TypePos, (yamlx.Pos{File: path, Line: 3, Col: 11}); got != want {
		t.Errorf("TypePos = %v, want %v", got, want)
	}
	if got, want := c.Destinations["ehr"].Pos, (yamlx.Pos{File: path, Line: 3, Col: 5}); got != want {
		t.Errorf("Pos = %v, want %v", got, want)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"data dir", func(c *Config) { c.DataDir = "" }, []string{"data_dir: required"}},
		{"reconcile off", func(c *Config) { c.Reconcile.Interval = 0 }, nil},
		{"reconcile at its bounds", func(c *Config) { c.Reconcile = ReconcileConfig{Interval: time.Hour, Lag: time.Minute} }, nil},
		{"reconcile longest lag", func(c *Config) { c.Reconcile = ReconcileConfig{Interval: time.Minute, Lag: 24 * time.Hour} }, nil},
		{"reconcile interval negative", func(c *Config) { c.Reconcile.Interval = -time.Minute },
			[]string{"reconcile.interval: must be 0 (off) or 1m to 1h, got -1m0s"}},
		{"reconcile interval too short", func(c *Config) { c.Reconcile.Interval = 30 * time.Second },
			[]string{"reconcile.interval: must be 0 (off) or 1m to 1h, got 30s"}},
		{"reconcile interval too long", func(c *Config) { c.Reconcile.Interval = 2 * time.Hour },
			[]string{"reconcile.interval: must be 0 (off) or 1m to 1h, got 2h0m0s"}},
		{"reconcile lag too short", func(c *Config) { c.Reconcile.Lag = 0 },
			[]string{"reconcile.lag: must be 1m to 24h, got 0s"}},
		{"reconcile lag too long", func(c *Config) { c.Reconcile.Lag = 25 * time.Hour },
			[]string{"reconcile.lag: must be 1m to 24h, got 25h0m0s"}},
		{"reconcile lag past the ingress stream's age", func(c *Config) { c.NATS.IngressMaxAge, c.NATS.DedupeWindow = 20*time.Minute, time.Minute },
			[]string{"reconcile.lag: with reconcile.interval, must be under nats.ingress_max_age (20m0s), so that a window's messages are still stored when it is checked"}},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, []string{`log.level: must be debug, info, warn or error, got "verbose"`}},
		{"http max connections", func(c *Config) { c.HTTP.MaxConnections = 0 }, []string{`http.max_connections: must be positive, got 0`}},
		{"http timeouts none", func(c *Config) { c.HTTP.ReadHeaderTimeout, c.HTTP.ReadTimeout, c.HTTP.WriteTimeout = 0, 0, 0 }, nil},
		{"http timeouts negative", func(c *Config) {
			c.HTTP.ReadHeaderTimeout, c.HTTP.ReadTimeout, c.HTTP.WriteTimeout = -time.Second, -time.Minute, -1
		}, []string{
			"http.read_header_timeout: must not be negative (0 means none), got -1s",
			"http.read_timeout: must not be negative (0 means none), got -1m0s",
			"http.write_timeout: must not be negative (0 means none), got -1ns",
		}},
		{"tracing", func(c *Config) {
			c.Tracing = TracingConfig{OTLPEndpoint: "https://collector.example:4318/v1/traces", OTLPProtocol: "http/protobuf"}
		}, nil},
		{"tracing endpoint not a URL", func(c *Config) { c.Tracing.OTLPEndpoint = "collector:4317" },
			[]string{"tracing.otlp_endpoint: must be an absolute http(s) URL without credentials, query or fragment, such as http://collector:4317"}},
		{"tracing endpoint with credentials", func(c *Config) { c.Tracing.OTLPEndpoint = "https://user:pw@collector:4317" },
			[]string{"tracing.otlp_endpoint: must be an absolute http(s) URL without credentials, query or fragment, such as http://collector:4317"}},
		{"tracing protocol", func(c *Config) { c.Tracing.OTLPProtocol = "http/json" },
			[]string{`tracing.otlp_protocol: must be grpc or http/protobuf, got "http/json"`}},
		{"nats listen with an external server", func(c *Config) { c.NATS.URL, c.NATS.Listen = "nats://n1:4222", "127.0.0.1:4222" },
			[]string{"nats.listen: only for the embedded server; with nats.url set there is none to listen, and the setting would be ignored"}},
		{"listen not host:port", func(c *Config) { c.HTTP.Listen = "8080" }, []string{"http.listen: must be host:port"}},
		{"listen port out of range", func(c *Config) { c.HTTP.Listen = "127.0.0.1:99999" }, []string{`http.listen: port "99999" must be a number from 0 to 65535`}},
		{"non-loopback needs a token", func(c *Config) { c.HTTP.Listen = "0.0.0.0:8080" },
			[]string{"http.tokens: at least one token is required when http.listen (0.0.0.0:8080) is not a loopback address, since the admin API shows patient data"}},
		{"all interfaces need a token", func(c *Config) { c.HTTP.Listen = ":8080" },
			[]string{"http.tokens: at least one token is required when http.listen (:8080) is not a loopback address, since the admin API shows patient data"}},
		{"non-loopback with an env token", func(c *Config) { c.HTTP.Listen, c.HTTP.AdminToken = "10.0.0.1:8080", "env:JUNCTION_TOKEN" }, nil},
		{"non-loopback with a file token", func(c *Config) { c.HTTP.Listen, c.HTTP.AdminToken = "10.0.0.1:8080", "file:/run/secrets/token" }, nil},
		{"tls by reference", func(c *Config) {
			c.HTTP.TLS = &HTTPTLSConfig{Cert: "file:/run/tls/tls.crt", Key: "env:HTTP_KEY", ClientCA: "file:/run/tls/ca.crt"}
		}, nil},
		{"tls needs cert and key", func(c *Config) { c.HTTP.TLS = &HTTPTLSConfig{ClientCA: "file:/run/tls/ca.crt"} },
			[]string{"http.tls.cert: required", "http.tls.key: required"}},
		{"tls material inline", func(c *Config) {
			c.HTTP.TLS = &HTTPTLSConfig{Cert: "-----BEGIN CERTIFICATE-----", Key: "/run/tls/tls.key", ClientCA: "ca.pem"}
		}, []string{
			"http.tls.cert: must be a secret reference (file:PATH or env:NAME holding PEM)",
			"http.tls.key: must be a secret reference (file:PATH or env:NAME holding PEM)",
			"http.tls.client_ca: must be a secret reference (file:PATH or env:NAME holding PEM)",
		}},
		{"token must be a reference", func(c *Config) { c.HTTP.Listen, c.HTTP.AdminToken = "10.0.0.1:8080", "s3cr3t-value" },
			[]string{"http.admin_token: must be a reference (env:NAME or file:PATH), never the token itself"}},
		{"non-loopback with tokens", func(c *Config) {
			c.HTTP.Listen = "10.0.0.1:8080"
			c.HTTP.Tokens = []TokenConfig{
				{Name: "ops-team", Role: "operator", Token: "env:OPS_TOKEN"},
				{Name: "ig", Roles: []string{"auditor", "integration_engineer"}, Token: "file:/run/secrets/ig"},
				{Name: "nhs_app", Role: "patient_service", Token: "env:NHS_APP_TOKEN"},
			}
		}, nil},
		{"tokens with the deprecated admin token", func(c *Config) {
			c.HTTP.AdminToken = "env:JUNCTION_TOKEN"
			c.HTTP.Tokens = []TokenConfig{{Name: "ops", Role: "operator", Token: "env:OPS_TOKEN"}}
		}, nil},
		{"token errors", func(c *Config) {
			c.HTTP.AdminToken = "env:JUNCTION_TOKEN"
			c.HTTP.Tokens = []TokenConfig{
				{Name: "ops", Role: "opertor", Token: "env:OPS_TOKEN"},
				{Name: "ops", Role: "operator", Token: "s3cr3t-value"},
				{Role: "auditor", Token: "env:A"},
				{Name: "bad name", Roles: []string{"auditor", "auditor"}, Token: "env:B"},
				{Name: "both", Role: "auditor", Roles: []string{"operator"}, Token: "env:C"},
				{Name: "none", Token: "env:D"},
				{Name: "same", Role: "auditor", Token: "env:OPS_TOKEN"},
				{Name: "legacy", Role: "auditor", Token: "env:JUNCTION_TOKEN"},
				{Name: "admin_token", Role: "auditor"},
			}
		}, []string{
			`http.tokens[0] (ops): unknown role "opertor"; roles are operator, integration_engineer, auditor, patient_service`,
			"http.tokens[1] (ops): name: used by another token",
			"http.tokens[1] (ops): token: must be a reference (env:NAME or file:PATH), never the token itself",
			"http.tokens[2]: name: required",
			"http.tokens[3] (bad name): name: may hold only letters, digits, '-' and '_'",
			"http.tokens[3] (bad name): role auditor is listed twice",
			"http.tokens[4] (both): give role or roles, not both",
			"http.tokens[5] (none): roles: at least one role is required",
			"http.tokens[6] (same): token: http.tokens[0] (ops) names the same secret; give each token its own",
			"http.tokens[7] (legacy): token: http.admin_token names the same secret; give each token its own",
			"http.tokens[8] (admin_token): name: admin_token is the name of http.admin_token; choose another",
			"http.tokens[8] (admin_token): token: required (env:NAME or file:PATH)",
		}},
		{"localhost needs no token", func(c *Config) { c.HTTP.Listen = "localhost:8080" }, nil},
		{"ipv6 loopback needs no token", func(c *Config) { c.HTTP.Listen = "[::1]:8080" }, nil},
		{"audit key by reference", func(c *Config) { c.Audit.SigningKey = "file:/run/secrets/audit.pem" }, nil},
		{"audit key must be a reference", func(c *Config) { c.Audit.SigningKey = "0101010101010101" },
			[]string{"audit.signing_key: must be a reference (env:NAME or file:PATH), never the key itself"}},
		{"audit checkpoint interval", func(c *Config) { c.Audit.CheckpointInterval = 0 }, []string{"audit.checkpoint_interval: must be positive"}},
		{"batch", func(c *Config) { c.Router.Batch = 0 }, []string{"router.batch: must be 1 to 1000, got 0"}},
		{"batch too large", func(c *Config) { c.Router.Batch = 1001 }, []string{"router.batch: must be 1 to 1000, got 1001"}},
		{"ack wait", func(c *Config) { c.Router.AckWait = 500 * time.Millisecond }, []string{"router.ack_wait: must be at least 1s"}},
		{"max backlog", func(c *Config) { c.Router.MaxBacklog = -1 }, []string{"router.max_backlog: must not be negative (0 means no limit), got -1"}},
		{"shutdown", func(c *Config) { c.ShutdownTimeout = 0 }, []string{"shutdown_timeout: must be positive"}},
		{"rules limits", func(c *Config) { c.Rules = RulesConfig{} }, []string{
			"rules.max_estimated_cost: must be positive", "rules.cost_limit: must be positive", "rules.timeout: must be positive"}},
		{"nats", func(c *Config) { c.NATS.Replicas = 3 }, []string{"nats.replicas: the embedded server is a single node; replicas must be 1 (set nats.url for a cluster)"}},
		{"names", func(c *Config) {
			c.Inputs["bad name"] = &Component{Type: "pas", Retry: router.DefaultRetry()}
			c.Inputs["_acc"] = &Component{Type: "pas", Retry: router.DefaultRetry()}
			c.Destinations["bad.name"] = &Component{Type: "file", Retry: router.DefaultRetry()}
		}, []string{
			"inputs._acc: names may not start with '_', which the engine keeps for its own store subjects",
			"inputs.bad name: names may hold only letters, digits, '-' and '_'",
			"destinations.bad.name: names may hold only letters, digits, '-' and '_'",
		}},
		{"nil components", func(c *Config) { c.Inputs["x"], c.Destinations["y"] = nil, nil }, []string{
			"inputs.x: expected a mapping with a type", "destinations.y: expected a mapping with a type"}},
		{"retry", func(c *Config) { c.Destinations["fhir-store"].Retry.MaxAttempts = 0 }, []string{
			"destinations.fhir-store.retry.max_attempts: must be at least 1"}},
		{"routes", func(c *Config) { c.Routes = nil }, []string{"routes: at least one route file or directory is required"}},
		{"consent default policy", func(c *Config) { c.Consent.Engine = ConsentEngineDefault }, nil},
		{"consent engine", func(c *Config) { c.Consent.Engine = "opa" }, []string{`consent.engine: must be consent or default, got "opa"`}},
		{"consent key by reference", func(c *Config) { c.Consent.HashKey = "env:JUNCTION_CONSENT_KEY" }, nil},
		{"consent key inline", func(c *Config) { c.Consent.HashKey = "0123456789abcdef0123" }, []string{
			"consent.hash_key: must be a reference (env:NAME or file:PATH), never the key itself"}},
		{"opt-out age", func(c *Config) { c.Consent.OptOutMaxAge = 0 }, []string{"consent.opt_out_max_age: must be positive"}},
		{"opt-out file", func(c *Config) { c.Consent.OptOutFile = "/srv/junction/optouts.csv" }, nil},
		{"opt-out file needs the consent engine", func(c *Config) {
			c.Consent.Engine, c.Consent.OptOutFile = ConsentEngineDefault, "/srv/junction/optouts.csv"
		}, []string{"consent.opt_out_file: needs consent.engine: consent (the default policy does not consult the opt-out list)"}},
		{"patient index disabled", func(c *Config) { c.PatientIndex = PatientIndexConfig{} }, nil},
		{"patient index bucket", func(c *Config) { c.PatientIndex.Bucket = "patients.v1" }, []string{
			`patient_index.bucket: must be 1 to 64 letters, digits, '-' or '_', got "patients.v1"`}},
		{"pds lookups", func(c *Config) {
			c.PatientIndex.PDS.URL, c.PatientIndex.PDS.Token = "https://int.api.service.nhs.uk/personal-demographics/FHIR/R4", "env:PDS_TOKEN"
		}, nil},
		{"pds settings", func(c *Config) {
			c.PatientIndex.PDS = PDSConfig{URL: "int.api.service.nhs.uk", Token: "eyJhbGciOi", RefreshAfter: time.Second}
		}, []string{
			"patient_index.pds.url: must be an absolute https URL without credentials, query or fragment",
			"patient_index.pds.token: must be a reference (env:NAME or file:PATH), never the token itself",
			"patient_index.pds.timeout: must be positive",
			"patient_index.pds.refresh_after: must be at least 1m",
		}},
		{"pds over plain http", func(c *Config) {
			c.PatientIndex.PDS = PDSConfig{URL: "http://int.api.service.nhs.uk/personal-demographics/FHIR/R4", Token: "env:PDS_TOKEN", Timeout: time.Second, RefreshAfter: time.Hour}
		}, []string{"patient_index.pds.url: must be https (http only to a loopback address, for tests): lookups carry NHS numbers and the access token"}},
		{"pds url with credentials", func(c *Config) {
			c.PatientIndex.PDS = PDSConfig{URL: "https://user:inline@int.api.service.nhs.uk/FHIR/R4", Token: "env:PDS_TOKEN", Timeout: time.Second, RefreshAfter: time.Hour}
		}, []string{"patient_index.pds.url: must be an absolute https URL without credentials, query or fragment"}},
		{"pds test double on loopback", func(c *Config) {
			c.PatientIndex.PDS = PDSConfig{URL: "http://127.0.0.1:9000/FHIR/R4", Token: "env:PDS_TOKEN", Timeout: time.Second, RefreshAfter: time.Hour}
		}, nil},
		{"pds signed JWT auth", func(c *Config) {
			c.PatientIndex.PDS.URL = "https://int.api.service.nhs.uk/personal-demographics/FHIR/R4"
			c.PatientIndex.PDS.Auth = PDSAuthConfig{TokenURL: "https://int.api.service.nhs.uk/oauth2/token",
				APIKey: "env:PDS_API_KEY", PrivateKey: "file:/run/secrets/pds.pem", KID: "test-1"}
		}, nil},
		{"pds auth to a loopback double over http", func(c *Config) {
			c.PatientIndex.PDS.URL = "http://127.0.0.1:8080"
			c.PatientIndex.PDS.Auth = PDSAuthConfig{TokenURL: "http://localhost:8080/oauth2/token", APIKey: "env:K", PrivateKey: "env:P", KID: "k"}
		}, nil},
		{"pds auth partly given", func(c *Config) {
			c.PatientIndex.PDS.URL = "https://int.api.service.nhs.uk/personal-demographics/FHIR/R4"
			c.PatientIndex.PDS.Auth = PDSAuthConfig{TokenURL: "https://int.api.service.nhs.uk/oauth2/token", PrivateKey: "file:/run/secrets/pds.pem"}
		}, []string{"patient_index.pds.auth: token_url, api_key, private_key and kid are given together; missing api_key, kid"}},
		{"pds auth settings", func(c *Config) {
			c.PatientIndex.PDS.URL = "https://int.api.service.nhs.uk/personal-demographics/FHIR/R4"
			c.PatientIndex.PDS.Token = "env:PDS_TOKEN"
			c.PatientIndex.PDS.Auth = PDSAuthConfig{TokenURL: "http://int.api.service.nhs.uk/oauth2/token",
				APIKey: "AbCdEf0123456789", PrivateKey: "-----BEGIN PRIVATE KEY-----", KID: "test 1"}
		}, []string{
			"patient_index.pds: give token or auth, not both (auth gets the token itself)",
			"patient_index.pds.auth.token_url: must be https (http only to a loopback address, for tests)",
			"patient_index.pds.auth.api_key: must be a reference (env:NAME or file:PATH), never the key itself",
			"patient_index.pds.auth.private_key: must be a reference (env:NAME or file:PATH), never the key itself",
			"patient_index.pds.auth.kid: must be printable ASCII without spaces",
		}},
		{"pds auth token url not a URL", func(c *Config) {
			c.PatientIndex.PDS.URL = "https://int.api.service.nhs.uk/personal-demographics/FHIR/R4"
			c.PatientIndex.PDS.Auth = PDSAuthConfig{TokenURL: "int.api.service.nhs.uk/oauth2/token?x=1", APIKey: "env:K", PrivateKey: "env:P", KID: "k"}
		}, []string{"patient_index.pds.auth.token_url: must be an absolute https URL without credentials, query or fragment"}},
		{"pds needs the index", func(c *Config) {
			c.PatientIndex.Enabled, c.PatientIndex.PDS.URL = false, "https://pds.example.nhs.uk/FHIR/R4"
		}, []string{"patient_index.pds: needs patient_index.enabled: true (lookups update the index)"}},
		{"consent destinations", func(c *Config) {
			c.Consent.Destinations = map[string]ConsentDestination{
				"fhir-store": {ODS: "RX1", Allow: []string{"S-FLAG", "V"}},
				"nowhere":    {ODS: "R X1", Allow: []string{"TOP-SECRET"}},
			}
		}, []string{
			"consent.destinations.nowhere: no destination of that name",
			`consent.destinations.nowhere.ods: "R X1" is not an ODS code (2 to 12 letters and digits)`,
			`consent.destinations.nowhere.allow[0]: must be one of V, GRA-S22, HFEA-S33A, R, SEXUAL-HEALTH, SAFEGUARDING, S-FLAG, got "TOP-SECRET"`,
		}},
		{"consent sources", func(c *Config) {
			c.Consent.Sources = map[string]ConsentSource{
				"pas":     {ODS: "RX1"},
				"fhir":    {},
				"nowhere": {ODS: "R-X1"},
			}
		}, []string{
			"consent.sources.nowhere: no input of that name",
			`consent.sources.nowhere.ods: "R-X1" is not an ODS code (2 to 12 letters and digits)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(c)
			if diff := cmp.Diff(tt.want, errStrings(c.Validate())); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestIsLoopbackAndIsRef(t *testing.T) {
	loop := map[string]bool{
		"127.0.0.1:8080": true, "127.1.2.3:1": true, "[::1]:80": true, "localhost:80": true,
		"0.0.0.0:80": false, ":80": false, "10.0.0.1:80": false, "example.nhs.uk:80": false, "127.0.0.1": false, "": false,
	}
	for addr, want := range loop {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
	refs := map[string]bool{"env:X": true, "file:/x": true, "x": false, "ENV:X": false, "": false}
	for s, want := range refs {
		if got := IsRef(s); got != want {
			t.Errorf("IsRef(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestCheckSecretRefsTokens checks that lint holds token values to the
// rules serve does: long enough, no whitespace.
func TestCheckSecretRefsTokens(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	spaced := filepath.Join(dir, "spaced")
	good := filepath.Join(dir, "good")
	for p, v := range map[string]string{short: "x\n", spaced: "   \n", good: "a-long-enough-random-token\n"} {
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "junction.yaml")
	body := "http:\n  tokens:\n    - {name: a, role: operator, token: file:" + short + "}\n    - {name: b, role: auditor, token: file:" + spaced + "}\n    - {name: c, role: auditor, token: file:" + good + "}\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range c.CheckSecretRefs(Secrets{}) {
		got = append(got, e.Error())
	}
	lines := strings.Split(body, "\n")
	col := func(line int) string { return strconv.Itoa(strings.Index(lines[line-1], "file:") + 1) }
	want := []string{
		path + ":3:" + col(3) + ": http.tokens[0].token: the secret is shorter than 16 characters; use a random one, such as openssl rand -hex 32 writes",
		path + ":4:" + col(4) + ": http.tokens[1].token: the secret holds spaces or other whitespace",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	lf := write("lf", "token-a\n")
	crlf := write("crlf", "token-b\r\n")
	bare := write("bare", "token-c")
	twice := write("twice", "token-d\n\n")
	empty := write("empty", "\n")
	env := map[string]string{"JUNCTION_TEST_TOKEN": "token-e"}
	s := Secrets{Getenv: func(k string) string { return env[k] }}
	tests := []struct {
		ref, want, err string
	}{
		{ref: "env:JUNCTION_TEST_TOKEN", want: "token-e"},
		{ref: "env:JUNCTION_TEST_UNSET", err: "environment variable JUNCTION_TEST_UNSET is not set"},
		{ref: "env:", err: "env: reference names no variable"},
		{ref: "file:" + lf, want: "token-a"},
		{ref: "file:" + crlf, want: "token-b"},
		{ref: "file:" + bare, want: "token-c"},
		{ref: "file:" + twice, want: "token-d\n"},
		{ref: "file:" + empty, err: "secret file is empty"},
		{ref: "file:" + filepath.Join(dir, "missing"), err: "reading secret file: open " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{ref: "hunter2-inline", err: "not a secret reference: use env:NAME or file:PATH"},
	}
	// From the process's own environment, an empty variable is told
	// from an unset one.
	t.Setenv("JUNCTION_TEST_EMPTY", "")
	if _, err := (Secrets{}).Resolve("env:JUNCTION_TEST_EMPTY"); err == nil || err.Error() != "environment variable JUNCTION_TEST_EMPTY is set but empty" {
		t.Errorf("empty variable: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got, err := s.Resolve(tt.ref)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if diff := cmp.Diff([]string{tt.want, tt.err}, []string{got, gotErr}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("os environment by default", func(t *testing.T) {
		t.Setenv("JUNCTION_TEST_OS_TOKEN", "token-f-long-enough")
		got, err := Secrets{}.Resolve("env:JUNCTION_TEST_OS_TOKEN")
		if err != nil || got != "token-f-long-enough" {
			t.Errorf("Resolve = %q, %v", got, err)
		}
	})
}

func TestRulesLimits(t *testing.T) {
	got := RulesConfig{MaxEstimatedCost: 7, CostLimit: 8, Timeout: 9 * time.Millisecond}.Limits()
	want := rules.DefaultLimits()
	want.MaxEstimatedCost, want.CostLimit, want.Timeout = 7, 8, 9*time.Millisecond
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte("data_dir: x\n"))
	f.Add([]byte("destinations:\n  ehr:\n    type: fhir\n    retry: {max_attempts: 3}\n"))
	f.Add([]byte("inputs:\n  pas:\n"))
	if b, err := os.ReadFile(filepath.Join("..", "..", "README.md")); err == nil {
		if _, sec, ok := strings.Cut(string(b), "```yaml\n"); ok {
			f.Add([]byte(sec))
		}
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err != nil {
			return
		}
		for name, comp := range c.Inputs {
			if comp == nil {
				t.Fatalf("inputs.%s is nil", name)
			}
		}
		for name, comp := range c.Destinations {
			if comp == nil {
				t.Fatalf("destinations.%s is nil", name)
			}
		}
		_ = fmt.Sprint(c.Validate())
	})
}

// TestRoutePos: where the file writes each routes entry, and no place for
// routes it does not write (the defaults, or routes given another way).
func TestRoutePos(t *testing.T) {
	path := writeConfig(t, "data_dir: d\nroutes:\n  - a\n  - b\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		routes []string
		i      int
		want   yamlx.Pos
	}{
		{"first", nil, 0, yamlx.Pos{File: path, Line: 3, Col: 5}},
		{"second", nil, 1, yamlx.Pos{File: path, Line: 4, Col: 5}},
		{"out of range", nil, 2, yamlx.Pos{}},
		{"replaced", []string{"a", "c"}, 1, yamlx.Pos{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *c
			if tt.routes != nil {
				c.Routes = tt.routes
			}
			if got := c.RoutePos(tt.i); got != tt.want {
				t.Errorf("RoutePos(%d) = %v, want %v", tt.i, got, tt.want)
			}
		})
	}
	if got := Default().RoutePos(0); got != (yamlx.Pos{}) {
		t.Errorf("Default().RoutePos(0) = %v, want none", got)
	}
}

// TestCheckSecretRefsValues: secrets that resolve but whose values serve
// would refuse part way through starting, one at a time (a key that does
// not parse or is too short, an input's token that is an admin token's),
// are reported with the rest, each at its value, never quoting it.
func TestCheckSecretRefsValues(t *testing.T) {
	seed := strings.Repeat("ab", 32) // 32 bytes in hex: an ed25519 seed
	env := map[string]string{
		"OPS": "ops-token-long-enough-1", "AUD": "aud-token-long-enough-2", "FHIR": "fhir-token-long-enough-3",
		"SIGN": seed, "BADSIGN": "not-a-key-but-secret", "HASH": "sixteen-bytes-ok", "SHORTHASH": "tiny-secret",
		"PK": "rsa-private-key-secret",
	}
	tests := []struct {
		name string
		body string
		want []string // ":L:C: ..." after the file
	}{
		{"good", "audit: {signing_key: env:SIGN}\nconsent: {hash_key: env:HASH}\nhttp:\n  tokens:\n    - {name: ops, role: operator, token: env:OPS}\ninputs:\n  fhir: {type: fhir, bearer_token: env:FHIR}\n", nil},
		{"signing key", "audit: {signing_key: env:BADSIGN}\n",
			[]string{":1:22: audit.signing_key: signing key: want PEM, or 32 bytes in hex or base64"}},
		{"hash key", "consent: {hash_key: env:SHORTHASH}\n",
			[]string{":1:21: consent.hash_key: the key must be at least 16 bytes"}},
		{"pds private key", "patient_index:\n  pds:\n    url: https://pds.example/FHIR/R4\n    auth: {token_url: https://pds.example/token, api_key: env:OPS, kid: k, private_key: env:PK}\n",
			[]string{":4:89: patient_index.pds.auth.private_key: no PEM block found"}},
		{"input token is an admin token", "inputs:\n  fhir: {type: fhir, bearer_token: env:OPS}\nhttp:\n  tokens:\n    - {name: ops, role: operator, token: env:OPS}\n",
			[]string{":5:42: http.tokens[0].token: the same secret as inputs.fhir.bearer_token, whose callers would hold this token's roles; give each its own"}},
		{"admin token is an input token", "http:\n  tokens:\n    - {name: ops, role: operator, token: env:OPS}\ninputs:\n  fhir: {type: fhir, bearer_token: env:OPS}\n",
			[]string{":5:36: inputs.fhir.bearer_token: the same secret as the admin token http.tokens[0].token, whose roles its callers would hold; give each its own"}},
		{"two admin tokens", "http:\n  admin_token: env:AUD\n  tokens:\n    - {name: ops, role: operator, token: env:AUD}\n",
			[]string{":4:42: http.tokens[0].token: the same secret as http.admin_token; give each token its own"}},
	}
	quotes := func(msg string) bool {
		for _, v := range env {
			if strings.Contains(msg, v) {
				return true
			}
		}
		return false
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkSecretErrors(t, env, tt.body, tt.want, quotes)
		})
	}
}

// checkSecretErrors loads the config body and checks that CheckSecretRefs,
// with the environment env, reports want (":L:C: ..." after the file), and
// that no error quotes what quotes finds in it.
func checkSecretErrors(t *testing.T, env map[string]string, body string, want []string, quotes func(msg string) bool) {
	t.Helper()
	path := writeConfig(t, body)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range c.CheckSecretRefs(Secrets{Getenv: func(k string) string { return env[k] }}) {
		msg := strings.TrimPrefix(e.Error(), path)
		if quotes(msg) {
			t.Errorf("error quotes a secret value: %s", msg)
		}
		got = append(got, msg)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestReconcilePlaced: the reconcile settings' validation errors name
// settings the config places at their file:line:col, as serve and lint
// report them.
func TestReconcilePlaced(t *testing.T) {
	path := writeConfig(t, "log: {level: info}\nreconcile:\n  interval: 2h\n  lag: 10s\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range c.Validate() {
		setting, _, _ := strings.Cut(e.Error(), ": ")
		got = append(got, c.PosOf(setting).String()+": "+e.Error())
	}
	want := []string{
		path + ":3:13: reconcile.interval: must be 0 (off) or 1m to 1h, got 2h0m0s",
		path + ":4:8: reconcile.lag: must be 1m to 24h, got 10s",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("placed errors (-want +got):\n%s", diff)
	}
}

// TestValidatePlacesNames: a bad input or destination name, which is no
// settings path the engine could place, is placed at its key.
func TestValidatePlacesNames(t *testing.T) {
	path := writeConfig(t, "inputs:\n  \"bad name\": {type: pas}\n  _x: {type: fhir}\ndestinations:\n  \"a/b\": {type: file}\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		path + ":3:3: inputs._x: names may not start with '_', which the engine keeps for its own store subjects",
		path + ":2:3: inputs.bad name: names may hold only letters, digits, '-' and '_'",
		path + ":5:3: destinations.a/b: names may hold only letters, digits, '-' and '_'",
	}
	if diff := cmp.Diff(want, errStrings(c.Validate())); diff != "" {
		t.Errorf("Validate (-want +got):\n%s", diff)
	}
}

// TestCheckSecretRefsTLS: TLS material that resolves but that serve
// could not use (a certificate and key that are no pair, a CA holding no
// certificate) is reported with the rest, at its setting.
func TestCheckSecretRefsTLS(t *testing.T) {
	pki := tlstest.PKI(t)
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(pki[name])
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	cert, key, otherKey := read("server.crt"), read("server.key"), read("client.key")
	env := map[string]string{"CERT": cert, "KEY": key, "OTHERKEY": otherKey, "JUNK": "not pem at all"}
	tests := []struct {
		name string
		body string
		want []string // ":L:C: ..." after the file
	}{
		{"good", "http:\n  tls: {cert: env:CERT, key: env:KEY, client_ca: env:CERT}\ndestinations:\n  ris: {type: mllp, tls: {ca: env:CERT, cert: env:CERT, key: env:KEY}}\n", nil},
		{"not PEM", "http:\n  tls: {cert: env:JUNK, key: env:KEY}\n",
			[]string{":2:15: http.tls.cert and key: not a valid certificate and key pair: tls: failed to find any PEM data in certificate input"}},
		{"not a pair", "inputs:\n  pas: {type: pas, tls: {cert: env:CERT, key: env:OTHERKEY}}\n",
			[]string{":2:32: inputs.pas.tls.cert and key: not a valid certificate and key pair: tls: private key does not match public key"}},
		{"CA without a certificate", "http:\n  tls: {cert: env:CERT, key: env:KEY, client_ca: env:JUNK}\ndestinations:\n  ris: {type: mllp, tls: {ca: env:KEY}}\n",
			[]string{":2:50: http.tls.client_ca: no PEM certificate found", ":4:31: destinations.ris.tls.ca: no PEM certificate found"}},
	}
	quotesPEM := func(msg string) bool {
		return strings.Contains(msg, "PRIVATE KEY") || strings.Contains(msg, "CERTIFICATE")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkSecretErrors(t, env, tt.body, tt.want, quotesPEM)
		})
	}
}
