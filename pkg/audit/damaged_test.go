package audit_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestVerifyDamagedBlock: an audit stream whose first block file was cut
// short (a torn copy, a damaged disk) has messages the store counts but
// cannot produce. VerifyStream reports them as unreadable, with the
// chain positions in them missing, and checks the records after them;
// ReadStream says which messages it cannot read rather than only that
// it stopped.
func TestVerifyDamagedBlock(t *testing.T) {
	dir := t.TempDir()
	js, stop := jstest.StartIn(t, "damaged", dir)
	// A small size limit makes the server cut the stream into small
	// blocks (it never reaches the limit here), so one block can be
	// damaged while later ones stay whole.
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, Storage: jetstream.FileStorage,
		DenyDelete: true, DenyPurge: true, MaxBytes: 120_000,
		// As Junction makes it: a full block is compressed whole, so a
		// damaged one cannot be read at all.
		Compression: jetstream.S2Compression,
	}); err != nil {
		t.Fatal(err)
	}
	w := audit.NewWriter(js)
	const records = 150
	for i := range records {
		id := fmt.Sprintf("01JQ4Z9A7B8C9D0E1F2G3H%04d", i)
		if err := w.Write(t.Context(), id, "", rec(id, audit.Received, i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	closeWriter(t, w)
	stop()
	msgs := filepath.Join(dir, "jetstream", "$G", "streams", store.StreamAudit, "msgs")
	if _, err := os.Stat(filepath.Join(msgs, "2.blk")); err != nil {
		t.Fatalf("the stream has one block, none left whole after damaging it: %v", err)
	}
	first := filepath.Join(msgs, "1.blk")
	fi, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(first, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	js, _ = jstest.StartIn(t, "damaged", dir)

	rep, err := audit.VerifyStream(t.Context(), js)
	if err != nil {
		t.Fatalf("VerifyStream: %v", err)
	}
	var unreadable, missing bool
	for _, f := range rep.Findings {
		switch f.Kind {
		case audit.FindUnreadable:
			unreadable = f.StreamSeq == 1
		case audit.FindMissing:
			missing = f.Chain == w.Chain() && f.Seq == 1
		}
	}
	if !unreadable || !missing {
		t.Errorf("findings %v: want unreadable from stream seq 1 and chain positions missing from 1", rep.Findings)
	}
	c := chainReport(t, rep, w.Chain())
	if c.Stored == 0 || c.Stored >= records {
		t.Errorf("chain stored %d of %d records read: want those after the damaged block, not all", c.Stored, records)
	}

	err = audit.ReadStream(t.Context(), js, func(audit.StoredMsg) {})
	if err == nil || !strings.Contains(err.Error(), "cannot read them") {
		t.Errorf("ReadStream = %v, want an error saying which messages cannot be read", err)
	}
}
