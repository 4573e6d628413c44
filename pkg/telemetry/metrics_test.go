package telemetry_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/telemetry"
)

// allowedLabels are the only label names a series may have: each takes
// values from configuration or a fixed set, never from a message.
var allowedLabels = map[string]bool{
	"adapter": true, "code": true, "reason": true, "issue": true, "route": true, "outcome": true,
	"destination": true, "decision": true, "stage": true, "name": true, "handler": true,
	// An access permission (a fixed set) and a principal: a configured
	// token name, never a token.
	"permission": true, "principal": true,
	// The state of the store's servers, or of reconciled messages, a
	// fixed set each.
	"state": true,
}

// subsystems are the parts of the engine a series may belong to.
var subsystems = []string{"ingress", "route", "delivery", "deadletter", "http", "engine", "patient", "reconcile"}

// unitlessGauges are gauges whose value is a state, not a quantity with a
// unit (as Prometheus's own "up").
var unitlessGauges = map[string]bool{"junction_engine_ready": true, "junction_ingress_backlog_refusing": true, "junction_engine_store_stream_writable": true}

var nameRE = regexp.MustCompile(`^junction_(` + strings.Join(subsystems, "|") + `)_([a-z][a-z0-9]*)(_[a-z][a-z0-9]*)*$`)

// touch makes one child of every series in m exist so that gathering shows
// it with its labels, and returns how many series there are.
func touch(t *testing.T, m *telemetry.Metrics) int {
	t.Helper()
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		f := v.Field(i)
		if f.IsNil() {
			t.Errorf("Metrics.%s is nil", name)
			continue
		}
		var err error
		switch c := f.Interface().(type) {
		case *prometheus.CounterVec:
			err = withLabels(func(vals ...string) error {
				x, err := c.GetMetricWithLabelValues(vals...)
				if err == nil {
					x.Inc()
				}
				return err
			})
		case *prometheus.HistogramVec:
			err = withLabels(func(vals ...string) error {
				x, err := c.GetMetricWithLabelValues(vals...)
				if err == nil {
					x.Observe(0.01)
				}
				return err
			})
		case *prometheus.GaugeVec:
			err = withLabels(func(vals ...string) error {
				x, err := c.GetMetricWithLabelValues(vals...)
				if err == nil {
					x.Set(1)
				}
				return err
			})
		case prometheus.Histogram:
			c.Observe(0.01)
		case prometheus.Gauge:
			c.Set(1)
		case prometheus.Counter:
			c.Inc()
		default:
			t.Errorf("Metrics.%s has unexpected type %T", name, c)
		}
		if err != nil {
			t.Errorf("Metrics.%s: %v", name, err)
		}
	}
	return v.NumField()
}

// withLabels calls get with 0, 1, 2... label values until one fits.
func withLabels(get func(vals ...string) error) error {
	var err error
	for n := range 6 {
		vals := make([]string, n)
		for i := range vals {
			vals[i] = "v"
		}
		if err = get(vals...); err == nil {
			return nil
		}
	}
	return err
}

func TestMetricsNamesAndLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := touch(t, telemetry.NewMetrics(reg))
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	if len(families) != n {
		t.Errorf("gathered %d series, Metrics has %d fields", len(families), n)
	}
	for _, mf := range families {
		name, typ := mf.GetName(), mf.GetType().String()
		t.Run(name, func(t *testing.T) {
			if !nameRE.MatchString(name) {
				t.Errorf("name does not follow junction_<subsystem>_<name>...: want subsystem one of %v, lower-case snake case", subsystems)
			}
			if mf.GetHelp() == "" {
				t.Error("no help text")
			}
			switch typ {
			case "COUNTER":
				if !strings.HasSuffix(name, "_total") {
					t.Error("counter name does not end in _total")
				}
			case "HISTOGRAM":
				if !strings.HasSuffix(name, "_seconds") {
					t.Error("histogram name does not end in a base unit (_seconds)")
				}
			case "GAUGE":
				if strings.HasSuffix(name, "_total") {
					t.Error("gauge name ends in _total")
				}
				if !unitlessGauges[name] && !strings.HasSuffix(name, "_seconds") && !strings.HasSuffix(name, "_messages") && !strings.HasSuffix(name, "_bytes") && !strings.HasSuffix(name, "_connections") && !strings.HasSuffix(name, "_partitions") && !strings.HasSuffix(name, "_servers") {
					t.Error("gauge name does not end in a unit (_seconds, _messages, _bytes, _connections, _partitions, _servers)")
				}
			default:
				t.Errorf("unexpected type %s", typ)
			}
			if len(mf.GetMetric()) != 1 {
				t.Fatalf("%d children after touching once, want 1", len(mf.GetMetric()))
			}
			var labels []string
			for _, lp := range mf.GetMetric()[0].GetLabel() {
				labels = append(labels, lp.GetName())
				if !allowedLabels[lp.GetName()] {
					t.Errorf("label %q is not one of the allowed names (it could carry patient data)", lp.GetName())
				}
			}
			if len(slices.Compact(slices.Sorted(slices.Values(labels)))) != len(labels) {
				t.Errorf("repeated label names %v", labels)
			}
		})
	}
}

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	touch(t, telemetry.NewMetrics(reg))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("GatherAndLint: %v", err)
	}
	var got []string
	for _, p := range problems {
		got = append(got, p.Metric+": "+p.Text)
	}
	if diff := cmp.Diff([]string(nil), got); diff != "" {
		t.Errorf("promlint problems (-want +got):\n%s", diff)
	}
}

