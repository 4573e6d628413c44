// Package telemetry holds Junction's Prometheus metrics and OpenTelemetry
// tracing. Metrics live on an injected registry; labels are bounded
// (adapter, route, destination, outcome) and never carry patient data.
package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics is every series Junction exports.
type Metrics struct {
	Received       *prometheus.CounterVec   // adapter
	Acks           *prometheus.CounterVec   // adapter, code
	Rejected       *prometheus.CounterVec   // adapter, reason
	Duplicates     *prometheus.CounterVec   // adapter
	Accepted       *prometheus.CounterVec   // adapter
	Quarantined    *prometheus.CounterVec   // adapter
	Connections    *prometheus.GaugeVec     // adapter
	Evicted        *prometheus.CounterVec   // adapter
	AckLatency     *prometheus.HistogramVec // adapter
	Commits        prometheus.Counter
	CommitMessages prometheus.Counter
	CommitLatency  prometheus.Histogram
	DataQuality    *prometheus.CounterVec // adapter, issue
	// Relayed counts messages of types an input relays untranslated,
	// read for routing.
	Relayed        *prometheus.CounterVec // adapter
	Routed         *prometheus.CounterVec // route, outcome
	Consent        *prometheus.CounterVec // route, destination, decision
	ConsentSkipped *prometheus.CounterVec // route, destination
	PatientIndex   *prometheus.CounterVec // adapter, outcome
	PDSLookups     *prometheus.CounterVec // outcome
	PDSDropped     prometheus.Counter
	Delivered      *prometheus.CounterVec   // destination, outcome
	Attempts       *prometheus.CounterVec   // destination, outcome
	SendLatency    *prometheus.HistogramVec // destination
	EndToEnd       *prometheus.HistogramVec // route, destination
	DeadLettered   *prometheus.CounterVec   // stage, name
	DeadLetters    *prometheus.GaugeVec     // stage, name: waiting, not yet replayed
	QueueDepth     *prometheus.GaugeVec     // destination
	QueueAge       *prometheus.GaugeVec     // destination
	RouteDepth     *prometheus.GaugeVec     // route
	// Backlog and BacklogRefusing are each input's backlog as
	// router.max_backlog measures it, and 1 while it refuses input.
	Backlog         *prometheus.GaugeVec   // adapter
	BacklogRefusing *prometheus.GaugeVec   // adapter
	RouteAge        *prometheus.GaugeVec   // route
	Spans           *prometheus.CounterVec // stage, name
	SpanBatches     *prometheus.CounterVec // stage, name
	QuarantineSize  prometheus.Gauge
	// IngestLogLost counts ingest log batches found gone at a start
	// before routing took them: acknowledged messages lost.
	IngestLogLost prometheus.Counter
	// FailingPartitions is the partitions whose batch a stage is
	// retrying after a failure (the store, or its audit stream, away);
	// every later message of those partitions waits behind it.
	FailingPartitions *prometheus.GaugeVec   // stage, name
	HTTPRequests      *prometheus.CounterVec // handler, code
	// HTTPConnectionsRefused counts connections closed on arrival at
	// http.max_connections.
	HTTPConnectionsRefused prometheus.Counter
	Ready                  prometheus.Gauge
	// StoreReplicas counts the store's copies of its streams by state
	// (current, catching_up, unreachable), as the store's probe last
	// saw them.
	StoreReplicas *prometheus.GaugeVec
	// StoreWritable is, per stream or bucket the store probes, whether
	// it answered as writable within the last few seconds.
	StoreWritable *prometheus.GaugeVec // name (a stream; a bucket's is KV_ and its name)
	// StreamBytes is what each of Junction's streams holds on disk, and
	// DiskFree and DiskSize the embedded store's filesystem, and
	// StoreLimit and StoreUsed the embedded store's storage limit and
	// what its streams use of it, sampled every 5 s.
	StreamBytes *prometheus.GaugeVec // name (a stream)
	DiskFree    prometheus.Gauge
	DiskSize    prometheus.Gauge
	StoreLimit  prometheus.Gauge
	StoreUsed   prometheus.Gauge

	// Accesses counts admin and audit API authorisation decisions by
	// permission, outcome and principal (a configured name).
	Accesses *prometheus.CounterVec // permission, outcome, principal

	// ReconcileMessages is what the last window the scheduled reconcile
	// checked held, by state (accepted, finished, waiting, unfinished),
	// and ReconcileWindowEnd when that window ended: both read from the
	// shared store, so every process reports the same figures.
	ReconcileMessages  *prometheus.GaugeVec // state
	ReconcileWindowEnd prometheus.Gauge
	// ReconcileUnfinished counts the messages the windows this process
	// checked found unfinished (no route decided them by the window's
	// lag), and ReconcileRuns its scheduled runs by outcome (checked,
	// failed): each window is counted by the one process that checked
	// it.
	ReconcileUnfinished prometheus.Counter
	ReconcileRuns       *prometheus.CounterVec // outcome
}

