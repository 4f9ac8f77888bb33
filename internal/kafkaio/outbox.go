package kafkaio

import (
	"context"
	"fmt"
	"sync"

	"github.com/segmentio/kafka-go"
)

// Writer is the part of *kafka.Writer an Outbox uses: a synchronous write
// that returns once every message is acknowledged.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Outbox holds the messages a stateful role decided (alerts, dispatches),
// in the order it decided them, until they are written. Writes are one at
// a time and keep that order; a failed write leaves its messages at the
// head of the queue for the next try, so must-deliver output is never
// dropped by a broker hiccup. The owner bounds it by not adding while Len
// is at its limit. Safe for concurrent use.
type Outbox struct {
	what    string // "alerts", "dispatches": for errors
	topic   string // for the produce metrics
	km      *Metrics
	writeMu sync.Mutex
	mu      sync.Mutex
	msgs    []kafka.Message
}

// NewOutbox returns an empty outbox whose writes are counted under topic
// in km (nil: not counted) and whose errors call its messages what.
func NewOutbox(what, topic string, km *Metrics) *Outbox {
	return &Outbox{what: what, topic: topic, km: km}
}

// Add queues messages after those already queued.
func (o *Outbox) Add(msgs ...kafka.Message) {
	o.mu.Lock()
	o.msgs = append(o.msgs, msgs...)
	o.mu.Unlock()
}

// Len returns how many messages wait to be written.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.msgs)
}

// Drop empties the outbox and returns how many messages it held: for a
// stateful role handing its part of the work to another process, which
// recomputes what was not written.
func (o *Outbox) Drop() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(o.msgs)
	o.msgs = nil
	return n
}

// Flush writes every queued message with w and returns once Kafka has
// acknowledged them; on failure they stay queued, in order, for the next
// try.
func (o *Outbox) Flush(ctx context.Context, w Writer) error {
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	o.mu.Lock()
	msgs := o.msgs
	o.msgs = nil
	o.mu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		o.mu.Lock()
		o.msgs = append(msgs, o.msgs...)
		o.mu.Unlock()
		if o.km != nil {
			o.km.ProduceError(o.topic)
		}
		return fmt.Errorf("cannot write %s: %w", o.what, err)
	}
	if o.km != nil {
		o.km.Produced(o.topic, len(msgs))
	}
	return nil
}
