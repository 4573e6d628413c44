package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/mllp"
	"github.com/junction-fhir/junction/pkg/nhs"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "", stderr)
	addr := fs.String("addr", "127.0.0.1:2575", "MLLP address of a running junction")
	cfgPath := fs.String("c", "", "the running engine's config file: --addr defaults to the listen address of its input --input, --metrics to its http.listen's /metrics")
	input := fs.String("input", "pas", "with -c: the input to send to")
	conns := fs.Int("conns", 8, "concurrent connections, each sending one message at a time")
	dur := fs.Duration("duration", 10*time.Second, "how long to send")
	patients := fs.Int("patients", 500, "distinct synthetic patients (999-range NHS numbers)")
	metrics := fs.String("metrics", "", "URL of the junction's /metrics: report its group commit, and after sending wait until every accepted message is delivered and report the full-route rate (the engine must be the only one on its store: it counts its own deliveries)")
	dest := fs.String("destination", "fhir-store", "with --metrics: the destination whose deliveries are counted (empty: for an engine with no routes, wait instead until every message is accepted for routing)")
	drainFor := fs.Duration("drain-timeout", 10*time.Minute, "with --metrics: how long to wait for an engine busy with earlier messages before sending, and for deliveries (or acceptance) after")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *conns < 1 || *patients < 1 || *dur <= 0 {
		return fmt.Errorf("conns, patients and duration must be positive")
	}
	if *cfgPath != "" {
		a, err := readEngineAddrs(*cfgPath)
		if err != nil {
			return err
		}
		if !set(fs, "addr") {
			if *addr, err = a.input(*input); err != nil {
				return err
			}
		}
		if !set(fs, "metrics") {
			*metrics = a.api + "/metrics"
		}
	}
	var before, acceptedBefore float64
	var commitsBefore commitStats
	var useBefore engineUse
	if *metrics != "" {
		text, err := waitIdle(ctx, *metrics, *dest, *drainFor, idleFor, stdout)
		if err != nil {
			return err
		}
		if *dest, err = benchDestination(text, *dest, set(fs, "destination"), stdout); err != nil {
			return err
		}
		before, acceptedBefore, commitsBefore, useBefore = parseDelivered(text, *dest), parseAccepted(text), parseCommits(text), parseUse(text)
	}
	var mem *memWatch
	if *metrics != "" {
		mem = watchMemory(ctx, *metrics, memInterval)
		defer mem.Stop()
	}
	run := fmt.Sprintf("B%d", time.Now().UnixNano()%1_000_000_000)
	deadline := time.Now().Add(*dur)
	var sent, bad, later atomic.Int64
	lats := make([][]time.Duration, *conns)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for c := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := mllp.Dial(ctx, *addr, nil, 1<<20)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			defer cl.Close()
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				ctrl := fmt.Sprintf("%s-%d-%d", run, c, i)
				pt := benchPatient(c, i, *conns, *patients)
				msg := benchADT(ctrl, nhs.TestNumber(pt), fmt.Sprintf("MRN%06d", pt))
				t0 := time.Now()
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				reply, err := cl.Send(sctx, msg)
				cancel()
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				code, got, _, err := hl7v2.ParseAck(reply)
				if err == nil && got == ctrl && (code == hl7v2.AckAR || code == hl7v2.AckCE) && hl7v2.RetryLater(hl7v2.AckErrorCodes(reply)) {
					// Not stored, resend later (a store down, or routing
					// behind router.max_backlog): as a sender would, wait
					// and send the same message again.
					later.Add(1)
					select {
					case <-ctx.Done():
					case <-time.After(resendPause):
					}
					i--
					continue
				}
				lats[c] = append(lats[c], time.Since(t0))
				sent.Add(1)
				if err != nil || !code.Accepted() || got != ctrl {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	if err, _ := firstErr.Load().(error); err != nil && len(all) == 0 {
		return err
	}
	slices.Sort(all)
	pct := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(float64(len(all))*p))]
	}
	fmt.Fprintf(stdout, "connections %d, duration %s, messages %d, not accepted %d\n", *conns, elapsed.Round(time.Millisecond), sent.Load(), bad.Load())
	if n := later.Load(); n > 0 {
		fmt.Fprintf(stdout, "answered resend later %d times (each resent after %s; not counted above)\n", n, resendPause)
	}
	fmt.Fprintf(stdout, "throughput %.0f msgs/s\n", float64(sent.Load())/elapsed.Seconds())
	fmt.Fprintf(stdout, "ack latency p50 %s p99 %s p99.9 %s max %s\n", pct(.5), pct(.99), pct(.999), pct(1))
	if err, _ := firstErr.Load().(error); err != nil {
		fmt.Fprintf(stdout, "stopped early on a connection: %v\n", err)
	}
	if user, sys, ok := processCPU(); ok && sent.Load() > 0 {
		fmt.Fprintf(stdout, "bench client CPU user %s sys %s (%s a message; it shares the machine with the engine)\n",
			user.Round(time.Millisecond), sys.Round(time.Millisecond), ((user + sys) / time.Duration(sent.Load())).Round(100*time.Nanosecond))
	}
	if *metrics != "" {
		if text, err := scrape(ctx, *metrics); err == nil {
			c := parseCommits(text).since(commitsBefore)
			if c.writes > 0 && c.timed > 0 {
				fmt.Fprintf(stdout, "group commit: %.0f fsynced writes, %.1f messages a write, %s a write\n",
					c.writes, c.messages/c.writes, time.Duration(c.seconds/c.timed*float64(time.Second)).Round(time.Microsecond))
			}
			if *dest == "" && sent.Load() > 0 {
				parseUse(text).since(useBefore).report(stdout, "while sending", "a message", float64(sent.Load()))
			}
		}
	}
	if *metrics != "" && *dest == "" && sent.Load() > bad.Load() {
		// Acknowledged is stored; whether the stage reading the ingest log
		// kept up is another matter, and decides the rate ingest can
		// sustain.
		want := acceptedBefore + float64(sent.Load()-bad.Load())
		actx, cancel := context.WithTimeout(ctx, *drainFor)
		defer cancel()
		got, err := waitCount(actx, *metrics, parseAccepted, want)
		took := time.Since(start)
		if err != nil {
			return fmt.Errorf("%d of %.0f accepted for routing after %s: %w", int64(got-acceptedBefore), want-acceptedBefore, took.Round(time.Millisecond), err)
		}
		fmt.Fprintf(stdout, "accepted for routing: %.0f %s after the first send: %.0f msgs/s\n", got-acceptedBefore, took.Round(time.Millisecond), (got-acceptedBefore)/took.Seconds())
	}
	if *metrics != "" && *dest != "" {
		want := before + float64(sent.Load()-bad.Load())
		dctx, cancel := context.WithTimeout(ctx, *drainFor)
		defer cancel()
		got, err := waitCount(dctx, *metrics, func(text string) float64 { return parseDelivered(text, *dest) }, want)
		took := time.Since(start)
		if err != nil {
			return fmt.Errorf("%d of %.0f delivered to %s after %s: %w", int64(got-before), want-before, *dest, took.Round(time.Millisecond), err)
		}
		fmt.Fprintf(stdout, "full route: %.0f delivered to %s %s after the first send: %.0f msgs/s\n", got-before, *dest, took.Round(time.Millisecond), (got-before)/took.Seconds())
		if text, err := scrape(ctx, *metrics); err == nil && got > before {
			parseUse(text).since(useBefore).report(stdout, "from the first send to the last delivery", "a delivered message", got-before)
		}
	}
	if mem != nil {
		reportMemory(stdout, mem.Stop(), start.Add(elapsed/2), start.Add(elapsed))
	}
	if bad.Load() > 0 {
		return exitError{code: 1}
	}
	return nil
}

