package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestCLIAuditVerify writes chained, checkpointed records into an embedded
// store, then runs "audit verify" on it: clean, then after a forged record
// is appended (the only tampering the stream allows through NATS).
func TestCLIAuditVerify(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "audit.pem")
	if code, _, errOut := cliRun(t, "audit", "keygen", "--out", keyPath); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errOut)
	}
	if code, _, _ := cliRun(t, "audit", "keygen", "--out", keyPath); code == 0 {
		t.Error("keygen overwrote an existing key")
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	cfgPath, cfg := writeConfig(t, dir, fmt.Sprintf("data_dir: %q\naudit:\n  signing_key: %q\n", filepath.Join(dir, "data"), "file:"+keyPath))
	key, err := signingKey(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Write, then close the store so the CLI can open the same directory.
	var chain string
	withStore(t, cfg, func(st *store.Store) {
		w := audit.NewWriter(st.JS, audit.WithSigningKey(key))
		chain = w.Chain()
		for i := range 5 {
			id := fmt.Sprintf("01JQ4Z9A7B8C9D0E1F2G3H4J%02d", i)
			if err := w.Write(t.Context(), id, "", audit.Record{Time: time.Unix(int64(i), 0).UTC(), MessageID: id, Event: audit.Received}); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Fatal(err)
		}
	})

	code, out, errOut := cliRun(t, "audit", "verify", "-c", cfgPath)
	if code != 0 {
		t.Fatalf("verify on an untouched stream: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("verify output:\n%s", out)
	if !strings.Contains(out, "chain "+chain+"  positions 1-5  stored 5  checkpoint at 5") || !strings.Contains(out, "ok: every chain verifies") {
		t.Errorf("verify output:\n%s", out)
	}

	// A public key that did not sign the checkpoint: the checkpoint is bad.
	_, otherPub, err := audit.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	otherPath := writeFile(t, dir, "other.pub", string(otherPub))
	code, out, _ = cliRun(t, "audit", "verify", "-c", cfgPath, "--public-key", "file:"+otherPath)
	if code != 1 || !strings.Contains(out, "bad_checkpoint chain "+chain) {
		t.Errorf("verify with another key: exit %d, want 1\n%s", code, out)
	}

	// Forge a record at a position the chain already holds.
	withStore(t, cfg, func(st *store.Store) {
		m := nats.NewMsg(audit.Subject("01JQ4Z9A7B8C9D0E1F2G3H4J99"))
		m.Data = []byte(`[]`)
		m.Header.Set(audit.HeaderChain, chain)
		m.Header.Set(audit.HeaderSeq, "3")
		m.Header.Set(audit.HeaderPrev, audit.GenesisHash)
		m.Header.Set(audit.HeaderHash, audit.GenesisHash)
		if _, err := st.JS.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	})
	code, out, errOut = cliRun(t, "audit", "verify", "-c", cfgPath, "--public-key", "file:"+keyPath+".pub", "--json")
	if code != 1 {
		t.Fatalf("verify after a forgery: exit %d, want 1\n%s%s", code, out, errOut)
	}
	var rep audit.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if len(rep.Findings) != 1 || rep.Findings[0].Kind != audit.FindDuplicate || rep.Findings[0].Chain != chain || rep.Findings[0].Seq != 3 {
		t.Errorf("findings %v; want one duplicate at position 3", rep.Findings)
	}

	// A store that cannot be opened is not "tampered": exit 3.
	code, _, errOut = cliRun(t, "audit", "verify", "-c", filepath.Join(dir, "missing.yaml"))
	if code != exitVerifyFailed || !strings.Contains(errOut, "junction audit verify: ") {
		t.Errorf("verify without a config: exit %d, stderr %q", code, errOut)
	}
}
