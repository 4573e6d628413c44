package main

import (
	"context"
	"fmt"
	"io"
	"slices"
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
	conns := fs.Int("conns", 8, "concurrent connections, each sending one message at a time")
	dur := fs.Duration("duration", 10*time.Second, "how long to send")
	patients := fs.Int("patients", 500, "distinct synthetic patients (999-range NHS numbers)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *conns < 1 || *patients < 1 || *dur <= 0 {
		return fmt.Errorf("conns, patients and duration must be positive")
	}
	run := fmt.Sprintf("B%d", time.Now().UnixNano()%1_000_000_000)
	deadline := time.Now().Add(*dur)
	var sent, bad atomic.Int64
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
				msg := benchADT(ctrl, nhs.TestNumber((c*7919+i)%*patients))
				t0 := time.Now()
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				reply, err := cl.Send(sctx, msg)
				cancel()
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lats[c] = append(lats[c], time.Since(t0))
				sent.Add(1)
				code, got, _, err := hl7v2.ParseAck(reply)
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
		return fmt.Errorf("bench: %w", err)
	}
	slices.Sort(all)
	pct := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(float64(len(all))*p))]
	}
	fmt.Fprintf(stdout, "connections %d, duration %s, messages %d, not accepted %d\n", *conns, elapsed.Round(time.Millisecond), sent.Load(), bad.Load())
	fmt.Fprintf(stdout, "throughput %.0f msgs/s\n", float64(sent.Load())/elapsed.Seconds())
	fmt.Fprintf(stdout, "ack latency p50 %s p99 %s p99.9 %s max %s\n", pct(.5), pct(.99), pct(.999), pct(1))
	if err, _ := firstErr.Load().(error); err != nil {
		fmt.Fprintf(stdout, "stopped early on a connection: %v\n", err)
	}
	if bad.Load() > 0 {
		return exitError{code: 1}
	}
	return nil
}

// benchADT is a synthetic ADT^A01 of about 900 bytes.
func benchADT(ctrl, nhsNumber string) []byte {
	now := time.Now().UTC().Format("20060102150405")
	s := "MSH|^~\\&|BENCHPAS|RX1|JUNCTION|RX1|" + now + "||ADT^A01^ADT_A01|" + ctrl + "|P|2.4|||AL|NE\r" +
		"EVN|A01|" + now + "\r" +
		"PID|1||" + nhsNumber + "^^^NHS^NH~MRN" + ctrl[len(ctrl)-4:] + "^^^RX1^MR||TESTPATIENT^ALEX^J^^MX||19800101|F|||1 TEST STREET^^LEEDS^^LS1 1AA^GBR||01130000000^PRN^PH|||||||||||||||||||NSTS01\r" +
		"PD1|||TEST SURGERY^^B86001|G9999981^TESTDOCTOR^SAM\r" +
		"PV1|1|I|WARD1^BED2^1^RX1||||C1234567^TESTCONSULTANT^JO^^^DR|||GEN|||||||||V" + ctrl + "|||||||||||||||||||||||||" + now + "\r" +
		"NK1|1|TESTPATIENT^CHRIS|SPO|1 TEST STREET^^LEEDS^^LS1 1AA^GBR|01130000001\r" +
		"AL1|1|DA|PENICILLIN\r" +
		"DG1|1||J18.9^Pneumonia^I10\r"
	return []byte(s)
}
