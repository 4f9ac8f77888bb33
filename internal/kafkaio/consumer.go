package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
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
	// FlushWhenIdle flushes the open batch as soon as no further message
	// is waiting and no flush is in flight, without waiting for MaxWait:
	// batches then grow only while a flush is under way (natural
	// batching), so a quiet stream pays no batching delay and a busy one
	// still writes in large batches. For latency-bound stages (ingest,
	// rules, dispatch); the sink, whose inserts must be large, leaves it
	// off.
	FlushWhenIdle bool
	// BackoffMin and BackoffMax bound the wait between Flush retries.
	BackoffMin, BackoffMax time.Duration
	// CommitInterval is the least time between two offset commits: flushed
	// batches are committed together once it has passed (and always on
	// shutdown). A crash replays at most this much more.
	CommitInterval time.Duration
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
	if c.CommitInterval == 0 {
		c.CommitInterval = 100 * time.Millisecond
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
	commitSecs   *prometheus.HistogramVec
	produced     *prometheus.CounterVec
	produceErrs  *prometheus.CounterVec
	attemptErrs  *prometheus.CounterVec
	readErrs     *prometheus.CounterVec
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
		commitSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "citywatch_kafka_commit_seconds",
			Help:    "Time to commit a batch's offsets, by consumer group.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"group"}),
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_kafka_produced_messages_total",
			Help: "Messages written to Kafka, by topic.",
		}, []string{"topic"}),
		produceErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_kafka_produce_errors_total",
			Help: "Failed writes to Kafka (retried), by topic.",
		}, []string{"topic"}),
		attemptErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_kafka_produce_attempt_errors_total",
			Help: "Produce requests the broker failed, one per attempt (the writer tries a batch up to kafka.max_attempts times before the write fails), by topic.",
		}, []string{"topic"}),
		readErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_kafka_read_errors_total",
			Help: "Errors a consumer group member met reading Kafka (fetches, group joins), each retried, by consumer group.",
		}, []string{"group"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "citywatch_kafka_consumer_lag_messages",
			Help: "End offset minus committed offset, by consumer group, topic and partition.",
		}, []string{"group", "topic", "partition"}),
	}
	reg.MustRegister(m.consumed, m.flushErrors, m.commitErrors, m.commits,
		m.batchSize, m.flushSeconds, m.commitSecs, m.produced, m.produceErrs,
		m.attemptErrs, m.readErrs, m.lag)
	return m
}

// Produced counts n messages written to topic.
func (m *Metrics) Produced(topic string, n int) { m.produced.WithLabelValues(topic).Add(float64(n)) }

// ProduceError counts a failed write to topic.
func (m *Metrics) ProduceError(topic string) { m.produceErrs.WithLabelValues(topic).Inc() }

// WatchWriter makes w log every produce attempt the broker fails, at warn
// level, and count it in citywatch_kafka_produce_attempt_errors_total (m
// may be nil: logged only); it returns w. kafka-go retries a failed
// produce up to Config.MaxAttempts times and reports only the last error,
// so without this a broker failing requests goes unseen until a write
// fails outright.
func (m *Metrics) WatchWriter(w *kafka.Writer, log *slog.Logger) *kafka.Writer {
	w.ErrorLogger = kafka.LoggerFunc(func(format string, args ...any) {
		topic := "unknown"
		if len(args) > 0 {
			if t, ok := args[0].(string); ok { // kafka-go passes the topic first
				topic = t
			}
		}
		if m != nil {
			m.attemptErrs.WithLabelValues(topic).Inc()
		}
		log.Warn("cannot produce to Kafka; the writer retries up to kafka.max_attempts", "topic", topic, "detail", fmt.Sprintf(format, args...))
	})
	return w
}

// Consumer runs one consumer-group member: a goroutine fetches messages
// into a bounded channel, the loop adds them to the Handler, flushes when
// the handler is full or the oldest message has waited MaxWait, and commits
// the flushed offsets.
type Consumer struct {
	kc      Config
	cfg     ConsumerConfig
	hs      []Handler
	log     *slog.Logger
	metrics *Metrics

	// newReader is replaceable so that tests can count readers; nil means
	// kc.NewReader.
	newReader func(group string, topics []string) *kafka.Reader
	// beforeCommit, when set, runs after a successful Flush and before the
	// commit; an error stops Run without committing (a crash, for tests).
	beforeCommit func() error
	// closing is set once Run stops consuming.
	closing atomic.Bool
}

