package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
)

// Writer is the part of *kafka.Writer the role uses (kafkaio.Writer).
type Writer = kafkaio.Writer

// Role is the dispatch role: an Engine fed with the units' reports from
// the internal events topic, the alerts from citywatch.alerts, and the
// clock; it writes dispatch messages to citywatch.dispatches (keyed by
// unit id) and its own alerts to citywatch.alerts. See the package doc
// for delivery, restart and scale-out.
type Role struct {
	cfg     Config
	city    *city.City
	kc      kafkaio.Config
	eng     *Engine
	metrics *Metrics
	kmet    *kafkaio.Metrics
	log     *slog.Logger
	now     func() time.Time
	writer  Writer

	eventsTopic, alertsTopic, dispatchesTopic string

	// restored, when not nil, is closed once the start's restore is over
	// (for tests).
	restored     chan struct{}
	restoredOnce sync.Once
	// assigned, when not nil, is called with the districts of each
	// generation of a shared dispatcher once its restore is over (tests).
	assigned  func(districts []string)
	crashHook func() error

	// mu guards the engine and out: the consumer, the tail readers and
	// the ticker all run the engine.
	mu     sync.Mutex
	out    Out
	outbox *kafkaio.Outbox
}

// NewRole returns the dispatch role for city c. w writes the messages;
// nil means a writer of kc's, closed when Run returns. reg and km may be
// nil (metrics kept but not exported).
func NewRole(cfg Config, c *city.City, kc kafkaio.Config, w Writer, reg prometheus.Registerer, km *kafkaio.Metrics, log *slog.Logger) (*Role, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("role", "dispatch")
	if km == nil {
		km = kafkaio.NewMetrics(prometheus.NewRegistry()) // the consumer needs some
	}
	m := NewMetrics(reg)
	eng, err := NewEngine(cfg, c, m, log)
	if err != nil {
		return nil, err
	}
	return &Role{
		cfg: cfg, city: c, kc: kc, eng: eng, metrics: m, kmet: km, log: log, now: time.Now, writer: w,
		eventsTopic:     kc.Topic(kafkaio.TopicEvents),
		alertsTopic:     kc.Topic(kafkaio.TopicAlerts),
		dispatchesTopic: kc.Topic(kafkaio.TopicDispatches),
		outbox:          kafkaio.NewOutbox("dispatches", kc.Topic(kafkaio.TopicDispatches), km),
	}, nil
}

// Group returns the consumer group of the alerts topic.
func (r *Role) Group() string { return r.cfg.Group }

// Topics returns the full names of the topics the group consumes, for the
// lag monitor; none when the dispatchers share the districts (they read
// the alerts without committing a position).
func (r *Role) Topics() []string {
	if r.cfg.ShareDistricts {
		return nil
	}
	return []string{r.alertsTopic}
}

// SetCrashHook makes the role stop without committing when f returns an
// error between a durable write and its commit. It is for failure tests.
func (r *Role) SetCrashHook(f func() error) { r.crashHook = f }

// Snapshot returns a copy of the dispatcher's state now (units, coverage
// as of the last tick, open dispatches) for the web UI in the process.
func (r *Role) Snapshot() Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.eng.Snapshot(r.now())
}

// Run restores the state (see the package doc), then serves until ctx is
// done. Stopping order: the alerts consumer stops fetching, writes the
// open batch's messages and commits; the tail readers and the ticker
// stop; what they queued since is written (bounded by 10 s); the writer
// (if the role's own) is closed.
func (r *Role) Run(ctx context.Context) error {
	if r.writer == nil {
		w := r.kc.NewPromptWriter(r.kmet, r.log)
		r.writer = w
		defer func() {
			if err := w.Close(); err != nil {
				r.log.Warn("cannot close dispatch writer", "err", err)
			}
			r.writer = nil
		}()
	}
	if r.cfg.ShareDistricts {
		return r.runShared(ctx)
	}
	ends, _, err := r.restore(ctx)
	r.markRestored()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := r.flushPending(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	bctx, stopBackground := context.WithCancel(ctx)
	var bg sync.WaitGroup
	for p, off := range ends[r.eventsTopic] {
		bg.Add(1)
		go func() {
			defer bg.Done()
			r.tail(bctx, r.eventsTopic, p, off, r.onEvent())
		}()
	}
	for p, off := range ends[r.dispatchesTopic] {
		bg.Add(1)
		go func() {
			defer bg.Done()
			r.tail(bctx, r.dispatchesTopic, p, off, r.onDispatch)
		}()
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		r.tickLoop(bctx)
	}()

	c := kafkaio.NewConsumer(r.kc, kafkaio.ConsumerConfig{
		Group:         r.cfg.Group,
		Topics:        r.Topics(),
		MaxWait:       r.cfg.MaxWait,
		FlushWhenIdle: true,
	}, r.kmet, r.log, &handler{r: r})
	if r.crashHook != nil {
		c.SetBeforeCommit(r.crashHook)
	}
	err = c.Run(ctx)
	stopBackground()
	bg.Wait()
	if err != nil {
		return err // a crash: what is pending is recomputed by the next start
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.flushPending(sctx); err != nil {
		return fmt.Errorf("cannot write dispatches on shutdown: %w", err)
	}
	return nil
}

// tickLoop advances the engine with the clock. It is the only loop that
// reads the clock for the engine's timers.
func (r *Role) tickLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.advance(r.now())
			if err := r.flushPending(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("cannot write dispatches; retrying at the next tick", "err", err)
			}
		}
	}
}

