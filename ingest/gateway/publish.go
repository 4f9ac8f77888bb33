package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/ingest/viid"
	"citywatch/internal/kafkaio"
)

// Writer is the part of *kafka.Writer the gateway uses: a synchronous
// write that returns once every message is acknowledged by all in-sync
// replicas (kafkaio's writer settings).
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
	Close() error
}

// errStopped is returned to producers after the publisher has stopped
// taking events.
var errStopped = errors.New("gateway stopping")

// ack is shared by the events of one GA/T 1400 request: done closes when
// all are written or failed, err is the first failure.
type ack struct {
	mu   sync.Mutex
	left int
	err  error
	done chan struct{}
}

func (a *ack) finish(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil && a.err == nil {
		a.err = err
	}
	a.left--
	if a.left == 0 {
		close(a.done)
	}
}

type item struct {
	msg kafka.Message
	ack *ack // nil for RTP events, which nobody waits for
}

// publisher is the bounded buffer between the receivers and Kafka. The
// overflow policy is: refuse (the GA/T 1400 device is told 503 and
// resends; the RTP event is dropped and counted), never block a receiver.
type publisher struct {
	w       Writer
	q       chan item
	batch   int
	km      *kafkaio.Metrics
	dropped *prometheus.CounterVec
	log     *slog.Logger

	mu     sync.RWMutex
	closed bool
}

func newPublisher(w Writer, size, batch int, km *kafkaio.Metrics, dropped *prometheus.CounterVec, log *slog.Logger) *publisher {
	return &publisher{w: w, q: make(chan item, size), batch: batch, km: km, dropped: dropped, log: log}
}

// offer queues one message nobody waits for; false when it was dropped.
func (p *publisher) offer(m kafka.Message) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		p.dropped.WithLabelValues("stopping").Inc()
		return false
	}
	select {
	case p.q <- item{msg: m}:
		return true
	default:
		p.dropped.WithLabelValues("buffer_full").Inc()
		return false
	}
}

// publish queues msgs and waits until all are written: viid.ErrBusy when
// the buffer has no room for them, ctx's error when they are not written
// in time (they may still be written later; a resend is deduplicated by
// event id downstream).
func (p *publisher) publish(ctx context.Context, msgs []kafka.Message) error {
	a := &ack{left: len(msgs), done: make(chan struct{})}
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return errStopped
	}
	if cap(p.q)-len(p.q) < len(msgs) {
		p.mu.RUnlock()
		return viid.ErrBusy
	}
	for i, m := range msgs {
		select {
		case p.q <- item{msg: m, ack: a}:
		default:
			// Others filled the room meanwhile: what is queued goes on, the
			// request is refused and will be resent.
			for range msgs[i:] {
				a.finish(viid.ErrBusy)
			}
			p.mu.RUnlock()
			return viid.ErrBusy
		}
	}
	p.mu.RUnlock()
	select {
	case <-a.done:
		return a.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops intake; the writers drain what is queued and return.
func (p *publisher) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.q)
	}
}

// run writes batches until the queue is closed and drained. A failed
// write is retried with backoff until it succeeds or ctx ends (the
// shutdown deadline), when the batch's events fail.
func (p *publisher) run(ctx context.Context) {
	items := make([]item, 0, p.batch)
	msgs := make([]kafka.Message, 0, p.batch)
	for {
		it, ok := <-p.q
		if !ok {
			return
		}
		items = append(items[:0], it)
	fill:
		for len(items) < p.batch {
			select {
			case it, ok := <-p.q:
				if !ok {
					break fill
				}
				items = append(items, it)
			default:
				break fill
			}
		}
		msgs = msgs[:0]
		for _, it := range items {
			msgs = append(msgs, it.msg)
		}
		err := p.write(ctx, msgs)
		for i := range items {
			if items[i].ack != nil {
				items[i].ack.finish(err)
			} else if err != nil {
				p.dropped.WithLabelValues("kafka_unavailable").Inc()
			}
			items[i] = item{}
		}
	}
}

func (p *publisher) write(ctx context.Context, msgs []kafka.Message) error {
	backoff := 50 * time.Millisecond
	for {
		err := p.w.WriteMessages(ctx, msgs...)
		if err == nil {
			p.count(msgs)
			return nil
		}
		p.km.ProduceError(msgs[0].Topic)
		if ctx.Err() != nil {
			return err
		}
		p.log.Warn("cannot write to Kafka, retrying", "messages", len(msgs), "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (p *publisher) count(msgs []kafka.Message) {
	n, topic := 0, ""
	for _, m := range msgs {
		if m.Topic != topic && n > 0 {
			p.km.Produced(topic, n)
			n = 0
		}
		topic = m.Topic
		n++
	}
	if n > 0 {
		p.km.Produced(topic, n)
	}
}
