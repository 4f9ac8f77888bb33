package kafkaio

import (
	"context"
	"errors"
	"log/slog"

	"github.com/segmentio/kafka-go"
)

// PromptWriter writes the output someone waits for: alerts, dispatches,
// ingest's normalised events. A write goes through one of three writers
// chosen by its size:
//
//   - at most 4 messages: batches of one message, which leave at once.
//     kafka-go holds a partition's batch open for BatchTimeout unless it
//     is full, so a write of one alert paid that wait before its round
//     trip. In the worst case (all of one partition) the messages take
//     that many round trips one after the other.
//   - at most 64 messages: batches of at most 16. kafka-go gives every
//     batch room for BatchSize messages up front (152 bytes each), and
//     at 10,000 events/s ingest's flushes of a few dozen events made
//     hundreds of MB/s of garbage with batches sized for a backlog.
//   - more: the configured batch size (a backlog, a restart's lost
//     alerts), one request per partition.
//
// It is for one writer at a time, such as an Outbox or a consumer
// member's flushes: each write returns once acknowledged, so the writers
// never reorder a partition's messages. Two concurrent writes through
// different writers could.
type PromptWriter struct {
	tiers [2]promptTier // the small writes' writers, smallest first
	large *kafka.Writer
}

type promptTier struct {
	max int // largest write this writer takes
	w   *kafka.Writer
}

// NewPromptWriter returns a PromptWriter of c's writers, with produce
// attempts the broker fails logged and counted as WatchWriter does (m may
// be nil).
func (c Config) NewPromptWriter(m *Metrics, log *slog.Logger) *PromptWriter {
	sized := func(batch int) *kafka.Writer {
		w := c.NewWriter()
		w.BatchSize = min(batch, c.BatchSize)
		return m.WatchWriter(w, log)
	}
	return &PromptWriter{
		tiers: [2]promptTier{{max: 4, w: sized(1)}, {max: 64, w: sized(16)}},
		large: sized(c.BatchSize),
	}
}

// SetBalancer makes every writer of w choose partitions with b (for a
// writer that names each message's partition itself, a BalancerFunc
// returning it). Call it before the first write.
func (w *PromptWriter) SetBalancer(b kafka.Balancer) {
	w.tiers[0].w.Balancer, w.tiers[1].w.Balancer, w.large.Balancer = b, b, b
}

// WriteMessages implements Writer.
func (w *PromptWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	for _, t := range w.tiers {
		if len(msgs) <= t.max {
			return t.w.WriteMessages(ctx, msgs...)
		}
	}
	return w.large.WriteMessages(ctx, msgs...)
}

// Close flushes and closes the writers.
func (w *PromptWriter) Close() error {
	return errors.Join(w.tiers[0].w.Close(), w.tiers[1].w.Close(), w.large.Close())
}
