// Package durability holds what Junction's durability and fault-injection
// tests share: synthetic PAS feeds whose MSH-10 says which patient and
// which position each message has, senders that resend a message (same
// bytes, same MSH-10) until it is answered AA, as a real PAS does, and the
// checker that compares what the senders had acknowledged with what a
// receiver got: lost, unknown, duplicated, out of per-patient order.
package durability

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/mllp"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// Message is one synthetic message and whose it is.
type Message struct {
	// Ctrl is MSH-10: prefix, patient and position, unique in a plan.
	Ctrl string
	// Patient is the patient's index in the plan.
	Patient int
	// Seq is the message's position in its patient's sequence.
	Seq int
	// Raw is the ER7 message.
	Raw []byte
}

var events = []string{"A01", "A08", "A08", "A03"}

// Plan makes n ADT messages over the given patients, round-robin, with
// unique MSH-10s prefixed by prefix. Patient p has the test NHS number
// nhs.TestNumber(p).
func Plan(prefix string, n, patients int) []Message {
	numbers := make([]string, patients)
	for i := range numbers {
		numbers[i] = nhs.TestNumber(i)
	}
	out := make([]Message, 0, n)
	for k := range n {
		p, seq := k%patients, k/patients
		out = append(out, PlanMessage(prefix, p, seq, numbers[p]))
	}
	return out
}

// PlanMessage makes message seq of patient, who has nhsNumber.
func PlanMessage(prefix string, patient, seq int, nhsNumber string) Message {
	ctrl := fmt.Sprintf("%s%03d-%05d", prefix, patient, seq)
	ev := events[seq%len(events)]
	ts := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Minute).Format("20060102150405")
	s := "MSH|^~\\&|DURPAS|RX1|JUNCTION|RX1|" + ts + "||ADT^" + ev + "^ADT_A01|" + ctrl + "|P|2.4\r" +
		"EVN|" + ev + "|" + ts + "\r" +
		"PID|1||" + nhsNumber + "^^^NHS^NH~MRN" + fmt.Sprintf("%05d", patient) + "^^^RX1^MR||TESTPATIENT^ALEX||19800101|F\r" +
		"PV1|1|I|WARD1^BED2^1^RX1||||||||||||||||V" + fmt.Sprintf("%05d", patient) + "|||||||||||||||||||||||||" + ts + "\r"
	return Message{Ctrl: ctrl, Patient: patient, Seq: seq, Raw: []byte(s)}
}

// PlanResults makes n ORU^R01 result messages (one order, three
// results each) over patients numbered from first, round-robin, with
// unique MSH-10s prefixed by prefix. Patient p has the test NHS number
// nhs.TestNumber(p).
func PlanResults(prefix string, n, first, patients int) []Message {
	out := make([]Message, 0, n)
	for k := range n {
		p, seq := first+k%patients, k/patients
		out = append(out, PlanResult(prefix, p, seq, nhs.TestNumber(p)))
	}
	return out
}

// PlanResult makes result message seq of patient, who has nhsNumber.
func PlanResult(prefix string, patient, seq int, nhsNumber string) Message {
	ctrl := fmt.Sprintf("%s%03d-%05d", prefix, patient, seq)
	ts := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Minute).Format("20060102150405")
	order := fmt.Sprintf("%05d%05d", patient, seq)
	s := "MSH|^~\\&|DURLAB|RX1|JUNCTION|RX1|" + ts + "||ORU^R01^ORU_R01|" + ctrl + "|P|2.5.1\r" +
		"PID|1||" + nhsNumber + "^^^NHS^NH~MRN" + fmt.Sprintf("%05d", patient) + "^^^RX1^MR||TESTPATIENT^ALEX||19800101|F\r" +
		"ORC|RE|PL" + order + "^EPR|FL" + order + "^LAB||CM\r" +
		"OBR|1|PL" + order + "^EPR|FL" + order + "^LAB|UE^Urea and electrolytes^L|||" + ts + "|||||||||||||||" + ts + "||CH|F\r" +
		"OBX|1|NM|NA^Sodium^L||140|mmol/L|133-146|N|||F\r" +
		"OBX|2|NM|K^Potassium^L||4.1|mmol/L|3.5-5.3|N|||F\r" +
		"OBX|3|NM|UREA^Urea^L||5.2|mmol/L|2.5-7.8|N|||F\r"
	return Message{Ctrl: ctrl, Patient: patient, Seq: seq, Raw: []byte(s)}
}

