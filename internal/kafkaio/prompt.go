package kafkaio

import (
	"context"
	"errors"
	"log/slog"

	"github.com/segmentio/kafka-go"
)

// promptMax is the largest write a PromptWriter sends through its
// one-message batches: a few messages, which in the worst case (all of
// one partition) take that many round trips one after the other.
const promptMax = 4

// PromptWriter writes the output someone waits for: alerts, dispatches.
// kafka-go holds a partition's batch open for BatchTimeout unless it is
// full, so a write of one alert paid that wait before its round trip. A
// write of at most promptMax messages goes through a writer whose batches
// hold one message and leave at once; a larger write (a backlog, a
// restart's lost alerts) through the batching writer, one request per
// partition.
//
// It is for one writer at a time, such as an Outbox: each write returns
// once acknowledged, so the two writers never reorder a partition's
// messages. Two concurrent writes through different writers could.
type PromptWriter struct {
	prompt, batching *kafka.Writer
}

// NewPromptWriter returns a PromptWriter of c's writers, with produce
// attempts the broker fails logged and counted as WatchWriter does (m may
// be nil).
func (c Config) NewPromptWriter(m *Metrics, log *slog.Logger) *PromptWriter {
	p := c.NewWriter()
	p.BatchSize = 1
	return &PromptWriter{
		prompt:   m.WatchWriter(p, log),
		batching: m.WatchWriter(c.NewWriter(), log),
	}
}

// WriteMessages implements Writer.
func (w *PromptWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if len(msgs) <= promptMax {
		return w.prompt.WriteMessages(ctx, msgs...)
	}
	return w.batching.WriteMessages(ctx, msgs...)
}

// Close flushes and closes both writers.
func (w *PromptWriter) Close() error {
	return errors.Join(w.prompt.Close(), w.batching.Close())
}
