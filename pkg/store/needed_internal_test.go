package store

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/logtest"
)

// TestUnwritable checks what the probe makes of a needed stream's
// answer.
func TestUnwritable(t *testing.T) {
	peer := &jetstream.PeerInfo{Name: "n2", Current: true, Active: time.Second}
	replicated := func(leader string) *jetstream.StreamInfo {
		return &jetstream.StreamInfo{
			Config:  jetstream.StreamConfig{Replicas: 3},
			Cluster: &jetstream.ClusterInfo{Leader: leader, Replicas: []*jetstream.PeerInfo{peer, peer}},
		}
	}
	limited := func(discard jetstream.DiscardPolicy, maxBytes int64, bytes uint64) *jetstream.StreamInfo {
		return &jetstream.StreamInfo{
			Config: jetstream.StreamConfig{Replicas: 1, Discard: discard, MaxBytes: maxBytes},
			State:  jetstream.StreamState{Bytes: bytes},
		}
	}
	for _, tc := range []struct {
		name string
		info *jetstream.StreamInfo
		want string // a part of the answer; "" for writable
	}{
		{"one replica", limited(jetstream.DiscardOld, -1, 10), ""},
		{"replicated with a leader", replicated("n1"), ""},
		{"replicated without a leader", replicated(""), "no leader with a quorum"},
		// Old messages make way for new ones.
		{"at its limit, discard old", limited(jetstream.DiscardOld, 100, 100), ""},
		{"below its limit, discard new", limited(jetstream.DiscardNew, 100, 99), ""},
		{"at its limit, discard new", limited(jetstream.DiscardNew, 100, 100), "full"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := unwritable(tc.info)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("unwritable = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestNeededStaleness: a needed stream that stops answering as writable
// is reported only once it has not for probeStale, as the ingress
// stream is, so one slow answer under load does not take a working
// engine out of service.
func TestNeededStaleness(t *testing.T) {
	for _, tc := range []struct {
		name        string
		since       time.Duration
		cannotWrite bool
	}{
		{"just answered", 0, false},
		{"one probe timed out", probeTimeout + probeInterval, false},
		{"two probes timed out", 2 * (probeTimeout + probeInterval), true},
		{"long silent", time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Store{}
			n := &needed{stream: StreamAudit, holds: "the audit trail"}
			s.watch(n)
			why := "not answering: context deadline exceeded"
			n.why.Store(&why)
			n.lastAnswer.Store(time.Now().Add(-tc.since).UnixNano())
			got := s.CannotWrite()
			if (got != "") != tc.cannotWrite {
				t.Fatalf("CannotWrite = %q %s after the last writable answer", got, tc.since)
			}
			if tc.cannotWrite && !strings.Contains(got, "stream JUNCTION_AUDIT (the audit trail) cannot be written: not answering") {
				t.Errorf("CannotWrite = %q, want the stream, what it holds and why", got)
			}
			if w := s.Writable(); len(w) != 2 || w[1].Stream != StreamAudit || w[1].Writable == tc.cannotWrite {
				t.Errorf("Writable = %+v", w)
			}
		})
	}
}

// TestLogNeeded: the loss of a needed stream is logged once when it
// starts and once when it ends, and not while the ingress stream is not
// answering either (that line says it for them all).
func TestLogNeeded(t *testing.T) {
	s := &Store{cfg: Config{Replicas: 3}}
	n := &needed{stream: "KV_JUNCTION_PATIENTS", bucket: "JUNCTION_PATIENTS", holds: "the patient index"}
	s.watch(n)
	list := s.needed.all()
	old := time.Now().Add(-time.Minute).UnixNano()
	steps := []struct {
		name      string
		fresh     bool
		answering bool
		want      string // the line logged; "" for none
	}{
		{"writable", true, true, ""},
		{"lost with the ingress stream", false, false, ""},
		{"lost alone", false, true, `"msg":"store cannot write a stream messages need`},
		{"still lost", false, true, ""},
		{"writable again", true, true, `"msg":"store writing the stream again"`},
		{"still writable", true, true, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var logs logtest.Buffer
			s.log = slog.New(slog.NewJSONHandler(&logs, nil))
			if st.fresh {
				n.lastAnswer.Store(time.Now().UnixNano())
			} else {
				n.lastAnswer.Store(old)
			}
			s.logNeeded(list, st.answering)
			got := logs.String()
			switch {
			case st.want == "" && got != "":
				t.Errorf("logged %s, want nothing", got)
			case st.want != "" && (strings.Count(got, "\n") != 1 || !strings.Contains(got, st.want) || !strings.Contains(got, `"stream":"KV_JUNCTION_PATIENTS"`)):
				t.Errorf("logged %q, want one line %s naming the stream", got, st.want)
			}
		})
	}
}
