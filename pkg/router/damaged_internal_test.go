package router

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jstest"
)

// TestScanDamagedStream: a scan (audit reconcile, find, trails) of a
// stream whose first block file is damaged stops with an error that says
// the store's files are damaged and at which message, not only that
// nothing came.
func TestScanDamagedStream(t *testing.T) {
	js := jstest.DamagedStream(t, jetstream.StreamConfig{Name: "DAMAGED", Subjects: []string{"damaged.>"}}, func(js jetstream.JetStream) {
		for i := range 150 {
			if _, err := js.Publish(t.Context(), "damaged.x", []byte(strings.Repeat("record ", 40+i%7))); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	})
	read := 0
	err := scanFrom(t.Context(), js, "DAMAGED", jetstream.OrderedConsumerConfig{}, scanBatch, func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error) {
		read++
		return false, nil
	})
	if err == nil || !strings.Contains(err.Error(), "cannot read it: its files are damaged") || !strings.Contains(err.Error(), "message 1 of 150") {
		t.Errorf("scan of a damaged stream (%d read) = %v, want an error naming message 1 as unreadable, its files damaged", read, err)
	}
}
