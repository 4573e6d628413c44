package audit

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/jserr"
)

// Terminal outcomes of an accepted message. Every message Junction
// accepts must end in one of them; anything else is still in flight or
// an orphan.
const (
	OutcomeDelivered     = "delivered"
	OutcomeDeadLettered  = "dead_lettered"
	OutcomeConsentDenied = "consent_denied"
	OutcomeFiltered      = "filtered"
	OutcomeDuplicate     = "duplicate"
)

// Outcomes of a queued payload whose patient's consent changed while it
// waited (see router.Options.ConsentChanges).
const (
	// OutcomeRedecided is the outcome of the replayed record of a payload
	// whose consent was decided again before it was sent: what the new
	// decision made is sent in its place (SentSeq locates it), and its
	// delivery, or dead letter, ends it. Not terminal.
	OutcomeRedecided = "redecided-consent-changed"
	// OutcomeWithheld is the outcome of the filtered record of a payload
	// the new decision no longer permits: it ends the payload unsent.
	OutcomeWithheld = "withheld-consent-changed"
	// OutcomeRerouted is the outcome of the replayed record of a payload
	// that an earlier build routed again instead (its new routing decides
	// its fate). Not terminal; kept so older trails reconcile.
	OutcomeRerouted = "rerouted-consent-changed"
)

// OutcomeResentAsStored is the outcome of the replayed record of a
// delivery dead letter an operator resent as it was stored, its input
// being gone: consent was not decided again, so what is sent goes on the
// operator's word rather than a fresh decision. Not terminal.
const OutcomeResentAsStored = "resent-as-stored"

// Accepted is a message Junction stored and acknowledged.
type Accepted struct {
	ID       string    `json:"id"`
	Source   string    `json:"source"`
	Received time.Time `json:"received"`
	// Duplicate marks a resend the store recognised: it ends there.
	Duplicate bool `json:"duplicate,omitempty"`
	// Unsplit marks a message still waiting in the ingest log.
	Unsplit bool `json:"unsplit,omitempty"`
	// Stored is when the store took it for routing (the stream message's
	// time), what decides which routes could see it; zero when unknown.
	Stored time.Time `json:"stored,omitzero"`
}

// Pending is an accepted message without a terminal state.
type Pending struct {
	ID       string    `json:"id"`
	Source   string    `json:"source"`
	Received time.Time `json:"received"`
	// Waiting says what the message waits for, such as "route adt" or
	// "delivery adt -> ehr".
	Waiting []string `json:"waiting"`
}

// waitingDelivery is what Pending.Waiting says of a delivery not yet
// finished: "delivery ROUTE -> DESTINATION".
func waitingDelivery(route, destination string) string {
	return "delivery " + route + " -> " + destination
}

// WaitsForDestination reports whether w, an entry of Pending.Waiting,
// waits for a delivery to destination.
func WaitsForDestination(w, destination string) bool {
	return strings.HasPrefix(w, "delivery ") && strings.HasSuffix(w, " -> "+destination)
}

// WaitsFor reports whether p waits for a delivery to destination.
func (p Pending) WaitsFor(destination string) bool {
	return slices.ContainsFunc(p.Waiting, func(w string) bool { return WaitsForDestination(w, destination) })
}

// Reconciliation is the fate of every accepted message.
type Reconciliation struct {
	Accepted int `json:"accepted"`
	// Terminal counts the messages that have finished (Accepted less
	// those Pending) by each outcome they reached: delivered,
	// dead-lettered and consent-denied at any destination they were routed
	// to (dead-lettered also at routing), filtered when they went to no
	// destination at all, or duplicate. A message delivered to one
	// destination and dead-lettered at another counts under both, so the
	// counts can add up to more than the finished messages.
	Terminal map[string]int `json:"terminal"`
	// Pending lists the others, oldest first.
	Pending []Pending `json:"pending"`
	// Since, when set, is the start of the window reconciled: only the
	// messages received at or after it are counted.
	Since time.Time `json:"since,omitzero"`
	// Until, when set, is the end of the window reconciled: only the
	// messages received before it are counted.
	Until time.Time `json:"until,omitzero"`
	// Unreadable lists the runs of audit stream messages the store
	// counts but cannot produce (its files are damaged there). The
	// records they held are missing from the reconciliation, so a
	// message whose outcome was recorded there shows as pending.
	Unreadable []SeqRange `json:"unreadable,omitempty"`
	// IngestLogLost lists the runs of ingest log batches the store lost,
	// or counts but cannot read (its files were damaged), before routing
	// took them, with when the batches either side were written (the
	// lost ones were acknowledged between): the acknowledged messages in
	// them are missing from the reconciliation, and how many there were
	// cannot be known. Only runs after the accept stage's position are
	// seen: once it has taken a batch after a run, the run is no longer
	// listed.
	IngestLogLost []jserr.Run `json:"ingest_log_lost,omitempty"`
	// IngressUnreadable lists the runs of ingress stream messages the
	// store counts but cannot read, or no longer holds (its files are
	// damaged there, or were, and the server dropped what it could not
	// read), with when the messages either side were stored. Messages
	// stored for routing there are counted only when the ingest log
	// still holds their batch: by their audit records, never as resends.
	IngressUnreadable []jserr.Run `json:"ingress_unreadable,omitempty"`
}