// advance runs the engine's timers at now and queues what they decide.
// While MaxPending messages wait to be written the timers wait too (they
// fire late once writes succeed, never twice: the engine's state moved
// only if its messages are queued).
func (r *Role) advance(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.outbox.Len() >= r.cfg.MaxPending {
		return
	}
	r.eng.Advance(now, &r.out)
	r.queueLocked()
}

// queueLocked encodes r.out onto the pending queue. r.mu is held. Each
// message gets its own buffer, so the queue can be handed to a write
// without copying; dispatches are few next to events.
func (r *Role) queueLocked() {
	for i := range r.out.Dispatches {
		d := &r.out.Dispatches[i]
		key := d.UnitID
		if key == "" {
			key = d.AlertID // an escalation without a unit
		}
		r.outbox.Add(kafka.Message{Topic: r.dispatchesTopic, Key: []byte(key), Value: d.AppendJSON(make([]byte, 0, 320))})
	}
	for i := range r.out.Alerts {
		a := &r.out.Alerts[i]
		r.outbox.Add(kafka.Message{Topic: r.alertsTopic, Key: []byte(a.ID), Value: a.AppendJSON(make([]byte, 0, 640))})
	}
	r.out.Reset()
}

// flushPending writes every queued message (see kafkaio.Outbox).
func (r *Role) flushPending(ctx context.Context) error { return r.outbox.Flush(ctx, r.writer) }

// onEvent returns the tail handler of the internal events topic: unit
// positions and answers; every other event is skipped unread beyond its
// type.
func (r *Role) onEvent() func(m *kafka.Message) {
	dec := event.Decoder{Now: r.now}
	var ev event.Event
	return func(m *kafka.Message) {
		if !mayBePatrol(m.Value) {
			return
		}
		if err := dec.DecodeNormalized(m.Value, &ev); err != nil {
			r.metrics.undecodable.WithLabelValues("events").Inc()
			return
		}
		now := r.now()
		r.mu.Lock()
		switch ev.Type {
		case event.TypePatrolPosition:
			r.eng.Position(now, &ev)
		case event.TypePatrolStatus:
			r.eng.Status(now, &ev, &r.out)
			r.queueLocked()
		}
		n := r.outbox.Len()
		r.mu.Unlock()
		if n > 0 {
			// An answer's message goes out at once, not at the next tick.
			if err := r.flushPending(context.Background()); err != nil {
				r.log.Warn("cannot write dispatches; retrying at the next tick", "err", err)
			}
		}
	}
}

// onDispatch takes a message of citywatch.dispatches written after the
// start (by this process or another dispatcher): units assigned by others
// are not available here.
func (r *Role) onDispatch(m *kafka.Message) {
	d, err := event.DecodeDispatch(m.Value)
	if err != nil {
		r.metrics.undecodable.WithLabelValues("dispatches").Inc()
		return
	}
	r.mu.Lock()
	r.eng.Observed(&d)
	r.mu.Unlock()
}

// mayBePatrol is a cheap pre-filter: the normalised form of a patrol
// event names its type; most events of the topic are not patrol events
// and need no decoding.
func mayBePatrol(v []byte) bool {
	for i := 0; i+7 <= len(v); i++ {
		if v[i] == 'p' && string(v[i:i+7]) == "patrol." {
			return true
		}
	}
	return false
}

// tail reads partition p of topic from offset off until ctx is done,
// without a consumer group: every dispatcher reads every unit.
func (r *Role) tail(ctx context.Context, topic string, p int, off int64, f func(*kafka.Message)) {
	kafkaio.Follow(ctx, r.kc, topic, p, off, r.log, f)
}

