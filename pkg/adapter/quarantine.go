package adapter

import (
	"context"
	"log/slog"
	"time"

	"github.com/junction-fhir/junction/pkg/telemetry"
)

// MaxQuarantineBytes bounds what an inbound adapter keeps of input it
// rejected: enough to see what a sender sent, not enough for a sender of
// garbage to make each rejection an expensive write.
const MaxQuarantineBytes = 64 << 10

// QuarantineTimeout bounds a quarantine write, so a slow store does not
// hold up the answer to the sender.
const QuarantineTimeout = 2 * time.Second

// Quarantine keeps the first MaxQuarantineBytes of raw, which the input
// named input rejected for reason, through host, counts it and returns
// the entry's id ("" when it was not kept). A failure is logged, not
// returned: the sender has its answer either way. Neither the log nor the
// count holds any of raw; the log names the entry, so ops can find what
// a sender sent from the line that says it was refused.
func Quarantine(ctx context.Context, host Host, log *slog.Logger, m *telemetry.Metrics, input string, raw []byte, reason string) string {
	// Not cut short by the request or connection ending: the sender has
	// been answered, the input should still be kept.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), QuarantineTimeout)
	defer cancel()
	kept := raw[:min(len(raw), MaxQuarantineBytes)]
	id, err := host.Quarantine(ctx, input, kept, len(raw), reason)
	if err != nil {
		log.Warn("quarantine failed", "adapter", input, "reason", reason, "bytes", len(raw), "error", err.Error())
		return ""
	}
	m.Quarantined.WithLabelValues(input).Inc()
	log.Info("input quarantined", "adapter", input, "reason", reason, "bytes", len(raw), "kept", len(kept), "quarantine_id", id)
	return id
}
