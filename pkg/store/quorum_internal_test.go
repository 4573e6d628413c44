package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestHasQuorum(t *testing.T) {
	peer := func(active time.Duration) *jetstream.PeerInfo {
		return &jetstream.PeerInfo{Name: "n", Current: true, Active: active}
	}
	info := func(replicas int, leader string, peers ...*jetstream.PeerInfo) *jetstream.StreamInfo {
		return &jetstream.StreamInfo{
			Config:  jetstream.StreamConfig{Replicas: replicas},
			Cluster: &jetstream.ClusterInfo{Leader: leader, Replicas: peers},
		}
	}
	notCurrent := func(active time.Duration) *jetstream.PeerInfo {
		p := peer(active)
		p.Current = false
		return p
	}
	offline := peer(0)
	offline.Offline = true
	pending := peer(0)
	pending.Pending = true
	tests := []struct {
		name string
		info *jetstream.StreamInfo
		want bool
	}{
		{"no info", nil, true},
		{"one replica", info(1, ""), true},
		{"no leader", info(3, "", peer(0), peer(0)), false},
		{"no cluster info", &jetstream.StreamInfo{Config: jetstream.StreamConfig{Replicas: 3}}, false},
		{"all peers heard", info(3, "n1", peer(time.Second), peer(time.Second)), true},
		{"one peer silent", info(3, "n1", peer(time.Second), peer(8*time.Second)), true},
		// A leader cut off from both peers still names itself leader
		// for 10 to 20 seconds.
		{"both peers silent", info(3, "n1", peer(6*time.Second), peer(8*time.Second)), false},
		{"silent and offline", info(3, "n1", peer(9*time.Second), offline), false},
		{"five, two silent", info(5, "n1", peer(0), peer(0), peer(9*time.Second), peer(9*time.Second)), true},
		{"five, three silent", info(5, "n1", peer(0), peer(9*time.Second), peer(9*time.Second), peer(9*time.Second)), false},
		// Raising replicas from one: the joining peers are no part of
		// the group that stores writes yet.
		{"peers joining", info(3, "n1", pending, pending), true},
		{"current, just heard", info(3, "n1", peer(0), peer(0)), true},
		{"never heard from since the election", info(3, "n1", notCurrent(0), notCurrent(0)), false},
		{"one never heard from", info(3, "n1", notCurrent(0), peer(time.Second)), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := hasQuorum(tc.info); got != tc.want {
				t.Errorf("hasQuorum = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestNotAnswering: the line logged when the store stops answering says
// what is wrong, names the external server connected to last and what to
// check, since the error alone ("context deadline exceeded") says
// neither; the embedded server has no server to name.
func TestNotAnswering(t *testing.T) {
	timeout := context.DeadlineExceeded
	tests := []struct {
		name     string
		err      error
		embedded bool
		replicas int
		msg      string
		noCheck  bool
		checkHas string
		noServer bool
	}{
		{name: "cluster timing out", err: timeout, replicas: 3,
			msg: "store not answering; not ready until it does", checkHas: "at least 2 of each stream's 3 servers"},
		{name: "cluster without a leader", err: errNoLeader, replicas: 5,
			msg: "the ingress stream has no leader (the cluster lost its quorum?); not ready until it has", checkHas: "at least 3 of each stream's 5 servers"},
		{name: "single external server", err: jetstream.ErrStreamNotFound, replicas: 1,
			msg: "store has lost the ingress stream (a server restarted without its storage?); not ready", checkHas: "the NATS server is running and reachable"},
		{name: "embedded", err: timeout, embedded: true, replicas: 1,
			msg: "store not answering; not ready until it does", noCheck: true, noServer: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg, attrs := notAnswering(tc.err, tc.embedded, "nats://h1-nats-0:4222", tc.replicas)
			if msg != tc.msg {
				t.Errorf("message %q, want %q", msg, tc.msg)
			}
			got := map[string]string{}
			for i := 0; i+1 < len(attrs); i += 2 {
				got[attrs[i].(string)] = attrs[i+1].(string)
			}
			if got["err"] != tc.err.Error() {
				t.Errorf("err %q, want %q", got["err"], tc.err.Error())
			}
			if server, ok := got["server"]; ok == tc.noServer || ok && server != "nats://h1-nats-0:4222" {
				t.Errorf("server %q (given: %v), want it named unless embedded", server, ok)
			}
			if check, ok := got["check"]; ok == tc.noCheck || !strings.Contains(check, tc.checkHas) {
				t.Errorf("check %q (given: %v), want one saying %q", check, ok, tc.checkHas)
			}
		})
	}
}

// TestReplicaStates checks how the probe counts the ingress stream's
// copies from its leader's answer.
func TestReplicaStates(t *testing.T) {
	peer := func(mod func(*jetstream.PeerInfo)) *jetstream.PeerInfo {
		p := &jetstream.PeerInfo{Name: "n", Current: true, Active: time.Second}
		if mod != nil {
			mod(p)
		}
		return p
	}
	info := func(replicas int, leader string, peers ...*jetstream.PeerInfo) *jetstream.StreamInfo {
		return &jetstream.StreamInfo{
			Config:  jetstream.StreamConfig{Replicas: replicas},
			Cluster: &jetstream.ClusterInfo{Leader: leader, Replicas: peers},
		}
	}
	tests := []struct {
		name     string
		info     *jetstream.StreamInfo
		replicas int
		want     Replicas
	}{
		{"embedded", &jetstream.StreamInfo{Config: jetstream.StreamConfig{Replicas: 1}}, 1, Replicas{Current: 1}},
		{"no answer, embedded", nil, 1, Replicas{Unreachable: 1}},
		{"no answer, cluster", nil, 3, Replicas{Unreachable: 3}},
		{"all current", info(3, "n1", peer(nil), peer(nil)), 3, Replicas{Current: 3}},
		{"one offline", info(3, "n1", peer(nil), peer(func(p *jetstream.PeerInfo) { p.Offline = true })), 3, Replicas{Current: 2, Unreachable: 1}},
		{"one silent", info(3, "n1", peer(nil), peer(func(p *jetstream.PeerInfo) { p.Active = 6 * time.Second })), 3, Replicas{Current: 2, Unreachable: 1}},
		{"one behind", info(3, "n1", peer(nil), peer(func(p *jetstream.PeerInfo) { p.Current = false; p.Lag = 40 })), 3, Replicas{Current: 2, CatchingUp: 1}},
		{"one joining", info(3, "n1", peer(nil), peer(func(p *jetstream.PeerInfo) { p.Pending = true; p.Active = 0 })), 3, Replicas{Current: 2, CatchingUp: 1}},
		{"one not listed", info(3, "n1", peer(nil)), 3, Replicas{Current: 2, Unreachable: 1}},
		{"no leader", info(3, "", peer(nil), peer(nil)), 3, Replicas{Unreachable: 3}},
		{"five, two lost", info(5, "n1", peer(nil), peer(nil), peer(func(p *jetstream.PeerInfo) { p.Offline = true }), peer(func(p *jetstream.PeerInfo) { p.Offline = true })), 5, Replicas{Current: 3, Unreachable: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := replicaStates(tc.info, tc.replicas); got != tc.want {
				t.Errorf("replicaStates = %+v, want %+v", got, tc.want)
			}
		})
	}
}
