package audit

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestReconcile(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	rec := func(s int, id string, ev Event, route, dest, outcome string) Record {
		return Record{Time: at(s), MessageID: id, Event: ev, Route: route, Destination: dest, Outcome: outcome}
	}
	routes := map[string][]string{"pas": {"adt", "dq"}, "fhir": {"in"}, "ris": {"ris-in", "late"}}
	since := map[string]time.Time{"late": at(10)}
	type want struct {
		terminal map[string]int
		pending  map[string][]string // id -> waiting
	}
	for _, tc := range []struct {
		name     string
		accepted []Accepted
		recs     []Record
		want     want
	}{
		{
			name:     "delivered on one route, filtered on the other",
			accepted: []Accepted{{ID: "m1", Source: "pas"}},
			recs: []Record{
				rec(1, "m1", Received, "", "", "stored"),
				rec(2, "m1", Matched, "adt", "", "matched"), rec(2, "m1", Queued, "adt", "ehr", "queued"),
				rec(2, "m1", Filtered, "dq", "", "filtered"),
				rec(3, "m1", Delivered, "adt", "ehr", "delivered"),
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 1}},
		},
		{
			name:     "a route has not run yet",
			accepted: []Accepted{{ID: "m1", Source: "pas"}},
			recs:     []Record{rec(1, "m1", Received, "", "", "stored"), rec(2, "m1", Filtered, "dq", "", "filtered")},
			want:     want{pending: map[string][]string{"m1": {"route adt"}}},
		},
		{
			name:     "queued but not delivered",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "b", "queued"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(3, "m1", Delivered, "in", "b", "delivered"),
				rec(3, "m1", Failed, "in", "a", "transient"),
			},
			want: want{pending: map[string][]string{"m1": {"delivery in -> a"}}},
		},
		{
			name:     "dead-lettered at delivery",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(3, "m1", Failed, "in", "a", "permanent"), rec(3, "m1", DeadLettered, "in", "a", "dead_lettered"),
			},
			want: want{terminal: map[string]int{OutcomeDeadLettered: 1}},
		},
		{
			name:     "replayed after a dead letter and not yet delivered",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(3, "m1", DeadLettered, "in", "a", "dead_lettered"),
				rec(9, "m1", Replayed, "in", "a", "replayed"), rec(9, "m1", Queued, "in", "a", "queued"),
			},
			want: want{pending: map[string][]string{"m1": {"delivery in -> a"}}},
		},
		{
			name:     "dead-lettered at routing, then replayed and delivered",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Failed, "in", "", "permanent"), rec(2, "m1", DeadLettered, "in", "", "dead_lettered"),
				rec(8, "m1", Matched, "in", "", "matched"), rec(8, "m1", Queued, "in", "a", "queued"),
				rec(9, "m1", Delivered, "in", "a", "delivered"),
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 1}},
		},
		{
			name:     "consent changed while queued, routed again, not yet decided",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(3, "m1", Failed, "in", "a", "transient"),
				rec(9, "m1", Replayed, "in", "a", OutcomeRerouted),
			},
			want: want{pending: map[string][]string{"m1": {"route in"}}},
		},
		{
			name:     "consent changed while queued, routed again and denied",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(9, "m1", Replayed, "in", "a", OutcomeRerouted),
				rec(10, "m1", Matched, "in", "", "matched"), rec(10, "m1", Consent, "in", "a", "deny"),
			},
			want: want{terminal: map[string]int{OutcomeConsentDenied: 1}},
		},
		{
			name:     "consent changed while queued, routed again and delivered",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(9, "m1", Replayed, "in", "a", OutcomeRerouted),
				rec(10, "m1", Matched, "in", "", "matched"), rec(10, "m1", Queued, "in", "a", "queued"),
				rec(11, "m1", Delivered, "in", "a", "delivered"),
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 1}},
		},
		{
			// Another process, its clock behind, stamped the new routing
			// before the replayed record.
			name:     "consent changed while queued, routed again by a process whose clock is behind",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(9, "m1", Replayed, "in", "a", OutcomeRerouted),
				rec(8, "m1", Matched, "in", "", "matched"), rec(8, "m1", Queued, "in", "a", "queued"),
				rec(10, "m1", Delivered, "in", "a", "delivered"),
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 1}},
		},
		{
			name:     "consent changed while queued, the replayed record written twice",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(9, "m1", Replayed, "in", "a", OutcomeRerouted), rec(9, "m1", Replayed, "in", "a", OutcomeRerouted),
				rec(10, "m1", Matched, "in", "", "matched"), rec(10, "m1", Queued, "in", "a", "queued"),
				rec(11, "m1", Delivered, "in", "a", "delivered"),
				rec(12, "m1", Replayed, "in", "a", OutcomeRerouted), // again, after the delivery
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 1}},
		},
		{
			name:     "consent changed while queued, decided again and withheld",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(3, "m1", Failed, "in", "a", "transient"),
				rec(9, "m1", Matched, "in", "", "matched"), rec(9, "m1", Consent, "in", "a", "deny"),
				rec(9, "m1", Filtered, "in", "a", OutcomeWithheld),
			},
			want: want{terminal: map[string]int{OutcomeConsentDenied: 1}},
		},
		{
			// The withheld record of one payload, written twice, finishes
			// it once: a replay's payload to the same destination still
			// waits.
			name:     "consent changed while queued, withheld twice (a lost acknowledgement)",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(9, "m1", Matched, "in", "", "matched"), rec(9, "m1", Consent, "in", "a", "deny"),
				rec(9, "m1", Filtered, "in", "a", OutcomeWithheld), rec(10, "m1", Filtered, "in", "a", OutcomeWithheld),
				rec(11, "m1", Replayed, "in", "", "rerouted"), rec(12, "m1", Matched, "in", "", "matched"), rec(12, "m1", Queued, "in", "a", "queued"),
			},
			want: want{pending: map[string][]string{"m1": {"delivery in -> a"}}},
		},
		{
			name:     "consent changed while queued, decided again, not yet sent",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(9, "m1", Matched, "in", "", "matched"), rec(9, "m1", Consent, "in", "a", "permit"),
				rec(9, "m1", Replayed, "in", "a", OutcomeRedecided),
				rec(10, "m1", Failed, "in", "a", "transient"),
			},
			want: want{pending: map[string][]string{"m1": {"delivery in -> a"}}},
		},
		{
			name:     "consent changed while queued, decided again and sent in its place",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(9, "m1", Matched, "in", "", "matched"), rec(9, "m1", Consent, "in", "a", "permit"),
				rec(9, "m1", Replayed, "in", "a", OutcomeRedecided),
				rec(10, "m1", Delivered, "in", "a", "delivered"),
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 1}},
		},
		{
			name:     "consent denied everywhere",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs:     []Record{rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Consent, "in", "a", "deny")},
			want:     want{terminal: map[string]int{OutcomeConsentDenied: 1}},
		},
		{
			// Each message went to three destinations: delivered at one,
			// refused at another and unreachable at the third.
			name:     "delivered at one destination, dead-lettered at the others",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}, {ID: "m2", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"),
				rec(2, "m1", Queued, "in", "fhir-store", "queued"), rec(2, "m1", Queued, "in", "ehr", "queued"), rec(2, "m1", Queued, "in", "deadhost", "queued"),
				rec(3, "m1", Delivered, "in", "fhir-store", "delivered"),
				rec(3, "m1", Failed, "in", "ehr", "permanent"), rec(3, "m1", DeadLettered, "in", "ehr", "dead_lettered"),
				rec(9, "m1", Failed, "in", "deadhost", "transient"), rec(9, "m1", DeadLettered, "in", "deadhost", "dead_lettered"),
				rec(2, "m2", Matched, "in", "", "matched"),
				rec(2, "m2", Queued, "in", "fhir-store", "queued"), rec(2, "m2", Queued, "in", "ehr", "queued"), rec(2, "m2", Queued, "in", "deadhost", "queued"),
				rec(3, "m2", Delivered, "in", "fhir-store", "delivered"),
				rec(3, "m2", Failed, "in", "ehr", "permanent"), rec(3, "m2", DeadLettered, "in", "ehr", "dead_lettered"),
				rec(9, "m2", Failed, "in", "deadhost", "transient"), rec(9, "m2", DeadLettered, "in", "deadhost", "dead_lettered"),
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 2, OutcomeDeadLettered: 2}},
		},
		{
			name:     "delivered and dead-lettered, a third destination still retrying",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"),
				rec(2, "m1", Queued, "in", "fhir-store", "queued"), rec(2, "m1", Queued, "in", "ehr", "queued"), rec(2, "m1", Queued, "in", "deadhost", "queued"),
				rec(3, "m1", Delivered, "in", "fhir-store", "delivered"),
				rec(3, "m1", DeadLettered, "in", "ehr", "dead_lettered"),
				rec(4, "m1", Failed, "in", "deadhost", "transient"),
			},
			want: want{pending: map[string][]string{"m1": {"delivery in -> deadhost"}}},
		},
		{
			name:     "queued for two destinations, delivered at one, nothing yet at the other",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"), rec(2, "m1", Queued, "in", "b", "queued"),
				rec(3, "m1", Delivered, "in", "a", "delivered"),
			},
			want: want{pending: map[string][]string{"m1": {"delivery in -> b"}}},
		},
		{
			name:     "delivered on one route, dead-lettered at routing on the other",
			accepted: []Accepted{{ID: "m1", Source: "pas"}},
			recs: []Record{
				rec(2, "m1", Matched, "adt", "", "matched"), rec(2, "m1", Queued, "adt", "ehr", "queued"),
				rec(2, "m1", Failed, "dq", "", "permanent"), rec(2, "m1", DeadLettered, "dq", "", "dead_lettered"),
				rec(3, "m1", Delivered, "adt", "ehr", "delivered"),
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 1, OutcomeDeadLettered: 1}},
		},
		{
			name:     "consent denied at one destination, delivered at another",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"),
				rec(2, "m1", Consent, "in", "a", "deny"), rec(2, "m1", Consent, "in", "b", "permit"), rec(2, "m1", Queued, "in", "b", "queued"),
				rec(3, "m1", Delivered, "in", "b", "delivered"),
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 1, OutcomeConsentDenied: 1}},
		},
		{
			name:     "consent denied, then routed again and delivered",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Consent, "in", "a", "deny"),
				rec(8, "m1", Matched, "in", "", "matched"), rec(8, "m1", Consent, "in", "a", "permit"), rec(8, "m1", Queued, "in", "a", "queued"),
				rec(9, "m1", Delivered, "in", "a", "delivered"),
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 1}},
		},
		{
			name:     "dead-lettered, replayed and delivered",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Queued, "in", "a", "queued"),
				rec(3, "m1", DeadLettered, "in", "a", "dead_lettered"),
				rec(9, "m1", Replayed, "in", "a", "replayed"), rec(9, "m1", Queued, "in", "a", "queued"),
				rec(10, "m1", Delivered, "in", "a", "delivered"),
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 1}},
		},
		{
			name:     "matched but sent to no destination",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs:     []Record{rec(2, "m1", Matched, "in", "", "matched"), rec(2, "m1", Filtered, "in", "a", "not-selected")},
			want:     want{terminal: map[string]int{OutcomeFiltered: 1}},
		},
		{
			name:     "no route reads the source",
			accepted: []Accepted{{ID: "m1", Source: "lab"}, {ID: "m2", Source: "lab"}},
			recs:     []Record{rec(1, "m1", Received, "", "", "stored"), rec(1, "m1", Filtered, "", "", "no-route")},
			want:     want{terminal: map[string]int{OutcomeFiltered: 1}, pending: map[string][]string{"m2": {"receipt record"}}},
		},
		{
			name:     "duplicates and unsplit input",
			accepted: []Accepted{{ID: "m1", Source: "pas", Duplicate: true}, {ID: "m2", Source: "pas", Unsplit: true}, {ID: "m1", Source: "pas", Duplicate: true}},
			want:     want{terminal: map[string]int{OutcomeDuplicate: 1}, pending: map[string][]string{"m2": {"ingest splitter"}}},
		},
		{
			// "late" was added at 10 s: it never sees m1, received
			// before, but m2, received after, waits for it.
			name:     "a route added later is not waited for on older messages",
			accepted: []Accepted{{ID: "m1", Source: "ris", Received: at(5), Stored: at(5)}, {ID: "m2", Source: "ris", Received: at(8), Stored: at(20)}},
			recs: []Record{
				rec(6, "m1", Matched, "ris-in", "", "matched"), rec(6, "m1", Queued, "ris-in", "a", "queued"), rec(7, "m1", Delivered, "ris-in", "a", "delivered"),
				rec(21, "m2", Matched, "ris-in", "", "matched"), rec(21, "m2", Queued, "ris-in", "a", "queued"), rec(22, "m2", Delivered, "ris-in", "a", "delivered"),
			},
			want: want{terminal: map[string]int{OutcomeDelivered: 1}, pending: map[string][]string{"m2": {"route late"}}},
		},
		{
			name:     "a route is waited for when the store time is unknown",
			accepted: []Accepted{{ID: "m1", Source: "ris", Received: at(5)}},
			recs:     []Record{rec(6, "m1", Filtered, "ris-in", "", "filtered")},
			want:     want{pending: map[string][]string{"m1": {"route late"}}},
		},
		{
			name:     "a route no longer loaded keeps its dead letters",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs: []Record{
				rec(2, "m1", Filtered, "in", "", "filtered"),
				rec(2, "m1", Matched, "gone", "", "matched"), rec(2, "m1", Queued, "gone", "x", "queued"), rec(3, "m1", DeadLettered, "gone", "x", "dead_lettered"),
			},
			want: want{terminal: map[string]int{OutcomeDeadLettered: 1}},
		},
		{
			name:     "records of another message change nothing",
			accepted: []Accepted{{ID: "m1", Source: "fhir"}},
			recs:     []Record{rec(2, "m2", Matched, "in", "", "matched"), rec(2, "m2", Filtered, "in", "", "filtered")},
			want:     want{pending: map[string][]string{"m1": {"route in"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Reconcile(tc.accepted, tc.recs, routes, since)
			pend := map[string][]string{}
			for _, p := range got.Pending {
				pend[p.ID] = p.Waiting
			}
			if diff := cmp.Diff(tc.want.terminal, got.Terminal, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("terminal (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want.pending, pend, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("pending (-want +got):\n%s", diff)
			}
			// Every finished message counts under at least one outcome,
			// and no outcome counts more messages than finished.
			finished, n := got.Accepted-len(got.Pending), 0
			for o, c := range got.Terminal {
				if c > finished {
					t.Errorf("%s counts %d of %d finished messages", o, c, finished)
				}
				n += c
			}
			if n < finished {
				t.Errorf("%d finished messages but only %d outcomes", finished, n)
			}
			// A ledger fed the records as the audit stream holds them,
			// in batches of two, decides the same.
			l := NewLedger()
			for i := 0; i < len(tc.recs); i += 2 {
				data, err := json.Marshal(tc.recs[i:min(i+2, len(tc.recs))])
				if err != nil {
					t.Fatal(err)
				}
				if err := l.AddJSON(data, nil); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(got, l.Reconcile(tc.accepted, routes, since), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("from the records' JSON (-records +JSON):\n%s", diff)
			}
		})
	}
}
