package audit

import (
	"strings"
	"testing"
	"time"
)

// TestStoredFormatsAreFixed pins the byte formats that stored chains and
// signed checkpoints depend on. The other tests build their expectations
// with ChainHash and SignedBytes themselves, so they would pass a change
// to a separator, the field order or the domain string, which would then
// fail verification of every chain already stored. The expected values
// were computed outside Go from the formats the doc comments give.
func TestStoredFormatsAreFixed(t *testing.T) {
	t.Run("chain hash", func(t *testing.T) {
		got := ChainHash("chain-01", 7, strings.Repeat("0", 64), "junction.audit.msg.01TEST", []byte(`{"event":"received"}`))
		// python3: hashlib.sha256(b'junction-audit-chain-v1\nchain-01\n7\n' + b'0'*64
		//   + b'\njunction.audit.msg.01TEST\n{"event":"received"}').hexdigest()
		const want = "085acd1f5468b0aeadfb749937229a9663d33115587d857e118d9670a4a8518c"
		if got != want {
			t.Fatalf("ChainHash = %s, want %s: the stored chain format changed", got, want)
		}
	})
	t.Run("checkpoint signed bytes", func(t *testing.T) {
		at := time.Date(2026, 12, 5, 10, 30, 0, 123456789, time.FixedZone("BST", 3600))
		got := string(Checkpoint{Chain: "chain-01", Seq: 42, Hash: "ab12", Time: at, PublicKey: "ignored", Signature: "ignored"}.SignedBytes())
		const want = "junction-audit-checkpoint-v1\nchain-01\n42\nab12\n2026-12-05T09:30:00.123456789Z"
		if got != want {
			t.Fatalf("SignedBytes = %q, want %q: the signed checkpoint format changed", got, want)
		}
	})
}