// NewConsumer returns a consumer of cfg.Topics in group cfg.Group that
// feeds the handlers. With two handlers, one fills while the other flushes
// (they must not share unsynchronised state); with one, fetching pauses
// during each flush.
func NewConsumer(kc Config, cfg ConsumerConfig, m *Metrics, log *slog.Logger, hs ...Handler) *Consumer {
	cfg.setDefaults()
	if len(hs) == 0 || len(hs) > 2 {
		panic("kafkaio: NewConsumer needs one or two handlers") // a wiring bug, not input
	}
	return &Consumer{kc: kc, cfg: cfg, hs: hs, log: log.With("group", cfg.Group), metrics: m}
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
		newReader = c.newGroupReader
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
	// What the reader reports from here on is its own shutdown: its
	// partitions' connections cancelled mid-dial or mid-fetch.
	c.closing.Store(true)
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

// newGroupReader is kc.NewReader with the errors kafka-go handles by
// itself (a fetch retried, a leader looked up again, an offset past the
// log's start skipped ahead, a group join retried) logged and counted in
// citywatch_kafka_read_errors_total: kafka-go reports only some errors to
// FetchMessage and drops the rest unless given an error logger.
func (c *Consumer) newGroupReader(group string, topics []string) *kafka.Reader {
	rc := c.kc.readerConfig(group, topics)
	errs := c.metrics.readErrs.WithLabelValues(group)
	rc.ErrorLogger = kafka.LoggerFunc(func(format string, args ...any) {
		detail := fmt.Sprintf(format, args...)
		if c.closing.Load() {
			c.log.Debug("reader stopping", "detail", detail)
			return
		}
		if strings.Contains(detail, "Rebalance In Progress") {
			// A member joined or left: the group's normal course, not a
			// fault to count or to wake anyone for.
			c.log.Info("consumer group rebalancing", "detail", detail)
			return
		}
		errs.Inc()
		c.log.Warn("cannot read from Kafka; the reader retries", "detail", detail)
	})
	return kafka.NewReader(rc)
}

func (c *Consumer) fetch(ctx context.Context, r *kafka.Reader, out chan<- kafka.Message) {
	backoff := c.cfg.BackoffMin
	errs := c.metrics.readErrs.WithLabelValues(c.cfg.Group)
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			errs.Inc()
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

// batchState is one batch's bookkeeping: its handler and the last message
// of each partition it holds.
type batchState struct {
	h    Handler
	last map[partitionKey]kafka.Message
	n    int
}

// loop fills one handler while the other (if any) is being flushed. At most
// one flush is in flight, so batches become durable, and their offsets are
// committed, in order; memory holds at most two batches.
func (c *Consumer) loop(ctx context.Context, r *kafka.Reader, msgs <-chan kafka.Message) error {
	group := c.cfg.Group
	consumed := map[string]prometheus.Counter{}
	batches := make([]*batchState, len(c.hs))
	for i, h := range c.hs {
		batches[i] = &batchState{h: h, last: map[partitionKey]kafka.Message{}}
	}
	cur := 0
	// durable holds the offsets of flushed batches not yet committed; it
	// is touched only by the flush goroutine while one runs.
	durable := map[partitionKey]kafka.Message{}
	lastCommit := time.Now()
	var inflight chan error
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// commitTimer commits flushed offsets once the interval has passed
	// when no further flush comes along to do it.
	commitTimer := time.NewTimer(time.Hour)
	commitTimer.Stop()
	armCommit := func() { // only while no flush is in flight
		if len(durable) > 0 {
			commitTimer.Reset(max(time.Until(lastCommit.Add(c.cfg.CommitInterval)), 0))
		}
	}

	// wait waits for the flush in flight, if any.
	wait := func() error {
		if inflight == nil {
			return nil
		}
		err := <-inflight
		inflight = nil
		return err
	}
	// start hands the current batch to a flush goroutine and moves on to
	// the next handler; with a single handler it flushes in place.
	start := func(fctx context.Context, final bool) error {
		timer.Stop()
		if err := wait(); err != nil {
			return err
		}
		b := batches[cur]
		cur = (cur + 1) % len(batches)
		if b.n == 0 && !final {
			return nil
		}
		done := make(chan error, 1)
		run := func() { done <- c.flushBatch(fctx, r, b, durable, &lastCommit, final) }
		if len(batches) == 1 || final {
			run()
			err := <-done
			armCommit()
			return err
		}
		inflight = done
		go run()
		return nil
	}

	for {
		b := batches[cur]
		select {
		case m := <-msgs:
			ctr, ok := consumed[m.Topic]
			if !ok {
				ctr = c.metrics.consumed.WithLabelValues(group, m.Topic)
				consumed[m.Topic] = ctr
			}
			ctr.Inc()
			b.h.Add(&m)
			b.last[partitionKey{m.Topic, m.Partition}] = m
			if b.n == 0 {
				timer.Reset(c.cfg.MaxWait)
			}
			b.n++
			if b.h.Full() || (c.cfg.FlushWhenIdle && inflight == nil && len(msgs) == 0) {
				if err := start(ctx, false); err != nil {
					return c.stopErr(ctx, err)
				}
			}
		case err := <-inflight:
			inflight = nil
			if err != nil {
				return c.stopErr(ctx, err)
			}
			if c.cfg.FlushWhenIdle && batches[cur].n > 0 && len(msgs) == 0 {
				if err := start(ctx, false); err != nil {
					return c.stopErr(ctx, err)
				}
				break
			}
			armCommit()
		case <-commitTimer.C:
			if inflight == nil && len(durable) > 0 {
				if err := c.commit(ctx, r, durable, &lastCommit); err != nil {
					return c.stopErr(ctx, err)
				}
			}
		case <-timer.C:
			if err := start(ctx, false); err != nil {
				return c.stopErr(ctx, err)
			}
		case <-ctx.Done():
			// Stop intake (the caller cancels fetching), then make what
			// was taken durable and commit it, within the deadline.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ShutdownTimeout)
			defer cancel()
			if err := wait(); err != nil {
				// A batch before the open one failed: commit nothing
				// more, so that it is replayed.
				return c.stopErr(ctx, err)
			}
			if err := start(sctx, true); err != nil {
				return fmt.Errorf("cannot flush on shutdown: %w", err)
			}
			return nil
		}
	}
}

// flushBatch makes b durable, then commits every durable offset when the
// commit interval has passed (always when final).
func (c *Consumer) flushBatch(ctx context.Context, r *kafka.Reader, b *batchState, durable map[partitionKey]kafka.Message, lastCommit *time.Time, final bool) error {
	group := c.cfg.Group
	if b.n > 0 {
		start := time.Now()
		if err := c.flushRetrying(ctx, b.h); err != nil {
			return err
		}
		c.metrics.flushSeconds.WithLabelValues(group).Observe(time.Since(start).Seconds())
		c.metrics.batchSize.WithLabelValues(group).Observe(float64(b.n))
		for k, m := range b.last {
			durable[k] = m
		}
		clear(b.last)
		b.n = 0
	}
	if len(durable) == 0 || !final && time.Since(*lastCommit) < c.cfg.CommitInterval {
		return nil
	}
	return c.commit(ctx, r, durable, lastCommit)
}

// commit commits every durable offset.
func (c *Consumer) commit(ctx context.Context, r *kafka.Reader, durable map[partitionKey]kafka.Message, lastCommit *time.Time) error {
	group := c.cfg.Group
	if c.beforeCommit != nil {
		if err := c.beforeCommit(); err != nil {
			return fmt.Errorf("%w: %w", errCrash, err)
		}
	}
	toCommit := make([]kafka.Message, 0, len(durable))
	for _, m := range durable {
		toCommit = append(toCommit, m)
	}
	clear(durable)
	*lastCommit = time.Now()
	commitStart := time.Now()
	err := r.CommitMessages(ctx, toCommit...)
	c.metrics.commitSecs.WithLabelValues(group).Observe(time.Since(commitStart).Seconds())
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		// The stop cut the commit short: the final commit of the
		// shutdown (under its own deadline, never cancelled) takes
		// these offsets along, so that a clean stop replays nothing.
		for _, m := range toCommit {
			k := partitionKey{m.Topic, m.Partition}
			if _, newer := durable[k]; !newer {
				durable[k] = m
			}
		}
		return nil
	}
	if err != nil {
		// The batches are durable; not committing only means they are
		// replayed later, which the downstream dedupe absorbs.
		c.metrics.commitErrors.WithLabelValues(group).Inc()
		c.log.Warn("cannot commit offsets; the batches will be replayed", "err", err)
		return nil
	}
	c.metrics.commits.WithLabelValues(group).Inc()
	return nil
}

func (c *Consumer) stopErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, errCrash) {
		// Stopped while retrying: the open batch was not committed and
		// will be replayed by whoever owns the partitions next.
		return nil
	}
	return err
}

func (c *Consumer) flushRetrying(ctx context.Context, h Handler) error {
	backoff := c.cfg.BackoffMin
	for {
		err := h.Flush(ctx)
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

// RunMembers runs several members of one group in this process until ctx
// is done, and returns their errors joined once all have stopped. A member
// that fails stops the others: the process should be restarted whole
// rather than run short-handed.
func RunMembers(ctx context.Context, members []*Consumer) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, c := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = c.Run(ctx); errs[i] != nil {
				stop()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