// Stats counts what the senders went through. It is safe for concurrent
// use.
type Stats struct {
	mu       sync.Mutex
	acked    map[string]bool
	ackOrder []string

	// ConnFailures counts dial or send failures (no answer).
	ConnFailures atomic.Int64
	// Negative counts answers that were not AA for the message's MSH-10.
	Negative atomic.Int64
	// Resends counts sends of a message after its first.
	Resends atomic.Int64
	// latencies holds the time from first send to AA of each message.
	latencies []time.Duration
	// acks holds when each message was first sent and when answered AA.
	acks []Ack
}

// Ack is when a message was first sent and when it was answered AA.
type Ack struct {
	Ctrl      string
	FirstSent time.Time
	At        time.Time
}

// NewStats returns empty stats.
func NewStats() *Stats { return &Stats{acked: map[string]bool{}} }

func (s *Stats) ack(ctrl string, first time.Time) {
	now := time.Now()
	s.mu.Lock()
	s.acked[ctrl] = true
	s.ackOrder = append(s.ackOrder, ctrl)
	s.latencies = append(s.latencies, now.Sub(first))
	s.acks = append(s.acks, Ack{Ctrl: ctrl, FirstSent: first, At: now})
	s.mu.Unlock()
}

// Acks returns every AA with its times, in the order answered.
func (s *Stats) Acks() []Ack {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.acks)
}

// AckedCount is the number of messages answered AA.
func (s *Stats) AckedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

// AckedIDs returns the MSH-10s answered AA, in the order answered.
func (s *Stats) AckedIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ackOrder)
}

// Latency returns the q-quantile (0 to 1) of the time from a message's
// first send to its AA, resends included.
func (s *Stats) Latency(q float64) time.Duration {
	s.mu.Lock()
	l := slices.Clone(s.latencies)
	s.mu.Unlock()
	if len(l) == 0 {
		return 0
	}
	slices.Sort(l)
	return l[min(len(l)-1, int(q*float64(len(l))))]
}

