package envelope

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
)

func TestHeaderRoundTrip(t *testing.T) {
	received := time.Date(2026, 1, 15, 10, 30, 0, 123456789, time.FixedZone("BST", 3600))
	tests := []struct {
		name string
		env  Envelope
		// want is the header map Header must produce.
		want nats.Header
	}{
		{
			name: "hl7 with every key",
			env: Envelope{ID: "01HZTEST", Source: "pas", ContentType: ContentTypeHL7v2, ReceivedAt: received,
				MessageType: "ADT^A01", ControlID: "MSG00001", Sender: "PAS|RX1", DedupeKey: "PAS|RX1|MSG00001", Partition: 7,
				Raw: []byte("MSH|^~\\&|PAS|RX1\rPID|1||9990000018^^^NHS^NH\r")},
			want: nats.Header{
				HeaderID: {"01HZTEST"}, HeaderSource: {"pas"}, HeaderContentType: {ContentTypeHL7v2},
				HeaderReceived: {"2026-01-15T09:30:00.123456789Z"}, HeaderMsgType: {"ADT^A01"}, HeaderControlID: {"MSG00001"},
				HeaderSender: {"PAS|RX1"}, HeaderDedupe: {"PAS|RX1|MSG00001"}, HeaderPartition: {"7"},
			},
		},
		{
			name: "optional keys left out",
			env:  Envelope{ID: "01HZTEST2", Source: "fhir", ContentType: ContentTypeFHIR, ReceivedAt: received, Raw: []byte(`{"resourceType":"Patient"}`)},
			want: nats.Header{
				HeaderID: {"01HZTEST2"}, HeaderSource: {"fhir"}, HeaderContentType: {ContentTypeFHIR},
				HeaderReceived: {"2026-01-15T09:30:00.123456789Z"}, HeaderPartition: {"0"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.env.Header()
			if diff := cmp.Diff(tt.want, h); diff != "" {
				t.Errorf("Header (-want +got):\n%s", diff)
			}
			back := FromHeader(h, tt.env.Raw)
			want := tt.env
			want.ReceivedAt = want.ReceivedAt.UTC()
			if diff := cmp.Diff(&want, back); diff != "" {
				t.Errorf("FromHeader (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHeaderHoldsNoPayload(t *testing.T) {
	env := Envelope{ID: "x", Source: "pas", Raw: []byte("PID|1||9990000018^^^NHS^NH||TESTPATIENT^ALEX")}
	for k, vs := range env.Header() {
		for _, v := range vs {
			if v == string(env.Raw) {
				t.Errorf("header %s carries the payload", k)
			}
		}
	}
}

func TestFromHeaderToleratesBadValues(t *testing.T) {
	h := nats.Header{}
	h.Set(HeaderID, "01X")
	h.Set(HeaderReceived, "yesterday")
	h.Set(HeaderPartition, "seven")
	got := FromHeader(h, nil)
	want := &Envelope{ID: "01X"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := FromHeader(nil, []byte("x")); got.ID != "" || string(got.Raw) != "x" {
		t.Errorf("FromHeader(nil) = %+v", got)
	}
}
