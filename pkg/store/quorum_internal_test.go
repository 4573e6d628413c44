package store

import (
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
