package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/store"
)

// tokenFiles writes each token's secret to a file and returns the
// http.tokens YAML naming them, with the given roles.
func tokenFiles(t *testing.T, secrets map[string]string, roles map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	y := "http:\n  listen: 127.0.0.1:0\n  tokens:\n"
	for _, name := range []string{"ops", "eng", "aud", "app"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(secrets[name]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		y += fmt.Sprintf("    - {name: %s, role: %s, token: file:%s}\n", name, roles[name], path)
	}
	return y
}

// call makes one request and returns its status, body and challenge.
func call(t *testing.T, method, url, token, body string) (int, []byte, string) {
	t.Helper()
	ctype := ""
	if body != "" {
		ctype = "application/json"
	}
	resp, b := request(t, method, url, token, ctype, body)
	return resp.StatusCode, b, resp.Header.Get("WWW-Authenticate")
}

// request makes one request, with body of type ctype when that is not
// empty, and returns the response (its body closed) and its body.
func request(t *testing.T, method, url, token, ctype, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// auditStream returns every record on the audit stream and the stream's
// raw message bodies joined.
func auditStream(t *testing.T, e *engine.Engine) ([]audit.Record, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.Store().JS.Stream(ctx, store.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	var raw strings.Builder
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		raw.Write(m.Data)
		var rs []audit.Record
		if json.Unmarshal(m.Data, &rs) == nil {
			recs = append(recs, rs...)
		}
	}
	return recs, raw.String()
}

// rolesEngine starts an engine with one token per role (ops, eng, aud,
// app: operator, integration engineer, auditor, patient service), sends
// one admission with control id ctrl and waits for its delivery. It
// returns the engine, the tokens by name and the message id.
func rolesEngine(t *testing.T, ctrl string) (*engine.Engine, map[string]string, string) {
	t.Helper()
	secrets := map[string]string{"ops": "ops-secret-0c1d-long-enough", "eng": "eng-secret-9f3a-long-enough", "aud": "aud-secret-77b2-long-enough", "app": "app-secret-e410-long-enough"}
	roles := map[string]string{"ops": "operator", "eng": "integration_engineer", "aud": "auditor", "app": "patient_service"}
	e, dir := startEngine(t, tokenFiles(t, secrets, roles))
	if code, _ := send(t, mllpAddr(t, e), adt("A01", ctrl, "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	files := waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	return e, secrets, strings.SplitN(filepath.Base(files[0]), ".", 2)[0]
}

// TestAdminRoles checks each role against each admin and audit endpoint
// (the disclosure and AuditEvent endpoints by stand-in handlers
// registered under their names), unknown and missing tokens, and the
// access records and metrics of payload and disclosure access.
func TestAdminRoles(t *testing.T) {
	e, secrets, id := rolesEngine(t, "ROLES001")
	base := "http://" + e.HTTPAddr().String()

	ok := func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }
	mux := http.NewServeMux()
	mux.Handle("GET /api/patients/{nhs}/disclosures", e.Admin("disclosures", ok))
	mux.Handle("POST /api/patients/{nhs}/disclosures/withhold", e.Admin("withhold", ok))
	mux.Handle("GET /fhir/AuditEvent", e.Admin("auditevents", ok))
	stand := httptest.NewServer(mux)
	defer stand.Close()

	const nhs = "9990000026"
	principals := []string{"ops", "eng", "aud", "app"}
	endpoints := []struct {
		name, method, url, body string
		want                    [4]int // ops, eng, aud, app
	}{
		{"messages", "GET", base + "/api/messages/" + id, "", [4]int{200, 200, 200, 403}},
		{"messages, trail only", "GET", base + "/api/messages/" + id + "?payloads=false", "", [4]int{200, 200, 200, 403}},
		{"messages, bad payloads value", "GET", base + "/api/messages/" + id + "?payloads=maybe", "", [4]int{400, 400, 400, 403}},
		{"find by control id", "GET", base + "/api/messages?control_id=C1", "", [4]int{200, 200, 200, 403}},
		{"deadletters", "GET", base + "/api/deadletters", "", [4]int{200, 200, 403, 403}},
		{"deadletter details", "GET", base + "/api/deadletters?detail=true", "", [4]int{403, 200, 403, 403}},
		{"replay", "POST", base + "/api/replay", `{"filter": {"route": "adt-to-fhir-store"}}`, [4]int{200, 403, 403, 403}},
		{"quarantine", "GET", base + "/api/quarantine", "", [4]int{200, 200, 403, 403}},
		{"quarantine bodies", "GET", base + "/api/quarantine?body=true", "", [4]int{403, 200, 403, 403}},
		{"reconcile", "GET", base + "/api/reconcile", "", [4]int{200, 403, 200, 403}},
		{"disclosures", "GET", stand.URL + "/api/patients/" + nhs + "/disclosures", "", [4]int{403, 403, 200, 200}},
		{"withhold", "POST", stand.URL + "/api/patients/" + nhs + "/disclosures/withhold", "{}", [4]int{403, 403, 200, 403}},
		{"auditevents", "GET", stand.URL + "/fhir/AuditEvent", "", [4]int{403, 403, 200, 403}},
	}
	views, trailViews := map[string]engine.MessageView{}, map[string]engine.MessageView{}
	for _, ep := range endpoints {
		t.Run(ep.name, func(t *testing.T) {
			for i, who := range principals {
				st, body, _ := call(t, ep.method, ep.url, secrets[who], ep.body)
				if st != ep.want[i] {
					t.Errorf("%s: status %d, want %d: %s", who, st, ep.want[i], body)
				}
				if st == http.StatusForbidden {
					var e struct{ Error, Permission string }
					if err := json.Unmarshal(body, &e); err != nil || e.Permission == "" || !strings.Contains(e.Error, e.Permission) {
						t.Errorf("%s: 403 body %s does not name the permission", who, body)
					}
					if strings.Contains(string(body), secrets[who]) {
						t.Errorf("%s: 403 body shows the token", who)
					}
				}
				if strings.HasPrefix(ep.name, "messages") && st == 200 {
					var v engine.MessageView
					if err := json.Unmarshal(body, &v); err != nil {
						t.Fatal(err)
					}
					if ep.name == "messages" {
						views[who] = v
					} else {
						trailViews[who] = v
					}
				}
			}
			for _, tok := range []string{"", "not-a-token", secrets["ops"] + "x"} {
				st, body, challenge := call(t, ep.method, ep.url, tok, ep.body)
				if st != http.StatusUnauthorized || !strings.HasPrefix(challenge, "Bearer") {
					t.Errorf("token %q: status %d, WWW-Authenticate %q, want 401 with a Bearer challenge: %s", tok, st, challenge, body)
				}
			}
		})
	}
	if t.Failed() {
		return
	}
	// Operators and auditors get the trail without payloads; integration
	// engineers get the payloads too.
	for _, who := range []string{"ops", "aud"} {
		v := views[who]
		if !v.PayloadsOmitted || v.Input != nil || len(v.Outbound) != 0 || len(v.Trail) == 0 {
			t.Errorf("%s's view: omitted %v, input %v, outbound %d, trail %d; want the trail only", who, v.PayloadsOmitted, v.Input != nil, len(v.Outbound), len(v.Trail))
		}
	}
	if v := views["eng"]; v.PayloadsOmitted || v.Input == nil || !strings.Contains(v.Input.Body, "ROLES001") {
		t.Errorf("engineer's view has no payloads: %+v", v)
	}
	// Asking for the trail alone (payloads=false, as the plain `junction
	// audit trail` does) gets everyone the trail without payloads.
	for _, who := range []string{"ops", "eng", "aud"} {
		v := trailViews[who]
		if !v.PayloadsOmitted || v.Input != nil || len(v.Outbound) != 0 || len(v.Trail) == 0 {
			t.Errorf("%s's trail-only view: omitted %v, input %v, outbound %d, trail %d; want the trail only", who, v.PayloadsOmitted, v.Input != nil, len(v.Outbound), len(v.Trail))
		}
	}

	// Asking for an unknown message is recorded, and the record alone does
	// not make the message known.
	for range 2 {
		if st, body, _ := call(t, "GET", base+"/api/messages/NOSUCHMESSAGE01", secrets["eng"], ""); st != http.StatusNotFound {
			t.Errorf("unknown message: status %d, want 404: %s", st, body)
		}
	}

	recs, raw := auditStream(t, e)
	for who, s := range secrets {
		if strings.Contains(raw, s) {
			t.Errorf("the audit stream holds %s's token", who)
		}
	}
	if strings.Contains(raw, nhs) || strings.Contains(raw, "9990000018") {
		t.Error("the audit stream holds an NHS number")
	}
	type key struct{ principal, rule, outcome string }
	accessed := map[key][]audit.Record{}
	for _, r := range recs {
		if r.Event == audit.Accessed {
			k := key{r.Principal, r.Rule, r.Outcome}
			accessed[k] = append(accessed[k], r)
		}
	}
	ofMessage := map[string]int{}
	for _, r := range accessed[key{"eng", "messages.payload", "allowed"}] {
		if r.Endpoint != "GET /api/messages/{id}" {
			t.Errorf("access record endpoint %q", r.Endpoint)
		}
		ofMessage[r.MessageID]++
	}
	// The trail-only and refused (bad payloads value) requests for the
	// message are not payload access: one record, of the full view.
	if want := map[string]int{id: 1, "NOSUCHMESSAGE01": 2}; !maps.Equal(ofMessage, want) {
		t.Errorf("engineer's payload access records by message: %v, want %v", ofMessage, want)
	}
	if rs := accessed[key{"eng", "quarantine.payload", "allowed"}]; len(rs) != 1 || !strings.HasPrefix(rs[0].MessageID, "access-") {
		t.Errorf("engineer's quarantine access records: %+v", rs)
	}
	if rs := accessed[key{"ops", "quarantine.payload", "denied"}]; len(rs) != 1 {
		t.Errorf("operator's refused quarantine access records: %+v", rs)
	}
	if rs := accessed[key{"eng", "deadletters.payload", "allowed"}]; len(rs) != 1 || !strings.HasPrefix(rs[0].MessageID, "access-") {
		t.Errorf("engineer's dead-letter detail access records: %+v", rs)
	}
	if rs := accessed[key{"ops", "deadletters.payload", "denied"}]; len(rs) != 1 {
		t.Errorf("operator's refused dead-letter detail access records: %+v", rs)
	}
	for _, k := range []key{{"ops", "messages", "allowed"}, {"ops", "messages.payload", "allowed"}, {"aud", "messages", "allowed"}, {"eng", "messages", "allowed"}, {"ops", "deadletters", "allowed"}} {
		if rs := accessed[k]; len(rs) != 0 {
			t.Errorf("access without payloads recorded: %+v", rs)
		}
	}
	for _, who := range []string{"aud", "app"} {
		rs := accessed[key{who, "disclosures", "allowed"}]
		if len(rs) != 1 || len(rs[0].Patient) != 64 || rs[0].Endpoint != "GET /api/patients/{nhs}/disclosures" {
			t.Errorf("%s's disclosure access records: %+v", who, rs)
		}
	}
	if rs := accessed[key{"app", "auditevents", "denied"}]; len(rs) != 1 {
		t.Errorf("patient service's refused AuditEvent access records: %+v", rs)
	}
	// The message's trail shows who read its payloads.
	if !slices.ContainsFunc(views["eng"].Trail, func(r audit.Record) bool { return r.Event == audit.Accessed && r.Principal == "eng" }) {
		t.Error("the engineer's view lacks its own access record")
	}

	m := e.Metrics()
	for _, c := range []struct {
		perm, outcome, who string
		want               float64
	}{
		{"messages.payload", "allowed", "eng", 3},
		{"messages", "allowed", "eng", 2},
		{"messages", "allowed", "ops", 3},
		{"messages", "denied", "app", 3},
		{"quarantine.payload", "denied", "ops", 1},
		{"disclosures", "allowed", "app", 1},
		{"replay", "unauthenticated", "", 3},
	} {
		if got := testutil.ToFloat64(m.Accesses.WithLabelValues(c.perm, c.outcome, c.who)); got != c.want {
			t.Errorf("accesses{%s, %s, %q} = %v, want %v", c.perm, c.outcome, c.who, got, c.want)
		}
	}
}

// TestAdminTokenStillWorks: the deprecated http.admin_token is a token
// holding every role, named admin_token in access records.
func TestAdminTokenStillWorks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(path, []byte("legacy-secret-5a5a-long-enough\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e, _ := startEngine(t, "http:\n  listen: 127.0.0.1:0\n  admin_token: file:"+path+"\n")
	base := "http://" + e.HTTPAddr().String()
	tests := []struct {
		name, method, url, token, body string
		want                           int
	}{
		{"payloads", "GET", base + "/api/quarantine?body=true", "legacy-secret-5a5a-long-enough", "", 200},
		{"replay", "POST", base + "/api/replay", "legacy-secret-5a5a-long-enough", `{"filter": {"route": "adt-to-fhir-store"}}`, 200},
		{"reconcile", "GET", base + "/api/reconcile", "legacy-secret-5a5a-long-enough", "", 200},
		{"no token", "GET", base + "/api/reconcile", "", "", 401},
		{"wrong token", "GET", base + "/api/reconcile", "legacy-secret-5a5b-long-enough", "", 401},
		{"open endpoints", "GET", base + "/healthz", "", "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if st, body, _ := call(t, tt.method, tt.url, tt.token, tt.body); st != tt.want {
				t.Errorf("status %d, want %d: %s", st, tt.want, body)
			}
		})
	}
	recs, raw := auditStream(t, e)
	if strings.Contains(raw, "legacy-secret-long-enough") {
		t.Error("the audit stream holds the token")
	}
	n := 0
	for _, r := range recs {
		if r.Event == audit.Accessed && r.Principal == "admin_token" && r.Rule == "quarantine.payload" && r.Outcome == "allowed" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d access records of admin_token, want 1", n)
	}
}

// TestDisclosureViewsByRole checks the real disclosure endpoints under
// roles: a patient-facing service gets the patient's view but not the
// auditor's (which shows withheld entries), and a withholding records who
// made it.
func TestDisclosureViewsByRole(t *testing.T) {
	e, secrets, id := rolesEngine(t, "VIEW0001")
	url := "http://" + e.HTTPAddr().String() + "/api/patients/9990000018/disclosures"
	tests := []struct {
		name, token, query string
		want               int
	}{
		{"patient service, patient view", "app", "", http.StatusOK},
		{"patient service, auditor view", "app", "?view=auditor", http.StatusForbidden},
		{"auditor, auditor view", "aud", "?view=auditor", http.StatusOK},
		{"operator", "ops", "", http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code, body, _ := call(t, "GET", url+tc.query, secrets[tc.token], ""); code != tc.want {
				t.Errorf("status %d, want %d: %s", code, tc.want, body)
			}
		})
	}
	body := fmt.Sprintf(`{"message_id": %q, "destination": "fhir-store", "exemption": "serious harm", "reason": "clinician advice"}`, id)
	if code, b, _ := call(t, "POST", url+"/withhold", secrets["aud"], body); code != http.StatusOK {
		t.Fatalf("withhold: status %d: %s", code, b)
	}
	recs, _ := auditStream(t, e)
	var found bool
	denied := 0
	for _, r := range recs {
		if r.Event == audit.Accessed && r.Principal == "app" && r.Outcome == "denied" {
			denied++
			if r.Rule != "disclosures:view=auditor" || len(r.Patient) != 64 {
				t.Errorf("refused auditor view recorded as %+v, want rule disclosures:view=auditor and the patient", r)
			}
		}
		if r.Event == audit.WithheldFromReport && r.MessageID == id {
			found = true
			if r.Principal != "aud" {
				t.Errorf("withholding recorded principal %q, want aud", r.Principal)
			}
		}
	}
	if !found {
		t.Error("no withheld_from_report record")
	}
	if denied != 1 {
		t.Errorf("%d denied access records of the patient service, want 1 (its auditor view)", denied)
	}
}

// TestDisclosuresWithTheNumberInTheBody: POST /api/disclosures gives the
// report GET /api/patients/{nhs}/disclosures gives, its access record
// names the patient by keyed hash as the path form's does, parameters in
// its URL are refused, and POST /api/disclosures/withhold withholds an
// entry as the path form does.
func TestDisclosuresWithTheNumberInTheBody(t *testing.T) {
	e, secrets, id := rolesEngine(t, "BODY0001")
	base := "http://" + e.HTTPAddr().String()
	_, viaPath, _ := call(t, "GET", base+"/api/patients/9990000018/disclosures?format=csv&view=auditor", secrets["aud"], "")
	tests := []struct {
		name, url, body string
		want            int
	}{
		{"report", base + "/api/disclosures", `{"nhs_number": "999 000 0018", "format": "csv", "view": "auditor"}`, http.StatusOK},
		{"parameters in the URL", base + "/api/disclosures?nhs_number=9990000018", `{"nhs_number": "9990000018"}`, http.StatusBadRequest},
		{"check digit wrong", base + "/api/disclosures", `{"nhs_number": "9990000019"}`, http.StatusBadRequest},
		{"unknown field", base + "/api/disclosures", `{"nhs_number": "9990000018", "nhs": "x"}`, http.StatusBadRequest},
		// Data after the object: refused, not read as the object alone.
		{"data after the object", base + "/api/disclosures", `{"nhs_number": "9990000018"}x`, http.StatusBadRequest},
		{"withhold, data after the object", base + "/api/disclosures/withhold", fmt.Sprintf(`{"nhs_number": "9990000018", "message_id": %q, "destination": "fhir-store", "exemption": "x", "reason": "y"}}`, id), http.StatusBadRequest},
		{"withhold", base + "/api/disclosures/withhold", fmt.Sprintf(`{"nhs_number": "9990000018", "message_id": %q, "destination": "fhir-store", "exemption": "serious harm", "reason": "clinician advice"}`, id), http.StatusOK},
		{"withhold, number in path and body", base + "/api/patients/9990000018/disclosures/withhold", fmt.Sprintf(`{"nhs_number": "9990000018", "message_id": %q, "destination": "fhir-store", "exemption": "x", "reason": "y"}`, id), http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := call(t, "POST", tc.url, secrets["aud"], tc.body)
			if code != tc.want {
				t.Fatalf("status %d, want %d: %s", code, tc.want, body)
			}
			if code != http.StatusOK && bytes.Contains(body, []byte("999000001")) {
				t.Errorf("the answer repeats the NHS number: %s", body)
			}
			if tc.name == "report" && !bytes.Equal(body, viaPath) {
				t.Errorf("report by body:\n%s\nby path:\n%s", body, viaPath)
			}
		})
	}
	recs, _ := auditStream(t, e)
	byEndpoint := map[string]string{}
	withheld := false
	for _, r := range recs {
		if r.Event == audit.Accessed && r.Outcome == "allowed" {
			byEndpoint[r.Endpoint] = r.Patient
		}
		withheld = withheld || r.Event == audit.WithheldFromReport && r.MessageID == id
	}
	path, body := byEndpoint["GET /api/patients/{nhs}/disclosures"], byEndpoint["POST /api/disclosures"]
	if len(path) != 64 || body != path {
		t.Errorf("access records name patient %q by path and %q by body; want the same keyed hash", path, body)
	}
	if byEndpoint["POST /api/disclosures/withhold"] != path {
		t.Errorf("the withholding's access record names patient %q, want %q", byEndpoint["POST /api/disclosures/withhold"], path)
	}
	if !withheld {
		t.Error("no withheld_from_report record")
	}
}

