package engine_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStoreOutOfStorage runs an engine on a server with little storage
// and fills it: a message the store refuses gets AR at once (not after
// the ingest write's retry budget, 10 s), readiness falls with the reason
// while nothing can be stored, and returns when a write succeeds again.
func TestStoreOutOfStorage(t *testing.T) {
	srv, js := startNATS(t, 4<<20)
	e, _ := startEngine(t, "nats:\n  url: "+srv.ClientURL()+"\n  monitor_urls: [http://"+srv.MonitorAddr().String()+"]\n")
	base := "http://" + e.HTTPAddr().String()
	addr := mllpAddr(t, e)

	// Messages of 256 KiB fill 4 MiB within a few, counting the copies
	// the pipeline keeps of each; random text, as batches are compressed.
	var code hl7v2.AckCode
	var took time.Duration
	for i := 0; i < 64; i++ {
		noise := make([]byte, 192<<10)
		_, _ = rand.Read(noise)
		pad := "NTE|1||" + base64.StdEncoding.EncodeToString(noise) + "\r"
		start := time.Now()
		code, _ = send(t, addr, adt("A08", "FULL"+strconv.Itoa(i), "9990000018^^^NHS^NH")+pad)
		took = time.Since(start)
		if code != hl7v2.AckAA {
			break
		}
	}
	if code != hl7v2.AckAR {
		t.Fatalf("last answer %s after 16 MiB sent to a 4 MiB store, want AR", code)
	}
	if took >= 5*time.Second {
		t.Errorf("the refused message was answered after %s: the refusal was retried", took.Round(time.Millisecond))
	}
	// Counted by why: the store, not the message.
	if refused := testutil.ToFloat64(e.Metrics().Rejected.WithLabelValues("pas", string(fault.CodeStoreUnavailable))); refused < 1 {
		t.Errorf("the store's refusal was not counted in ingress_rejected_total under a store reason")
	}
	var why map[string]string
	if st := getJSON(t, base+"/readyz", &why); st != http.StatusServiceUnavailable || !strings.Contains(why["reason"], "out of storage") {
		t.Errorf("readyz with the store full: %d %v, want 503 saying it is out of storage", st, why)
	}

	// Space freed: the next message is stored, and the engine is ready.
	for _, name := range []string{store.StreamIngestLog, store.StreamIngress, store.StreamOutbound} {
		st, err := js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Purge(context.Background()); err != nil {
			t.Fatalf("purging %s: %v", name, err)
		}
	}
	if code, _ := send(t, addr, adt("A08", "FREED", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("after space was freed: %s, want AA", code)
	}
	if st := getJSON(t, base+"/readyz", nil); st != http.StatusOK {
		t.Errorf("readyz once a message was stored again: %d, want 200", st)
	}
}