// benchDestination checks the destination whose deliveries a run with
// --metrics counts against the engine's metrics, so that a run waits for
// none that will never come: an engine with no routes delivers nothing,
// so the default destination gives way to ingest alone (dest "", said on
// stdout) and one named with --destination is refused; so is a name the
// engine has no destination of.
func benchDestination(metrics, dest string, named bool, stdout io.Writer) (string, error) {
	if dest == "" {
		return "", nil
	}
	if _, ok := findSeries(metrics, "junction_route_messages_total"); !ok {
		if named {
			return "", fmt.Errorf("the engine runs no routes, so nothing is delivered to %s: give --destination '' to measure ingest alone", dest)
		}
		fmt.Fprintln(stdout, "the engine runs no routes: measuring ingest alone (messages accepted for routing), as --destination '' does")
		return "", nil
	}
	if _, ok := findSeries(metrics, "junction_delivery_messages_total", `destination="`+dest+`"`); !ok {
		return "", fmt.Errorf("the engine has no destination named %s (--destination)", dest)
	}
	return dest, nil
}

// resendPause is how long bench waits before sending again a message
// answered "resend later" (ERR 206 or 207).
const resendPause = 100 * time.Millisecond

// memInterval is how often a run with --metrics samples the engine's
// resident memory.
const memInterval = time.Second

