package audit

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestRecreated: an audit stream made after the ingress stream by more
// than the allowance (deleted, with every record, and made again) is a
// finding; one made with it, or with no ingress stream beside it, is not.
func TestRecreated(t *testing.T) {
	js := jstest.Start(t, "recreated")
	ctx := t.Context()
	mk := func(name, subject string) {
		t.Helper()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject + ".>"}}); err != nil {
			t.Fatal(err)
		}
	}
	mk(store.StreamAudit, store.SubjAudit)
	if f, err := recreated(ctx, js, 0); err != nil || f != nil {
		t.Fatalf("no ingress stream: %v, %v; want no finding", f, err)
	}
	time.Sleep(50 * time.Millisecond)
	mk(store.StreamIngress, store.SubjIngress)
	if f, err := recreated(ctx, js, 0); err != nil || f != nil {
		t.Fatalf("audit stream older than the ingress stream: %v, %v; want no finding", f, err)
	}
	if err := js.DeleteStream(ctx, store.StreamAudit); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	mk(store.StreamAudit, store.SubjAudit)
	f, err := recreated(ctx, js, 10*time.Millisecond)
	if err != nil || f == nil || f.Kind != FindRecreated || !strings.Contains(f.Detail, "deleted and made again") {
		t.Fatalf("audit stream made again: %v, %v; want a %s finding", f, err, FindRecreated)
	}
	if f, err := recreated(ctx, js, time.Hour); err != nil || f != nil {
		t.Errorf("within the allowance: %v, %v; want no finding", f, err)
	}
	if f, err := Recreated(ctx, js); err != nil || f != nil {
		t.Errorf("Recreated, streams made together: %v, %v; want no finding", f, err)
	}
}
