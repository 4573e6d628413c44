package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/mllp"
	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/router"
)

// v2Receiver is an HL7 v2 system listening on MLLP over real TCP: it
// keeps every message it is sent and answers each AA, echoing MSH-10.
type v2Receiver struct {
	addr string
	mu   sync.Mutex
	got  [][]byte
}

func startV2Receiver(t *testing.T) *v2Receiver {
	t.Helper()
	return startV2ReceiverAt(t, "127.0.0.1:0")
}

// startV2ReceiverAt is startV2Receiver listening at addr.
func startV2ReceiverAt(t *testing.T, addr string) *v2Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r := &v2Receiver{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				rd := mllp.NewReader(bufio.NewReader(c), 1<<20)
				for {
					frame, err := rd.ReadFrame()
					if err != nil {
						return
					}
					m, err := hl7v2.Parse(frame)
					if err != nil {
						return
					}
					r.mu.Lock()
					r.got = append(r.got, bytes.Clone(frame))
					r.mu.Unlock()
					if mllp.WriteFrame(c, hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAA, App: "LIS", ControlID: "R" + m.ControlID()})) != nil {
						return
					}
				}
			}()
		}
	}()
	return r
}

func (r *v2Receiver) messages() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.got...)
}

// texts returns the messages received, as strings.
func (r *v2Receiver) texts() []string {
	var out []string
	for _, m := range r.messages() {
		out = append(out, string(m))
	}
	return out
}

// bedSwap is a relayed ADT^A17 of the patients PID-3 firstPID3 and
// secondPID3 name, each with an address.
func bedSwap(ctrl, firstPID3, secondPID3 string) string {
	pid := func(pid3 string) string {
		return "PID|1||" + pid3 + "||TESTPATIENT^ALEX||19800101|F|||1 TEST STREET^^LEEDS^^LS1 1AA\r"
	}
	return "MSH|^~\\&|PAS|RX1|LIS|RX1|20261123093000||ADT^A17^ADT_A17|" + ctrl + "|P|2.4\rEVN|A17|20261123093000\r" +
		pid(firstPID3) + "PV1|1|I|WARD1^BED1\r" + pid(secondPID3) + "PV1|1|I|WARD1^BED2\r"
}