// idleFor is how long the engine's counters must stand still before a
// run with --metrics starts.
const idleFor = time.Second

// waitIdle scrapes url until the messages accepted for routing and those
// delivered to dest have not moved for quiet and nothing waits for dest
// or for a route
// (a destination retrying with a long backoff moves no counter; the
// engine samples that depth every 5 s, so a backlog younger than that is
// caught by the counters moving), and returns that scrape. An engine still working through earlier messages
// would otherwise have them counted in this run's full-route rate.
func waitIdle(ctx context.Context, url, dest string, limit, quiet time.Duration, stdout io.Writer) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	counts := func(text string) [2]float64 { return [2]float64{parseAccepted(text), parseDelivered(text, dest)} }
	text, err := scrape(ctx, url)
	if err != nil {
		return "", err
	}
	for told := false; ; {
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("the engine was still busy with earlier messages after %s: %w", limit, ctx.Err())
		case <-time.After(quiet):
		}
		next, err := scrape(ctx, url)
		if err != nil {
			return "", err
		}
		if counts(next) == counts(text) && parseRouteBacklog(next) == 0 && (dest == "" || parseQueueDepth(next, dest) == 0) {
			return next, nil
		}
		if !told {
			fmt.Fprintln(stdout, "waiting for the engine to finish earlier messages before sending")
			told = true
		}
		text = next
	}
}

// benchPatient returns which of patients the i-th message of connection c
// (of conns) is about: the connections take turns through them, so the
// first patients messages name patients different patients, however many
// there are. While patients is at least conns, each connection keeps to
// patients of its own (c, c+conns, c+2*conns...), so no patient has two
// messages in flight at once, however far apart the connections drift
// (each waits for its own answers).
func benchPatient(c, i, conns, patients int) int {
	if patients < conns {
		return (i*conns + c) % patients
	}
	own := (patients - c + conns - 1) / conns // c's patients: those below patients
	return c + conns*(i%own)
}

// benchADT is a synthetic ADT^A01 of about 900 bytes for the patient
// with NHS number nhsNumber and hospital number mrn. A patient keeps one
// hospital number across messages, as at a real trust, so the patient
// index sees repeat admissions rather than a new identifier each time.
func benchADT(ctrl, nhsNumber, mrn string) []byte {
	now := time.Now().UTC().Format("20060102150405")
	s := "MSH|^~\\&|BENCHPAS|RX1|JUNCTION|RX1|" + now + "||ADT^A01^ADT_A01|" + ctrl + "|P|2.4|||AL|NE\r" +
		"EVN|A01|" + now + "\r" +
		"PID|1||" + nhsNumber + "^^^NHS^NH~" + mrn + "^^^RX1^MR||TESTPATIENT^ALEX^J^^MX||19800101|F|||1 TEST STREET^^LEEDS^^LS1 1AA^GBR||01130000000^PRN^PH|||||||||||||||||||NSTS01\r" +
		"PD1|||TEST SURGERY^^B86001|G9999981^TESTDOCTOR^SAM\r" +
		"PV1|1|I|WARD1^BED2^1^RX1||||C1234567^TESTCONSULTANT^JO^^^DR|||GEN|||||||||V" + ctrl + "|||||||||||||||||||||||||" + now + "\r" +
		"NK1|1|TESTPATIENT^CHRIS|SPO|1 TEST STREET^^LEEDS^^LS1 1AA^GBR|01130000001\r" +
		"AL1|1|DA|PENICILLIN\r" +
		"DG1|1||J18.9^Pneumonia^I10\r"
	return []byte(s)
}