// TestInputSecretSharedWithAdminTokenRefused: a FHIR input's bearer_token
// that is also an admin token is refused at start, naming both settings
// but not the secret; its own secret starts.
func TestInputSecretSharedWithAdminTokenRefused(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	routes, err := filepath.Abs("../../routes")
	if err != nil {
		t.Fatal(err)
	}
	ops := write("ops", "ops-secret-0c1d-long-enough")
	same := write("fhir-same", "ops-secret-0c1d-long-enough")
	own := write("fhir-own", "fhir-secret-51aa-long-enough")
	for _, tc := range []struct {
		name, fhirToken string
		refused         bool
	}{
		{"same secret", same, true},
		{"own secret", own, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := fmt.Sprintf("data_dir: %s\nhttp:\n  listen: 127.0.0.1:0\n  tokens:\n    - {name: ops, role: operator, token: file:%s}\ninputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n  pathology:\n    type: pathology\n    listen: 127.0.0.1:0\n  fhir:\n    type: fhir\n    bearer_token: file:%s\nroutes: [%s]\n",
				filepath.Join(dir, "data-"+strings.ReplaceAll(tc.name, " ", "-")), ops, tc.fhirToken, routes)
			path := write("junction-"+strings.ReplaceAll(tc.name, " ", "-")+".yaml", body)
			_, err := engine.New(loadPlan(t, path), engine.Options{Logger: slog.New(slog.DiscardHandler)})
			switch {
			case tc.refused && (err == nil || !strings.Contains(err.Error(), "inputs.fhir.bearer_token: the same secret as the admin token ops")):
				t.Errorf("New = %v, want it refused naming inputs.fhir.bearer_token and ops", err)
			case tc.refused && strings.Contains(err.Error(), "ops-secret"):
				t.Errorf("the refusal quotes the secret: %v", err)
			case !tc.refused && err != nil:
				t.Errorf("New = %v, want it to start", err)
			}
		})
	}
}
