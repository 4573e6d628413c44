package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/mllp"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestBacklogLimitRefusesUntilRoutingCatchesUp holds the routes reading
// the pas input (their consumers paused, as a stalled route stage would
// be) and sends admissions until Junction answers one AR with ERR 207
// because router.max_backlog is reached: that message is not stored.
// FHIR input, whose route is not held, is still taken. Once the routes
// run again the backlog drains, pas input is taken again, and every
// message acknowledged AA is delivered.
func TestBacklogLimitRefusesUntilRoutingCatchesUp(t *testing.T) {
	const limit = 12
	for _, pipe := range pipelines {
		t.Run(pipe.name, func(t *testing.T) {
			routes, err := filepath.Abs("../../routes")
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			body := fmt.Sprintf("data_dir: %s\nhttp:\n  listen: 127.0.0.1:0\nroutes: [%s]\nrouter:\n  ack_wait: 5s\n  max_backlog: %d\n%s"+
				"inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n  pathology:\n    type: pathology\n    listen: 127.0.0.1:0\n  fhir:\n    type: fhir\n"+
				"destinations:\n  fhir-store:\n    type: file\n    dir: out/fhir-store\n  data-quality:\n    type: file\n    dir: out/data-quality\n",
				dir, routes, limit, pipelineOf(pipe.extra))
			e := startFromConfig(t, dir, body)
			defer stopEngine(t, e)
			// The shipped routes reading pas.
			held := pauseRoutes(t, e, "adt-to-fhir-store", "adt-data-quality")

			c, err := mllp.Dial(t.Context(), mllpAddr(t, e), nil, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			acked := 0
			var refused []byte
			for i := 0; refused == nil; i++ {
				if i > 20*limit {
					t.Fatalf("%d messages acknowledged with the routes held and max_backlog %d; none refused", acked, limit)
				}
				ctrl := fmt.Sprintf("BL%04d", i)
				reply := sendRaw(t, c, adt("A01", ctrl, nhs.TestNumber(i%5)+"^^^NHS^NH"))
				switch code, _, _, _ := hl7v2.ParseAck(reply); code {
				case hl7v2.AckAA:
					acked++
					// The limit is sampled each second: pace the sender
					// so the test does not depend on that interval.
					time.Sleep(20 * time.Millisecond)
				case hl7v2.AckAR:
					refused = reply
				default:
					t.Fatalf("%s answered %s", ctrl, code)
				}
			}
			if acked < limit {
				t.Errorf("refused after %d messages acknowledged; the limit is %d", acked, limit)
			}
			if codes := hl7v2.AckErrorCodes(refused); len(codes) != 1 || codes[0] != hl7v2.ErrCodeInternal {
				t.Errorf("refusal's ERR codes %v, want [207] (resend later)", codes)
			}
			if _, _, text, _ := hl7v2.ParseAck(refused); !strings.Contains(text, "behind with routing") {
				t.Errorf("refusal says %q", text)
			}
			m := e.Metrics()
			if v := testutil.ToFloat64(m.Rejected.WithLabelValues("pas", string(fault.CodeBacklog))); v < 1 {
				t.Errorf("rejected{pas,%s} = %v", fault.CodeBacklog, v)
			}
			if v := testutil.ToFloat64(m.BacklogRefusing.WithLabelValues("pas")); v != 1 {
				t.Errorf("backlog_refusing{pas} = %v, want 1", v)
			}
			if v := testutil.ToFloat64(m.Backlog.WithLabelValues("pas")); v < limit {
				t.Errorf("backlog_messages{pas} = %v, want at least %d", v, limit)
			}

			// Another input's route is not held: it is still taken.
			if st := postPatient(t, e, nhs.TestNumber(7)); st != http.StatusAccepted {
				t.Errorf("FHIR input answered %d while pas was refusing, want 202", st)
			}

			resumeConsumers(t, e, held)
			waitFor(t, "the backlog to drain and pas to take input again", func() bool {
				return testutil.ToFloat64(m.BacklogRefusing.WithLabelValues("pas")) == 0
			})
			if code, _, _, _ := hl7v2.ParseAck(sendRaw(t, c, adt("A01", "BLAFTER", nhs.TestNumber(1)+"^^^NHS^NH"))); code != hl7v2.AckAA {
				t.Fatalf("after the backlog drained: %s", code)
			}
			acked++
			// Nothing acknowledged is lost: every AA is delivered.
			waitFor(t, "every acknowledged admission to be delivered", func() bool {
				return testutil.ToFloat64(m.Delivered.WithLabelValues("fhir-store", "delivered")) >= float64(acked+1) // +1: the FHIR Patient
			})
			if got := testutil.ToFloat64(m.Delivered.WithLabelValues("fhir-store", "delivered")); got != float64(acked+1) {
				t.Errorf("delivered %v, want %d acknowledged admissions and 1 FHIR Patient", got, acked)
			}
		})
	}
}

// pauseRoutes pauses the ingress consumers of the named routes and
// returns the consumers' names.
func pauseRoutes(t *testing.T, e *engine.Engine, routes ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var held []string
	st, err := e.Store().JS.Stream(ctx, store.StreamIngress)
	if err != nil {
		t.Fatal(err)
	}
	names := st.ConsumerNames(ctx)
	for name := range names.Name() {
		if !strings.HasPrefix(name, "route-") {
			continue
		}
		for _, r := range routes {
			if strings.HasPrefix(name, "route-"+r+"-") {
				if _, err := e.Store().JS.PauseConsumer(ctx, store.StreamIngress, name, time.Now().Add(time.Hour)); err != nil {
					t.Fatalf("pausing %s: %v", name, err)
				}
				held = append(held, name)
			}
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	if len(held) == 0 {
		t.Fatalf("no consumers of routes %v to pause", routes)
	}
	return held
}

func resumeConsumers(t *testing.T, e *engine.Engine, names []string) {
	t.Helper()
	for _, name := range names {
		if _, err := e.Store().JS.ResumeConsumer(t.Context(), store.StreamIngress, name); err != nil {
			t.Fatalf("resuming %s: %v", name, err)
		}
	}
}

// sendRaw sends msg on c and returns the reply.
func sendRaw(t *testing.T, c *mllp.Client, msg string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	reply, err := c.Send(ctx, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// postPatient posts a Patient with NHS number n to the FHIR input and
// returns the status.
func postPatient(t *testing.T, e *engine.Engine, n string) int {
	t.Helper()
	p, _ := json.Marshal(map[string]any{"resourceType": "Patient",
		"identifier": []map[string]string{{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": n}}})
	resp, err := http.Post("http://"+e.HTTPAddr().String()+"/fhir/Patient", "application/fhir+json", strings.NewReader(string(p)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}
