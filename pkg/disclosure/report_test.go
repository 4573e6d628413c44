package disclosure_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/disclosure"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/router"
	"github.com/junction-fhir/junction/pkg/store"
)

// auditStore starts an embedded JetStream server with the audit stream
// and returns it with an audit writer on it.
func auditStore(tb testing.TB) (jetstream.JetStream, *audit.Writer) {
	tb.Helper()
	js := jstest.Start(tb, "disclosure-test")
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, Duplicates: time.Minute,
	}); err != nil {
		tb.Fatalf("creating the audit stream: %v", err)
	}
	return js, audit.NewWriter(js)
}

// patientHash is the keyed hash of a synthetic NHS number, as the engine
// makes it (HMAC-SHA256 under a test key).
func patientHash(nhsNumber string) string {
	m := hmac.New(sha256.New, []byte("disclosure-test-key"))
	m.Write([]byte(nhsNumber))
	return hex.EncodeToString(m.Sum(nil))
}

// routing is what the route stage writes, in one audit message, for
// message id routed by route adt to ehr at time t: the translation, the
// consent decision and the queued record. With legacy, the patient hash
// is on the translation only, as before every record carried it.
func routing(id, patient string, t time.Time, legacy bool) []audit.Record {
	recs := []audit.Record{
		{Time: t, MessageID: id, Event: audit.Translated, Source: "pas", Route: "adt", Outcome: "ok", Patient: patient},
		{Time: t, MessageID: id, Event: audit.Consent, Source: "pas", Route: "adt", Destination: "ehr", Outcome: "permit",
			Rule: "consent:none:route-default-permit", Purpose: "direct-care", LegalBasis: "direct-care", Patient: patient},
		{Time: t, MessageID: id, Event: audit.Queued, Source: "pas", Route: "adt", Destination: "ehr", Outcome: "queued",
			Classes: []string{"Encounter", "Patient"}, Patient: patient},
	}
	if legacy {
		recs[1].Patient, recs[2].Patient = "", ""
	}
	return recs
}

// delivered is the delivery stage's record of message id's release to
// ehr at time t.
func delivered(id, patient string, t time.Time, legacy bool) audit.Record {
	r := audit.Record{Time: t, MessageID: id, Event: audit.Delivered, Route: "adt", Destination: "ehr", Outcome: "delivered", Status: "201", Patient: patient}
	if legacy {
		r.Patient = ""
	}
	return r
}

