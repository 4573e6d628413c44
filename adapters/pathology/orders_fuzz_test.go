package pathology

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// Output bounds of FuzzEncodeOrder: an order message is at most
// maxOrderPerInputByte bytes per input byte plus maxOrderOverhead. The
// encoder writes HL7 v2 from FHIR JSON, which is the more verbose of the
// two: the seeds give 0.2 to 0.35 bytes per input byte, and the header
// segments (MSH, PID, PV1) are under 1 KiB. The worst a byte can do is a
// delimiter escaped (| becomes \F\) in a value written twice (ORC-2 and
// OBR-2), 6 bytes, well inside the bound; faster growth is a bug.
const (
	maxOrderPerInputByte = 16
	maxOrderOverhead     = 16 << 10
)

// FuzzEncodeOrder checks the order encoder never panics on arbitrary
// input, fails only with classed faults, and writes messages that parse
// with one ORC per order reported.
func FuzzEncodeOrder(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "orders", "*.bundle.json"))
	for _, s := range seeds {
		raw, err := os.ReadFile(s)
		if err != nil {
			f.Fatalf("read seed: %v", err)
		}
		f.Add(raw, uint8(0))
		f.Add(raw, uint8(3))
	}
	f.Add([]byte(`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"ServiceRequest","identifier":[{"type":{"coding":[{"code":"PLAC"}]},"value":"|^~\\&\r"}]}},{"resource":{"resourceType":"Patient"}}]}`), uint8(1))
	f.Fuzz(func(t *testing.T, raw []byte, combo uint8) {
		if len(raw) > 1<<16 {
			return
		}
		c := orderCombos[int(combo)%len(orderCombos)]
		out, err := EncodeOrder(raw, testOrderOptions(c.version, c.msgType))
		if err != nil {
			if fault.As(err) == nil {
				t.Fatalf("unclassed error: %v", err)
			}
			return
		}
		if limit := maxOrderPerInputByte*len(raw) + maxOrderOverhead; len(out.Message) > limit {
			t.Fatalf("message of %d bytes from %d input bytes exceeds %d", len(out.Message), len(raw), limit)
		}
		m, err := hl7v2.Parse(out.Message)
		if err != nil {
			t.Fatalf("encoded message does not parse: %v", err)
		}
		if got := len(m.SegmentsNamed("ORC")); got != len(out.Orders) {
			t.Fatalf("%d ORC segments for %d orders", got, len(out.Orders))
		}
		if got := len(m.SegmentsNamed("PID")); got != 1 {
			t.Fatalf("%d PID segments", got)
		}
		for i, o := range out.Orders {
			if got := hl7v2.Unescape(m.SegmentsNamed("ORC")[i].Component(2, 1, 1, 1), m.Delimiters()); got != o.PlacerNumber {
				t.Fatalf("ORC-2.1 reads back %q, sent %q", got, o.PlacerNumber)
			}
		}
	})
}