// handler is the alerts consumer's Handler: Add runs the engine, Flush
// writes what it decided before the batch is committed.
type handler struct {
	r *Role
}

// Add implements kafkaio.Handler.
func (h *handler) Add(m *kafka.Message) {
	r := h.r
	a, err := event.DecodeAlert(m.Value)
	if err != nil {
		r.metrics.undecodable.WithLabelValues("alerts").Inc()
		r.log.Error("cannot decode alert; skipped", "partition", m.Partition, "offset", m.Offset, "err", err)
		return
	}
	now := r.now()
	r.mu.Lock()
	r.eng.Alert(now, &a, &r.out)
	r.queueLocked()
	r.mu.Unlock()
}

// Full implements kafkaio.Handler.
func (h *handler) Full() bool {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	return h.r.outbox.Len() >= h.r.cfg.MaxPending
}

// Flush implements kafkaio.Handler.
func (h *handler) Flush(ctx context.Context) error { return h.r.flushPending(ctx) }

// restore rebuilds the state before the group joins (see the package
// doc) and returns the end offsets it read up to, by topic, where the
// tail readers go on, and the alerts it read back.
func (r *Role) restore(ctx context.Context) (map[string]map[int]int64, []event.Alert, error) {
	start := r.now()
	ends := map[string]map[int]int64{}
	// 1. Alerts of the lookback: which alerts are ours and where they are.
	var alerts []event.Alert
	owner := map[string]bool{}
	var err error
	ends[r.alertsTopic], err = kafkaio.ReadSince(ctx, r.kc, r.alertsTopic, start.Add(-r.cfg.Lookback), func(m *kafka.Message) (int64, bool) {
		a, err := event.DecodeAlert(m.Value)
		return a.RaisedAt.UnixMilli(), err == nil
	}, func(m *kafka.Message) {
		a, err := event.DecodeAlert(m.Value)
		if err != nil {
			r.metrics.undecodable.WithLabelValues("alerts").Inc()
			return
		}
		r.metrics.restored.WithLabelValues("alerts").Inc()
		owner[a.ID] = r.eng.owns(&a)
		alerts = append(alerts, a)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cannot restore dispatch state: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// 2. Dispatches of the lookback: ours rebuilt with their timers,
	// other dispatchers' only as units taken.
	ends[r.dispatchesTopic], err = kafkaio.ReadSince(ctx, r.kc, r.dispatchesTopic, start.Add(-r.cfg.Lookback), func(m *kafka.Message) (int64, bool) {
		d, err := event.DecodeDispatch(m.Value)
		return d.Time.UnixMilli(), err == nil
	}, func(m *kafka.Message) {
		d, err := event.DecodeDispatch(m.Value)
		if err != nil {
			r.metrics.undecodable.WithLabelValues("dispatches").Inc()
			return
		}
		r.metrics.restored.WithLabelValues("dispatches").Inc()
		if own, seen := owner[d.AlertID]; own || !seen && r.eng.districts == nil {
			r.eng.Recorded(&d)
		} else {
			r.eng.Observed(&d)
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cannot restore dispatch state: %w", err)
	}
	for i := range alerts {
		r.eng.RecordedAlert(&alerts[i])
	}
	// 3. Positions and answers of the last PositionsReplay.
	dec := event.Decoder{Now: r.now}
	var ev event.Event
	ends[r.eventsTopic], err = kafkaio.ReadSince(ctx, r.kc, r.eventsTopic, start.Add(-r.cfg.PositionsReplay), func(m *kafka.Message) (int64, bool) {
		err := dec.DecodeNormalized(m.Value, &ev)
		return ev.Time.UnixMilli(), err == nil
	}, func(m *kafka.Message) {
		if !mayBePatrol(m.Value) {
			return
		}
		if err := dec.DecodeNormalized(m.Value, &ev); err != nil {
			return
		}
		r.metrics.restored.WithLabelValues("events").Inc()
		switch ev.Type {
		case event.TypePatrolPosition:
			r.eng.Position(start, &ev)
		case event.TypePatrolStatus:
			// Answers already recorded change nothing; one lost in a
			// crash is recorded now.
			r.eng.Status(start, &ev, &r.out)
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cannot restore dispatch state: %w", err)
	}
	r.queueLocked()
	r.log.Info("dispatch state restored", "alerts_read", len(alerts), "units", r.eng.reg.Len(),
		"open_alerts", len(r.eng.open), "lost_messages_found", r.outbox.Len(), "took", time.Since(start).String())
	return ends, alerts, nil
}
