package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// SinkConfig is the sink role's configuration.
type SinkConfig struct {
	// Group is the sink's own consumer group, so that a database outage
	// delays storage and nothing else.
	Group string `yaml:"group"`
	// BatchRows and MaxWait decide when a batch is inserted: when any
	// table holds BatchRows rows, or MaxWait after the batch's first row.
	BatchRows int           `yaml:"batch_rows"`
	MaxWait   time.Duration `yaml:"max_wait"`
	// InsertTimeout bounds one insert attempt.
	InsertTimeout time.Duration `yaml:"insert_timeout"`
	// Workers is the number of group members in this process; each fills
	// and inserts its own batches, so that one batch is decoded while
	// another is being inserted.
	Workers int `yaml:"workers"`
	// RetentionInterval is how often old partitions are dropped.
	RetentionInterval time.Duration `yaml:"retention_interval"`
}

// SetDefaults fills zero fields with their defaults.
func (c *SinkConfig) SetDefaults() {
	if c.Group == "" {
		c.Group = "citywatch-sink"
	}
	if c.BatchRows == 0 {
		c.BatchRows = 10_000
	}
	if c.MaxWait == 0 {
		c.MaxWait = time.Second
	}
	if c.InsertTimeout == 0 {
		c.InsertTimeout = 30 * time.Second
	}
	if c.RetentionInterval == 0 {
		c.RetentionInterval = time.Hour
	}
	if c.Workers == 0 {
		c.Workers = 2
	}
}

// Validate names the first field that is not usable.
func (c SinkConfig) Validate() error {
	switch {
	case c.Group == "":
		return errors.New("sink.group: must not be empty")
	case c.BatchRows < 1:
		return fmt.Errorf("sink.batch_rows: must be ≥ 1, got %d", c.BatchRows)
	case c.MaxWait <= 0:
		return errors.New("sink.max_wait: must be positive")
	case c.InsertTimeout <= 0:
		return errors.New("sink.insert_timeout: must be positive")
	case c.RetentionInterval <= 0:
		return errors.New("sink.retention_interval: must be positive")
	case c.Workers < 1 || c.Workers > 64:
		return fmt.Errorf("sink.workers: must be 1–64, got %d", c.Workers)
	}
	return nil
}

// Sink is the storage role: it consumes the normalised events, the DLQ,
// the alerts (every lifecycle message) and the dispatches (every state
// change) in its own consumer group and inserts them into ClickHouse in batches.
// Offsets are committed only after the insert succeeded; a replay after a
// crash inserts the same rows again, which the tables' deduplication and
// the project's queries absorb.
type Sink struct {
	cfg     SinkConfig
	kc      kafkaio.Config
	db      *DB
	kmet    *kafkaio.Metrics
	metrics *sinkMetrics
	log     *slog.Logger
	now     func() time.Time

	eventsTopic     string
	dlqTopic        string
	alertsTopic     string
	dispatchesTopic string
	crashHook       func() error
	storedHook      func(eventTimesMs []int64, at time.Time)
}

// NewSink returns the sink role writing to db.
func NewSink(cfg SinkConfig, kc kafkaio.Config, db *DB, reg prometheus.Registerer, km *kafkaio.Metrics, log *slog.Logger) (*Sink, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Sink{
		cfg:             cfg,
		kc:              kc,
		db:              db,
		kmet:            km,
		metrics:         newSinkMetrics(reg),
		log:             log.With("role", "sink"),
		now:             time.Now,
		eventsTopic:     kc.Topic(kafkaio.TopicEvents),
		dlqTopic:        kc.Topic(kafkaio.TopicDLQ),
		alertsTopic:     kc.Topic(kafkaio.TopicAlerts),
		dispatchesTopic: kc.Topic(kafkaio.TopicDispatches),
	}, nil
}

// Topics returns the full names of the topics the sink consumes.
func (s *Sink) Topics() []string {
	return []string{s.eventsTopic, s.dlqTopic, s.alertsTopic, s.dispatchesTopic}
}

// Group returns the consumer group.
func (s *Sink) Group() string { return s.cfg.Group }