// waitCount polls the metrics until the count parse reads from them
// reaches want, and returns the last count read.
func waitCount(ctx context.Context, url string, parse func(text string) float64, want float64) (float64, error) {
	var got float64
	for {
		if text, err := scrape(ctx, url); err == nil {
			got = parse(text)
			if got >= want {
				return got, nil
			}
		}
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// scrape reads a Prometheus text exposition from url.
func scrape(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("metrics URL: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("reading metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("reading metrics: HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", fmt.Errorf("reading metrics: %w", err)
	}
	return string(body), nil
}

// commitStats are the engine's group-commit counters.
type commitStats struct{ writes, messages, seconds, timed float64 }

func (c commitStats) since(b commitStats) commitStats {
	return commitStats{c.writes - b.writes, c.messages - b.messages, c.seconds - b.seconds, c.timed - b.timed}
}

// unlabelled calls fn with each unlabelled sample of an exposition.
func unlabelled(text string, fn func(name string, v float64)) {
	for line := range strings.SplitSeq(text, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			fn(name, v)
		}
	}
}

// parseCommits reads the group-commit counters from an exposition.
func parseCommits(text string) commitStats {
	var c commitStats
	unlabelled(text, func(name string, v float64) {
		switch name {
		case "junction_ingress_commits_total":
			c.writes = v
		case "junction_ingress_commit_messages_total":
			c.messages = v
		case "junction_ingress_commit_seconds_sum":
			c.seconds = v
		case "junction_ingress_commit_seconds_count":
			c.timed = v
		}
	})
	return c
}

// engineUse is what the engine has spent: its process CPU seconds (user
// and system) and the messages its store connection sent and received.
type engineUse struct{ cpu, sent, received float64 }

func (u engineUse) since(b engineUse) engineUse {
	return engineUse{u.cpu - b.cpu, u.sent - b.sent, u.received - b.received}
}

// parseUse reads the engine's use from an exposition; absent counters
// are 0.
func parseUse(text string) engineUse {
	var u engineUse
	unlabelled(text, func(name string, v float64) {
		switch name {
		case "process_cpu_seconds_total":
			u.cpu = v
		case `junction_store_client_messages_total{direction="sent"}`:
			u.sent = v
		case `junction_store_client_messages_total{direction="received"}`:
			u.received = v
		}
	})
	return u
}

// report prints u shared among n messages: the CPU, and the store
// traffic (steadier than timings on a shared machine) when the engine
// counts it.
func (u engineUse) report(w io.Writer, when, each string, n float64) {
	if u.cpu > 0 {
		fmt.Fprintf(w, "engine CPU %s: %s %s\n", when, time.Duration(u.cpu/n*float64(time.Second)).Round(time.Microsecond), each)
	}
	if u.sent > 0 {
		fmt.Fprintf(w, "engine store traffic %s: %.1f messages sent and %.1f received %s\n", when, u.sent/n, u.received/n, each)
	}
}

// parseAccepted sums junction_ingress_accepted_total over the inputs (0
// when absent: nothing accepted yet).
func parseAccepted(text string) float64 {
	var n float64
	for line := range strings.SplitSeq(text, "\n") {
		if !strings.HasPrefix(line, "junction_ingress_accepted_total{") {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		if end < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64); err == nil {
			n += v
		}
	}
	return n
}

// parseDelivered finds dest's delivered count in a Prometheus text
// exposition (0 when absent: nothing delivered yet).
func parseDelivered(text, dest string) float64 {
	return parseSeries(text, "junction_delivery_messages_total", `destination="`+dest+`"`, `outcome="delivered"`)
}

// parseQueueDepth finds dest's queue depth (0 when absent).
func parseQueueDepth(text, dest string) float64 {
	return parseSeries(text, "junction_delivery_queue_depth_messages", `destination="`+dest+`"`)
}

// parseRouteBacklog sums the routes' queue depths: stored messages no
// route has finished (0 when absent).
func parseRouteBacklog(text string) float64 {
	var sum float64
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, "junction_route_queue_depth_messages{")
		if !ok {
			continue
		}
		if end := strings.LastIndexByte(rest, '}'); end >= 0 {
			if v, err := strconv.ParseFloat(strings.TrimSpace(rest[end+1:]), 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// parseSeries finds the value of metric name whose labels include every
// one of labels, in a Prometheus text exposition (0 when absent).
func parseSeries(text, name string, labels ...string) float64 {
	v, _ := findSeries(text, name, labels...)
	return v
}

// findSeries returns the value of the first series of metric name
// carrying every one of labels (each as name="value"), and whether there
// is one.
func findSeries(text, name string, labels ...string) (float64, bool) {
	for line := range strings.SplitSeq(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		if end < 0 {
			continue
		}
		have := strings.Split(line[len(name)+1:end], ",")
		if !slices.ContainsFunc(labels, func(l string) bool { return !slices.Contains(have, l) }) {
			if v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}