// routeState is what the records say of one message on one route.
type routeState struct {
	decided  Event // the last of Matched, Filtered or DeadLettered (route stage)
	queued   map[string]int
	finished map[string]int // delivered or dead-lettered, by destination
	outcome  map[string]Event
	denied   map[string]bool // consent refused, by destination, at the last routing
	// decisions counts the route's routings of the message, and reroutes
	// the queued payloads (destination and outbound sequence) routed
	// again because consent changed: each asks for one more routing.
	// Counted, not ordered, so clocks out of step between processes and
	// a record written twice do not leave the message waiting.
	decisions int
	reroutes  map[string]bool
	// withheld are the queued payloads (destination and outbound
	// sequence) that deciding consent again refused: each is finished.
	withheld map[string]bool
}

// Reconcile decides the state of each accepted message from its audit
// records. routes maps each source to the routes that read it; a message
// is terminal when every such route has decided it (filtered, not taken,
// dead-lettered at routing, or matched) and every destination it was
// queued for has as many deliveries or dead letters as queueings (a
// replay queues again). A terminal message counts under every outcome it
// reached (see Reconciliation.Terminal).
//
// since maps a route to when it started taking messages (its consumers'
// creation; absent or zero: always): a route added later never sees the
// messages accepted before it, so it is not waited for on them. A route
// no longer loaded still counts for the messages it has records of, so
// its dead letters do not drop out.
func Reconcile(accepted []Accepted, recs []Record, routes map[string][]string, since map[string]time.Time) Reconciliation {
	l := NewLedger()
	for i := range recs {
		l.Add(&recs[i])
	}
	return l.Reconcile(accepted, routes, since)
}

// Ledger gathers audit records for Reconcile, keeping of each only the
// part that decides a message's fate, packed into 32 bytes (a step), so
// reconciling a large store holds a small part of the memory its records
// would: reconciling 134,000 messages by their 1.3 million records whole
// took the engine's resident memory from 230 MiB to 1.4 GiB.
type Ledger struct {
	byID map[string][]step
	// names holds each route, destination, event and outcome once, by
	// the index a step gives it; index is its reverse.
	names []string
	index map[string]uint32
	// buf is reused to unpack one message's steps at a time, and
	// scanned to read one JSON array of records.
	buf     []fact
	scanned []ledgerFields
}

// step is a packed fact: its time as Unix nanoseconds and its names as
// indexes into Ledger.names.
type step struct {
	time                               int64
	seq                                uint64
	event, route, destination, outcome uint32
}

// fact is the part of a record that Reconcile decides by.
type fact struct {
	time        time.Time
	seq         uint64
	event       Event
	route       string
	destination string
	outcome     string
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{byID: map[string][]step{}, names: []string{""}, index: map[string]uint32{"": 0}}
}

// Add keeps what r says of its message's fate.
func (l *Ledger) Add(r *Record) {
	s := step{time: unixNanos(r.Time), seq: r.Seq, event: l.name(string(r.Event)), route: l.name(r.Route),
		destination: l.name(r.Destination), outcome: l.name(r.Outcome)}
	l.byID[r.MessageID] = append(l.byID[r.MessageID], s)
}

// unixNanos is t as a step holds it: a record without a time sorts
// first, as the zero time does.
func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixNano()
}

