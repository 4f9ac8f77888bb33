package simulators

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// Writer is the part of *kafka.Writer that Publish uses.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Publish sends about rate messages per second from g to w, in a batch
// every 50 ms, with topic names prefixed by prefix, until ctx is done.
// A failed write is returned; the caller decides whether to go on.
func Publish(ctx context.Context, g *Generator, w Writer, prefix string, rate int) error {
	const tick = 50 * time.Millisecond
	per := max(rate*int(tick)/int(time.Second), 1)
	batch := make([]kafka.Message, 0, per)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		batch = batch[:0]
		for range per {
			m := g.Next()
			batch = append(batch, kafka.Message{Topic: prefix + m.Topic, Key: m.Key, Value: m.Value})
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("cannot publish simulated events: %w", err)
		}
	}
}
