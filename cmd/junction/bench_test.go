package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/mllp"
)

func TestParseDelivered(t *testing.T) {
	const text = `# HELP junction_delivery_messages_total Deliveries by outcome.
# TYPE junction_delivery_messages_total counter
junction_delivery_messages_total{destination="data-quality",outcome="delivered"} 7
junction_delivery_messages_total{destination="fhir-store",outcome="dead_lettered"} 2
junction_delivery_messages_total{destination="fhir-store",outcome="delivered"} 24287
junction_delivery_messages_total{destination="fhir-store-2",outcome="delivered"} 5
`
	tests := []struct {
		name, text, dest string
		want             float64
	}{
		{"delivered, not dead-lettered", text, "fhir-store", 24287},
		{"exact destination, not a prefix", text, "fhir-store-2", 5},
		{"other destination", text, "data-quality", 7},
		{"absent destination", text, "ehr", 0},
		{"labels in another order", `junction_delivery_messages_total{outcome="delivered",destination="ehr"} 3e+06`, "ehr", 3e6},
		{"empty exposition", "", "fhir-store", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseDelivered(tt.text, tt.dest); got != tt.want {
				t.Errorf("parseDelivered = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestBenchDestination: a run with --metrics against an engine with no
// routes measures ingest alone rather than waiting out --drain-timeout
// for deliveries that never come, unless the destination was named, which
// is refused, as is a destination the engine does not have.
func TestBenchDestination(t *testing.T) {
	const (
		noRoutes   = "junction_delivery_messages_total{destination=\"fhir-store\",outcome=\"delivered\"} 0\n"
		withRoutes = noRoutes + "junction_route_messages_total{outcome=\"matched\",route=\"adt-to-fhir-store\"} 0\n"
	)
	tests := []struct {
		name, metrics, dest string
		named               bool
		want, wantErr, said string
	}{
		{"routes and the destination", withRoutes, "fhir-store", false, "fhir-store", "", ""},
		{"ingest alone asked for", noRoutes, "", true, "", "", ""},
		{"no routes, default destination", noRoutes, "fhir-store", false, "", "", "measuring ingest alone"},
		{"no routes, destination named", noRoutes, "fhir-store", true, "", "runs no routes", ""},
		{"an unknown destination", withRoutes, "ehr", true, "", "no destination named ehr", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			got, err := benchDestination(tt.metrics, tt.dest, tt.named, &out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("benchDestination = %q, %v; want %q", got, err, tt.want)
			}
			if !strings.Contains(out.String(), tt.said) || (tt.said == "" && out.Len() > 0) {
				t.Errorf("said %q, want %q", out.String(), tt.said)
			}
		})
	}
}

func TestParseAccepted(t *testing.T) {
	tests := []struct {
		name, text string
		want       float64
	}{
		{"summed over inputs", "junction_ingress_accepted_total{adapter=\"lab\"} 12\njunction_ingress_accepted_total{adapter=\"pas\"} 3e+04\n", 30012},
		{"other counters left out", "junction_ingress_accepted_totally{adapter=\"pas\"} 5\njunction_ingress_duplicates_total{adapter=\"pas\"} 4\n# HELP junction_ingress_accepted_total Stored messages.\n", 0},
		{"empty exposition", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseAccepted(tt.text); got != tt.want {
				t.Errorf("parseAccepted = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseUse(t *testing.T) {
	const text = `# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 78.53
process_cpu_seconds_totally 1
# TYPE junction_store_client_messages_total counter
junction_store_client_messages_total{direction="received"} 2.5e+06
junction_store_client_messages_total{direction="sent"} 1.25e+06
junction_store_client_bytes_total{direction="sent"} 9e+09
`
	tests := []struct {
		name   string
		text   string
		before engineUse
		want   engineUse
	}{
		{"present", text, engineUse{}, engineUse{78.53, 1.25e6, 2.5e6}},
		{"since a scrape", text, engineUse{0.53, 250e3, 500e3}, engineUse{78, 1e6, 2e6}},
		{"absent", "junction_ingress_commits_total 5\n", engineUse{}, engineUse{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseUse(tt.text).since(tt.before)
			const eps = 1e-9
			if d := got.cpu - tt.want.cpu; got.sent != tt.want.sent || got.received != tt.want.received || d > eps || d < -eps {
				t.Errorf("parseUse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestEngineUseReport(t *testing.T) {
	tests := []struct {
		name string
		use  engineUse
		want string
	}{
		{"both", engineUse{2, 8000, 12000}, "engine CPU while testing: 1ms a message\nengine store traffic while testing: 4.0 messages sent and 6.0 received a message\n"},
		{"no store counters", engineUse{cpu: 2}, "engine CPU while testing: 1ms a message\n"},
		{"nothing", engineUse{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			tt.use.report(&b, "while testing", "a message", 2000)
			if b.String() != tt.want {
				t.Errorf("report wrote %q, want %q", b.String(), tt.want)
			}
		})
	}
}

func TestParseCommits(t *testing.T) {
	const text = `# HELP junction_ingress_commits_total Group-commit writes.
# TYPE junction_ingress_commits_total counter
junction_ingress_commits_total 21158
junction_ingress_commit_messages_total 73693
junction_ingress_commit_seconds_bucket{le="0.001"} 20000
junction_ingress_commit_seconds_sum 9.344907
junction_ingress_commit_seconds_count 21158
junction_ingress_commits_totally_other 5
`
	tests := []struct {
		name   string
		text   string
		before commitStats
		want   commitStats
	}{
		{"from start", text, commitStats{}, commitStats{21158, 73693, 9.344907, 21158}},
		{"since a scrape", text, commitStats{158, 693, 0.344907, 158}, commitStats{21000, 73000, 9, 21000}},
		{"group commit off", "junction_ingress_acks_total{adapter=\"pas\",code=\"AA\"} 5\n", commitStats{}, commitStats{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseCommits(tt.text).since(tt.before)
			const eps = 1e-9
			if d := got.seconds - tt.want.seconds; got.writes != tt.want.writes || got.messages != tt.want.messages || got.timed != tt.want.timed || d > eps || d < -eps {
				t.Errorf("parseCommits = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestWaitIdle: a run waits until the engine's accepted and delivered
// counters stand still, so earlier messages are not counted as its own,
// and gives up on an engine that stays busy.
func TestWaitIdle(t *testing.T) {
	tests := []struct {
		name     string
		busyFor  int // scrapes during which the counters still move
		wantErr  bool
		wantWait bool
	}{
		{"idle at once", 0, false, false},
		{"counters still, deliveries waiting", -3, false, true},
		{"counters still, a route's messages waiting", -103, false, true},
		{"busy for a while", 3, false, true},
		{"busy throughout", 1 << 30, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int64
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				scrape := n.Add(1)
				i := min(scrape, int64(max(tt.busyFor, 0))+1)
				// A negative busyFor: the counters stand still, but
				// deliveries wait for -busyFor scrapes.
				// Below -100: a route's messages wait instead.
				depth, routed := 0, 0
				switch {
				case tt.busyFor < -100 && scrape <= int64(-tt.busyFor-100):
					routed = 7
				case tt.busyFor < 0 && tt.busyFor > -100 && scrape <= int64(-tt.busyFor):
					depth = 4
				}
				fmt.Fprintf(w, "junction_ingress_accepted_total{adapter=\"pas\"} %d\njunction_delivery_messages_total{destination=\"fhir-store\",outcome=\"delivered\"} %d\njunction_delivery_queue_depth_messages{destination=\"fhir-store\"} %d\njunction_route_queue_depth_messages{route=\"adt\"} %d\njunction_route_queue_depth_messages{route=\"idle\"} 0\n", 100+i, 90+i, depth, routed)
			}))
			defer ts.Close()
			var out strings.Builder
			text, err := waitIdle(context.Background(), ts.URL, "fhir-store", 500*time.Millisecond, 10*time.Millisecond, &out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got := strings.Contains(out.String(), "waiting for the engine"); got != tt.wantWait {
				t.Errorf("said it was waiting: %v, want %v (%q)", got, tt.wantWait, out.String())
			}
			if err == nil {
				if parseQueueDepth(text, "fhir-store") != 0 || parseRouteBacklog(text) != 0 {
					t.Errorf("returned a scrape with deliveries or routing waiting")
				}
				if want := float64(90 + max(tt.busyFor, 0) + 1); parseDelivered(text, "fhir-store") != want {
					t.Errorf("returned the scrape with %v delivered, want the settled %v", parseDelivered(text, "fhir-store"), want)
				}
			}
		})
	}
}

// TestBenchResendsWhenToldLater runs bench against an MLLP listener that
// answers every other message AR with ERR 207 (not stored, resend later)
// the first time it sees it: bench sends each again, counts the answers,
// and reports every message accepted.
func TestBenchResendsWhenToldLater(t *testing.T) {
	var seen sync.Map
	var refusals atomic.Int64
	srv := &mllp.Server{Addr: "127.0.0.1:0", MaxMessageBytes: 1 << 20, ReadTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second,
		Handler: mllp.HandlerFunc(func(_ context.Context, _ *mllp.ConnInfo, payload []byte) ([]byte, bool) {
			m, err := hl7v2.Parse(payload)
			if err != nil {
				return hl7v2.BuildRawAck(hl7v2.AckOptions{}), true
			}
			ctrl := m.ControlID()
			if _, again := seen.LoadOrStore(ctrl, true); !again && len(ctrl)%2 == 0 {
				refusals.Add(1)
				return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAR, Errors: []hl7v2.AckError{{Code: hl7v2.ErrCodeInternal, Severity: "E", Text: "behind"}}}), false
			}
			return hl7v2.BuildAck(m, hl7v2.AckOptions{}), false
		})}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	var out strings.Builder
	err := runBench(t.Context(), []string{"--addr", srv.ListenAddr().String(), "--conns", "2", "--duration", "1s"}, &out, io.Discard)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	if refusals.Load() == 0 {
		t.Fatal("the listener refused nothing: the test proves nothing")
	}
	want := fmt.Sprintf("answered resend later %d times", refusals.Load())
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "not accepted 0") {
		t.Errorf("bench said:\n%s\nwant %q and nothing not accepted", out.String(), want)
	}
}

func TestBenchPatient(t *testing.T) {
	tests := []struct{ conns, patients, messages int }{
		{8, 500, 100},
		{8, 500, 2_000},
		{8, 2_000_000, 400_000},
		{3, 7, 50},
		{1, 1, 10},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d conns %d patients", tt.conns, tt.patients), func(t *testing.T) {
			seen := make(map[int]int)
			for i := range tt.messages / tt.conns {
				inFlight := make(map[int]bool)
				for c := range tt.conns {
					p := benchPatient(c, i, tt.conns, tt.patients)
					if p < 0 || p >= tt.patients {
						t.Fatalf("benchPatient(%d, %d) = %d, outside 0 to %d", c, i, p, tt.patients-1)
					}
					if inFlight[p] && tt.patients >= tt.conns {
						t.Fatalf("message %d: patient %d sent on two connections at once", i, p)
					}
					inFlight[p] = true
					seen[p]++
				}
			}
			sent := tt.messages / tt.conns * tt.conns
			if want := min(sent, tt.patients); len(seen) != want {
				t.Errorf("%d messages named %d patients, want %d", sent, len(seen), want)
			}
			// Connections do not keep in step (each waits for its own
			// answers): one at its i-th message while another is at its
			// j-th must still not name the same patient, whatever i and
			// j.
			if tt.patients < tt.conns {
				return
			}
			owner := make(map[int]int)
			for c := range tt.conns {
				for i := range tt.messages / tt.conns {
					p := benchPatient(c, i, tt.conns, tt.patients)
					if o, ok := owner[p]; ok && o != c {
						t.Fatalf("patient %d is named by connection %d (message %d) and by connection %d", p, c, i, o)
					}
					owner[p] = c
				}
			}
		})
	}
}
