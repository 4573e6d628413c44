package engine_test

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

// TestStoreReplicasMetric checks that an embedded engine reports its one
// copy of the store as current (a cluster's counts are TestReplicas*
// in pkg/store).
func TestStoreReplicasMetric(t *testing.T) {
	e, _ := startEngine(t, "")
	for state, want := range map[string]string{"current": "1", "catching_up": "0", "unreachable": "0"} {
		if got := scrape(t, e.HTTPAddr().String(), `junction_engine_store_servers{state="`+state+`"}`); got != want {
			t.Errorf("junction_engine_store_servers{state=%q} = %q, want %s", state, got, want)
		}
	}
}

// scrape returns the value /metrics gives series, or "" when absent.
func scrape(t *testing.T, addr, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return v
		}
	}
	return ""
}
