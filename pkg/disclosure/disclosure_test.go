package disclosure_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/disclosure"
	"github.com/junction-fhir/junction/pkg/store"
)

const (
	alice = "aaaa"
	bob   = "bbbb"
	msg1  = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
	msg2  = "01JQ4Z9A7B8C9D0E1F2G3H4J5M"
)

var t0 = time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

var dir = disclosure.Directory{
	Sources:      map[string]string{"pas": "RX1"},
	Destinations: map[string]string{"ehr": "RX2", "registry": "X26"},
}

// flow is the records of one message routed by route rt to dest.
func flow(id, patient, rt, dest, purpose, basis, outcome, rule string, classes []string, extra ...audit.Record) []audit.Record {
	recs := []audit.Record{
		{Time: at(0), MessageID: id, Event: audit.Translated, Source: "pas", Route: rt, Outcome: "ok", Patient: patient},
		{Time: at(1), MessageID: id, Event: audit.Matched, Source: "pas", Route: rt, Outcome: "matched"},
		{Time: at(1), MessageID: id, Event: audit.Consent, Source: "pas", Route: rt, Destination: dest, Outcome: outcome, Reason: "why", Rule: rule, Purpose: purpose, LegalBasis: basis},
	}
	recs = append(recs, extra...)
	if outcome == "deny" {
		return recs
	}
	return append(recs,
		audit.Record{Time: at(2), MessageID: id, Event: audit.Queued, Source: "pas", Route: rt, Destination: dest, Outcome: "queued", Classes: classes},
		audit.Record{Time: at(3), MessageID: id, Event: audit.Delivered, Route: rt, Destination: dest, Outcome: "delivered", Status: "201"})
}

// reverse returns recs last first.
func reverse(recs []audit.Record) []audit.Record {
	out := make([]audit.Record, len(recs))
	for i, r := range recs {
		out[len(recs)-1-i] = r
	}
	return out
}

// shift moves recs s seconds later.
func shift(recs []audit.Record, s int) []audit.Record {
	out := append([]audit.Record(nil), recs...)
	for i := range out {
		out[i].Time = out[i].Time.Add(time.Duration(s) * time.Second)
	}
	return out
}

func concat(rs ...[]audit.Record) []audit.Record {
	var out []audit.Record
	for _, r := range rs {
		out = append(out, r...)
	}
	return out
}