// Send sends msgs over `senders` connections, patient p on sender
// p%senders, each message in turn, resending (same bytes) until it is
// answered AA with its MSH-10. addr gives each sender's engine address
// (asked again at each reconnection). Each sender spreads its messages
// over window (zero: as fast as the engine answers), catching up after an
// outage. It returns an error naming the unacknowledged messages if ctx
// ends first.
func Send(ctx context.Context, msgs []Message, senders int, window time.Duration, addr func(sender int) string, st *Stats) error {
	var wg sync.WaitGroup
	errs := make([]error, senders)
	for i := range senders {
		var mine []Message
		for _, m := range msgs {
			if m.Patient%senders == i {
				mine = append(mine, m)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var interval time.Duration
			if len(mine) > 0 {
				interval = window / time.Duration(len(mine))
			}
			errs[i] = SendSequence(ctx, mine, interval, func() string { return addr(i) }, st)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// SendSequence sends msgs one after another on one connection, each
// resent until answered AA with its MSH-10, paced interval apart.
func SendSequence(ctx context.Context, msgs []Message, interval time.Duration, addr func() string, st *Stats) error {
	var c *mllp.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	began := time.Now()
	for i, m := range msgs {
		if d := time.Until(began.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		first := time.Now()
		for attempt := 0; ; attempt++ {
			if ctx.Err() != nil {
				ids := make([]string, 0, len(msgs)-i)
				for _, r := range msgs[i:] {
					ids = append(ids, r.Ctrl)
				}
				return fmt.Errorf("sender gave up with %d messages unacknowledged (first %s): %w", len(ids), strings.Join(ids[:min(len(ids), 10)], ","), ctx.Err())
			}
			if attempt > 0 {
				st.Resends.Add(1)
				time.Sleep(50 * time.Millisecond)
			}
			if c == nil {
				dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				cl, err := mllp.Dial(dctx, addr(), nil, 1<<20)
				cancel()
				if err != nil {
					st.ConnFailures.Add(1)
					continue
				}
				c = cl
			}
			sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			reply, err := c.Send(sctx, m.Raw)
			cancel()
			if err != nil {
				st.ConnFailures.Add(1)
				c.Close()
				c = nil
				continue
			}
			code, ctrl, _, err := hl7v2.ParseAck(reply)
			if err == nil && code == hl7v2.AckAA && ctrl == m.Ctrl {
				st.ack(m.Ctrl, first)
				break
			}
			st.Negative.Add(1)
			if err != nil || ctrl != m.Ctrl {
				// Out of step: start a new connection.
				c.Close()
				c = nil
			}
		}
	}
	return nil
}

// Verdict is what Check found.
type Verdict struct {
	// Acked is the number of messages the senders had answered AA.
	Acked int
	// Distinct is the number of acknowledged messages delivered at least
	// once.
	Distinct int
	// Deliveries is the number of deliveries, repeats included.
	Deliveries int
	// Duplicated is the number of messages delivered more than once, and
	// ExtraDeliveries the deliveries beyond the first.
	Duplicated, ExtraDeliveries int
	// Lost lists acknowledged messages never delivered.
	Lost []string
	// Unknown lists deliveries of messages nobody sent.
	Unknown []string
	// DuplicatedIDs lists messages delivered more than once, as ID×N.
	DuplicatedIDs []string
	// Inversions lists per-patient order inversions among first
	// deliveries.
	Inversions []string
}

// Check compares the acknowledged messages with arrivals, the MSH-10s a
// receiver got in arrival order (repeats included). A patient's messages
// are sent one at a time in Seq order, each after the previous one's AA,
// so their first deliveries must follow the same order.
func Check(msgs []Message, acked []string, arrivals []string) Verdict {
	byID := make(map[string]Message, len(msgs))
	for _, m := range msgs {
		byID[m.Ctrl] = m
	}
	counts := map[string]int{}
	var firsts []string
	for _, id := range arrivals {
		if counts[id] == 0 {
			firsts = append(firsts, id)
		}
		counts[id]++
	}
	v := Verdict{Acked: len(acked), Deliveries: len(arrivals)}
	for _, id := range acked {
		if counts[id] == 0 {
			v.Lost = append(v.Lost, id)
		} else {
			v.Distinct++
		}
	}
	for id, n := range counts {
		if _, ok := byID[id]; !ok {
			v.Unknown = append(v.Unknown, id)
			continue
		}
		if n > 1 {
			v.Duplicated++
			v.ExtraDeliveries += n - 1
			v.DuplicatedIDs = append(v.DuplicatedIDs, fmt.Sprintf("%s×%d", id, n))
		}
	}
	last := map[int]Message{}
	for _, id := range firsts {
		m, ok := byID[id]
		if !ok {
			continue
		}
		if prev, ok := last[m.Patient]; ok && m.Seq < prev.Seq {
			v.Inversions = append(v.Inversions, fmt.Sprintf("patient %d: %s first delivered after %s", m.Patient, m.Ctrl, prev.Ctrl))
		}
		if prev, ok := last[m.Patient]; !ok || m.Seq > prev.Seq {
			last[m.Patient] = m
		}
	}
	slices.Sort(v.Lost)
	slices.Sort(v.Unknown)
	slices.Sort(v.DuplicatedIDs)
	return v
}