// AddJSON keeps what each record of data, a JSON array of records as the
// audit stream holds them, says of its message's fate, for the messages
// keep says to (all, when nil). It decodes only the fields that decide
// it, and adds nothing when data does not decode.
func (l *Ledger) AddJSON(data []byte, keep func(id string) bool) error {
	fs, ok := scanLedgerFields(data, l.scanned[:0])
	defer func() {
		clear(fs) // drop the references into data
		l.scanned = fs[:0]
	}()
	if !ok {
		return l.addJSONDecoded(data, keep)
	}
	for i := range fs {
		f := &fs[i]
		id := string(f.id)
		if keep != nil && !keep(id) {
			continue
		}
		s := step{time: f.nanos, seq: f.seq, event: l.nameOf(f.event), route: l.nameOf(f.route),
			destination: l.nameOf(f.destination), outcome: l.nameOf(f.outcome)}
		l.byID[id] = append(l.byID[id], s)
	}
	return nil
}

// addJSONDecoded is AddJSON by encoding/json, for what
// scanLedgerFields leaves to it.
func (l *Ledger) addJSONDecoded(data []byte, keep func(id string) bool) error {
	var rs []struct {
		Time        time.Time `json:"time"`
		MessageID   string    `json:"message_id"`
		Event       Event     `json:"event"`
		Route       string    `json:"route"`
		Destination string    `json:"destination"`
		Outcome     string    `json:"outcome"`
		Seq         uint64    `json:"seq"`
	}
	if err := json.Unmarshal(data, &rs); err != nil {
		return fmt.Errorf("decoding audit records: %w", err)
	}
	for i := range rs {
		r := &rs[i]
		if keep != nil && !keep(r.MessageID) {
			continue
		}
		l.Add(&Record{Time: r.Time, MessageID: r.MessageID, Event: r.Event, Route: r.Route, Destination: r.Destination, Outcome: r.Outcome, Seq: r.Seq})
	}
	return nil
}

// nameOf is name for a name still in bytes, allocating only a new one.
func (l *Ledger) nameOf(b []byte) uint32 {
	if i, ok := l.index[string(b)]; ok {
		return i
	}
	return l.name(string(b))
}

// name returns s's index in l.names, adding it if new.
func (l *Ledger) name(s string) uint32 {
	if i, ok := l.index[s]; ok {
		return i
	}
	i := uint32(len(l.names))
	l.names = append(l.names, s)
	l.index[s] = i
	return i
}

// facts unpacks the steps of message id into l.buf, good until the next
// call.
func (l *Ledger) facts(id string) []fact {
	l.buf = l.buf[:0]
	for _, s := range l.byID[id] {
		l.buf = append(l.buf, fact{time: time.Unix(0, s.time), seq: s.seq, event: Event(l.names[s.event]),
			route: l.names[s.route], destination: l.names[s.destination], outcome: l.names[s.outcome]})
	}
	return l.buf
}

// Reconcile is Reconcile with the ledger's records.
func (l *Ledger) Reconcile(accepted []Accepted, routes map[string][]string, since map[string]time.Time) Reconciliation {
	out := Reconciliation{Terminal: map[string]int{}}
	seen := map[string]bool{}
	for _, a := range accepted {
		if seen[a.ID] {
			continue
		}
		seen[a.ID] = true
		out.Accepted++
		if a.Duplicate {
			out.Terminal[OutcomeDuplicate]++
			continue
		}
		if a.Unsplit {
			out.Pending = append(out.Pending, Pending{ID: a.ID, Source: a.Source, Received: a.Received, Waiting: []string{"ingest splitter"}})
			continue
		}
		es := l.facts(a.ID)
		outcomes, waiting := fate(es, routesFor(a, es, routes[a.Source], since))
		if len(waiting) > 0 {
			out.Pending = append(out.Pending, Pending{ID: a.ID, Source: a.Source, Received: a.Received, Waiting: waiting})
			continue
		}
		for _, o := range outcomes {
			out.Terminal[o]++
		}
	}
	sort.SliceStable(out.Pending, func(i, j int) bool { return out.Pending[i].Received.Before(out.Pending[j].Received) })
	return out
}

// Fate returns, as Reconcile decides it for message a from its records
// recs, every outcome a reached, or what it still waits for. loaded are
// the routes of its source and since as for Reconcile.
func Fate(a Accepted, recs []Record, loaded []string, since map[string]time.Time) (outcomes, waiting []string) {
	es := make([]fact, len(recs))
	for i := range recs {
		r := &recs[i]
		es[i] = fact{time: r.Time, seq: r.Seq, event: r.Event, route: r.Route, destination: r.Destination, outcome: r.Outcome}
	}
	return fate(es, routesFor(a, es, loaded, since))
}

