//go:build unix

package faultsuite

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/durability"
	"github.com/junction-fhir/junction/pkg/nhs"
)

const (
	senders  = 4
	patients = 500
)

// baseMessages is the message count of the kill test, which the others
// scale from: JUNCTION_FAULTS_MESSAGES, by default 2,000. The route path
// on this 3-node R3 cluster in containers delivers about 20 messages a
// second (one message in flight per partition, each hop a replicated
// write), so the 20,000 takes about 20 minutes: run it with
// JUNCTION_FAULTS_MESSAGES=20000 and -timeout 60m.
func baseMessages(t *testing.T) int { return envInt(t, "JUNCTION_FAULTS_MESSAGES", 2000) }

// checkDelivered waits until every acknowledged message reached the sink
// (or d passes) and applies the checker: nothing lost, nothing unknown,
// no per-patient inversion. It returns the verdict for the caller's
// figures.
func checkDelivered(t *testing.T, tp *topology, msgs []durability.Message, st *durability.Stats, d time.Duration) durability.Verdict {
	t.Helper()
	return checkDeliveredIDs(t, tp, msgs, st.AckedIDs(), d)
}

// checkDeliveredIDs is checkDelivered for the acknowledged ids given.
func checkDeliveredIDs(t *testing.T, tp *topology, msgs []durability.Message, acked []string, d time.Duration) durability.Verdict {
	t.Helper()
	var v durability.Verdict
	deadline := time.Now().Add(d)
	for {
		v = durability.Check(msgs, acked, tp.arrivals("mllp"))
		if len(v.Lost) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if len(v.Lost) > 0 {
		t.Errorf("%d of %d acknowledged messages lost (first 20): %s", len(v.Lost), v.Acked, strings.Join(v.Lost[:min(20, len(v.Lost))], ", "))
	}
	if len(v.Unknown) > 0 {
		t.Errorf("sink got %d messages nobody sent", len(v.Unknown))
	}
	if len(v.Inversions) > 0 {
		t.Errorf("%d per-patient order inversions (first 10):\n%s", len(v.Inversions), strings.Join(v.Inversions[:min(10, len(v.Inversions))], "\n"))
	}
	return v
}

// checkReconciled asks Junction for messages without a terminal state;
// after a test's faults have healed there must be none.
func checkReconciled(t *testing.T, tp *topology) audit.Reconciliation {
	t.Helper()
	rep := tp.reconcile(2 * time.Minute)
	if len(rep.Pending) > 0 {
		p := rep.Pending[0]
		t.Errorf("%d accepted messages without a terminal state (orphans), first %s waiting for %v", len(rep.Pending), p.ID, p.Waiting)
	}
	return rep
}

// TestKillJunctionDuringIngest SIGKILLs Junction replicas, one after the
// other, again and again while four senders push ADT for 500 patients and
// four more push pathology results (ORU^R01) for 500 others into a 3-node
// R3 cluster, resending whatever is not acknowledged. Every acknowledged
// message must reach the sink, in per-patient order, and every accepted
// message must end in a terminal state.
func TestKillJunctionDuringIngest(t *testing.T) {
	tp := newTopology(t, 3, 2)
	n := baseMessages(t)
	kills := envInt(t, "JUNCTION_FAULTS_KILLS", 20)
	adt := durability.Plan("K", n, patients)
	oru := durability.PlanResults("R", n/4, patients, patients)
	st, stLab := durability.NewStats(), durability.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	began := time.Now()
	// Paced so the kills fall during ingest: a kill, restart and wait for
	// readiness take about 6s in all.
	window := time.Duration(kills) * 7 * time.Second
	done := sendInBackground(ctx, tp, adt, window, st)
	doneLab := make(chan error, 1)
	go func() { doneLab <- durability.Send(ctx, oru, senders, window, tp.labAddr, stLab) }()
	// Kill until all kills are done and the senders have finished. The
	// pacing makes the kills fall during ingest; if the senders finish
	// first on a slow machine, the last kills fall during delivery, and
	// the figures say how many.
	killed, duringIngest := 0, 0
	var ingest time.Duration
	var sendErr error
	finished := false
	for !finished || killed < kills {
		if !finished {
			select {
			case sendErr = <-done:
				finished, ingest = true, time.Since(began)
				continue
			case <-time.After(time.Duration(1000+killed%4*500) * time.Millisecond):
			}
		} else {
			time.Sleep(time.Duration(1000+killed%4*500) * time.Millisecond)
		}
		if killed >= kills {
			continue
		}
		j := tp.junction[killed%len(tp.junction)]
		tp.kill(j)
		killed++
		if !finished {
			duringIngest++
		}
		tp.start(j)
		if err := waitUntil(ctx, 90*time.Second, func() bool { return ready(j) }); err != nil {
			t.Fatalf("%s not ready 90s after restart: %v\n%s", j.name, err, tp.logs(j, 30))
		}
	}
	if err := errors.Join(sendErr, <-doneLab); err != nil {
		t.Fatalf("senders: %v", err)
	}
	all := append(append([]durability.Message{}, adt...), oru...)
	v := checkDeliveredIDs(t, tp, all, append(st.AckedIDs(), stLab.AckedIDs()...), 10*time.Minute)
	rep := checkReconciled(t, tp)
	t.Logf("FIGURES kill-junction: %d ADT and %d ORU, %d acknowledged, %d SIGKILLs of 2 replicas (%d during ingest), ingest %s (%.0f msgs/s), resends %d, connection failures %d, negative ACKs %d; "+
		"sink: %d deliveries, %d distinct, %d lost, %d redelivered (same MSH-10, %d extra), %d inversions; reconcile: accepted %d, terminal %v, pending %d",
		len(adt), len(oru), v.Acked, killed, duringIngest, ingest.Round(time.Millisecond), float64(len(all))/ingest.Seconds(),
		st.Resends.Load()+stLab.Resends.Load(), st.ConnFailures.Load()+stLab.ConnFailures.Load(), st.Negative.Load()+stLab.Negative.Load(),
		v.Deliveries, v.Distinct, len(v.Lost), v.Duplicated, v.ExtraDeliveries, len(v.Inversions), rep.Accepted, rep.Terminal, len(rep.Pending))
}

// streamLeader returns the index of the NATS node leading stream, asking
// through any node that answers, for up to 30s (a busy or re-electing
// cluster may not answer at once).
func (tp *topology) streamLeader(ctx context.Context, stream string) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		i, err := tp.askLeader(ctx, stream)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return i, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (tp *topology) askLeader(ctx context.Context, stream string) (int, error) {
	var lastErr error
	for _, n := range tp.nats {
		if !tp.running(n) {
			continue
		}
		auth, err := nats.NkeyOptionFromSeed(tp.nkeySeed)
		if err != nil {
			return 0, err
		}
		nc, err := nats.Connect("nats://"+n.addr("4222/tcp"), nats.Timeout(2*time.Second), nats.NoReconnect(), auth)
		if err != nil {
			lastErr = err
			continue
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			lastErr = err
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := js.Stream(sctx, stream)
		cancel()
		nc.Close()
		if err != nil {
			lastErr = err
			continue
		}
		if c := st.CachedInfo().Cluster; c != nil {
			for i := range tp.nats {
				if tp.nats[i].name == c.Leader {
					return i, nil
				}
			}
		}
		lastErr = errors.New("stream has no leader")
	}
	return -1, fmt.Errorf("finding the leader of %s: %w", stream, lastErr)
}

// sendInBackground starts the senders and returns a channel for their
// result.
func sendInBackground(ctx context.Context, tp *topology, msgs []durability.Message, window time.Duration, st *durability.Stats) <-chan error {
	done := make(chan error, 1)
	go func() { done <- durability.Send(ctx, msgs, senders, window, tp.mllpAddr, st) }()
	return done
}

// resumeTime is how long after since the acknowledged count first grew
// by at least one message per sender, or d if it did not within d.
func resumeTime(st *durability.Stats, since time.Time, d time.Duration) time.Duration {
	base := st.AckedCount()
	for time.Since(since) < d {
		if st.AckedCount() >= base+senders {
			return time.Since(since)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

// TestKillNATSNode SIGKILLs one node of the three five times, the ingress
// stream's leader included, while senders keep going: nothing
// acknowledged is lost, and the figures say how soon ingest resumed.
func TestKillNATSNode(t *testing.T) {
	tp := newTopology(t, 3, 1)
	n := baseMessages(t) / 2
	msgs := durability.Plan("N", n, patients)
	st := durability.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// Paced so that all five kills fall while the senders send.
	done := sendInBackground(ctx, tp, msgs, 100*time.Second, st)
	var resumes []string
	for k := range 5 {
		time.Sleep(4 * time.Second)
		leader, err := tp.streamLeader(ctx, "JUNCTION_INGRESS")
		if err != nil {
			t.Fatal(err)
		}
		// Even kills take the ingress stream's leader, odd ones a follower.
		victim, what := leader, "ingress leader"
		if k%2 == 1 {
			victim, what = (leader+1+k/2)%len(tp.nats), "follower"
		}
		killedAt := time.Now()
		tp.kill(tp.nats[victim])
		r := resumeTime(st, killedAt, 60*time.Second)
		resumes = append(resumes, fmt.Sprintf("%s %s: ingest resumed after %s", tp.nats[victim].name, what, r.Round(10*time.Millisecond)))
		tp.start(tp.nats[victim])
		tp.waitHTTP(tp.nats[victim], "8222/tcp", "/healthz")
	}
	if err := <-done; err != nil {
		t.Fatalf("senders: %v", err)
	}
	v := checkDelivered(t, tp, msgs, st, 6*time.Minute)
	rep := checkReconciled(t, tp)
	t.Logf("FIGURES kill-nats: %d messages, %d acknowledged, 5 SIGKILLs of a NATS node; %s; resends %d; sink: %d distinct, %d lost, %d redelivered, %d inversions; reconcile: accepted %d, pending %d",
		n, v.Acked, strings.Join(resumes, "; "), st.Resends.Load(), v.Distinct, len(v.Lost), v.Duplicated, len(v.Inversions), rep.Accepted, len(rep.Pending))
}

// TestDestinationFaults makes the MLLP destination drop connections
// without answering, answer late, and name another message in MSA-2, and
// the FHIR destination answer 503, in turn, while senders keep going;
// then heals them. Nothing may be lost: a delivery Junction took as done
// on a late or mismatched ACK would never be sent again, and the sink
// records only messages it acknowledged properly, so it would show as
// lost. Every message must reach the FHIR destination under exactly one
// idempotency key.
func TestDestinationFaults(t *testing.T) {
	tp := newTopologyOpts(t, 3, 1, options{fhir: true})
	n := baseMessages(t) / 4
	msgs := durability.Plan("D", n, patients)
	st := durability.NewStats()
	phase := faultPhase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute+4*phase)
	defer cancel()
	done := sendInBackground(ctx, tp, msgs, 50*time.Second, st)
	// Sample Junction's memory through the outage.
	var peak atomic.Uint64
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			if m, err := tp.be.memory(tp.junction[0]); err == nil && m > peak.Load() {
				peak.Store(m)
			}
			select {
			case <-sampling.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}()
	phases := 0
	for _, mode := range []string{
		`{"mllp":"refuse","http":"ok"}`,
		`{"mllp":"late","http":"ok","late_delay":"8s"}`,
		`{"mllp":"wrong-msa","http":"ok"}`,
		`{"mllp":"ok","http":"503"}`,
	} {
		tp.setSinkMode(mode)
		time.Sleep(phase)
		phases++
	}
	healed := time.Now()
	tp.setSinkMode(`{"mllp":"ok","http":"ok"}`)
	if err := <-done; err != nil {
		t.Fatalf("senders: %v", err)
	}
	v := checkDelivered(t, tp, msgs, st, 6*time.Minute)
	var keys []string
	deadline := time.Now().Add(3 * time.Minute)
	for {
		keys = tp.arrivals("http")
		if distinct(keys) >= v.Acked || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	caughtUp := time.Since(healed)
	stopSampling()
	<-sampled
	if distinct(keys) != v.Acked {
		t.Errorf("FHIR destination got %d distinct idempotency keys, want one per acknowledged message (%d)", distinct(keys), v.Acked)
	}
	rep := checkReconciled(t, tp)
	var rejected []delivery
	tp.getJSON("http://"+tp.sink.addr("8081/tcp")+"/rejections", "", &rejected)
	// Retries follow the configured backoff (100ms doubling to 2s): in a
	// phase of D seconds a partition's blocked message is tried at most
	// about 5 + D/2 times, so the sink can refuse no more than that per
	// partition and phase. A retry loop without backoff would exceed it
	// many times over.
	bound := phases * 16 * (6 + int(phase/(2*time.Second)))
	if len(rejected) > bound {
		t.Errorf("the sink refused %d attempts in %d fault phases; the retry backoff allows at most %d", len(rejected), phases, bound)
	}
	if p := peak.Load(); p > 1<<30 {
		t.Errorf("Junction used %d MiB during the outage, want it bounded (under 1 GiB)", p>>20)
	}
	t.Logf("FIGURES destination-faults: %d messages, %d acknowledged; %s each of dropped MLLP connections, 8s-late ACKs, wrong MSA-2 and HTTP 503; %d attempts refused by the sink's faults (backoff bound %d); Junction memory peak %d MiB; all delivered %s after healing; MLLP: %d distinct, %d lost, %d redelivered; FHIR: %d requests accepted, %d distinct keys; reconcile: accepted %d, pending %d",
		n, v.Acked, phase, len(rejected), bound, peak.Load()>>20, caughtUp.Round(time.Second), v.Distinct, len(v.Lost), v.Duplicated, len(keys), distinct(keys), rep.Accepted, len(rep.Pending))
}

// TestPoisonMessages: 100 messages the destination rejects permanently
// (AE) among the others are all dead-lettered with an audit record, and
// every other message is delivered.
func TestPoisonMessages(t *testing.T) {
	tp := newTopology(t, 3, 1)
	n := max(baseMessages(t)/2, 200)
	const poison = 100
	msgs := durability.Plan("G", n-poison, patients)
	// Each poison message is its patient's last, so it blocks nothing
	// behind it that the check could wait for.
	for i := range poison {
		msgs = append(msgs, durability.PlanMessage("P", i, 99999, nhs.TestNumber(i)))
	}
	tp.setSinkMode(`{"mllp":"ok","http":"ok","poison_prefix":"P"}`)
	st := durability.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := <-sendInBackground(ctx, tp, msgs, 0, st); err != nil {
		t.Fatalf("senders: %v", err)
	}
	good := msgs[:n-poison]
	var goodAcked []string
	for _, id := range st.AckedIDs() {
		if !strings.HasPrefix(id, "P") {
			goodAcked = append(goodAcked, id)
		}
	}
	v := durability.Check(good, goodAcked, tp.arrivals("mllp"))
	deadline := time.Now().Add(3 * time.Minute)
	for len(v.Lost) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		v = durability.Check(good, goodAcked, tp.arrivals("mllp"))
	}
	if len(v.Lost) > 0 || len(v.Inversions) > 0 || len(v.Unknown) > 0 {
		t.Errorf("other patients affected: %d lost, %d inversions, %d unknown", len(v.Lost), len(v.Inversions), len(v.Unknown))
	}
	rep := checkReconciled(t, tp)
	if got := rep.Terminal[audit.OutcomeDeadLettered]; got != poison {
		t.Errorf("%d messages dead-lettered, want the %d poison messages", got, poison)
	}
	var dls []struct {
		MessageID string `json:"message_id"`
		Stage     string `json:"stage"`
	}
	// Like reconcile, the listing may meet JetStream's "no responders"
	// while the cluster is busy: retry for a while.
	for deadline := time.Now().Add(2 * time.Minute); ; {
		err := tp.tryJSON("http://"+tp.junction[0].addr("8080/tcp")+"/api/deadletters", adminToken, &dls)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listing dead letters: %v", err)
		}
		t.Logf("listing dead letters: %v; retrying", err)
		time.Sleep(2 * time.Second)
	}
	if len(dls) != poison {
		t.Errorf("%d dead letters listed, want %d", len(dls), poison)
	}
	t.Logf("FIGURES poison: %d messages with %d poison; dead-lettered %d (listed %d); others: %d distinct delivered, %d lost; reconcile: accepted %d, terminal %v, pending %d",
		n, poison, rep.Terminal[audit.OutcomeDeadLettered], len(dls), v.Distinct, len(v.Lost), rep.Accepted, rep.Terminal, len(rep.Pending))
}

// TestMinorityPartition cuts the NATS node Junction is attached to off
// from the other two while senders keep going. While Junction reaches
// only the minority, no message first sent then may be answered AA; after
// the cut heals, nothing acknowledged is lost.
func TestMinorityPartition(t *testing.T) {
	tp := newTopologyOpts(t, 3, 1, options{edge: true})
	n := baseMessages(t) / 4
	msgs := durability.Plan("M", n, patients)
	st := durability.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	done := sendInBackground(ctx, tp, msgs, 40*time.Second, st)
	time.Sleep(8 * time.Second)
	tp.cut(tp.nats[0])
	cutAt := time.Now()
	// Writes already replicated when the cut came may still be answered:
	// judge only messages first sent a moment after it.
	const settle = 2 * time.Second
	// Junction still reaches its server, which answers for the streams'
	// state but can store nothing: it must say it is not ready.
	notReady := waitUntil(ctx, 15*time.Second, func() bool { return !ready(tp.junction[0]) })
	unreadyAfter := time.Since(cutAt)
	time.Sleep(time.Until(cutAt.Add(20 * time.Second)))
	stillCut := !ready(tp.junction[0])
	healAt := time.Now()
	tp.heal(tp.nats[0])
	if notReady != nil {
		t.Errorf("Junction, reaching only a NATS server cut off from its cluster, stayed ready for 15s: %v", notReady)
	} else if !stillCut {
		t.Errorf("Junction said it was ready again while its NATS server was still cut off from the cluster")
	}
	if err := waitUntil(ctx, 90*time.Second, func() bool { return ready(tp.junction[0]) }); err != nil {
		t.Errorf("Junction not ready again after the cut healed: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("senders: %v", err)
	}
	var during []string
	for _, a := range st.Acks() {
		if a.FirstSent.After(cutAt.Add(settle)) && a.At.Before(healAt) {
			during = append(during, a.Ctrl)
		}
	}
	if len(during) > 0 {
		t.Errorf("%d messages first sent while Junction reached only a minority were answered AA before the cut healed (first %s)", len(during), during[0])
	}
	r := resumeAfter(st.Acks(), healAt)
	v := checkDelivered(t, tp, msgs, st, 6*time.Minute)
	rep := checkReconciled(t, tp)
	t.Logf("FIGURES minority-partition: %d messages, %d acknowledged; node 0 cut off for %s: not ready %s after the cut; %d AA for messages sent during the cut; first AA %s after healing; sink: %d distinct, %d lost, %d redelivered, %d inversions; reconcile: accepted %d, pending %d",
		n, v.Acked, healAt.Sub(cutAt).Round(time.Second), unreadyAfter.Round(100*time.Millisecond), len(during), r.Round(10*time.Millisecond), v.Distinct, len(v.Lost), v.Duplicated, len(v.Inversions), rep.Accepted, len(rep.Pending))
}

// resumeAfter is the time from t0 to the first AA after it.
func resumeAfter(acks []durability.Ack, t0 time.Time) time.Duration {
	for _, a := range acks {
		if a.At.After(t0) {
			return a.At.Sub(t0)
		}
	}
	return -1
}

// TestStopNATSLeader freezes (SIGSTOP) the ingress stream's leader for 15
// seconds, ten times, while senders keep going: nothing acknowledged is
// lost.
func TestStopNATSLeader(t *testing.T) {
	tp := newTopology(t, 3, 1)
	n := baseMessages(t) / 2
	stops := envInt(t, "JUNCTION_FAULTS_STOPS", 10)
	msgs := durability.Plan("T", n, patients)
	st := durability.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	done := sendInBackground(ctx, tp, msgs, time.Duration(stops)*20*time.Second, st)
	var resumes []string
	for range stops {
		time.Sleep(3 * time.Second)
		leader, err := tp.streamLeader(ctx, "JUNCTION_INGRESS")
		if err != nil {
			t.Fatal(err)
		}
		victim := tp.nats[leader]
		stoppedAt := time.Now()
		tp.signal(victim, syscall.SIGSTOP)
		r := resumeTime(st, stoppedAt, 15*time.Second)
		if rest := 15*time.Second - time.Since(stoppedAt); rest > 0 {
			time.Sleep(rest)
		}
		tp.signal(victim, syscall.SIGCONT)
		resumes = append(resumes, r.Round(10*time.Millisecond).String())
	}
	if err := <-done; err != nil {
		t.Fatalf("senders: %v", err)
	}
	v := checkDelivered(t, tp, msgs, st, 6*time.Minute)
	rep := checkReconciled(t, tp)
	t.Logf("FIGURES stop-leader: %d messages, %d acknowledged; %d SIGSTOPs of the ingress leader for 15s; ingest resumed after %s (15s: not within the stop); sink: %d distinct, %d lost, %d redelivered (same MSH-10), %d inversions; reconcile: accepted %d, pending %d",
		n, v.Acked, stops, strings.Join(resumes, ", "), v.Distinct, len(v.Lost), v.Duplicated, len(v.Inversions), rep.Accepted, len(rep.Pending))
}

// TestClusterSmoke sends a few hundred messages through a 3-node cluster
// with no faults: all delivered exactly once, in order, and reconciled.
func TestClusterSmoke(t *testing.T) {
	tp := newTopology(t, 3, 1)
	msgs := durability.Plan("Z", 200, 50)
	st := durability.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := <-sendInBackground(ctx, tp, msgs, 0, st); err != nil {
		t.Fatalf("senders: %v", err)
	}
	v := checkDelivered(t, tp, msgs, st, 3*time.Minute)
	if v.Duplicated > 0 {
		t.Errorf("%d messages delivered more than once with no faults", v.Duplicated)
	}
	rep := checkReconciled(t, tp)
	if rep.Accepted != len(msgs) || rep.Terminal[audit.OutcomeDelivered] != len(msgs) {
		t.Errorf("reconcile: accepted %d, terminal %v; want %d delivered", rep.Accepted, rep.Terminal, len(msgs))
	}
	// The servers admit only Junction's NKey user, as the chart's do: a
	// client without its seed is refused.
	nc, err := nats.Connect("nats://"+tp.nats[0].addr("4222/tcp"), nats.Timeout(2*time.Second), nats.NoReconnect())
	if err == nil {
		nc.Close()
		t.Error("a client without the NKey seed was let in")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("a client without the NKey seed: %v, want an authorization violation", err)
	}
	// Their cluster routes authenticate too: the cluster formed with the
	// password, and a route without it, or with another, is refused.
	for _, tc := range []struct{ name, user, pass, want string }{
		{"no password", "", "", "Authorization Violation"},
		{"wrong password", "route", "not-" + tp.routePassword, "Authorization Violation"},
		{"the password", "route", tp.routePassword, "PONG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := routeConnect(tp.nats[0].addr("6222/tcp"), tp.prefix, tc.user, tc.pass)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("a route connecting with %s was answered %q, want %q", tc.name, got, tc.want)
			}
		})
	}
}

// routeConnect connects to a NATS server's cluster port at addr as a
// route of cluster with user and pass, and returns the server's answer to
// a PING after the CONNECT: PONG when it took the route, an -ERR line
// when it refused it.
func routeConnect(addr, cluster, user, pass string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if info, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(info, "INFO ") {
		return "", fmt.Errorf("no INFO from the cluster port: %q, %v", info, err)
	}
	connect, err := json.Marshal(map[string]any{"verbose": false, "pedantic": false, "tls_required": false,
		"user": user, "pass": pass, "name": "faultsuite-intruder", "cluster": cluster, "headers": true})
	if err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(c, "CONNECT %s\r\nPING\r\n", connect); err != nil {
		return "", err
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("reading the answer: %w", err)
		}
		if strings.HasPrefix(line, "PONG") || strings.HasPrefix(line, "-ERR") {
			return strings.TrimSpace(line), nil
		}
	}
}

// faultPhase is how long each destination fault lasts:
// JUNCTION_FAULTS_PHASE seconds, by default 15. The longer suite runs the
// outages for minutes (for example 120).
func faultPhase(t *testing.T) time.Duration {
	return time.Duration(envInt(t, "JUNCTION_FAULTS_PHASE", 15)) * time.Second
}

func distinct(keys []string) int {
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k] = true
	}
	return len(seen)
}

