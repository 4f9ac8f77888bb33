package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
// a time and keep that order; a failed write leaves the messages it did
// not write (see Unwritten) at the head of the queue for the next try, so
// must-deliver output is never dropped by a broker hiccup, nor written
// twice by the retry when the brokers took part of it. The owner bounds it by not adding while Len
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
// acknowledged them; on failure those not written stay queued, in order,
// for the next try.
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
		n := len(msgs)
		msgs = Unwritten(msgs, err)
		o.mu.Lock()
		o.msgs = append(msgs, o.msgs...)
		o.mu.Unlock()
		if o.km != nil {
			o.km.ProduceError(o.topic)
			if n > len(msgs) {
				o.km.Produced(o.topic, n-len(msgs))
			}
		}
		return fmt.Errorf("cannot write %s: %w", o.what, WriteError(err))
	}
	if o.km != nil {
		o.km.Produced(o.topic, len(msgs))
	}
	return nil
}

// Unwritten returns the messages of msgs that a write of msgs which
// failed with err leaves to write again, in order, reusing msgs' array.
// When err is a kafka.WriteErrors (the brokers took some partitions'
// messages and not others'), they are the messages of every key from its
// first that failed: a retry then writes again nothing that a healthy
// partition took (without this, every retry during one partition's
// outage wrote the others' messages once more), and a key's messages
// still land in order. With any other error, any message may have landed
// or not, and all of them are left.
func Unwritten(msgs []kafka.Message, err error) []kafka.Message {
	var werrs kafka.WriteErrors
	if !errors.As(err, &werrs) || len(werrs) != len(msgs) {
		return msgs
	}
	failed := map[string]bool{}
	left := msgs[:0]
	for i := range msgs {
		if werrs[i] != nil {
			failed[string(msgs[i].Key)] = true
		}
		if failed[string(msgs[i].Key)] {
			left = append(left, msgs[i])
		}
	}
	clear(msgs[len(left):]) // drop references to what was written
	return left
}

// WriteError returns the error of a failed write, shortened when it is a
// kafka.WriteErrors: that holds one error per message, and its text, the
// text of every one of them, made a log line of hundreds of kilobytes
// for a failed batch. The shortened error reads "k of n messages not
// written: " and the distinct errors, and wraps them.
func WriteError(err error) error {
	var werrs kafka.WriteErrors
	if !errors.As(err, &werrs) {
		return err
	}
	we := &writeErrors{total: len(werrs)}
	seen := map[string]bool{}
	for _, e := range werrs {
		if e == nil {
			continue
		}
		we.failed++
		if !seen[e.Error()] {
			seen[e.Error()] = true
			we.errs = append(we.errs, e)
		}
	}
	return we
}

type writeErrors struct {
	failed, total int
	errs          []error // distinct, in the order met
}

func (e *writeErrors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d messages not written", e.failed, e.total)
	for i, err := range e.errs {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *writeErrors) Unwrap() []error { return e.errs }