// relayRouteDir writes, in a directory of its own, the route
// orders-to-lis: the events given (a YAML list), the match line given
// (or none), direct care by default permitted, sent raw to lis.
func relayRouteDir(t *testing.T, events, match string) string {
	t.Helper()
	dir := t.TempDir()
	route := "name: orders-to-lis\nsource: {adapter: pas, events: " + events + "}\n" + match +
		"consent: {purpose: direct-care, legal_basis: direct-care, default: permit}\n" +
		"destinations:\n  - name: lis\n    payload: raw\n"
	if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(route), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// waitTerminal waits until the reconciler counts accepted messages, none
// pending, and checks how they finished.
func waitTerminal(t *testing.T, e *engine.Engine, accepted int, want map[string]int) {
	t.Helper()
	var rep audit.Reconciliation
	waitFor(t, "every accepted message finished", func() bool {
		rep = reconcile(t, e)
		return len(rep.Pending) == 0 && rep.Accepted == accepted
	})
	if diff := cmp.Diff(want, rep.Terminal, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("terminal outcomes (-want +got):\n%s", diff)
	}
}

// TestRelayUntranslatedTypes follows HL7 v2 message types Junction does
// not translate through a PAS input that relays them: an order and a bed
// swap are stored, acknowledged AA and sent unchanged over MLLP to the
// one route that names them, beside the shipped routes translating
// admissions as before; a relayed type no route names is filtered; a
// type the input does not relay is refused before it is stored; every
// accepted message finishes; and the relayed messages, whose PIDs come
// with messages Junction does not map, leave the patient index alone.
func TestRelayUntranslatedTypes(t *testing.T) { forPipelines(t, testRelayUntranslatedTypes) }

func testRelayUntranslatedTypes(t *testing.T, pipe string) {
	lis := startV2Receiver(t)
	shipped, err := filepath.Abs("../../routes")
	if err != nil {
		t.Fatal(err)
	}
	relayDir := relayRouteDir(t, "[ORM^O01, ADT^A17]", "match: nhsNumberValid(nhsNumber(bundle))\n")
	e, dir := startEngineWithRoutes(t, shipped+", "+relayDir, fmt.Sprintf(`inputs:
  pas: {type: pas, listen: "127.0.0.1:0", relay: [ORM^O01, ADT^*]}
  pathology: {type: pathology, listen: "127.0.0.1:0"}
  fhir: {type: fhir}
destinations:
  fhir-store: {type: file, dir: out/fhir-store}
  data-quality: {type: file, dir: out/data-quality}
  lis: {type: mllp, address: %q, ack_timeout: 5s}
%s`, lis.addr, pipe))
	addr := mllpAddr(t, e)
	msh := func(typ, ctrl string) string {
		return "MSH|^~\\&|EPR|RX1|LIS|RX1|20261123093000||" + typ + "|" + ctrl + "|P|2.4\r"
	}
	pid := func(nhs string) string { return "PID|1||" + nhs + "^^^NHS^NH||TESTPATIENT^ALEX||19800101|F\r" }
	order := msh("ORM^O01^ORM_O01", "RLY1") + pid("9990000018") + "PV1|1|I\rORC|NW|ORD1\rOBR|1|ORD1||FBC^Full blood count^L\r"
	swap := msh("ADT^A17^ADT_A17", "RLY2") + "EVN|A17|20261123093000\r" + pid("9990000026") + "PV1|1|I|WARD1^BED1\r" + pid("9990000034") + "PV1|1|I|WARD1^BED2\r"
	pending := msh("ADT^A14^ADT_A05", "RLY3") + "EVN|A14|20261123093000\r" + pid("9990000042") + "PV1|1|P\r"
	schedule := msh("SIU^S12^SIU_S12", "RLY4") + "SCH|1\r" + pid("9990000018")
	for _, tt := range []struct {
		msg  string
		want hl7v2.AckCode
	}{
		{order, hl7v2.AckAA},
		{swap, hl7v2.AckAA},
		{pending, hl7v2.AckAA},
		{adt("A01", "RLY5", "9990000018^^^NHS^NH"), hl7v2.AckAA},
		{schedule, hl7v2.AckAR},
	} {
		if code, _ := send(t, addr, tt.msg); code != tt.want {
			t.Fatalf("%.40q: ack %s, want %s", tt.msg, code, tt.want)
		}
	}
	waitFor(t, "the order and the swap at the LIS", func() bool { return len(lis.messages()) >= 2 })
	// Different patients, so in either order.
	var got []string
	for _, m := range lis.messages() {
		got = append(got, string(m))
	}
	if diff := cmp.Diff([]string{order, swap}, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("LIS received (-want +got), want the order and the swap unchanged:\n%s", diff)
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)

	waitTerminal(t, e, 4, map[string]int{audit.OutcomeDelivered: 3, audit.OutcomeFiltered: 1})
	if n := len(lis.messages()); n != 2 {
		t.Errorf("LIS received %d messages, want 2 (the pending admission is no route's)", n)
	}
	// The A01's one patient is the only one applied to the index; the
	// swap's two and the order's would have counted three more.
	if got := scrape(t, e.HTTPAddr().String(), `junction_route_patient_index_total{adapter="pas",outcome="updated"}`); got != "1" {
		t.Errorf("patients applied to the index: %s, want 1", got)
	}
	// The order and the swap, each read once whatever the routes reading
	// the input; the pending admission, which no route takes, is not
	// read at all (it would teach the patient index nothing).
	if got := scrape(t, e.HTTPAddr().String(), `junction_route_relayed_total{adapter="pas"}`); got != "2" {
		t.Errorf("relayed messages counted: %s, want 2", got)
	}
}

// TestRelayConsentRefusingAKindOfData checks consent for a relayed
// message, which goes as it came although its minimal translation shows
// only its patients: a patient whose Consent refuses disclosure of orders
// (ServiceRequest) has their relayed order denied, not sent, with the
// refusing provision audited, while another patient's order goes.
func TestRelayConsentRefusingAKindOfData(t *testing.T) {
	forPipelines(t, testRelayConsentRefusingAKindOfData)
}

func testRelayConsentRefusingAKindOfData(t *testing.T, pipe string) {
	lis := startV2Receiver(t)
	e, _ := startEngineWithRoutes(t, relayRouteDir(t, "[ORM^O01]", ""), fmt.Sprintf(`inputs:
  pas: {type: pas, listen: "127.0.0.1:0", relay: [ORM^O01]}
  fhir: {type: fhir}
destinations:
  lis: {type: mllp, address: %q, ack_timeout: 5s}
%s`, lis.addr, pipe))
	noOrders := `{"resourceType":"Consent","id":"c-no-orders","status":"active",` +
		`"scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},` +
		`"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],` +
		`"patient":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + deniedPatient + `"}},` +
		`"provision":{"type":"permit","provision":[{"type":"deny","class":[{"system":"http://hl7.org/fhir/resource-types","code":"ServiceRequest"}]}]}}`
	if st, body := postConsent(t, "http://"+e.HTTPAddr().String(), []byte(noOrders)); st != http.StatusCreated {
		t.Fatalf("POST Consent: %d %s", st, body)
	}
	order := func(ctrl, nhs string) string {
		return "MSH|^~\\&|EPR|RX1|LIS|RX1|20261123093000||ORM^O01^ORM_O01|" + ctrl + "|P|2.4\r" +
			"PID|1||" + nhs + "^^^NHS^NH||TESTPATIENT^ALEX||19800101|F\rORC|NW|ORD1\rOBR|1|ORD1||FBC^Full blood count^L\r"
	}
	denied, control := order("RLYC1", deniedPatient), order("RLYC2", controlPatient)
	addr := mllpAddr(t, e)
	for _, m := range []string{denied, control} {
		if code, _ := send(t, addr, m); code != hl7v2.AckAA {
			t.Fatalf("%.60q: ack %s, want AA", m, code)
		}
	}
	waitTerminal(t, e, 2, map[string]int{audit.OutcomeDelivered: 1, audit.OutcomeConsentDenied: 1})
	if diff := cmp.Diff([]string{control}, func() (got []string) {
		for _, m := range lis.messages() {
			got = append(got, string(m))
		}
		return got
	}()); diff != "" {
		t.Errorf("LIS received (-want +got), want the other patient's order alone:\n%s", diff)
	}
	var rules, translated []string
	for _, recs := range trails(t, e) {
		for _, r := range recs {
			switch {
			case r.Event == audit.Consent && r.Destination == "lis" && r.Outcome == "deny":
				rules = append(rules, r.Rule)
			case r.Event == audit.Translated:
				translated = append(translated, r.Reason)
			}
		}
	}
	if diff := cmp.Diff([]string{"consent:c-no-orders:Consent.provision.provision[0]"}, rules); diff != "" {
		t.Errorf("consent denials audited (-want +got):\n%s", diff)
	}
	// Each trail says its order was relayed, not translated.
	if diff := cmp.Diff([]string{router.RelayedReason, router.RelayedReason}, translated); diff != "" {
		t.Errorf("translated records' reasons (-want +got):\n%s", diff)
	}
}

// TestRelayRestrictedSecondPatient relays bed swaps to a destination not
// cleared for restricted (S-flag) patients: a swap whose second patient
// is restricted in the patient index is denied, although its first
// patient, the one the routes see, is known and not restricted, since the
// raw message carries both patients' addresses; a swap of two patients
// neither restricted goes.
func TestRelayRestrictedSecondPatient(t *testing.T) {
	forPipelines(t, testRelayRestrictedSecondPatient)
}

func testRelayRestrictedSecondPatient(t *testing.T, pipe string) {
	const first, restricted, other = "9990000026", "9990000034", "9990000042"
	lis := startV2Receiver(t)
	e, _ := startEngineWithRoutes(t, relayRouteDir(t, "[ADT^A17]", ""), fmt.Sprintf(`inputs:
  pas: {type: pas, listen: "127.0.0.1:0", relay: [ADT^A17]}
  fhir: {type: fhir}
destinations:
  lis: {type: mllp, address: %q, ack_timeout: 5s}
%s`, lis.addr, pipe))
	if _, err := e.PatientIndex().SetRestricted(context.Background(), restricted, true, patient.Source{MessageID: "test", Received: time.Now()}); err != nil {
		t.Fatal(err)
	}
	addr := mllpAddr(t, e)
	// The first patient known to the index, not restricted.
	if code, _ := send(t, addr, adt("A01", "RSW001", first+"^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	withRestricted, without := bedSwap("RSW002", first+"^^^NHS^NH", restricted+"^^^NHS^NH"), bedSwap("RSW003", first+"^^^NHS^NH", other+"^^^NHS^NH")
	for _, m := range []string{withRestricted, without} {
		if code, _ := send(t, addr, m); code != hl7v2.AckAA {
			t.Fatalf("ack %s", code)
		}
	}
	waitTerminal(t, e, 3, map[string]int{audit.OutcomeFiltered: 1, audit.OutcomeDelivered: 1, audit.OutcomeConsentDenied: 1})
	if diff := cmp.Diff([]string{without}, lis.texts()); diff != "" {
		t.Errorf("LIS received (-want +got), want the swap without a restricted patient alone:\n%s", diff)
	}
}

// TestRelayOptOutOfEveryPatient relays bed swaps to a research extract,
// where the national data opt-out applies: a swap whose second patient is
// named by hospital number alone is about that patient all the same, so
// it is denied when the patient index knows the number as an opted-out
// patient's, and when nobody can tell whose it is (the opt-out cannot be
// checked), as a message about that patient alone would be, also with
// the patient index off; a swap of two identified patients neither opted
// out goes.
func TestRelayOptOutOfEveryPatient(t *testing.T) {
	const first, optedOut, other = "9990000026", "9990000034", "9990000042"
	for _, p := range pipelines {
		for _, indexed := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/index=%v", p.name, indexed), func(t *testing.T) {
				lis := startV2Receiver(t)
				route := "name: research-swaps\nsource: {adapter: pas, events: [ADT^A17]}\n" +
					"consent: {purpose: research, legal_basis: s251, default: permit}\n" +
					"destinations:\n  - name: lis\n    payload: raw\n"
				dir := t.TempDir()
				if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(route), 0o600); err != nil {
					t.Fatal(err)
				}
				e, _ := startEngineWithRoutes(t, dir, fmt.Sprintf(`patient_index: {enabled: %t}
inputs:
  pas: {type: pas, listen: "127.0.0.1:0", relay: [ADT^A17]}
  fhir: {type: fhir}
destinations:
  lis: {type: mllp, address: %q, ack_timeout: 5s}
%s`, indexed, lis.addr, p.extra))
				base := "http://" + e.HTTPAddr().String()
				if st, _, raw := postOptOuts(t, base, "?as_of="+time.Now().UTC().Format("2006-01-02"), optedOut+"\n"); st != http.StatusOK {
					t.Fatalf("opt-out list: %d %s", st, raw)
				}
				addr := mllpAddr(t, e)
				// The index learns the opted-out patient's hospital number.
				if code, _ := send(t, addr, adt("A01", "ROO001", optedOut+"^^^NHS^NH~H300034^^^RX1^MR")); code != hl7v2.AckAA {
					t.Fatalf("ack %s", code)
				}
				nhsFirst := first + "^^^NHS^NH"
				byHospitalNumber, unknown, control := bedSwap("ROO002", nhsFirst, "H300034^^^RX1^MR"), bedSwap("ROO003", nhsFirst, "H399999^^^RX1^MR"), bedSwap("ROO004", nhsFirst, other+"^^^NHS^NH")
				for _, m := range []string{byHospitalNumber, unknown, control} {
					if code, _ := send(t, addr, m); code != hl7v2.AckAA {
						t.Fatalf("ack %s", code)
					}
				}
				waitTerminal(t, e, 4, map[string]int{audit.OutcomeFiltered: 1, audit.OutcomeDelivered: 1, audit.OutcomeConsentDenied: 2})
				if diff := cmp.Diff([]string{control}, lis.texts()); diff != "" {
					t.Errorf("research receiver got (-want +got), want the swap of two identified patients not opted out alone:\n%s", diff)
				}
			})
		}
	}
}
