package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
)

// Handler is what a Consumer feeds. A batch is open from the first Add to
// the Flush that succeeds; only then are its offsets committed, so a crash
// at any moment replays the open batch and loses nothing. Handlers must
// therefore make Flush idempotent downstream (dedupe by event id, Kafka
// keys, ReplacingMergeTree) rather than rely on exactly-once delivery.
type Handler interface {
	// Add takes one message; it is called once per message, in partition
	// order. The message's Key and Value stay valid after the call.
	Add(m *kafka.Message)
	// Full reports whether the open batch should be flushed now.
	Full() bool
	// Flush makes the effect of every added message durable. A failed
	// Flush is retried with backoff (with the same batch) until it
	// succeeds or the consumer stops; after a nil return the batch is empty.
	Flush(ctx context.Context) error
}

// ConsumerConfig is one consumer group's loop.
type ConsumerConfig struct {
	Group  string
	Topics []string // full names
	// MaxWait is the longest a message waits in an open batch before the
	// batch is flushed.
	MaxWait time.Duration
	// BackoffMin and BackoffMax bound the wait between Flush retries.
	BackoffMin, BackoffMax time.Duration
	// ShutdownTimeout bounds the final flush and commit when stopping.
	ShutdownTimeout time.Duration
	// Buffer is the capacity of the channel between the fetching goroutine
	// and the batching loop. It is bounded: when full, fetching waits
	// (must-deliver data is never dropped), and kafka-go's own queue stops
	// fetching in turn.
	Buffer int
}

func (c *ConsumerConfig) setDefaults() {
	if c.MaxWait == 0 {
		c.MaxWait = 5 * time.Millisecond
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = 100 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 10 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Buffer == 0 {
		c.Buffer = 4096
	}
}

// Metrics are the consumer metrics of one process, shared by its consumers
// and labelled by group.
type Metrics struct {
	consumed     *prometheus.CounterVec
	flushErrors  *prometheus.CounterVec
	commitErrors *prometheus.CounterVec
	commits      *prometheus.CounterVec
	batchSize    *prometheus.HistogramVec
	flushSeconds *prometheus.HistogramVec
	produced     *prometheus.CounterVec
	produceErrs  *prometheus.CounterVec
	lag          *prometheus.GaugeVec
}

// NewMetrics registers the Kafka metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_kafka_consumed_messages_total",
			Help: "Messages fetched from Kafka, by consumer group and topic.",
		}, []string{"group", "topic"}),
		flushErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_kafka_flush_errors_total",
			Help: "Failed batch flushes (each is retried with backoff), by consumer group.",
		}, []string{"group"}),
		commitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_kafka_commit_errors_total",
			Help: "Failed offset commits (the batch will be replayed), by consumer group.",
		}, []string{"group"}),
		commits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_kafka_commits_total",
			Help: "Offset commits after a durable batch, by consumer group.",
		}, []string{"group"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "citywatch_kafka_batch_messages",
			Help:    "Messages per flushed batch, by consumer group.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}, []string{"group"}),
		flushSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "citywatch_kafka_flush_seconds",
			Help:    "Time to make a batch durable, by consumer group.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"group"}),
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_kafka_produced_messages_total",
			Help: "Messages written to Kafka, by topic.",
		}, []string{"topic"}),
		produceErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_kafka_produce_errors_total",
			Help: "Failed writes to Kafka (retried), by topic.",
		}, []string{"topic"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "citywatch_kafka_consumer_lag_messages",
			Help: "End offset minus committed offset, by consumer group, topic and partition.",
		}, []string{"group", "topic", "partition"}),
	}
	reg.MustRegister(m.consumed, m.flushErrors, m.commitErrors, m.commits,
		m.batchSize, m.flushSeconds, m.produced, m.produceErrs, m.lag)
	return m
}

// Produced counts n messages written to topic.
func (m *Metrics) Produced(topic string, n int) { m.produced.WithLabelValues(topic).Add(float64(n)) }

// ProduceError counts a failed write to topic.
func (m *Metrics) ProduceError(topic string) { m.produceErrs.WithLabelValues(topic).Inc() }

// Consumer runs one consumer-group member: a goroutine fetches messages
// into a bounded channel, the loop adds them to the Handler, flushes when
// the handler is full or the oldest message has waited MaxWait, and commits
// the flushed offsets.
type Consumer struct {
	kc      Config
	cfg     ConsumerConfig
	h       Handler
	log     *slog.Logger
	metrics *Metrics

	// newReader is replaceable so that tests can count readers; nil means
	// kc.NewReader.
	newReader func(group string, topics []string) *kafka.Reader
	// beforeCommit, when set, runs after a successful Flush and before the
	// commit; an error stops Run without committing (a crash, for tests).
	beforeCommit func() error
}

// NewConsumer returns a consumer of cfg.Topics in group cfg.Group that feeds h.
func NewConsumer(kc Config, cfg ConsumerConfig, h Handler, m *Metrics, log *slog.Logger) *Consumer {
	cfg.setDefaults()
	return &Consumer{kc: kc, cfg: cfg, h: h, log: log.With("group", cfg.Group), metrics: m}
}

