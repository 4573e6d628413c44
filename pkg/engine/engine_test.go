package engine_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/adapters/fhir"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/logtest"
	"github.com/junction-fhir/junction/pkg/mllp"
	"github.com/junction-fhir/junction/pkg/router"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/testnet"
)

// startEngine runs a real engine (embedded JetStream in a temp dir, real
// MLLP and HTTP listeners on loopback) with the given config body, which
// may refer to the shipped routes.
func startEngine(t *testing.T, extra string) (*engine.Engine, string) {
	t.Helper()
	routes, err := filepath.Abs("../../routes")
	if err != nil {
		t.Fatal(err)
	}
	return startEngineWithRoutes(t, routes, extra)
}

// loadPlan loads the config file at path and plans it with every adapter.
func loadPlan(t *testing.T, path string) *engine.Plan {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	p, err := engine.NewPlan(cfg, engine.NewRegistry(all.Factories()...))
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return p
}

// startEngineWithRoutes is startEngine with another routes directory.
func startEngineWithRoutes(t *testing.T, routes, extra string) (*engine.Engine, string) {
	t.Helper()
	return startEngineOpts(t, routes, extra, engine.Options{})
}

// startEngineOpts is startEngineWithRoutes with engine options.
func startEngineOpts(t *testing.T, routes, extra string, opts engine.Options) (*engine.Engine, string) {
	t.Helper()
	return startEnginePlan(t, routes, extra, opts, nil)
}