// TestBuildLateDelivery stores a message's routing records, then its
// delivery record, and builds the report for a window that starts
// between the two: the delivery came long after the translation (a
// destination down for a day, then a catch-up), near the window start.
// The records' own times are 25 h apart; JetStream stamps what it stores
// with the wall clock, so the store's gap is scaled down to 300 ms, and
// so is the look-back (Options.Lookback 100 ms) where a row needs the
// translation out of its reach. Records that carry the patient hash are
// found without a look-back, their routing records read from the
// message's receipt; records of the old format (hash on the translation
// only) are found only within the look-back.
func TestBuildLateDelivery(t *testing.T) {
	alice, bob := patientHash(nhs.TestNumber(0)), patientHash(nhs.TestNumber(1))
	release := func(id string, at time.Time) []disclosure.Entry {
		return []disclosure.Entry{{Kind: disclosure.KindRelease, Time: at, MessageID: id,
			Source: disclosure.Org{Name: "pas", ODS: "RX1"}, Recipient: disclosure.Org{Name: "ehr", ODS: "RX2"}, Route: "adt",
			Purpose: "direct-care", LegalBasis: "direct-care", Classes: []string{"Encounter", "Patient"},
			Decision: "permit", Rule: "consent:none:route-default-permit"}}
	}
	const shortLookback = 100 * time.Millisecond
	tests := []struct {
		name string
		// owner is the patient the records are of; legacy writes them in
		// the old format.
		owner  string
		legacy bool
		// gap is how long before the delivery record the routing records
		// are, by their own times.
		gap time.Duration
		// lookback is the report's (0 for DefaultLookback).
		lookback time.Duration
		want     bool
	}{
		{"delivered 25 h after translation, beyond the look-back", alice, false, 25 * time.Hour, shortLookback, true},
		{"delivered 25 h after translation, default look-back", alice, false, 25 * time.Hour, 0, true},
		{"delivered 25 h after translation, another patient's", bob, false, 25 * time.Hour, shortLookback, false},
		{"old format, delivered within the look-back", alice, true, 2 * time.Hour, 0, true},
		{"old format, delivered within the look-back, another patient's", bob, true, 2 * time.Hour, 0, false},
		{"old format, delivered beyond the look-back", alice, true, 25 * time.Hour, shortLookback, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			js, w := auditStore(t)
			var ids router.IDGen
			id := ids.New()
			deliveredAt := time.Now().UTC().Add(2 * time.Minute)
			if err := w.Write(ctx, id, "", routing(id, tc.owner, deliveredAt.Add(-tc.gap), tc.legacy)...); err != nil {
				t.Fatal(err)
			}
			// The window starts once the routing records are stored, and
			// beyond the short look-back from them, however long storing
			// them took.
			from := time.Now().UTC().Add(shortLookback + 200*time.Millisecond)
			time.Sleep(time.Until(from) + 20*time.Millisecond)
			if err := w.Write(ctx, id, "", delivered(id, tc.owner, deliveredAt, tc.legacy)); err != nil {
				t.Fatal(err)
			}
			rep, err := disclosure.Build(ctx, js, alice, nil, disclosure.Options{From: from, To: from.Add(time.Hour), Lookback: tc.lookback, Directory: dir})
			if err != nil {
				t.Fatal(err)
			}
			var want []disclosure.Entry
			if tc.want {
				want = release(id, deliveredAt)
			}
			if diff := cmp.Diff(want, rep.Entries, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(disclosure.Entry{}, "At")); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

// stamped returns recs with the patient hash on every record, as the
// stages write them now; none marks them as of a message with no patient.
func stamped(recs []audit.Record, patient string, none bool) []audit.Record {
	out := append([]audit.Record(nil), recs...)
	for i := range out {
		out[i].Patient, out[i].NoPatient = patient, none
	}
	return out
}

// TestBuilderOnePass gives a builder each record once, with Add alone:
// records carrying the patient hash are kept in whatever order they come,
// old records (hash on the translation only) stored after their
// translation are too, and Legacy reports only old records it could not
// place, which the fallback must.
func TestBuilderOnePass(t *testing.T) {
	const patient, other = "aaaa", "bbbb"
	classes := []string{"Patient"}
	tests := []struct {
		name        string
		recs        []audit.Record
		wantEntries int
		wantLegacy  bool
	}{
		{"hash on every record", stamped(flow(msg1, patient, "adt", "ehr", "direct-care", "direct-care", "permit", "r", classes), patient, false), 1, false},
		{"hash on every record, stored out of order", reverse(stamped(flow(msg1, patient, "adt", "ehr", "direct-care", "direct-care", "permit", "r", classes), patient, false)), 1, false},
		{"hash on every record, delivery alone", stamped(flow(msg1, patient, "adt", "ehr", "direct-care", "direct-care", "permit", "r", classes), patient, false)[4:], 1, false},
		{"another patient's", stamped(flow(msg1, other, "adt", "ehr", "direct-care", "direct-care", "permit", "r", classes), other, false), 0, false},
		{"message with no patient", stamped(flow(msg1, "", "adt", "ehr", "direct-care", "direct-care", "permit", "r", classes), "", true), 0, false},
		{"old format, translation first", flow(msg1, patient, "adt", "ehr", "direct-care", "direct-care", "permit", "r", classes), 1, false},
		{"old format, stored out of order", reverse(flow(msg1, patient, "adt", "ehr", "direct-care", "direct-care", "permit", "r", classes)), 0, true},
		{"old format, another patient's", flow(msg1, other, "adt", "ehr", "direct-care", "direct-care", "permit", "r", classes), 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := disclosure.NewBuilder(patient, dir)
			for _, r := range tc.recs {
				b.Add(r)
			}
			if got := len(b.Entries()); got != tc.wantEntries {
				t.Errorf("%d entries, want %d", got, tc.wantEntries)
			}
			if got := b.Legacy(); got != tc.wantLegacy {
				t.Errorf("Legacy = %v, want %v", got, tc.wantLegacy)
			}
		})
	}
}

// TestBuildDamagedAudit: a report over an audit stream with a damaged
// block is made from the records that can be read, and says that it is
// incomplete and which audit messages it could not read, rather than
// failing or passing as whole.
func TestBuildDamagedAudit(t *testing.T) {
	const releases = 60
	alice := patientHash(nhs.TestNumber(0))
	js := jstest.DamagedStream(t, jetstream.StreamConfig{
		Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, DenyDelete: true, DenyPurge: true,
	}, func(js jetstream.JetStream) {
		w := audit.NewWriter(js)
		var ids router.IDGen
		for i := range releases {
			id := ids.New()
			at := time.Now().UTC()
			if err := w.Write(t.Context(), id, "", append(routing(id, alice, at, false), delivered(id, alice, at, false))...); err != nil {
				t.Fatalf("release %d: %v", i, err)
			}
		}
		if err := w.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
	from := time.Now().UTC().Add(-time.Hour)
	rep, err := disclosure.Build(t.Context(), js, alice, nil, disclosure.Options{From: from, To: from.Add(2 * time.Hour), Directory: dir})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if len(rep.Unreadable) == 0 || rep.Unreadable[0].First != 1 {
		t.Fatalf("unreadable %v: want a run from audit message 1", rep.Unreadable)
	}
	if len(rep.Entries) == 0 || len(rep.Entries) >= releases {
		t.Errorf("%d entries of %d releases: want those recorded after the damaged block", len(rep.Entries), releases)
	}
	if !strings.HasPrefix(rep.Note, "INCOMPLETE: audit stream messages 1-") {
		t.Errorf("note %q: want it to start by saying the report is incomplete, and where", rep.Note)
	}
}

// TestSearchBundleIncomplete: an AuditEvent search page that could not
// read every audit message carries, after its matches, an
// OperationOutcome entry in search mode "outcome" saying so; a complete
// one does not.
func TestSearchBundleIncomplete(t *testing.T) {
	tests := []struct {
		name       string
		unreadable []audit.SeqRange
		want       bool
	}{
		{"complete", nil, false},
		{"damaged audit", []audit.SeqRange{{First: 3, Last: 40}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := disclosure.SearchBundle(disclosure.Page{Unreadable: tc.unreadable}, nhs.TestNumber(0), "http://x/fhir/AuditEvent", "")
			entries, _ := b["entry"].([]any)
			got := false
			for _, e := range entries {
				e := e.(map[string]any)
				res := e["resource"].(map[string]any)
				if res["resourceType"] != "OperationOutcome" {
					continue
				}
				issue := res["issue"].([]any)[0].(map[string]any)
				if e["search"].(map[string]any)["mode"] != "outcome" || issue["severity"] != "warning" || issue["code"] != "incomplete" ||
					!strings.Contains(issue["diagnostics"].(string), "3-40") {
					t.Errorf("outcome entry %v: want mode outcome, a warning, code incomplete, naming messages 3-40", e)
				}
				got = true
			}
			if got != tc.want {
				t.Errorf("outcome entry present = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestIncompleteNoteNamesEachSequenceOnce: runs met by several passes
// over the same damage (a window and the look-back before it, a stream
// grown between them) are named once each, in order.
func TestIncompleteNoteNamesEachSequenceOnce(t *testing.T) {
	note := disclosure.IncompleteNote([]audit.SeqRange{{First: 145, Last: 200}, {First: 1, Last: 72}, {First: 145, Last: 216}, {First: 20, Last: 50}})
	if !strings.Contains(note, "messages 1-72, 145-216 could not") {
		t.Errorf("note %q: want runs 1-72 and 145-216, each once", note)
	}
}