// routesFor returns the routes that decide message a: the loaded routes
// of its source that were taking messages when it was stored for routing
// (all of them when that time is unknown), and every route, loaded or
// not, that has records of it.
func routesFor(a Accepted, recs []fact, loaded []string, since map[string]time.Time) []string {
	var out []string
	seen := map[string]bool{}
	for _, rt := range loaded {
		if t := since[rt]; t.IsZero() || a.Stored.IsZero() || !a.Stored.Before(t) {
			out = append(out, rt)
			seen[rt] = true
		}
	}
	for _, r := range recs {
		if r.route != "" && !seen[r.route] {
			out = append(out, r.route)
			seen[r.route] = true
		}
	}
	return out
}

// fate returns every outcome a message reached, at least one, or what it
// still waits for.
func fate(recs []fact, routes []string) ([]string, []string) {
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].time.Before(recs[j].time) })
	if len(routes) == 0 {
		for _, r := range recs {
			if r.event == Filtered && r.route == "" {
				return []string{OutcomeFiltered}, nil
			}
		}
		return nil, []string{"receipt record"}
	}
	states := map[string]*routeState{}
	for _, rt := range routes {
		states[rt] = &routeState{queued: map[string]int{}, finished: map[string]int{}, outcome: map[string]Event{}, denied: map[string]bool{}, reroutes: map[string]bool{}, withheld: map[string]bool{}}
	}
	for _, r := range recs {
		st := states[r.route]
		if st == nil {
			continue // a record of no route (receipt)
		}
		switch {
		case r.destination == "" && (r.event == Matched || r.event == Filtered || r.event == DeadLettered):
			st.decided = r.event
			st.decisions++
			if r.event == Matched {
				// Routed again (a replay): consent is decided afresh.
				clear(st.denied)
			}
		case r.destination != "" && r.event == Queued:
			st.queued[r.destination]++
		case r.destination != "" && r.event == Replayed && r.outcome == OutcomeRerouted:
			// Not sent as queued: consent changed while it waited, so it
			// is routed again for this destination, and that routing
			// decides (until it does, the route is waited for).
			if key := r.destination + "|" + strconv.FormatUint(r.seq, 10); !st.reroutes[key] {
				st.reroutes[key] = true
				st.finished[r.destination]++
			}
		case r.destination != "" && r.event == Filtered && r.outcome == OutcomeWithheld:
			// Not sent: deciding again refused it; the consent records
			// of that decision say why.
			if key := r.destination + "|" + strconv.FormatUint(r.seq, 10); !st.withheld[key] {
				st.withheld[key] = true
				st.finished[r.destination]++
			}
		case r.destination != "" && (r.event == Delivered || r.event == DeadLettered):
			st.finished[r.destination]++
			st.outcome[r.destination] = r.event
		case r.destination != "" && r.event == Consent && r.outcome == "deny":
			st.denied[r.destination] = true
		}
	}
	var waiting []string
	reached := map[string]bool{}
	for _, rt := range routes {
		st := states[rt]
		if st.decisions < 1+len(st.reroutes) {
			waiting = append(waiting, "route "+rt)
			continue
		}
		switch st.decided {
		case Filtered:
			continue
		case DeadLettered:
			reached[OutcomeDeadLettered] = true
			continue
		}
		if len(st.denied) > 0 {
			reached[OutcomeConsentDenied] = true
		}
		dests := make([]string, 0, len(st.queued))
		for d := range st.queued {
			dests = append(dests, d)
		}
		sort.Strings(dests)
		for _, d := range dests {
			if st.finished[d] < st.queued[d] {
				waiting = append(waiting, waitingDelivery(rt, d))
				continue
			}
			switch st.outcome[d] {
			case Delivered:
				reached[OutcomeDelivered] = true
			case DeadLettered:
				reached[OutcomeDeadLettered] = true
			}
		}
	}
	if len(waiting) > 0 {
		return nil, waiting
	}
	var outcomes []string
	for _, o := range []string{OutcomeDelivered, OutcomeDeadLettered, OutcomeConsentDenied} {
		if reached[o] {
			outcomes = append(outcomes, o)
		}
	}
	if len(outcomes) == 0 {
		// Every route filtered it, took it not, or sent it nowhere.
		outcomes = []string{OutcomeFiltered}
	}
	return outcomes, nil
}
