package engine

import (
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// storeTraffic exposes the engine's connection to the store as counters:
// the messages and bytes it sent to NATS and received from it. Every
// publish, request, reply, fetch and acknowledgement is one message, so
// the figure per routed message shows how chatty the pipeline is, which
// on a busy machine is steadier than its timings. The connection is set
// when the store opens; before that there are no samples.
type storeTraffic struct {
	conn     atomic.Pointer[nats.Conn]
	messages *prometheus.Desc
	bytes    *prometheus.Desc
}

func newStoreTraffic() *storeTraffic {
	return &storeTraffic{
		messages: prometheus.NewDesc("junction_store_client_messages_total",
			"Messages the engine's NATS connection sent to the store (direction=\"sent\") and received from it (\"received\").",
			[]string{"direction"}, nil),
		bytes: prometheus.NewDesc("junction_store_client_bytes_total",
			"Payload bytes the engine's NATS connection sent to the store (direction=\"sent\") and received from it (\"received\").",
			[]string{"direction"}, nil),
	}
}

// Describe sends the two descriptions.
func (t *storeTraffic) Describe(ch chan<- *prometheus.Desc) {
	ch <- t.messages
	ch <- t.bytes
}

// Collect sends the connection's counters, if it is open.
func (t *storeTraffic) Collect(ch chan<- prometheus.Metric) {
	nc := t.conn.Load()
	if nc == nil {
		return
	}
	s := nc.Stats()
	ch <- prometheus.MustNewConstMetric(t.messages, prometheus.CounterValue, float64(s.OutMsgs), "sent")
	ch <- prometheus.MustNewConstMetric(t.messages, prometheus.CounterValue, float64(s.InMsgs), "received")
	ch <- prometheus.MustNewConstMetric(t.bytes, prometheus.CounterValue, float64(s.OutBytes), "sent")
	ch <- prometheus.MustNewConstMetric(t.bytes, prometheus.CounterValue, float64(s.InBytes), "received")
}
