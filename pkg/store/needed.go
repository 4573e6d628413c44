package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// On an external NATS server or cluster each stream and bucket is placed,
// and on a cluster elects its leader, on its own: the audit stream (or
// the outbound stream, or the patient index) can lose its leader or its
// quorum while the ingress stream keeps its own. Inbound messages are
// then still stored and acknowledged, but no stage can write their audit
// records or route them, so they wait, while a probe of the ingress
// stream alone leaves the engine ready and a load balancer sending to it.
// So the probe asks, beside the ingress stream and in the same second,
// after every other stream and bucket a message needs on its way (see
// needed), all at once, each bounded by probeTimeout and each with the
// same staleness allowance (probeStale) as the ingress stream, so one
// slow answer under load does not take a working engine out of service.
// The embedded server holds every stream on the one server, so its
// streams cannot lose their leaders apart, and a stream of it that
// stopped writing is found by checkWrites: it is probed as before, the
// ingress stream alone.

// needed is a stream or bucket, other than the ingress stream, that a
// message needs written on its way through the engine.
type needed struct {
	// stream is the JetStream stream's name (a bucket's is KV_ and its
	// name); bucket is the bucket's name, for a bucket.
	stream, bucket string
	// holds says what it holds, for the log.
	holds string
	// lastAnswer is when it last answered a probe as writable (unix
	// nanos); why is why the last probe found it not writable, or nil.
	lastAnswer atomic.Int64
	why        atomic.Pointer[string]
	// logged says its loss was logged (probe goroutine only).
	logged bool
}

// name is how the log and readiness name it.
func (n *needed) name() string {
	if n.bucket != "" {
		return "bucket " + n.bucket
	}
	return "stream " + n.stream
}

// neededStreams are the streams, besides the ingress stream, that every
// message needs: the quarantine is not among them, since only rejected
// input is written there.
var neededStreams = []struct{ name, holds string }{
	{StreamIngestLog, "inbound batches before they are split to the ingress stream"},
	{StreamAudit, "the audit trail, written by every stage before it moves a message on"},
	{StreamOutbound, "messages routed to each destination"},
	{StreamDeadLetter, "messages that could not be routed or delivered"},
}

// neededSet is the store's needed streams and buckets.
type neededSet struct {
	mu   sync.Mutex
	list []*needed
}

// add adds n unless its stream is there already.
func (ns *neededSet) add(n *needed) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for _, have := range ns.list {
		if have.stream == n.stream {
			return
		}
	}
	ns.list = append(ns.list, n)
}

// all returns the needed streams and buckets, in the order added.
func (ns *neededSet) all() []*needed {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return append([]*needed(nil), ns.list...)
}

// watchNeeded starts probing the streams every message needs, on an
// external store.
func (s *Store) watchNeeded() {
	if s.srv != nil {
		return
	}
	for _, ns := range neededStreams {
		s.watch(&needed{stream: ns.name, holds: ns.holds})
	}
}

// watch adds n to what the probe checks, writable as of now.
func (s *Store) watch(n *needed) {
	n.lastAnswer.Store(time.Now().UnixNano())
	s.needed.add(n)
}

// NeedBucket tells the store that messages need bucket written on their
// way (the patient index, consent decisions), holding what holds: on an
// external store the probe checks it each second, and the store is not
// writable (CannotWrite) while it cannot be. The embedded store ignores
// it (see watchNeeded).
func (s *Store) NeedBucket(bucket, holds string) {
	if s.srv != nil {
		return
	}
	s.watch(&needed{stream: "KV_" + bucket, bucket: bucket, holds: holds})
}

// probeNeeded asks for the state of each stream and bucket in list at
// once, each bounded by probeTimeout, and notes which answered as
// writable. It returns when every answer has come or timed out.
func (s *Store) probeNeeded(list []*needed) {
	var wg sync.WaitGroup
	for _, n := range list {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
			defer cancel()
			st, err := s.JS.Stream(ctx, n.stream)
			var why string
			if err == nil {
				why = unwritable(st.CachedInfo())
			} else {
				why = notAnsweringWhy(err)
			}
			if why == "" {
				n.lastAnswer.Store(time.Now().UnixNano())
				n.why.Store(nil)
				return
			}
			n.why.Store(&why)
		})
	}
	wg.Wait()
}