// TestStopJunctionReplica freezes (SIGSTOP) one of two Junction replicas
// for 15 seconds, three times, alternately, while senders keep going.
// The frozen replica's in-flight messages go to the other after ack_wait;
// when it thaws it may finish them again. Nothing acknowledged may be
// lost or reordered; a second delivery under the same MSH-10 is allowed
// (at-least-once) and counted.
func TestStopJunctionReplica(t *testing.T) {
	tp := newTopology(t, 3, 2)
	n := baseMessages(t) / 4
	msgs := durability.Plan("J", n, patients)
	st := durability.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	done := sendInBackground(ctx, tp, msgs, 60*time.Second, st)
	for k := range 3 {
		time.Sleep(3 * time.Second)
		j := tp.junction[k%len(tp.junction)]
		tp.signal(j, syscall.SIGSTOP)
		time.Sleep(15 * time.Second)
		tp.signal(j, syscall.SIGCONT)
	}
	if err := <-done; err != nil {
		t.Fatalf("senders: %v", err)
	}
	v := checkDelivered(t, tp, msgs, st, 6*time.Minute)
	rep := checkReconciled(t, tp)
	t.Logf("FIGURES stop-junction: %d messages, %d acknowledged; 3 SIGSTOPs of a replica for 15s; resends %d; sink: %d distinct, %d lost, %d redelivered (same MSH-10), %d inversions; reconcile: accepted %d, pending %d",
		n, v.Acked, st.Resends.Load(), v.Distinct, len(v.Lost), v.Duplicated, len(v.Inversions), rep.Accepted, len(rep.Pending))
}