// SetBeforeCommit installs a hook that runs between a successful flush and
// its commit; an error from it makes Run return at once without committing,
// as a crash there would. It is for failure tests.
func (c *Consumer) SetBeforeCommit(f func() error) { c.beforeCommit = f }

// errCrash marks the test hook's simulated crash.
var errCrash = errors.New("stopped before commit")

type partitionKey struct {
	topic     string
	partition int
}

// Run consumes until ctx is done, then stops fetching, flushes and commits
// the open batch (bounded by ShutdownTimeout), closes the reader and waits
// for its goroutine. It returns nil after a clean stop.
func (c *Consumer) Run(ctx context.Context) error {
	newReader := c.newReader
	if newReader == nil {
		newReader = c.kc.NewReader
	}
	r := newReader(c.cfg.Group, c.cfg.Topics)

	fctx, stopFetch := context.WithCancel(ctx)
	msgs := make(chan kafka.Message, c.cfg.Buffer)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.fetch(fctx, r, msgs)
	}()
	err := c.loop(ctx, r, msgs)
	stopFetch()
	wg.Wait()
	if cerr := r.Close(); cerr != nil && err == nil {
		c.log.Warn("cannot close reader", "err", cerr)
	}
	if errors.Is(err, errCrash) {
		return err
	}
	return err
}

func (c *Consumer) fetch(ctx context.Context, r *kafka.Reader, out chan<- kafka.Message) {
	backoff := c.cfg.BackoffMin
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("cannot fetch message", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, c.cfg.BackoffMax)
			continue
		}
		backoff = c.cfg.BackoffMin
		select {
		case out <- m:
		case <-ctx.Done():
			return
		}
	}
}

func (c *Consumer) loop(ctx context.Context, r *kafka.Reader, msgs <-chan kafka.Message) error {
	group := c.cfg.Group
	consumed := map[string]prometheus.Counter{}
	last := map[partitionKey]kafka.Message{}
	toCommit := make([]kafka.Message, 0, 64)
	n := 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()

	flush := func(fctx context.Context) error {
		if n == 0 {
			return nil
		}
		timer.Stop()
		start := time.Now()
		if err := c.flushRetrying(fctx); err != nil {
			return err
		}
		c.metrics.flushSeconds.WithLabelValues(group).Observe(time.Since(start).Seconds())
		c.metrics.batchSize.WithLabelValues(group).Observe(float64(n))
		if c.beforeCommit != nil {
			if err := c.beforeCommit(); err != nil {
				return fmt.Errorf("%w: %w", errCrash, err)
			}
		}
		toCommit = toCommit[:0]
		for _, m := range last {
			toCommit = append(toCommit, m)
		}
		clear(last)
		n = 0
		if err := r.CommitMessages(fctx, toCommit...); err != nil {
			// The batch is durable; not committing only means it is
			// replayed later, which the downstream dedupe absorbs.
			c.metrics.commitErrors.WithLabelValues(group).Inc()
			c.log.Warn("cannot commit offsets; the batch will be replayed", "err", err)
			return nil
		}
		c.metrics.commits.WithLabelValues(group).Inc()
		return nil
	}

	for {
		select {
		case m := <-msgs:
			ctr, ok := consumed[m.Topic]
			if !ok {
				ctr = c.metrics.consumed.WithLabelValues(group, m.Topic)
				consumed[m.Topic] = ctr
			}
			ctr.Inc()
			c.h.Add(&m)
			last[partitionKey{m.Topic, m.Partition}] = m
			if n == 0 {
				timer.Reset(c.cfg.MaxWait)
			}
			n++
			if c.h.Full() {
				if err := flush(ctx); err != nil {
					return c.stopErr(ctx, err)
				}
			}
		case <-timer.C:
			if err := flush(ctx); err != nil {
				return c.stopErr(ctx, err)
			}
		case <-ctx.Done():
			// Stop intake (the caller cancels fetching), then flush what
			// was taken, within the shutdown deadline.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ShutdownTimeout)
			defer cancel()
			if err := flush(sctx); err != nil {
				return fmt.Errorf("cannot flush on shutdown: %w", err)
			}
			return nil
		}
	}
}

func (c *Consumer) stopErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, errCrash) {
		// Stopped while retrying: the open batch was not committed and
		// will be replayed by whoever owns the partitions next.
		return nil
	}
	return err
}

func (c *Consumer) flushRetrying(ctx context.Context) error {
	backoff := c.cfg.BackoffMin
	for {
		err := c.h.Flush(ctx)
		if err == nil {
			return nil
		}
		c.metrics.flushErrors.WithLabelValues(c.cfg.Group).Inc()
		if ctx.Err() != nil {
			return fmt.Errorf("cannot flush batch: %w", err)
		}
		c.log.Warn("cannot flush batch; retrying", "err", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("cannot flush batch: %w", ctx.Err())
		}
		backoff = min(2*backoff, c.cfg.BackoffMax)
	}
}