// SetCrashHook makes the sink stop without committing when f returns an
// error between a successful insert and its commit. It is for failure tests.
func (s *Sink) SetCrashHook(f func() error) { s.crashHook = f }

// SetStoredHook installs f to be called after every successful insert with
// the device times (Unix ms) of the events it stored; the slice is reused
// after f returns. It is for load measurements.
func (s *Sink) SetStoredHook(f func(eventTimesMs []int64, at time.Time)) { s.storedHook = f }

// Run stores until ctx is done. Stopping order: stop fetching, insert and
// commit the open batch (bounded by the consumer's shutdown timeout), stop
// the retention loop, return.
func (s *Sink) Run(ctx context.Context) error {
	rctx, stopRetention := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.retentionLoop(rctx)
	}()
	var members []*kafkaio.Consumer
	for range s.cfg.Workers {
		c := kafkaio.NewConsumer(s.kc, kafkaio.ConsumerConfig{
			Group:   s.cfg.Group,
			Topics:  s.Topics(),
			MaxWait: s.cfg.MaxWait,
			// A database outage is retried for as long as it lasts; the
			// batch stays in memory and fetching stops behind it.
			BackoffMin: 200 * time.Millisecond,
			BackoffMax: 15 * time.Second,
			Buffer:     s.cfg.BatchRows,
		}, s.kmet, s.log,
			// Two batches: one fills while the other is inserted.
			&sinkHandler{s: s, batch: NewBatch(), alerts: &AlertRows{}, dispatches: &DispatchRows{}},
			&sinkHandler{s: s, batch: NewBatch(), alerts: &AlertRows{}, dispatches: &DispatchRows{}})
		if s.crashHook != nil {
			c.SetBeforeCommit(s.crashHook)
		}
		members = append(members, c)
	}
	err := kafkaio.RunMembers(ctx, members)
	stopRetention()
	wg.Wait()
	return err
}