// unwritable says why a stream, as info (its leader's answer) shows it,
// cannot store a write, or "" when it can: it has no leader with a
// quorum, or it refuses new messages at a limit of its own.
func unwritable(info *jetstream.StreamInfo) string {
	if !hasQuorum(info) {
		return "no leader with a quorum (its servers down, or cut off from each other?)"
	}
	if info == nil || info.Config.Discard != jetstream.DiscardNew {
		return ""
	}
	c, st := info.Config, info.State
	if c.MaxBytes > 0 && int64(st.Bytes) >= c.MaxBytes || c.MaxMsgs > 0 && int64(st.Msgs) >= c.MaxMsgs {
		return "full: at its own max_bytes or max_msgs limit, set to refuse new messages (discard new)"
	}
	return ""
}

// notAnsweringWhy says why a probe's request for a stream failed with
// err.
func notAnsweringWhy(err error) string {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return "missing (deleted, or a server restarted without its storage?)"
	}
	return "not answering: " + err.Error()
}

// stale reports whether n has not answered as writable for probeStale.
func (n *needed) stale(now time.Time) bool {
	return now.Sub(time.Unix(0, n.lastAnswer.Load())) >= probeStale
}

// reason is why n cannot be written, for readiness and the log.
func (n *needed) reason() string {
	why := "not answering"
	if w := n.why.Load(); w != nil {
		why = *w
	}
	return fmt.Sprintf("%s (%s) cannot be written: %s", n.name(), n.holds, why)
}

// logNeeded logs each needed stream or bucket that has not answered as
// writable for probeStale, once when that starts and once when it ends.
// While the ingress stream is not answering either (the connection
// down, the whole cluster without a quorum), that line says it for all
// of them, so none is logged.
func (s *Store) logNeeded(list []*needed, answering bool) {
	now := time.Now()
	for _, n := range list {
		switch stale := n.stale(now); {
		case stale && !n.logged && answering:
			n.logged = true
			attrs := []any{"stream", n.stream}
			if n.bucket != "" {
				attrs = append(attrs, "bucket", n.bucket)
			}
			attrs = append(attrs, "holds", n.holds, "why", n.reason())
			if server, _ := s.server.Load().(string); server != "" {
				attrs = append(attrs, "server", server)
			}
			if s.cfg.Replicas > 1 {
				attrs = append(attrs, "check", fmt.Sprintf("streams and buckets elect their leaders apart: see this one's servers with `nats stream info %s` and each server's monitoring /healthz and /jsz; it stores nothing unless at least %d of its %d servers are up and reach each other", n.stream, s.cfg.Replicas/2+1, s.cfg.Replicas))
			} else {
				attrs = append(attrs, "check", fmt.Sprintf("see `nats stream info %s` and the server holding it", n.stream))
			}
			s.log.Error("store cannot write a stream messages need: inbound messages would be acknowledged but not audited or routed; not ready until it can", attrs...)
		case !stale && n.logged:
			n.logged = false
			s.log.Info("store writing the stream again", "stream", n.stream)
		}
	}
}

// CannotWrite says which streams and buckets that messages need, besides
// the ingress stream (see Healthy), have not answered the store's probe
// as writable for a few seconds, and why; "" when none. Only an external
// store has any (see NeedBucket).
func (s *Store) CannotWrite() string {
	now := time.Now()
	var out []string
	for _, n := range s.needed.all() {
		if n.stale(now) {
			out = append(out, n.reason())
		}
	}
	return strings.Join(out, "; ")
}

// StreamWritable is whether a stream or bucket messages need answered
// the store's probe as writable within the last few seconds.
type StreamWritable struct {
	// Stream is the stream's name (a bucket's is KV_ and its name).
	Stream   string
	Writable bool
}

// Writable returns, for each stream and bucket the store probes, whether
// it answered as writable within the last few seconds: the ingress
// stream first, then those of CannotWrite.
func (s *Store) Writable() []StreamWritable {
	now := time.Now()
	out := []StreamWritable{{Stream: StreamIngress, Writable: s.Healthy()}}
	for _, n := range s.needed.all() {
		out = append(out, StreamWritable{Stream: n.stream, Writable: !n.stale(now)})
	}
	return out
}