// Outcomes of a scheduled reconcile run (Metrics.ReconcileRuns).
const (
	ReconcileChecked = "checked"
	ReconcileFailed  = "failed"
)

// States of the messages of a reconciled window
// (Metrics.ReconcileMessages).
const (
	ReconcileAccepted   = "accepted"
	ReconcileFinished   = "finished"
	ReconcileWaiting    = "waiting"
	ReconcileUnfinished = "unfinished"
)

// ReconcileStates are the states of Metrics.ReconcileMessages, in order.
var ReconcileStates = []string{ReconcileAccepted, ReconcileFinished, ReconcileWaiting, ReconcileUnfinished}

// latencyBuckets covers 100 µs to 30 minutes: ACKs take milliseconds, but
// a delivery held up by a receiver's outage, and retried, takes minutes,
// and an alert on delivery time needs to see how many.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}

// InputSeries are the label values one input counts under, beside its
// name.
type InputSeries struct {
	// Acks are the answer codes it gives: AA, AE, AR... or HTTP statuses.
	Acks []string
	// Rejected are the reasons it refuses input for before storing it.
	Rejected []string
	// DataQuality are the data-quality issues its messages may be
	// counted for.
	DataQuality []string
}

// Prime creates, at zero, the series the engine's inputs (with the answer
// codes each gives, the reasons it refuses input for and the data-quality
// issues it counts), routes and
// destinations will count, so that an alert on rate() or increase() over
// them sees a start after every restart rather than nothing until the
// first event, whose increase it would then miss.
func (m *Metrics) Prime(inputs map[string]InputSeries, routes, destinations []string) {
	for in, s := range inputs {
		for _, c := range []*prometheus.CounterVec{m.Received, m.Accepted, m.Duplicates, m.Quarantined} {
			c.WithLabelValues(in)
		}
		for _, code := range s.Acks {
			m.Acks.WithLabelValues(in, code)
		}
		for _, reason := range s.Rejected {
			m.Rejected.WithLabelValues(in, reason)
		}
		for _, issue := range s.DataQuality {
			m.DataQuality.WithLabelValues(in, issue)
		}
	}
	for _, rt := range routes {
		for _, outcome := range []string{"matched", "filtered", "not_taken", "failed"} {
			m.Routed.WithLabelValues(rt, outcome)
		}
		m.DeadLettered.WithLabelValues("route", rt)
	}
	for _, d := range destinations {
		m.Delivered.WithLabelValues(d, "delivered")
		m.Delivered.WithLabelValues(d, "dead_lettered")
		for _, outcome := range []string{"ok", "transient", "permanent"} {
			m.Attempts.WithLabelValues(d, outcome)
		}
		m.DeadLettered.WithLabelValues("delivery", d)
	}
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	cv := func(sub, name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "junction", Subsystem: sub, Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	hv := func(sub, name, help string, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "junction", Subsystem: sub, Name: name, Help: help, Buckets: latencyBuckets}, labels)
		reg.MustRegister(h)
		return h
	}
	gv := func(sub, name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "junction", Subsystem: sub, Name: name, Help: help}, labels)
		reg.MustRegister(g)
		return g
	}
	g := func(sub, name, help string) prometheus.Gauge {
		x := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "junction", Subsystem: sub, Name: name, Help: help})
		reg.MustRegister(x)
		return x
	}
	h := func(sub, name, help string) prometheus.Histogram {
		x := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "junction", Subsystem: sub, Name: name, Help: help, Buckets: latencyBuckets})
		reg.MustRegister(x)
		return x
	}
	c := func(sub, name, help string) prometheus.Counter {
		x := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "junction", Subsystem: sub, Name: name, Help: help})
		reg.MustRegister(x)
		return x
	}
	return &Metrics{
		Received:               cv("ingress", "messages_received_total", "Messages read by inbound adapters, before storing.", "adapter"),
		Acks:                   cv("ingress", "acks_total", "Acknowledgements sent to senders, by code (AA, AE, AR, CA, CE, CR, or HTTP status; none for a message left unanswered because its MSH-15 asked so).", "adapter", "code"),
		Rejected:               cv("ingress", "rejected_total", "Inbound input rejected before storing, by reason.", "adapter", "reason"),
		Duplicates:             cv("ingress", "duplicates_total", "Resends of messages already stored; acknowledged again, not routed twice.", "adapter"),
		Accepted:               cv("ingress", "accepted_total", "Stored messages taken off the ingest log for routing (resends excluded); while it lags commit_messages_total, the stage reading the log is behind.", "adapter"),
		Quarantined:            cv("ingress", "quarantined_total", "Unparseable inbound input kept in quarantine.", "adapter"),
		Connections:            gv("ingress", "connections", "Open MLLP connections per input.", "adapter"),
		Evicted:                cv("ingress", "connections_evicted_total", "Idle MLLP connections closed to admit a new one while the input was at max_connections or max_connections_per_host (a refused one counts in rejected_total, reason too_many_connections or too_many_connections_from_host).", "adapter"),
		AckLatency:             hv("ingress", "ack_latency_seconds", "Time from reading a message to acknowledging it.", "adapter"),
		Commits:                c("ingress", "commits_total", "Group-commit writes to the ingest log; commit_messages_total over this is the mean messages per fsynced write."),
		CommitMessages:         c("ingress", "commit_messages_total", "Inbound messages stored by group-commit writes."),
		CommitLatency:          h("ingress", "commit_seconds", "Time one group-commit write took, until the store confirmed it."),
		DataQuality:            cv("ingress", "data_quality_issues_total", "Data-quality issues per feed, such as a missing or invalid NHS number.", "adapter", "issue"),
		Relayed:                cv("route", "relayed_total", "Messages of types an input relays untranslated (its relay setting), read for routing: their header and patients, not their content.", "adapter"),
		Routed:                 cv("route", "messages_total", "Messages processed by routes, by outcome (matched, filtered, failed, not_taken: of a type or event the route does not take); a replay counts again, consent decided again for one queued payload does not.", "route", "outcome"),
		Consent:                cv("route", "consent_decisions_total", "Consent decisions per destination (permit, deny).", "route", "destination", "decision"),
		ConsentSkipped:         cv("route", "consent_gate_skipped_total", "Consent decisions in which a statutory route skipped the patient's Consents, as it declared.", "route", "destination"),
		PatientIndex:           cv("route", "patient_index_total", "Patients of translated messages applied to the patient index, by outcome (updated, stale, merged, unindexed), and bundles the index could not read or resolve (unreadable) or whose record was too large to store (too_large), and messages of inputs no route reads that could not be translated for the index (untranslated).", "adapter", "outcome"),
		PDSLookups:             cv("patient", "pds_lookups_total", "Patient lookups in the Personal Demographics Service (PDS) by outcome (found, superseded, not_found, invalid, unavailable, refused, bad_reply, index_error).", "outcome"),
		PDSDropped:             c("patient", "pds_queue_dropped_total", "NHS numbers not queued for a PDS lookup because the queue was full."),
		Delivered:              cv("delivery", "messages_total", "Deliveries finished, by outcome (delivered, dead_lettered; redecided or withheld: consent changed while queued, so it was decided again and sent in its place, or not sent; rerouted: the same, routed again by older builds).", "destination", "outcome"),
		Attempts:               cv("delivery", "attempts_total", "Delivery attempts, by outcome (ok, transient, permanent).", "destination", "outcome"),
		SendLatency:            hv("delivery", "send_latency_seconds", "Time one delivery attempt took.", "destination"),
		EndToEnd:               hv("delivery", "end_to_end_latency_seconds", "Time from receipt to delivery.", "route", "destination"),
		DeadLettered:           cv("deadletter", "messages_total", "Messages moved to the dead-letter stream.", "stage", "name"),
		DeadLetters:            gv("deadletter", "waiting_messages", "Dead letters waiting in the dead-letter stream, not yet replayed (replay removes them), by stage (route, delivery) and route or destination; sampled every 5 s from the shared store.", "stage", "name"),
		QueueDepth:             gv("delivery", "queue_depth_messages", "Deliveries waiting per destination.", "destination"),
		QueueAge:               gv("delivery", "queue_age_seconds", "Age of the oldest waiting delivery per destination.", "destination"),
		Backlog:                gv("ingress", "backlog_messages", "How far behind an input's routing is: messages stored since its oldest one not yet routed, as router.max_backlog measures it (sampled every second; only with a limit set).", "adapter"),
		BacklogRefusing:        gv("ingress", "backlog_refusing", "1 while an input refuses new messages (resend later) because its backlog is over router.max_backlog.", "adapter"),
		RouteDepth:             gv("route", "queue_depth_messages", "Stored messages waiting for a route (an estimate in the batch pipeline).", "route"),
		RouteAge:               gv("route", "queue_age_seconds", "Age of the oldest stored message waiting for a route.", "route"),
		Spans:                  cv("route", "spans_total", "Spans a batch-pipeline stage took: per route (stage route), destination (stage deliver) or the ingest log read ahead (stage accept, name ingest), each a run of stored batches handled at once.", "stage", "name"),
		SpanBatches:            cv("route", "span_batches_total", "Stored batches in those spans; above spans_total, the stage was catching up several batches at a time.", "stage", "name"),
		QuarantineSize:         g("ingress", "quarantine_messages", "Messages held in quarantine."),
		IngestLogLost:          c("ingress", "ingest_log_lost_batches_total", "Group-committed batches of acknowledged messages that the ingest log no longer held when the engine started, or that the stage taking the ingest log (accept, or the splitter) found its consumer passed over (held but unreadable), though routing had not taken them (the store's files were damaged, or the batches outlived nats.ingress_max_age): the messages in them are lost, with no audit record. The log, at ERROR, gives their sequences and the times they were acknowledged between. Counted per process, not once per batch: each start counts the batches it finds gone ahead of the stage's position, also those another process counted or recorded; the stage that records a run it passed over counts what its own start did not. The sum across processes is not how many were lost (junction audit reconcile lists them)."),
		FailingPartitions:      gv("engine", "failing_partitions", "Partitions whose batch a stage is retrying after a failure (the store or its audit stream not taking a write), by stage (route, delivery, index, ingest) and route, destination, input or consumer, each from its batch's first failure until it succeeds: the partition's later messages wait behind it.", "stage", "name"),
		HTTPConnectionsRefused: c("http", "connections_refused_total", "HTTP connections closed as they arrived because the listener held http.max_connections, none of them idle or silent for a second."),
		HTTPRequests:           cv("http", "requests_total", "Admin API (/api) requests by handler and status code; FHIR posts count in ingress acks_total.", "handler", "code"),
		Ready:                  g("engine", "ready", "1 when the engine is ready to accept messages."),
		StoreReplicas:          gv("engine", "store_servers", "The store's copies of its streams (the servers holding the ingress stream), as its leader answered the probe every second: current (the leader and the peers storing its writes), catching_up (behind or joining), unreachable (offline, or silent for 5 s; every copy when no leader answers). On a cluster, any not current means one more loss may stop Junction storing.", "state"),
		StoreWritable:          gv("engine", "store_stream_writable", "1 while the stream or bucket named answered the store's probe (every second) as writable within the last 5 s, 0 while not: no leader, a leader without a quorum, missing, full at a discard-new limit of its own, or not answering. JUNCTION_INGRESS always; on an external store also JUNCTION_INGEST_LOG, _AUDIT, _OUTBOUND and _DEADLETTER and the buckets messages need (KV_ and the bucket's name: the patient index, consent and opt-out). Any 0 makes /readyz 503 naming it.", "name"),
		StreamBytes:            gv("engine", "store_stream_bytes", "Bytes each of Junction's streams holds (JUNCTION_INGRESS, _INGEST_LOG, _OUTBOUND, _DEADLETTER, _AUDIT, _QUARANTINE), as the store reports them; sampled every 5 s from the shared store. The audit and dead-letter streams have no limit of Junction's.", "name"),
		DiskFree:               g("engine", "store_disk_free_bytes", "Embedded store only: bytes free on the filesystem holding data_dir/jetstream (shared with anything else written there, such as a file destination's output); sampled every 5 s. At none the store stops writing and inbound messages are refused."),
		DiskSize:               g("engine", "store_disk_size_bytes", "Embedded store only: the size of the filesystem holding data_dir/jetstream; sampled every 5 s."),
		StoreLimit:             g("engine", "store_limit_bytes", "Embedded store only: the storage limit its JetStream runs with (reckoned at each start as three quarters of the disk then free plus what the store held; raised, with a JetStream restart, when the store reaches it and the disk has room again); sampled every 5 s. At the limit the store refuses writes and inbound messages are refused, whatever the disk has free."),
		StoreUsed:              g("engine", "store_used_bytes", "Embedded store only: the bytes the store's streams use against its storage limit (engine_store_limit_bytes); sampled every 5 s."),
		Accesses:               cv("http", "accesses_total", "Admin and audit API accesses by permission and outcome (allowed, denied, unauthenticated, audit_failed) and the principal's configured name.", "permission", "outcome", "principal"),
		ReconcileMessages:      gv("reconcile", "messages", "The messages received in the last window the scheduled reconcile checked (reconcile.interval), by state: accepted (stored and acknowledged), finished (delivered, filtered, consent-denied, dead-lettered or a resend), waiting (queued for a destination that has not taken it yet: retrying) and unfinished (no route decided it by reconcile.lag: stuck or lost). Read from the shared store: every process reports the same figures, take max() across processes.", "state"),
		ReconcileWindowEnd:     g("reconcile", "window_end_timestamp_seconds", "When the last window the scheduled reconcile checked ended (Unix seconds): every message received before it has been checked once. Read from the shared store: take max() across processes."),
		ReconcileUnfinished:    c("reconcile", "unfinished_messages_total", "Messages the scheduled reconcile found unfinished in the windows this process checked: acknowledged, and no route decided them by reconcile.lag. Each window is checked by one process: sum() across processes."),
		ReconcileRuns:          cv("reconcile", "runs_total", "Scheduled reconcile runs by outcome: checked (a window checked and recorded) or failed (the store, or its checkpoint, could not be read or written; tried again at the next interval).", "outcome"),
	}
}