func (s *Sink) retentionLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.RetentionInterval)
	defer t.Stop()
	for {
		dropped, err := s.db.ApplyRetention(ctx, s.now())
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("cannot apply retention", "err", err)
		case len(dropped) > 0:
			s.metrics.partitionsDropped.Add(float64(len(dropped)))
			s.log.Info("dropped old partitions", "partitions", dropped)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sinkHandler fills one Batch from the consumer's messages.
type sinkHandler struct {
	s     *Sink
	dec   event.Decoder
	ev    event.Event
	rej   event.Rejected
	batch *Batch
	// alerts holds the batch's alert messages (every lifecycle message
	// is a row), inserted after the events.
	alerts *AlertRows
	// dispatches holds the batch's dispatch messages (every state change
	// is a row), inserted after the alerts.
	dispatches *DispatchRows
	rows       int
	// times holds the device times (Unix ms) of the batch's events, for
	// the storage-latency histogram.
	times []int64
}

// Add implements kafkaio.Handler.
func (h *sinkHandler) Add(m *kafka.Message) {
	s := h.s
	switch m.Topic {
	case s.eventsTopic:
		// The batch's strings share m.Value, read for this message alone
		// and never changed, rather than a copy of it.
		if err := h.dec.DecodeNormalizedShared(m.Value, &h.ev); err != nil {
			// Ingest wrote it, so this is a bug or a foreign writer; the
			// payload is not logged (it may be anything).
			s.metrics.undecodable.WithLabelValues("events").Inc()
			s.log.Error("cannot decode normalised event; skipped", "partition", m.Partition, "offset", m.Offset, "err", err)
			return
		}
		h.batch.AddEvent(&h.ev, m.Time)
		h.times = append(h.times, h.ev.Time.UnixMilli())
	case s.dlqTopic:
		if err := event.DecodeRejected(m.Value, &h.rej); err != nil {
			s.metrics.undecodable.WithLabelValues("dlq").Inc()
			s.log.Error("cannot decode DLQ record; skipped", "partition", m.Partition, "offset", m.Offset, "err", err)
			return
		}
		h.batch.AddRejected(&h.rej)
	case s.alertsTopic:
		if err := h.alerts.AddAlert(m.Value, m.Time); err != nil {
			s.metrics.undecodable.WithLabelValues("alerts").Inc()
			s.log.Error("cannot decode alert; skipped", "partition", m.Partition, "offset", m.Offset, "err", err)
			return
		}
	case s.dispatchesTopic:
		if err := h.dispatches.AddDispatch(m.Value, m.Time); err != nil {
			s.metrics.undecodable.WithLabelValues("dispatches").Inc()
			s.log.Error("cannot decode dispatch; skipped", "partition", m.Partition, "offset", m.Offset, "err", err)
			return
		}
	default:
		return
	}
	h.rows++
}

// Full implements kafkaio.Handler.
func (h *sinkHandler) Full() bool {
	return max(h.batch.MaxTableLen(), h.alerts.Len(), h.dispatches.Len()) >= h.s.cfg.BatchRows
}

// Flush implements kafkaio.Handler.
func (h *sinkHandler) Flush(ctx context.Context) error {
	if h.batch.Len() == 0 && h.alerts.Len() == 0 && h.dispatches.Len() == 0 {
		h.rows = 0
		h.times = h.times[:0]
		return nil
	}
	ictx, cancel := context.WithTimeout(ctx, h.s.cfg.InsertTimeout)
	defer cancel()
	start := time.Now()
	// Events, then alerts, then dispatches; a failure retries all, and
	// the copies of what was inserted collapse.
	if err := h.s.db.Insert(ictx, h.batch); err != nil {
		h.s.metrics.insertErrors.Inc()
		return err
	}
	if err := h.s.db.InsertAlerts(ictx, h.alerts); err != nil {
		h.s.metrics.insertErrors.Inc()
		return err
	}
	if err := h.s.db.InsertDispatches(ictx, h.dispatches); err != nil {
		h.s.metrics.insertErrors.Inc()
		return err
	}
	n := h.batch.Len() + h.alerts.Len() + h.dispatches.Len()
	h.s.metrics.insertSeconds.Observe(time.Since(start).Seconds())
	h.s.metrics.batchRows.Observe(float64(n))
	h.s.metrics.rows.Add(float64(n))
	now := h.s.now()
	nowMs := now.UnixMilli()
	for _, t := range h.times {
		h.s.metrics.latency.Observe(float64(nowMs-t) / 1000)
	}
	if h.s.storedHook != nil {
		h.s.storedHook(h.times, now)
	}
	h.times = h.times[:0]
	h.batch.Reset()
	h.alerts.Reset()
	h.dispatches.Reset()
	h.rows = 0
	return nil
}

type sinkMetrics struct {
	rows              prometheus.Counter
	batchRows         prometheus.Histogram
	insertSeconds     prometheus.Histogram
	insertErrors      prometheus.Counter
	undecodable       *prometheus.CounterVec
	partitionsDropped prometheus.Counter
	latency           prometheus.Histogram
}

func newSinkMetrics(reg prometheus.Registerer) *sinkMetrics {
	m := &sinkMetrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citywatch_sink_rows_written_total",
			Help: "Rows inserted into ClickHouse (replays included).",
		}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "citywatch_sink_batch_rows",
			Help:    "Rows per insert batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		insertSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "citywatch_sink_insert_seconds",
			Help:    "Time to insert one batch into ClickHouse.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		insertErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citywatch_sink_insert_errors_total",
			Help: "Failed insert attempts (each is retried with backoff).",
		}),
		undecodable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_sink_undecodable_dropped_total",
			Help: "Messages on the sink's topics that could not be decoded and were skipped, by stream.",
		}, []string{"stream"}),
		partitionsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citywatch_sink_partitions_dropped_total",
			Help: "Day partitions dropped by retention.",
		}),
	}
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "citywatch_sink_event_latency_seconds",
		Help:    "Time from an event's device time until it is stored in ClickHouse.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 3600},
	})
	reg.MustRegister(m.latency, m.rows, m.batchRows, m.insertSeconds, m.insertErrors, m.undecodable, m.partitionsDropped)
	return m
}