func TestBuilder(t *testing.T) {
	src := disclosure.Org{Name: "pas", ODS: "RX1"}
	ehr := disclosure.Org{Name: "ehr", ODS: "RX2"}
	reg := disclosure.Org{Name: "registry", ODS: "X26"}
	tests := []struct {
		name    string
		patient string
		recs    []audit.Record
		want    []disclosure.Entry
	}{
		{"nothing", alice, nil, nil},
		{"no patient asked for", "", flow(msg1, "", "adt", "ehr", "direct-care", "direct-care", "permit", "r", nil), nil},
		{"permit", alice, flow(msg1, alice, "adt", "ehr", "direct-care", "direct-care", "permit", "consent:none:route-default-permit", []string{"Encounter", "Patient"}),
			[]disclosure.Entry{{Kind: disclosure.KindRelease, Time: at(3), MessageID: msg1, Source: src, Recipient: ehr, Route: "adt",
				Purpose: "direct-care", LegalBasis: "direct-care", Classes: []string{"Encounter", "Patient"}, Decision: "permit", Rule: "consent:none:route-default-permit"}}},
		{"another patient", alice, flow(msg1, bob, "adt", "ehr", "direct-care", "direct-care", "permit", "r", nil), nil},
		{"untranslated patient", alice, flow(msg1, "", "adt", "ehr", "direct-care", "direct-care", "permit", "r", nil), nil},
		{"redacted", alice, flow(msg1, alice, "research", "registry", "research", "s251", "redact", "consent:c1", []string{"Patient"},
			audit.Record{Time: at(1), MessageID: msg1, Event: audit.Consent, Route: "research", Destination: "registry", Outcome: "withheld", Reason: "entry 2 (Observation): SEXUAL-HEALTH", Rule: "gate:protected-label:SEXUAL-HEALTH"},
			audit.Record{Time: at(1), MessageID: msg1, Event: audit.Consent, Route: "research", Destination: "registry", Outcome: "withheld", Reason: "3 more resources withheld, not listed one by one", Rule: "audit:limit"}),
			[]disclosure.Entry{{Kind: disclosure.KindRelease, Time: at(3), MessageID: msg1, Source: src, Recipient: reg, Route: "research",
				Purpose: "research", LegalBasis: "s251", Classes: []string{"Patient"}, Decision: "redact", Rule: "consent:c1", OptOutGate: true, Redacted: 4,
				Redactions: []disclosure.Redaction{
					{Outcome: "withheld", Count: 1, What: "entry 2 (Observation): SEXUAL-HEALTH", Rule: "gate:protected-label:SEXUAL-HEALTH"},
					{Outcome: "withheld", Count: 3, What: "3 more resources withheld, not listed one by one", Rule: "audit:limit"},
				}}}},
		{"refused by opt-out", alice, flow(msg1, alice, "research", "registry", "research", "s251", "deny", "gate:opt-out", nil),
			[]disclosure.Entry{{Kind: disclosure.KindRefused, Time: at(1), MessageID: msg1, Source: src, Recipient: reg, Route: "research",
				Purpose: "research", LegalBasis: "s251", Decision: "deny", Rule: "gate:opt-out", Reason: "why", OptOutGate: true}}},
		{"explicit consent skips the opt-out", alice, flow(msg1, alice, "research", "registry", "research", "explicit-consent", "permit", "consent:c9", nil),
			[]disclosure.Entry{{Kind: disclosure.KindRelease, Time: at(3), MessageID: msg1, Source: src, Recipient: reg, Route: "research",
				Purpose: "research", LegalBasis: "explicit-consent", Decision: "permit", Rule: "consent:c9"}}},
		{"unknown organisation", alice, flow(msg1, alice, "adt", "lab", "direct-care", "direct-care", "permit", "r", []string{"ADT^A01"}),
			[]disclosure.Entry{{Kind: disclosure.KindRelease, Time: at(3), MessageID: msg1, Source: src, Recipient: disclosure.Org{Name: "lab"}, Route: "adt",
				Purpose: "direct-care", LegalBasis: "direct-care", Classes: []string{"ADT^A01"}, Decision: "permit", Rule: "r"}}},
		{"two messages, one each", alice, concat(
			flow(msg2, bob, "adt", "ehr", "direct-care", "direct-care", "permit", "r", []string{"Patient"}),
			flow(msg1, alice, "adt", "ehr", "direct-care", "direct-care", "permit", "r", []string{"Patient"})),
			[]disclosure.Entry{{Kind: disclosure.KindRelease, Time: at(3), MessageID: msg1, Source: src, Recipient: ehr, Route: "adt",
				Purpose: "direct-care", LegalBasis: "direct-care", Classes: []string{"Patient"}, Decision: "permit", Rule: "r"}}},
		{"stored out of order", alice, reverse(flow(msg1, alice, "adt", "ehr", "direct-care", "direct-care", "permit", "r", []string{"Patient"})),
			[]disclosure.Entry{{Kind: disclosure.KindRelease, Time: at(3), MessageID: msg1, Source: src, Recipient: ehr, Route: "adt",
				Purpose: "direct-care", LegalBasis: "direct-care", Classes: []string{"Patient"}, Decision: "permit", Rule: "r"}}},
		{"replayed", alice, concat(
			flow(msg1, alice, "adt", "ehr", "direct-care", "direct-care", "permit", "r", []string{"Patient"}),
			shift(flow(msg1, alice, "adt", "ehr", "direct-care", "direct-care", "permit", "r2", []string{"Encounter"}), 10)),
			[]disclosure.Entry{
				{Kind: disclosure.KindRelease, Time: at(3), MessageID: msg1, Source: src, Recipient: ehr, Route: "adt",
					Purpose: "direct-care", LegalBasis: "direct-care", Classes: []string{"Patient"}, Decision: "permit", Rule: "r"},
				{Kind: disclosure.KindRelease, Time: at(13), MessageID: msg1, Source: src, Recipient: ehr, Route: "adt",
					Purpose: "direct-care", LegalBasis: "direct-care", Classes: []string{"Encounter"}, Decision: "permit", Rule: "r2"},
			}},
		{"decided again in its place before it was sent", alice, concat(
			flow(msg1, alice, "adt", "ehr", "direct-care", "direct-care", "permit", "r", []string{"Encounter", "Patient"})[:4],
			[]audit.Record{
				{Time: at(10), MessageID: msg1, Event: audit.Consent, Route: "adt", Destination: "ehr", Outcome: "redact", Rule: "consent:c2", Purpose: "direct-care", LegalBasis: "direct-care"},
				{Time: at(10), MessageID: msg1, Event: audit.Replayed, Route: "adt", Destination: "ehr", Outcome: audit.OutcomeRedecided, Classes: []string{"Patient"}},
				{Time: at(11), MessageID: msg1, Event: audit.Delivered, Route: "adt", Destination: "ehr", Outcome: "delivered", Status: "201"},
			}),
			[]disclosure.Entry{{Kind: disclosure.KindRelease, Time: at(11), MessageID: msg1, Source: src, Recipient: ehr, Route: "adt",
				Purpose: "direct-care", LegalBasis: "direct-care", Classes: []string{"Patient"}, Decision: "redact", Rule: "consent:c2"}}},
		{"delivered by a process whose clock is behind", alice, concat(
			flow(msg1, alice, "adt", "ehr", "direct-care", "direct-care", "permit", "r", []string{"Patient"})[:4],
			[]audit.Record{{Time: at(1).Add(-time.Second / 2), MessageID: msg1, Event: audit.Delivered, Route: "adt", Destination: "ehr", Outcome: "delivered", Status: "201"}}),
			[]disclosure.Entry{{Kind: disclosure.KindRelease, Time: at(1).Add(-time.Second / 2), MessageID: msg1, Source: src, Recipient: ehr, Route: "adt",
				Purpose: "direct-care", LegalBasis: "direct-care", Classes: []string{"Patient"}, Decision: "permit", Rule: "r"}}},
		{"resent as stored by an operator", alice, concat(
			flow(msg1, alice, "adt", "ehr", "direct-care", "direct-care", "permit", "r", []string{"Patient"})[:4],
			[]audit.Record{
				{Time: at(10), MessageID: msg1, Event: audit.Replayed, Route: "adt", Destination: "ehr", Outcome: audit.OutcomeResentAsStored},
				{Time: at(11), MessageID: msg1, Event: audit.Delivered, Route: "adt", Destination: "ehr", Outcome: "delivered", Status: "201"},
			}),
			[]disclosure.Entry{{Kind: disclosure.KindRelease, Time: at(11), MessageID: msg1, Source: src, Recipient: ehr, Route: "adt",
				Purpose: "direct-care", LegalBasis: "direct-care", Classes: []string{"Patient"}, Decision: "permit", Rule: "r", ResentAsStored: true}}},
		{"organisations as they were when consent decided", alice, func() []audit.Record {
			recs := flow(msg1, alice, "adt", "ehr", "direct-care", "direct-care", "permit", "r", []string{"Patient"})
			recs[2].RecipientODS, recs[2].SourceODS = "RX9", "RX8"
			return recs
		}(),
			[]disclosure.Entry{{Kind: disclosure.KindRelease, Time: at(3), MessageID: msg1, Source: disclosure.Org{Name: "pas", ODS: "RX8"}, Recipient: disclosure.Org{Name: "ehr", ODS: "RX9"}, Route: "adt",
				Purpose: "direct-care", LegalBasis: "direct-care", Classes: []string{"Patient"}, Decision: "permit", Rule: "r"}}},
		{"queued, not delivered", alice, flow(msg1, alice, "adt", "ehr", "direct-care", "direct-care", "permit", "r", []string{"Patient"})[:4], nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := disclosure.NewBuilder(tc.patient, dir)
			for _, r := range tc.recs {
				b.Mark(r)
			}
			for _, r := range tc.recs {
				b.Add(r)
			}
			if diff := cmp.Diff(tc.want, b.Entries()); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApply(t *testing.T) {
	care := disclosure.Entry{Kind: disclosure.KindRelease, MessageID: msg1, Recipient: disclosure.Org{Name: "ehr"}, Purpose: "direct-care", Time: at(1),
		Rule: "consent:c1", Redacted: 1, Redactions: []disclosure.Redaction{{Outcome: "withheld", Count: 1, What: "entry 2 (Observation): SEXUAL-HEALTH"}}}
	proxied := care
	proxied.Rule, proxied.Redactions = "", nil
	sg := disclosure.Entry{Kind: disclosure.KindRelease, MessageID: msg1, Recipient: disclosure.Org{Name: "social-care"}, Purpose: "safeguarding", Time: at(2)}
	w := disclosure.Withholding{MessageID: msg1, Destination: "ehr", Exemption: "serious harm", Reason: "clinician's decision"}
	marked := care
	marked.Withheld = &w
	entries := []disclosure.Entry{care, sg}
	tests := []struct {
		name     string
		withheld []disclosure.Withholding
		view     disclosure.View
		want     []disclosure.Entry
	}{
		{"patient", nil, disclosure.View{}, []disclosure.Entry{care, sg}},
		{"patient, withheld", []disclosure.Withholding{w}, disclosure.View{}, []disclosure.Entry{sg}},
		{"auditor, withheld", []disclosure.Withholding{w}, disclosure.View{Auditor: true}, []disclosure.Entry{marked, sg}},
		{"proxy", nil, disclosure.View{Proxy: true}, []disclosure.Entry{proxied}},
		{"proxy with safeguarding", nil, disclosure.View{Proxy: true, IncludeSafeguarding: true}, []disclosure.Entry{proxied, sg}},
		{"other destination not withheld", []disclosure.Withholding{{MessageID: msg1, Destination: "lab"}}, disclosure.View{}, []disclosure.Entry{care, sg}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, disclosure.Apply(entries, tc.withheld, tc.view)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if got := disclosure.Within(entries, at(2), at(5)); len(got) != 1 || got[0].Purpose != "safeguarding" {
		t.Errorf("Within = %v, want the safeguarding entry only", got)
	}
}

func TestWithholdingValidate(t *testing.T) {
	ok := disclosure.Withholding{MessageID: msg1, Destination: "ehr", Exemption: "DPA 2018 Sch 3 Part 2 para 5 (serious harm)", Reason: "decided by the responsible clinician"}
	tests := []struct {
		name   string
		modify func(*disclosure.Withholding)
		want   string
	}{
		{"valid", func(*disclosure.Withholding) {}, ""},
		{"no message", func(w *disclosure.Withholding) { w.MessageID = "" }, "message_id"},
		{"bad destination", func(w *disclosure.Withholding) { w.Destination = "a/b" }, "destination"},
		{"no exemption", func(w *disclosure.Withholding) { w.Exemption = "" }, "exemption"},
		{"control characters", func(w *disclosure.Withholding) { w.Reason = "a\x00b" }, "reason"},
		{"reason too long", func(w *disclosure.Withholding) { w.Reason = strings.Repeat("x", 2001) }, "reason"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := ok
			tc.modify(&w)
			err := w.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	rep := &disclosure.Report{From: at(0), To: at(10), View: "auditor", Entries: []disclosure.Entry{{
		Kind: disclosure.KindRefused, Time: at(1), MessageID: msg1, Recipient: disclosure.Org{Name: "ehr"}, Route: "adt",
		Reason: `<script>alert("x")</script>`, Rule: "=HYPERLINK(1)",
		Withheld: &disclosure.Withholding{Exemption: "<b>harm</b>", Reason: "a & b"},
	}}}
	t.Run("html escapes", func(t *testing.T) {
		var buf bytes.Buffer
		if err := disclosure.Write(&buf, rep, disclosure.FormatHTML); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		for _, bad := range []string{"<script>", "<b>harm", "a & b"} {
			if strings.Contains(out, bad) {
				t.Errorf("html holds %q unescaped", bad)
			}
		}
		if !strings.Contains(out, "&lt;script&gt;") {
			t.Error("html lost the escaped reason")
		}
	})
	t.Run("csv", func(t *testing.T) {
		var buf bytes.Buffer
		if err := disclosure.Write(&buf, rep, disclosure.FormatCSV); err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(&buf).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 2 {
			t.Fatalf("%d rows, want header and one entry", len(rows))
		}
		row := map[string]string{}
		for i, h := range rows[0] {
			row[h] = rows[1][i]
		}
		want := map[string]string{"kind": "refused", "message_id": msg1, "recipient": "ehr", "rule": "'=HYPERLINK(1)", "withheld_exemption": "<b>harm</b>"}
		for k, v := range want {
			if row[k] != v {
				t.Errorf("csv %s = %q, want %q", k, row[k], v)
			}
		}
	})
	t.Run("json empty", func(t *testing.T) {
		var buf bytes.Buffer
		if err := disclosure.Write(&buf, &disclosure.Report{}, disclosure.FormatJSON); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), `"entries": []`) {
			t.Errorf("json without entries: %s", buf.String())
		}
	})
	t.Run("unknown", func(t *testing.T) {
		if err := disclosure.Write(&bytes.Buffer{}, rep, "pdf"); err == nil {
			t.Error("Write pdf succeeded")
		}
	})
}

func TestStore(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(ctx, store.DefaultConfig(), t.TempDir(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if got, err := disclosure.ReadWithheld(ctx, s.JS, alice); err != nil || got != nil {
		t.Fatalf("ReadWithheld before the bucket = %v, %v; want none", got, err)
	}
	st, err := disclosure.OpenStore(ctx, s.JS, bucket.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	w1 := disclosure.Withholding{MessageID: msg1, Destination: "ehr", Exemption: "serious harm", Reason: "first", Time: at(0)}
	w2 := disclosure.Withholding{MessageID: msg2, Destination: "ehr", Exemption: "serious harm", Reason: "second", Time: at(1)}
	w1b := w1
	w1b.Reason = "revised"
	for _, w := range []disclosure.Withholding{w1, w2, w1b} {
		if err := st.Withhold(ctx, alice, w); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Withhold(ctx, alice, disclosure.Withholding{}); err == nil {
		t.Error("Withhold accepted an empty withholding")
	}
	got, err := disclosure.ReadWithheld(ctx, s.JS, alice)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]disclosure.Withholding{w2, w1b}, got); diff != "" {
		t.Errorf("alice's withholdings (-want +got):\n%s", diff)
	}
	if got, err := st.Withheld(ctx, bob); err != nil || len(got) != 0 {
		t.Errorf("bob's withholdings = %v, %v; want none", got, err)
	}
}