func TestMetricsSeparateRegistries(t *testing.T) {
	// Each registry gets its own series: counting on one does not show on
	// the other.
	a, b := telemetry.NewMetrics(prometheus.NewRegistry()), telemetry.NewMetrics(prometheus.NewRegistry())
	a.Received.WithLabelValues("pas").Add(3)
	b.Received.WithLabelValues("pas").Inc()
	got := []float64{testutil.ToFloat64(a.Received.WithLabelValues("pas")), testutil.ToFloat64(b.Received.WithLabelValues("pas"))}
	if diff := cmp.Diff([]float64{3, 1}, got); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

// TestNewMetricsTwicePanics documents that registering the metrics twice
// on one registry is a programming error: NewMetrics uses MustRegister.
func TestNewMetricsTwicePanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	telemetry.NewMetrics(reg)
	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("second NewMetrics on one registry did not panic")
		}
		err, ok := r.(error)
		var are prometheus.AlreadyRegisteredError
		if !ok || !errors.As(err, &are) {
			t.Errorf("panic value %v (%T), want a prometheus.AlreadyRegisteredError", r, r)
		}
	}()
	telemetry.NewMetrics(reg)
}

// TestREADMEListsEveryMetric keeps README's metrics table complete: every
// metric registered is named in it (without the junction_ prefix).
func TestREADMEListsEveryMetric(t *testing.T) {
	table := readmeSection(t, "### Metrics\n", "\n\n"+"Traces:")
	reg := prometheus.NewRegistry()
	telemetry.NewMetrics(reg)
	ch := make(chan *prometheus.Desc, 64)
	go func() { reg.Describe(ch); close(ch) }()
	for d := range ch {
		_, rest, _ := strings.Cut(d.String(), `fqName: "`)
		name, _, _ := strings.Cut(rest, `"`)
		if !strings.Contains(table, "`"+strings.TrimPrefix(name, "junction_")) {
			t.Errorf("README's metrics table does not list %s", name)
		}
	}
}

// TestMetricsPrime: after Prime, the counters an alert watches have a
// series at zero for each input, route and destination, before any event.
func TestMetricsPrime(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := telemetry.NewMetrics(reg)
	m.Prime(map[string]telemetry.InputSeries{
		"pas":  {Acks: []string{"AA", "AE", "AR"}, Rejected: []string{"hl7.parse", "mllp.frame-invalid"}},
		"fhir": {Acks: []string{"202", "400"}, Rejected: []string{"fhir.invalid-json"}},
	}, []string{"adt"}, []string{"ehr"})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, mf := range families {
		for _, mm := range mf.GetMetric() {
			if v := mm.GetCounter().GetValue(); v != 0 {
				t.Errorf("%s primed at %v, want 0", mf.GetName(), v)
			}
			series[mf.GetName()]++
		}
	}
	for name, want := range map[string]int{
		"junction_ingress_messages_received_total": 2,
		"junction_ingress_acks_total":              5,
		"junction_ingress_rejected_total":          3,
		"junction_route_messages_total":            4,
		"junction_delivery_messages_total":         2,
		"junction_delivery_attempts_total":         3,
		"junction_deadletter_messages_total":       2,
		"junction_ingress_duplicates_total":        2,
		"junction_ingress_quarantined_total":       2,
		"junction_ingress_accepted_total":          2,
	} {
		if series[name] != want {
			t.Errorf("%s: %d series, want %d", name, series[name], want)
		}
	}
}

// readmeSection returns the part of README.md after start, up to end (or
// to its end): a section the tests keep in step with the code.
func readmeSection(t *testing.T, start, end string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatalf("reading README: %v", err)
	}
	_, sec, ok := strings.Cut(string(b), start)
	if !ok {
		t.Fatalf("README.md has no %q", strings.TrimSpace(start))
	}
	sec, _, _ = strings.Cut(sec, end)
	return sec
}