// startEnginePlan is startEngineOpts with tweak, when set, changing the
// plan before the engine is made (settings validation would refuse).
func startEnginePlan(t *testing.T, routes, extra string, opts engine.Options, tweak func(*engine.Plan)) (*engine.Engine, string) {
	t.Helper()
	dir := t.TempDir()
	body := fmt.Sprintf(`data_dir: %s
%sroutes: [%s]
router:
  ack_wait: 5s
%s%s%s`, dir, defaultHTTP(extra), routes, pipelineOf(extra), defaultInputs(extra), extra)
	if !strings.Contains(extra, "destinations:") {
		body += `
destinations:
  fhir-store:
    type: file
    dir: out/fhir-store
  data-quality:
    type: file
    dir: out/data-quality
`
	}
	path := filepath.Join(dir, "junction.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	p := loadPlan(t, path)
	if tweak != nil {
		tweak(p)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if opts.Logger == nil {
		opts.Logger = log
	}
	opts.Version = "test"
	e, err := engine.New(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return e, dir
}

func mllpAddr(t *testing.T, e *engine.Engine) string {
	return inputAddr(t, e, "pas")
}

// inputAddr is where the MLLP input name listens.
func inputAddr(t *testing.T, e *engine.Engine, name string) string {
	t.Helper()
	in, ok := e.Inbound(name).(interface{ Addr() net.Addr })
	if !ok {
		t.Fatalf("input %s has no address", name)
	}
	return in.Addr().String()
}

func send(t *testing.T, addr string, msg string) (hl7v2.AckCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := mllp.Dial(ctx, addr, nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reply, err := c.Send(ctx, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	code, ctrl, _, err := hl7v2.ParseAck(reply)
	if err != nil {
		t.Fatalf("reply %q: %v", reply, err)
	}
	return code, ctrl
}

func adt(event, ctrl, pid3 string) string {
	return "MSH|^~\\&|PAS|RX1|JUNCTION|RX1|20261123093000||ADT^" + event + "|" + ctrl + "|P|2.4\r" +
		"EVN|" + event + "|20261123093000\r" +
		"PID|1||" + pid3 + "||TESTPATIENT^ALEX||19800101|F\r" +
		"PV1|1|I|WARD1^BED2^1^RX1||||||||||||||||V" + ctrl + "|||||||||||||||||||||||||20261123092500\r"
}

// waitFiles waits until dir holds n files and returns their paths.
func waitFiles(t *testing.T, dir string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var files []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
				files = append(files, p)
			}
			return nil
		})
		if len(files) >= n || time.Now().After(deadline) {
			if len(files) != n {
				t.Fatalf("%s: want %d files, have %d", dir, n, len(files))
			}
			return files
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func getJSON(t *testing.T, url string, out any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// TestADTEndToEnd sends an admission over real MLLP and follows it: AA
// after storing, UK Core FHIR at the file destination, a full audit trail,
// and metrics that moved.
func TestADTEndToEnd(t *testing.T) { forPipelines(t, testADTEndToEnd) }

func testADTEndToEnd(t *testing.T, pipe string) {
	e, dir := startEngine(t, pipe)
	addr := mllpAddr(t, e)
	code, ctrl := send(t, addr, adt("A01", "E2E0001", "9990000018^^^NHS^NH"))
	if code != hl7v2.AckAA || ctrl != "E2E0001" {
		t.Fatalf("ack: got %s %s, want AA E2E0001", code, ctrl)
	}
	files := waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct {
		ResourceType string
		Entry        []struct {
			Resource map[string]any
		}
	}
	if err := json.Unmarshal(data, &bundle); err != nil {
		t.Fatal(err)
	}
	types := map[string]bool{}
	for _, en := range bundle.Entry {
		types[fmt.Sprint(en.Resource["resourceType"])] = true
	}
	if !types["Patient"] || !types["Encounter"] || types["MessageHeader"] {
		t.Errorf("delivered resource types %v: want Patient and Encounter, no MessageHeader", types)
	}
	if !strings.Contains(string(data), `"https://fhir.nhs.uk/Id/nhs-number"`) {
		t.Error("delivered bundle has no NHS number identifier")
	}
	// The message id is in the file name; read its trail through the API.
	id := strings.SplitN(filepath.Base(files[0]), ".", 2)[0]
	base := "http://" + e.HTTPAddr().String()
	var view engine.MessageView
	deadline := time.Now().Add(10 * time.Second)
	want := []audit.Event{audit.Received, audit.Translated, audit.Matched, audit.Consent, audit.Transformed, audit.Queued, audit.Delivered}
	for {
		if st := getJSON(t, base+"/api/messages/"+id, &view); st != 200 && time.Now().After(deadline) {
			t.Fatalf("GET message: status %d", st)
		}
		got := map[audit.Event]bool{}
		for _, r := range view.Trail {
			if r.Route == "" || r.Route == "adt-to-fhir-store" {
				got[r.Event] = true
			}
		}
		missing := []audit.Event{}
		for _, w := range want {
			if !got[w] {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trail lacks %v: %+v", missing, view.Trail)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The translated record stands for the patient by a keyed hash, never
	// the NHS number itself.
	for _, r := range view.Trail {
		if r.Event != audit.Translated {
			continue
		}
		if len(r.Patient) != 64 || strings.Contains(r.Patient, "9990000018") {
			t.Errorf("translated record patient = %q, want a 64-hex keyed hash", r.Patient)
		}
	}
	if view.Input == nil || !strings.Contains(view.Input.Body, "E2E0001") {
		t.Errorf("trail input: %+v", view.Input)
	}
	if len(view.Outbound) != 1 || view.Outbound[0].Destination != "fhir-store" {
		t.Errorf("trail outbound: %+v", view.Outbound)
	}
	m := e.Metrics()
	if v := testutil.ToFloat64(m.Acks.WithLabelValues("pas", "AA")); v != 1 {
		t.Errorf("acks AA = %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.Delivered.WithLabelValues("fhir-store", "delivered")); v != 1 {
		t.Errorf("delivered = %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.Routed.WithLabelValues("adt-data-quality", "filtered")); v != 1 {
		t.Errorf("data-quality filtered = %v, want 1", v)
	}
	if st := getJSON(t, base+"/readyz", nil); st != 200 {
		t.Errorf("readyz = %d", st)
	}
	// The ingest log was read by the chosen pipeline's first stage.
	stage := "ingest-splitter"
	if pipe == batchPipeline {
		stage = "accept"
	}
	c, err := e.Store().JS.Consumer(context.Background(), store.StreamIngestLog, stage)
	if err != nil {
		t.Fatalf("ingest log consumer %s: %v", stage, err)
	}
	if info, err := c.Info(context.Background()); err != nil || info.Delivered.Consumer == 0 {
		t.Errorf("ingest log consumer %s took nothing (err %v)", stage, err)
	}
}

// TestResendNotRoutedTwice resends the same MSH-10 and expects the same
// positive ACK and one delivery.
func TestResendNotRoutedTwice(t *testing.T) { forPipelines(t, testResendNotRoutedTwice) }

func testResendNotRoutedTwice(t *testing.T, pipe string) {
	e, dir := startEngine(t, pipe)
	addr := mllpAddr(t, e)
	msg := adt("A01", "DUP0001", "9990000026^^^NHS^NH")
	for i := range 3 {
		if code, _ := send(t, addr, msg); code != hl7v2.AckAA {
			t.Fatalf("send %d: %s", i, code)
		}
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	time.Sleep(500 * time.Millisecond)
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	if v := testutil.ToFloat64(e.Metrics().Duplicates.WithLabelValues("pas")); v != 2 {
		t.Errorf("duplicates = %v, want 2", v)
	}
	// Ops asking for the control id see the three receipts: the first
	// accepted and delivered, the others resends of it.
	var found struct {
		Messages []router.Found `json:"messages"`
	}
	base := "http://" + e.HTTPAddr().String() + "/api/messages?control_id="
	waitFor(t, "the resends recorded", func() bool {
		found.Messages = nil
		if st := getJSON(t, base+"DUP0001&sender=PAS", &found); st != http.StatusOK || len(found.Messages) != 3 {
			return false
		}
		return slices.Equal(found.Messages[0].Outcomes, []string{audit.OutcomeDelivered}) &&
			found.Messages[1].State == "resend" && found.Messages[2].State == "resend"
	})
	first := found.Messages[0]
	if first.State != "accepted" || first.ControlID != "DUP0001" || first.MessageType != "ADT^A01" || first.Source != "pas" {
		t.Errorf("first receipt %+v", first)
	}
	for _, f := range found.Messages[1:] {
		if f.Original != first.ID {
			t.Errorf("resend %s is of %q, want %s", f.ID, f.Original, first.ID)
		}
	}
	for _, q := range []string{"DUP0001&sender=OTHER", "DUP0002", "DUP0001&since=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339)} {
		found.Messages = nil
		if st := getJSON(t, base+q, &found); st != http.StatusOK || len(found.Messages) != 0 {
			t.Errorf("%s: status %d, %d messages, want none", q, st, len(found.Messages))
		}
	}
	if st := getJSON(t, base, nil); st != http.StatusBadRequest {
		t.Errorf("no control id: status %d, want 400", st)
	}
	// A window without a control id finds every message received in it.
	found.Messages = nil
	window := "since=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) + "&until=" + time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	if st := getJSON(t, "http://"+e.HTTPAddr().String()+"/api/messages?"+window, &found); st != http.StatusOK || len(found.Messages) != 3 || found.Messages[0].ID != first.ID {
		t.Errorf("the window: status %d, %+v; want the three receipts", st, found.Messages)
	}
}

// TestNoNHSNumberGoesToDataQuality checks the second shipped route.
func TestNoNHSNumberGoesToDataQuality(t *testing.T) {
	forPipelines(t, testNoNHSNumberGoesToDataQuality)
}

func testNoNHSNumberGoesToDataQuality(t *testing.T, pipe string) {
	e, dir := startEngine(t, pipe)
	addr := mllpAddr(t, e)
	msg := adt("A04", "DQ0001", "K777^^^RX1^MR")
	if code, _ := send(t, addr, msg); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	files := waitFiles(t, filepath.Join(dir, "out", "data-quality"), 1)
	got, _ := os.ReadFile(files[0])
	if string(got) != msg {
		t.Errorf("data-quality payload is not the raw message unchanged:\n%q\nwant\n%q", got, msg)
	}
	// Two routes read this feed; the issue is counted once per message.
	waitFor(t, "data-quality count", func() bool {
		return testutil.ToFloat64(e.Metrics().DataQuality.WithLabelValues("pas", "nhs_number_missing")) >= 1
	})
	time.Sleep(200 * time.Millisecond)
	if v := testutil.ToFloat64(e.Metrics().DataQuality.WithLabelValues("pas", "nhs_number_missing")); v != 1 {
		t.Errorf("nhs_number_missing counted %v times, want 1", v)
	}
}

// TestTriggerFromEVN sends an admission whose MSH-9 has no trigger event
// (as v2.3 senders may): EVN-1 gives it, and the shipped route that takes
// A01 delivers it rather than passing it over.
func TestTriggerFromEVN(t *testing.T) {
	e, dir := startEngine(t, "")
	msg := strings.Replace(adt("A01", "NOTRIG01", "9990000018^^^NHS^NH"), "||ADT^A01|", "||ADT|", 1)
	if !strings.Contains(msg, "||ADT|NOTRIG01|") {
		t.Fatalf("message not built as meant: %q", msg)
	}
	if code, _ := send(t, mllpAddr(t, e), msg); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	files := waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	got, _ := os.ReadFile(files[0])
	if !strings.Contains(string(got), `"Encounter"`) {
		t.Errorf("delivered bundle has no Encounter: %.300s", got)
	}
}

// TestDirectWriteMode runs the one-write-per-message ingest path (group
// commit off): stored before AA, resends recognised at once.
func TestDirectWriteMode(t *testing.T) {
	e, dir := startEngine(t, "nats:\n  group_commit: false\n")
	addr := mllpAddr(t, e)
	msg := adt("A01", "DIRECT1", "9990000034^^^NHS^NH")
	for i := range 2 {
		if code, _ := send(t, addr, msg); code != hl7v2.AckAA {
			t.Fatalf("send %d: %s", i, code)
		}
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	if v := testutil.ToFloat64(e.Metrics().Duplicates.WithLabelValues("pas")); v != 1 {
		t.Errorf("duplicates = %v, want 1", v)
	}
}

// TestGarbageRejectedAndQuarantined: input with no MSH gets a reject ACK,
// is kept in quarantine (visible through the API), is counted, and the
// engine keeps serving.
func TestGarbageRejectedAndQuarantined(t *testing.T) {
	forPipelines(t, testGarbageRejectedAndQuarantined)
}

func testGarbageRejectedAndQuarantined(t *testing.T, pipe string) {
	e, _ := startEngine(t, pipe)
	addr := mllpAddr(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := mllp.Dial(ctx, addr, nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := c.Send(ctx, []byte("this is not HL7 at all"))
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	code, _, _, err := hl7v2.ParseAck(reply)
	if err != nil || code != hl7v2.AckAR {
		t.Fatalf("reply to garbage: %s %v (%q)", code, err, reply)
	}
	if !strings.Contains(string(reply), "ERR") {
		t.Errorf("reject has no ERR segment: %q", reply)
	}
	var qs []engine.QuarantineEntry
	getJSON(t, "http://"+e.HTTPAddr().String()+"/api/quarantine?body=true", &qs)
	if len(qs) != 1 || qs[0].Body != "this is not HL7 at all" || qs[0].Source != "pas" {
		t.Errorf("quarantine = %+v", qs)
	}
	if v := testutil.ToFloat64(e.Metrics().Quarantined.WithLabelValues("pas")); v != 1 {
		t.Errorf("quarantined = %v, want 1", v)
	}
	if code, _ := send(t, addr, adt("A01", "AFTER1", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Errorf("engine did not keep serving: %s", code)
	}
}

// TestRefusedMessageFoundByControlID: a message refused before it was
// stored (an A01 without a PID) is found by the control id its sender
// quotes, as refused and quarantined, and the quarantine listing names
// its control id and sender; input with no readable header is not.
func TestRefusedMessageFoundByControlID(t *testing.T) {
	e, _ := startEngine(t, "")
	addr := mllpAddr(t, e)
	msg := adt("A01", "NOPID1", "9990000018^^^NHS^NH")
	noPID := strings.Replace(msg, msg[strings.Index(msg, "PID|"):strings.Index(msg, "PV1|")], "", 1)
	if code, _ := send(t, addr, noPID); code != hl7v2.AckAE {
		t.Fatalf("A01 without a PID: %s, want AE", code)
	}
	if code, _ := send(t, addr, "not HL7 at all"); code != hl7v2.AckAR {
		t.Fatalf("garbage: %s, want AR", code)
	}
	if code, _ := send(t, addr, adt("A01", "GOOD1", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("a good message: %s", code)
	}
	base := "http://" + e.HTTPAddr().String()
	var qs []engine.QuarantineEntry
	getJSON(t, base+"/api/quarantine", &qs)
	if len(qs) != 2 || qs[0].ControlID != "NOPID1" || qs[0].Sender != "PAS|RX1" || qs[1].ControlID != "" {
		t.Errorf("quarantine listing %+v; want the A01 named by control id and sender, the garbage by neither", qs)
	}
	tests := []struct {
		name, query string
		messages    int
		quarantined []string
	}{
		{"refused", "control_id=NOPID1", 0, []string{"NOPID1"}},
		{"refused, by its sender", "control_id=NOPID1&sender=PAS", 0, []string{"NOPID1"}},
		{"refused, another sender", "control_id=NOPID1&sender=LAB", 0, nil},
		{"accepted", "control_id=GOOD1", 1, nil},
		{"a window", "since=1h&until=0s", 1, []string{"NOPID1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.query
			if strings.HasPrefix(q, "since=") {
				now := time.Now().UTC()
				q = "since=" + now.Add(-time.Hour).Format(time.RFC3339) + "&until=" + now.Add(time.Minute).Format(time.RFC3339)
			}
			var res router.FindResult
			if st := getJSON(t, base+"/api/messages?"+q, &res); st != http.StatusOK {
				t.Fatalf("GET /api/messages?%s: %d", q, st)
			}
			var got []string
			for _, f := range res.Quarantined {
				if f.State != "quarantined" || len(f.Outcomes) != 1 || f.Outcomes[0] == "" || f.MessageType != "ADT^A01" {
					t.Errorf("quarantined entry %+v; want state quarantined, its reason and type", f)
				}
				got = append(got, f.ControlID)
			}
			if len(res.Messages) != tc.messages || !slices.Equal(got, tc.quarantined) {
				t.Errorf("found %d messages and quarantined %q; want %d and %q", len(res.Messages), got, tc.messages, tc.quarantined)
			}
		})
	}
}

// TestFHIRRejectNamesItsQuarantineEntry: a body refused as invalid is
// kept, and the answer names the entry the quarantine listing shows, so
// a supplier can quote it to ops.
func TestFHIRRejectNamesItsQuarantineEntry(t *testing.T) {
	e, _ := startEngine(t, "")
	base := "http://" + e.HTTPAddr().String()
	resp, err := http.Post(base+"/fhir", "application/fhir+json", strings.NewReader(`{"resourceType":"Bundle","type":`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status = %d, want 400", resp.StatusCode)
	}
	id := resp.Header.Get(fhir.HeaderQuarantineID)
	var qs []engine.QuarantineEntry
	getJSON(t, base+"/api/quarantine", &qs)
	if len(qs) != 1 || id == "" || qs[0].ID != id || qs[0].Source != "fhir" {
		t.Errorf("answer names %q; quarantine = %+v", id, qs)
	}
}

// TestQuarantineKeepsStartAndSize: of input larger than the quarantine
// keeps, the first 64 KiB are kept and the listing says how much came.
func TestQuarantineKeepsStartAndSize(t *testing.T) {
	e, _ := startEngine(t, "")
	ctx, c := dialPAS(t, e, 10*time.Second)
	garbage := bytes.Repeat([]byte("not HL7 "), 100<<10/8)
	reply, err := c.Send(ctx, garbage)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _, err := hl7v2.ParseAck(reply); err != nil || code != hl7v2.AckAR {
		t.Fatalf("reply to garbage: %s %v", code, err)
	}
	var qs []engine.QuarantineEntry
	getJSON(t, "http://"+e.HTTPAddr().String()+"/api/quarantine?body=true", &qs)
	if len(qs) != 1 {
		t.Fatalf("quarantine holds %d entries, want 1", len(qs))
	}
	if q := qs[0]; q.Size != 64<<10 || q.Received != len(garbage) || q.Body != string(garbage[:64<<10]) {
		t.Errorf("quarantine entry: size %d, received %d, body of %d bytes; want 65536, %d and the first 65536 bytes", q.Size, q.Received, len(q.Body), len(garbage))
	}
}

// dialPAS connects an MLLP client to e's PAS listener, with a context that
// ends after d or with the test.
func dialPAS(t *testing.T, e *engine.Engine, d time.Duration) (context.Context, *mllp.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	c, err := mllp.Dial(ctx, mllpAddr(t, e), nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, c
}

// TestQuarantineListingBounded: listing a full quarantine with its
// bodies returns the newest entries up to 16 MiB of input and says how
// many older ones it left out, rather than building an answer as large
// as the quarantine.
func TestQuarantineListingBounded(t *testing.T) {
	e, _ := startEngine(t, "")
	ctx, c := dialPAS(t, e, 60*time.Second)
	defer c.Close()
	const n = 260 // 260 x 64 KiB is more than 16 MiB
	for i := range n {
		garbage := bytes.Repeat([]byte(fmt.Sprintf("not HL7 %04d ", i)), 70<<10/14)
		if _, err := c.Send(ctx, garbage); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get("http://" + e.HTTPAddr().String() + "/api/quarantine?body=true&limit=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var qs []engine.QuarantineEntry
	if err := json.NewDecoder(resp.Body).Decode(&qs); err != nil {
		t.Fatal(err)
	}
	omitted, _ := strconv.Atoi(resp.Header.Get("Junction-Quarantine-Omitted"))
	if len(qs) != 256 || omitted != n-256 {
		t.Fatalf("listed %d entries and said %d were left out; want 256 and %d", len(qs), omitted, n-256)
	}
	if !strings.HasPrefix(qs[len(qs)-1].Body, fmt.Sprintf("not HL7 %04d ", n-1)) || qs[0].Seq >= qs[len(qs)-1].Seq {
		t.Errorf("the listing is not the newest entries, oldest first")
	}
	// Without bodies, the whole window is listed.
	var all []engine.QuarantineEntry
	getJSON(t, "http://"+e.HTTPAddr().String()+"/api/quarantine?limit=1000", &all)
	if len(all) != n {
		t.Errorf("listed %d entries without bodies, want %d", len(all), n)
	}
}

// TestMessageViewKeepsNonUTF8Bytes: an ISO 8859-1 message is shown as
// the bytes received (base64), not with its accented letters replaced,
// so what is shown hashes to what the trail recorded.
func TestMessageViewKeepsNonUTF8Bytes(t *testing.T) {
	e, dir := startEngine(t, "")
	msg := strings.Replace(adt("A01", "LATIN1", "9990000018^^^NHS^NH"), "|P|2.4\r", "|P|2.4|||||GBR|8859/1\r", 1)
	msg = strings.Replace(msg, "TESTPATIENT^ALEX", "TESTPATI\xc9NT^ALEX", 1)
	if code, _ := send(t, mllpAddr(t, e), msg); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	// A delivered file is named after the message: ID.DESTINATION.json.
	files := waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	id, _, _ := strings.Cut(filepath.Base(files[0]), ".")
	var view engine.MessageView
	getJSON(t, "http://"+e.HTTPAddr().String()+"/api/messages/"+id, &view)
	if view.Input == nil || view.Input.Encoding != "base64" {
		t.Fatalf("input shown as %+v, want base64", view.Input)
	}
	raw, err := base64.StdEncoding.DecodeString(view.Input.Body)
	if err != nil || string(raw) != msg {
		t.Errorf("input shown decodes to %q (%v), want the bytes sent", raw, err)
	}
	for _, r := range view.Trail {
		if r.Event == audit.Received && r.Hash != audit.Hash(raw) {
			t.Errorf("received record's hash %s is not the hash of the input shown (%s)", r.Hash, audit.Hash(raw))
		}
	}
}

// TestLargeMessage: a 3 MiB ADT (a long NTE) is stored, routed and
// delivered in embedded mode when the input allows it, and a message over
// the input's limit is rejected without harm.
func TestLargeMessage(t *testing.T) {
	e, dir := startEngine(t, `inputs:
  pas:
    type: pas
    listen: 127.0.0.1:0
    max_message_bytes: 8388608
  pathology:
    type: pathology
    listen: 127.0.0.1:0
  fhir:
    type: fhir
`)
	addr := mllpAddr(t, e)
	msg := adt("A01", "BIG0001", "9990000018^^^NHS^NH") + "NTE|1||" + strings.Repeat("X", 3<<20) + "\r"
	if code, _ := send(t, addr, msg); code != hl7v2.AckAA {
		t.Fatalf("3 MiB message: %s", code)
	}
	files := waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	if st, err := os.Stat(files[0]); err != nil || st.Size() == 0 {
		t.Fatalf("delivered file: %v", err)
	}
	// Small messages sent right after still flow.
	if code, _ := send(t, addr, adt("A01", "SMALL01", "9990000026^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("small message after a large one: %s", code)
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 2)
}

// defaultInputs is the inputs section unless extra gives its own.
// batchPipeline, in a test's extra config, runs the engine with
// router.pipeline: batch (it is a YAML comment, read by pipelineOf).
const batchPipeline = "# pipeline: batch\n"

// messagePipeline selects router.pipeline: message the same way.
const messagePipeline = "# pipeline: message\n"

// pipelines are the router pipelines a test runs under, by name.
var pipelines = []struct{ name, extra string }{{"message", messagePipeline}, {"batch", batchPipeline}}

// forPipelines runs test once per pipeline, giving it the extra config
// that selects the pipeline.
func forPipelines(t *testing.T, test func(t *testing.T, pipe string)) {
	for _, p := range pipelines {
		t.Run(p.name, func(t *testing.T) { test(t, p.extra) })
	}
}

func pipelineOf(extra string) string {
	switch {
	case strings.Contains(extra, batchPipeline):
		return "  pipeline: batch\n"
	case strings.Contains(extra, messagePipeline):
		return "  pipeline: message\n"
	}
	return ""
}

// defaultHTTP is the HTTP listener's settings unless extra has its own.
func defaultHTTP(extra string) string {
	if strings.HasPrefix(extra, "http:") || strings.Contains(extra, "\nhttp:") {
		return ""
	}
	return "http:\n  listen: 127.0.0.1:0\n"
}

func defaultInputs(extra string) string {
	if strings.Contains(extra, "inputs:") {
		return ""
	}
	return "inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n  pathology:\n    type: pathology\n    listen: 127.0.0.1:0\n  fhir:\n    type: fhir\n"
}

// TestReusedControlIDNotLost: a sender that reuses an MSH-10 for a
// different message (a counter reset) must not have the second message
// dropped as a resend; a true resend with a rebuilt MSH-7 still is one.
func TestReusedControlIDNotLost(t *testing.T) {
	for _, mode := range []string{"message", "direct", "batch"} {
		t.Run(mode, func(t *testing.T) {
			extra := messagePipeline
			switch mode {
			case "direct":
				extra = "nats:\n  group_commit: false\n"
			case "batch":
				extra = batchPipeline
			}
			e, dir := startEngine(t, extra)
			addr := mllpAddr(t, e)
			first := adt("A01", "REUSE1", "9990000018^^^NHS^NH")
			resend := strings.Replace(first, "20261123093000||ADT", "20261123093500||ADT", 1)
			other := adt("A01", "REUSE1", "9990000026^^^NHS^NH")
			// other is sent twice: the second is a resend of it, not a
			// second reuse.
			for _, m := range []string{first, resend, other, other} {
				if code, _ := send(t, addr, m); code != hl7v2.AckAA {
					t.Fatalf("ack %s", code)
				}
			}
			waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 2)
			waitFor(t, "reuse counted", func() bool {
				return testutil.ToFloat64(e.Metrics().DataQuality.WithLabelValues("pas", "control_id_reused")) == 1
			})
			time.Sleep(300 * time.Millisecond)
			waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 2)
			if n := testutil.ToFloat64(e.Metrics().DataQuality.WithLabelValues("pas", "control_id_reused")); n != 1 {
				t.Errorf("control_id_reused = %v, want 1", n)
			}
			// The second message's trail says why it was not taken for a
			// resend.
			var reused []string
			waitFor(t, "reuse on the trail", func() bool {
				reused = reused[:0]
				for id, recs := range trails(t, e) {
					for _, r := range recs {
						if r.Event == audit.Duplicate && r.Outcome == "control-id-reused" && r.MessageID == id {
							reused = append(reused, id)
						}
					}
				}
				return len(reused) > 0
			})
			if len(reused) != 1 {
				t.Errorf("%d trails note a reused control id, want 1", len(reused))
			}
		})
	}
}

// TestQuarantineGaugeFollowsStream: the quarantine gauge says what the
// quarantine holds, so it falls when entries go (here, purged as age or
// the size bound would drop them).
func TestQuarantineGaugeFollowsStream(t *testing.T) {
	e, _ := startEngine(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := mllp.Dial(ctx, mllpAddr(t, e), nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Send(ctx, []byte("not HL7"))
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The gauge rises with the entry and is resampled from the stream
	// every few seconds; a sample read just before the entry was stored
	// can set it back until the next, so it is waited for.
	gauge := func() float64 { return testutil.ToFloat64(e.Metrics().QuarantineSize) }
	waitFor(t, "the quarantine gauge to show the entry", func() bool { return gauge() == 1 })
	s, err := e.Store().JS.Stream(ctx, store.StreamQuarantine)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	for gauge() != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("quarantine gauge still %v after the stream was emptied", gauge())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestShutdownWithUnreachableCollector checks that a trace collector that
// cannot be reached neither fails the drain nor makes it overrun: spans
// have a short flush bound of their own.
func TestShutdownWithUnreachableCollector(t *testing.T) {
	// A collector that takes connections and never answers.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+testnet.Silent(t))
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	e, _ := startEngine(t, "")
	send(t, mllpAddr(t, e), adt("A01", "TRACE1", "9990000018^^^NHS^NH"))
	// A drain that waited on the collector would outlast this deadline:
	// it would fail, or still be running when it passed.
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	done := make(chan error, 1)
	go func() { done <- e.Shutdown(sctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("shutdown with an unreachable collector: %v", err)
		}
	case <-sctx.Done():
		t.Error("shutdown still running at its deadline with an unreachable collector")
		<-done
	}
}

// TestDeadLetterIsLogged checks that a dead letter writes a log line with
// the message id, stage and code, and no patient data.
func TestDeadLetterIsLogged(t *testing.T) {
	var logs logtest.Buffer
	routes, err := filepath.Abs("../../routes")
	if err != nil {
		t.Fatal(err)
	}
	e, _ := startEngineOpts(t, routes, "", engine.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	// An A01 without PV1 is refused before it is stored (no translation
	// could take it), so it is never dead-lettered.
	if code, _ := send(t, mllpAddr(t, e), "MSH|^~\\&|PAS|RX1|JUNCTION|RX1|20261123093000||ADT^A01|DLQLOG0|P|2.4\rEVN|A01|20261123093000\rPID|1||9990000018^^^NHS^NH||TESTPATIENT^ALEX||19800101|F\r"); code != hl7v2.AckAE {
		t.Fatalf("A01 without PV1: %s, want AE", code)
	}
	// A merge whose first PID has no MRG after it is taken (it has both
	// segments), then fails translation on every route.
	send(t, mllpAddr(t, e), "MSH|^~\\&|PAS|RX1|JUNCTION|RX1|20261123093000||ADT^A40^ADT_A39|DLQLOG1|P|2.4\rEVN|A40|20261123093000\rPID|1||9990000018^^^NHS^NH||TESTPATIENT^ALEX||19800101|F\rPID|2||9990000026^^^NHS^NH||TESTPATIENT^SAM\rMRG|9990000034^^^NHS^NH\r")
	waitFor(t, "a dead-letter log line", func() bool { return strings.Contains(logs.String(), `"msg":"dead-lettered"`) })
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"dead-lettered"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if line["message_id"] == "" || line["stage"] != "route" || line["code"] != "hl7.required-field-missing" {
		t.Errorf("dead-letter log line %v, want the message id, stage route and code hl7.required-field-missing", line)
	}
	for _, pd := range []string{"9990000018", "TESTPATIENT", "19800101"} {
		if strings.Contains(logs.String(), pd) {
			t.Errorf("the log holds patient data %q", pd)
		}
	}
}

// TestHTTPHeadersBounded checks that the HTTP listener refuses headers
// beyond 64 KiB (Go's default of 1 MiB lets slow clients hold a GiB) and
// still serves ordinary requests.
func TestHTTPHeadersBounded(t *testing.T) {
	e, _ := startEngine(t, "")
	get := func(header string) int {
		req, err := http.NewRequest(http.MethodGet, "http://"+e.HTTPAddr().String()+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Padding", header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(strings.Repeat("a", 8<<10)); st != http.StatusOK {
		t.Errorf("8 KiB header: status %d, want 200", st)
	}
	if st := get(strings.Repeat("a", 100<<10)); st != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("100 KiB header: status %d, want 431", st)
	}
}
