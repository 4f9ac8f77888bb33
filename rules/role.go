package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// RoleConfig is the rules role's configuration (the rules section of the
// configuration file). The engine's time zone and city hooks are not here:
// the caller passes them in a Config (CITYWATCH_TZ, the city model).
type RoleConfig struct {
	// Group is the consumer group of the internal events topic.
	Group string `yaml:"group"`
	// File is the rule file; empty means the default rule pack.
	File string `yaml:"file"`
	// ReloadInterval is how often the rule file and lists are checked for
	// changes (SIGHUP reloads at once).
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// Limits are the engine's (see Config).
	Limits `yaml:",inline"`
	// Replay is how much of the input, in event time before the moment of
	// a start, every rule replays to rebuild its state; 0 means each rule
	// its own horizon and an hour more (25h for the fuel rules of the
	// default pack, 1h6m for device.offline; see Role.replay).
	Replay time.Duration `yaml:"replay"`
	// AlertsLookback is how far back the alerts topic is read on a start
	// to learn which alerts are open and which messages were already
	// written. It should cover the longest outage an absence rule keeps
	// open (absence.forget, 7 days by default).
	AlertsLookback time.Duration `yaml:"alerts_lookback"`
	// MaxWait is the longest an input message waits in a batch; the
	// batch's alerts are written before its offsets are committed.
	MaxWait time.Duration `yaml:"max_wait"`
	// MaxPending bounds the alert messages waiting to be written. When it
	// is reached the engine is not advanced by the clock (see Role) until
	// writes succeed again; input waits behind the failing write anyway.
	MaxPending int `yaml:"max_pending"`

	// Shards, when not 0, scales the role out: the processes of Group
	// forward the input to a repartition topic of this many partitions,
	// one per shard of the rules' keys, and share the shards (see Role,
	// "Scale-out"); the most processes that can share the evaluation is
	// Shards. It cannot change while the topic exists. 0 runs one process
	// holding every key, consuming the input in Group.
	Shards int `yaml:"shards"`

	// Upstream is the consumer group of the stage before the rules
	// (ingest's, citywatch-ingest by default). While it has raw input it
	// has not committed, the clock does not move the watermark past the
	// newest event: a stalled or restarting ingest is not a silent city,
	// and the events it delivers when it is back must not come late.
	// "none" turns the guard off. Partitions the upstream group (or
	// another member of the role's own group) holds without moving hold
	// the watermark at their first message (see stallWatch).
	Upstream string `yaml:"upstream_group"`
	// StallMaxHold bounds how far behind the clock a stalled partition
	// may hold the watermark (see stallWatch).
	StallMaxHold time.Duration `yaml:"stall_max_hold"`

	// Hotlist and Watchlist are the list files (CITYWATCH_HOTLIST,
	// CITYWATCH_WATCHLIST), set by the caller; empty means the built-in
	// samples.
	Hotlist   string `yaml:"-"`
	Watchlist string `yaml:"-"`
}

// Defaults of RoleConfig.
const (
	DefaultGroup          = "citywatch-rules"
	DefaultAlertsLookback = DefaultForget
	DefaultMaxPending     = 10_000
	DefaultUpstream       = "citywatch-ingest"
	// DefaultStallMaxHold is longer than a dead member's session and the
	// rebalance after it take with Kafka's defaults.
	DefaultStallMaxHold = 2 * time.Minute
	// MaxShards bounds RoleConfig.Shards: a partition of the shards topic
	// each.
	MaxShards = 1024
)

// SetDefaults fills zero fields with their defaults. Replay stays 0 (each
// rule's horizon and replayMargin).
func (c *RoleConfig) SetDefaults() {
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = 5 * time.Second
	}
	c.Limits.SetDefaults()
	if c.AlertsLookback == 0 {
		c.AlertsLookback = DefaultAlertsLookback
	}
	if c.MaxWait == 0 {
		c.MaxWait = 5 * time.Millisecond
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.Upstream == "" {
		c.Upstream = DefaultUpstream
	}
	if c.StallMaxHold == 0 {
		c.StallMaxHold = DefaultStallMaxHold
	}
}

// Validate reports the first field that is not usable, by its YAML name.
func (c RoleConfig) Validate() error {
	switch {
	case c.Group == "":
		return errors.New("rules.group: must not be empty")
	case c.ReloadInterval <= 0:
		return fmt.Errorf("rules.reload_interval: must be positive, got %s", c.ReloadInterval)
	case c.Replay < 0:
		return fmt.Errorf("rules.replay: must not be negative, got %s", c.Replay)
	case c.AlertsLookback <= 0:
		return fmt.Errorf("rules.alerts_lookback: must be positive, got %s", c.AlertsLookback)
	case c.MaxWait <= 0:
		return fmt.Errorf("rules.max_wait: must be positive, got %s", c.MaxWait)
	case c.MaxPending < 1:
		return fmt.Errorf("rules.max_pending: must be ≥ 1, got %d", c.MaxPending)
	case c.Shards < 0 || c.Shards > MaxShards:
		return fmt.Errorf("rules.shards: must be 0–%d, got %d", MaxShards, c.Shards)
	case c.StallMaxHold <= 0:
		return fmt.Errorf("rules.stall_max_hold: must be positive, got %s", c.StallMaxHold)
	}
	return c.Limits.Validate()
}

// Writer is the part of *kafka.Writer the role uses (kafkaio.Writer).
type Writer = kafkaio.Writer

// Role is the rules role: one Engine fed from the internal events topic
// (consumer group RoleConfig.Group), writing its alerts to the alerts topic
// keyed by alert id.
//
// # Delivery
//
// A batch of input is committed only after the alerts it caused are
// written and acknowledged (kafkaio.Consumer). Alerts raised by the clock
// (Engine.Advance, on a one-second ticker: device.offline, drone.link_lost,
// resolutions of quiet alerts) belong to no input message; the ticker
// writes them at once, and every write, the ticker's and the batches', goes
// through one queue in the order the engine emitted them, so messages of
// one alert reach its partition in lifecycle order. An alert raised by the
// clock and lost in a crash before it was written is raised again by the
// restart: its id depends only on event times (the key's last event plus
// the silence), and the restart recomputes it (see below).
//
// # Restart
//
// State is rebuilt from Kafka on every start, in three steps, before the
// consumer group joins:
//
//  1. The alerts topic is read back over AlertsLookback (by raised_at).
//     The last message of every alert tells whether it is open; open
//     alerts are reopened in the engine under their own ids (seed), so
//     that a situation that began before the replayed input is continued,
//     not raised again.
//  2. The input topic is replayed up to its end at the start. Each rule
//     evaluates the events of its own horizon and an hour (replayMargin;
//     or of Replay, when set), counted back by event time from the start,
//     or from the oldest input the group has not committed when that is
//     earlier, so that input never processed is processed with what came
//     before it. Records older than every rule that reads their type are
//     passed over undecoded (a day's heartbeats, which only
//     device.offline reads, back to its 1h6m; a type no rule reads, back
//     to the shortest look, for the watermark). Fuel purchases older than
//     every other type's look come from the buyers' topic
//     (kafkaio.TopicFuelEvents, where ingest writes them too) once it
//     reaches back as far as the fuel rules look: the events topic is
//     then read back 7 hours rather than 25 (see openFuelSide).
//     Partitions are merged by event time, the
//     watermark held StallMaxHold behind the newest replayed event: the
//     live hold that waited for a backlog a stall held upstream left no
//     record, and within a partition that backlog follows newer events.
//     An event its device sent late (by kafkaio.PublishedHeader) is late
//     as it was live. The messages
//     the engine emits are checked against what step 1 read: a firing of
//     an alert already there, an update carrying no event newer than the
//     alert's last message, a resolution already written, and every
//     message of a situation the topic already shows under another id
//     (one whose first event the replay missed) are dropped; the rest were
//     lost (computed before a crash, never written) and are written now.
//  3. Absence rules adopt the open alerts of keys the replay did not see.
//     The replayed events count as arrived at the start: from then on the
//     clock moves the watermark while no input arrives, as it does live,
//     once the group has given the consumer its partitions (or after the
//     group's session and rebalance timeouts, if no input comes at all;
//     see catchUp). A silence that began before a crash is therefore
//     raised up to the downtime later than live, under the same id, never
//     lost.
//
// The group then consumes from its committed offset; messages below the
// end offsets of step 2 were replayed already and are skipped. The check
// of step 2 stays in force until the watermark has moved a horizon past
// the start, because situations recomputed from the replay may still emit
// their resolution.
//
// Replay rather than a checkpoint of the state: every kind's state is
// rebuilt by the code that builds it live, so there is no second format
// to keep in step with seven kinds, and a changed rule file takes effect on
// the replayed input too. The cost is a start time proportional to the
// input of the longest horizon, during which alerting waits: 7 hours of
// the events topic (vehicle.cloned_plate's 6 and an hour) and a day of
// purchases, decoded and evaluated only as far back as the rules that
// read them look.
//
// # Scale-out
//
// With Shards 0 the engine holds every key, and the group is meant to
// have one member (a second would see part of the input and raise what
// one process would not). With Shards N, any number of processes share
// the work in two consumer groups (runSharded):
//
//   - Group, on the events topic: each member forwards the events of its
//     partitions to the repartition topic TopicByKey, to the shards of
//     their keys (Shards: plate, buyer pseudonym, device, site, zone),
//     after its partition's clock found them in time, stamped with that
//     clock's watermark and their input position (forwarder). It commits
//     its input once the forwarded events are acknowledged.
//   - Group with ByKeyGroupSuffix, on the repartition topic: each member
//     owns the shards it is assigned, up to N, each with an engine of its
//     own (shardRun). A shard's watermark is the least of the input
//     partitions' stamps, so its timers wait for the slowest partition as
//     one process's do (catchUp); an event forwarded twice, by a
//     forwarder that crashed between its write and its commit, is
//     evaluated once. Every rebalance rebuilds the state of a process's
//     new shards as a start does: their alerts read back, and the
//     shard's records of each rule's horizon and an hour replayed in
//     the order they were forwarded, stamps and all, so the replay
//     evaluates exactly what the shard evaluated live.
type Role struct {
	cfg     RoleConfig
	ecfg    Config
	kc      kafkaio.Config
	eng     *Engine
	rel     *Reloader
	metrics *Metrics
	kmet    *kafkaio.Metrics
	log     *slog.Logger
	now     func() time.Time
	writer  Writer
	// tickEvery is how often the clock advances the engine.
	tickEvery time.Duration
	// restored, when not nil, is closed once the restart's restore is
	// over (for tests).
	restored     chan struct{}
	restoredOnce sync.Once
	// assigned, when not nil, is called with the shards of each
	// generation once its restore is over (for tests).
	assigned func(owned []int)
	// replayed, when not nil, is called amid a replay each time its
	// progress is published, with the events replayed so far (for tests).
	replayed func(n int)

	eventsTopic string
	fuelTopic   string // the buyers' topic, read by the restart only
	alertsTopic string
	byKeyTopic  string // the repartition topic of a scaled-out role
	// shardEngines are the engines of a scaled-out role's shards in the
	// current generation, for reloads; guarded by mu.
	shardEngines []*Engine
	// forwardClocks are the clocks of a scaled-out role's forwarder, by
	// input partition, for reloads; guarded by mu.
	forwardClocks map[int]*Engine
	crashHook     func() error

	// mu guards the engine and check: the consumer's handler and
	// the ticker both run the engine.
	mu      sync.Mutex
	outbox  *kafkaio.Outbox
	check   *replayCheck
	scratch []event.Alert

	// progress is what Ready reports while a restore is under way.
	progress restoreProgress

	// catchUp holds the watermark while a backlog drains; guarded by mu.
	catchUp catchUp
	// lateReported is the engine's late count at the last warning of late
	// events, lateReportedAt its time; guarded by mu.
	lateReported   uint64
	lateReportedAt time.Time
	// upstreamBehind is set while the upstream group has raw input it has
	// not committed (see RoleConfig.Upstream).
	upstreamBehind atomic.Bool
	// stallHold is the record time (Unix ms) of the oldest message a
	// stalled partition holds back, 0 when none (see stallWatch).
	stallHold atomic.Int64
	// polled is closed after the stall watch's first poll.
	polled     chan struct{}
	polledOnce sync.Once

	// readTo is, per partition of the events topic, the offset after the
	// last message evaluated: the restart's replay, then the messages
	// delivered. The stall watch waits on it (reached); guarded by mu.
	readTo []int64

	// skipBelow holds, per partition of the events topic, the end offset
	// that the restart replayed up to; written before the consumer starts
	// and read-only after.
	skipBelow map[int]int64
}

// NewRole returns the rules role. ecfg carries the engine's time zone and
// city hooks (its numeric fields are taken from cfg); p turns the
// watchlist's ID numbers into pseudonyms and must use the key ingest uses.
// w writes the alerts; nil means a writer of kc's, closed when Run returns.
// The rule file and lists are loaded here, so that a broken file stops the
// start.
func NewRole(cfg RoleConfig, ecfg Config, kc kafkaio.Config, p *event.Pseudonymizer, w Writer, reg prometheus.Registerer, km *kafkaio.Metrics, log *slog.Logger) (*Role, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("role", "rules")
	ecfg.Limits = cfg.Limits
	r := &Role{
		cfg:         cfg,
		ecfg:        ecfg,
		kc:          kc,
		kmet:        km,
		log:         log,
		now:         time.Now,
		tickEvery:   time.Second,
		writer:      w,
		eventsTopic: kc.Topic(kafkaio.TopicEvents),
		fuelTopic:   kc.Topic(kafkaio.TopicFuelEvents),
		alertsTopic: kc.Topic(kafkaio.TopicAlerts),
		byKeyTopic:  kc.Topic(TopicByKey),
		catchUp:     catchUp{stale: catchUpStale},
		polled:      make(chan struct{}),
		outbox:      kafkaio.NewOutbox("alerts", kc.Topic(kafkaio.TopicAlerts), km),
	}
	if reg != nil {
		r.metrics = NewMetrics(reg)
	}
	rel, err := NewReloader(ReloaderConfig{
		RulesPath:     cfg.File,
		HotlistPath:   cfg.Hotlist,
		WatchlistPath: cfg.Watchlist,
		Interval:      cfg.ReloadInterval,
	}, p, nil, r.metrics, log)
	if err != nil {
		return nil, err
	}
	rs, err := rel.Load()
	if err != nil {
		return nil, fmt.Errorf("cannot load rules: %w", err)
	}
	if r.eng, err = New(ecfg, rs, r.metrics); err != nil {
		return nil, err
	}
	rel.apply = r.offer
	r.rel = rel
	r.progress.restoring.Store(true) // until Run's first restore is over
	return r, nil
}

// restoreProgress is how far a restore has come, for Ready.
type restoreProgress struct {
	restoring atomic.Bool
	start     atomic.Int64 // wall clock at its start, Unix ms
	replayed  atomic.Int64 // events replayed so far
	at        atomic.Int64 // event time reached, Unix ms; 0: none yet
}

// Ready reports an error while the role rebuilds its state on a start (or,
// scaled out, on a rebalance): until then it raises nothing live. The
// error says how far the replay has come; it names no key. It is the
// rules' readiness check (/readyz, the status page).
func (r *Role) Ready(context.Context) error {
	p := &r.progress
	if !p.restoring.Load() {
		return nil
	}
	start := p.start.Load()
	if start == 0 {
		return errors.New("starting: the state is not restored yet")
	}
	began := time.UnixMilli(start)
	msg := fmt.Sprintf("restoring the state for %s: %d events replayed", r.now().Sub(began).Round(time.Second), p.replayed.Load())
	if at := p.at.Load(); at != 0 {
		msg += fmt.Sprintf(", at event time %s (%s before the start)",
			time.UnixMilli(at).UTC().Format(time.RFC3339), began.Sub(time.UnixMilli(at)).Round(time.Second))
	}
	return errors.New(msg)
}

func (r *Role) markRestored() {
	if r.restored != nil {
		r.restoredOnce.Do(func() { close(r.restored) })
	}
}

// offer hands a reloaded rule set to the current engine (a scaled-out
// role replaces its engine at every generation).
func (r *Role) offer(rs *RuleSet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.eng.Offer(rs)
	for _, e := range r.shardEngines {
		e.Offer(rs)
	}
	for _, e := range r.forwardClocks {
		e.Offer(rs)
	}
}

// Group returns the consumer group.
func (r *Role) Group() string { return r.cfg.Group }

// Topics returns the full names of the topics the role consumes in its
// group, for the lag monitor: the events topic, which a scaled-out role's
// forwarders consume too (the shards' lag on the repartition topic is
// citywatch_rules_input_lag_messages).
func (r *Role) Topics() []string {
	return []string{r.eventsTopic}
}

// SetCrashHook makes the role stop without committing when f returns an
// error between a durable write and its commit. It is for failure tests.
func (r *Role) SetCrashHook(f func() error) { r.crashHook = f }

// Run restores the state (see Role), then consumes until ctx is done.
// Stopping order: the consumer stops fetching, writes the open batch's
// alerts and commits; the ticker stops; alerts it raised since are written
// (bounded by the consumer's shutdown timeout); the writer (if the role's
// own) is closed; the reloader stops.
func (r *Role) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	rctx, stopReload := context.WithCancel(ctx)
	defer func() {
		stopReload()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.rel.Run(rctx); err != nil {
			r.log.Error("rule reloader stopped", "err", err)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.watchStalls(rctx)
	}()

	if r.writer == nil {
		w := r.kc.NewPromptWriter(r.kmet, r.log)
		r.writer = w
		defer func() {
			if err := w.Close(); err != nil {
				r.log.Warn("cannot close alert writer", "err", err)
			}
			r.writer = nil
		}()
	}

	if r.cfg.Shards > 0 {
		return r.runSharded(ctx)
	}
	err := r.restore(ctx)
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

	c := kafkaio.NewConsumer(r.kc, kafkaio.ConsumerConfig{
		Group:         r.cfg.Group,
		Topics:        r.Topics(),
		MaxWait:       r.cfg.MaxWait,
		FlushWhenIdle: true,
	}, r.kmet, r.log,
		// One handler: the engine is one goroutine's state, and a batch's
		// alert write is short, so fetching may pause for it.
		&handler{r: r, dec: event.Decoder{Now: r.now}})
	if r.crashHook != nil {
		c.SetBeforeCommit(r.crashHook)
	}
	tctx, stopTicker := context.WithCancel(ctx)
	var ticker sync.WaitGroup
	ticker.Add(1)
	go func() {
		defer ticker.Done()
		r.tickLoop(tctx)
	}()
	err = c.Run(ctx)
	stopTicker()
	ticker.Wait()
	if err != nil {
		// A crash (the test hook) or a failed flush: what is pending is
		// lost as in a crash and recomputed by the next start.
		return err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.flushPending(sctx); err != nil {
		return fmt.Errorf("cannot write alerts on shutdown: %w", err)
	}
	return nil
}

// tickLoop advances the engine with the clock every second and writes
// what it raises. It is the only loop that reads the clock (r.now) for the
// engine's timers.
func (r *Role) tickLoop(ctx context.Context) {
	t := time.NewTicker(r.tickEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.advance(r.now())
			if err := r.flushPending(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("cannot write alerts; retrying at the next tick", "err", err)
			}
		}
	}
}

// advance runs Engine.Advance and queues its alerts. While MaxPending
// messages wait to be written, the engine is not advanced: its timers wait
// (must-deliver data is not dropped) and fire once writes succeed again,
// with the same ids.
func (r *Role) advance(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.outbox.Len() >= r.cfg.MaxPending {
		return
	}
	hold := r.holdLocked(now)
	if r.upstreamBehind.Load() && r.eng.maxEvent != 0 {
		// The clock may not carry the watermark past what has arrived
		// while ingest still has input to deliver.
		hold = earlier(hold, time.UnixMilli(r.eng.maxEvent))
	}
	r.eng.Hold(hold)
	r.scratch = r.eng.Advance(now, r.scratch[:0])
	r.queueLocked(now, r.scratch)
	r.reportLateLocked(now)
}

// lateReportEvery is the least time between two warnings of late events.
const lateReportEvery = time.Minute

// reportLateLocked warns, at most once every lateReportEvery, of the
// events judged late since the last warning: each may be a situation
// nobody was alerted to. r.mu is held.
func (r *Role) reportLateLocked(now time.Time) {
	late := r.eng.stats.Late
	if late == r.lateReported || now.Sub(r.lateReportedAt) < lateReportEvery {
		return
	}
	r.log.Warn("events came later than the allowed lateness: they are stored, but raised no alert",
		"late_events", late-r.lateReported, "total", late, "lateness", r.eng.cfg.Lateness.String())
	r.lateReported, r.lateReportedAt = late, now
}

// holdLocked returns the time the watermark may not pass: the partition
// furthest behind in delivering its backlog (catchUp) or the oldest
// message a stalled partition holds back (stallWatch), whichever is
// earlier; the zero time when neither holds. r.mu is held.
func (r *Role) holdLocked(now time.Time) time.Time {
	hold := r.catchUp.hold(now)
	if ms := r.stallHold.Load(); ms != 0 {
		hold = earlier(hold, time.UnixMilli(ms))
	}
	return hold
}

// earlier returns the earlier of two holds; the zero time is no hold.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// watchStalls polls, every tick, the upstream group on the raw topics and,
// when the role consumes in a group, its own group on the events topic
// (see stallWatch), and sets upstreamBehind and stallHold. A failed poll
// keeps the last answer: the events topic is then likely out of reach too.
func (r *Role) watchStalls(ctx context.Context) {
	var sources []stallSource
	if r.cfg.Upstream != "none" {
		sources = append(sources, stallSource{group: r.cfg.Upstream, topics: r.kc.Topics(kafkaio.RawTopics...)})
	}
	sources = append(sources, stallSource{group: r.cfg.Group, topics: []string{r.eventsTopic}, own: true})
	w := newStallWatch(r.kc.Client(), r.cfg.StallMaxHold, r.eventsTopic, sources...)
	t := time.NewTicker(r.tickEvery)
	defer t.Stop()
	var lastErr string
	told := false // a stall was logged
	for {
		qctx, cancel := context.WithTimeout(ctx, r.tickEvery)
		rep, ok, err := w.poll(qctx, r.now(), r)
		cancel()
		if ok {
			if r.metrics != nil {
				r.metrics.upstreamLag.Set(float64(rep.upstreamLag))
				r.metrics.stalled.Set(float64(rep.stalled))
			}
			r.upstreamBehind.Store(rep.upstreamLag > 0)
			var ms int64
			if !rep.hold.IsZero() {
				ms = rep.hold.UnixMilli()
			}
			r.stallHold.Store(ms)
			// A quiet partition whose one new message is not committed
			// yet looks stalled for a tick: only a stall that holds the
			// watermark for longer is worth a line.
			switch behind := r.now().Sub(rep.hold); {
			case ms != 0 && behind > 2*r.tickEvery && !told:
				r.log.Info("input stalled; the watermark waits for it", "partitions", rep.stalled, "since", rep.hold)
				told = true
			case ms == 0 && told:
				r.log.Info("stalled input moves again")
				told = false
			}
		}
		r.polledOnce.Do(func() { close(r.polled) })
		if err != nil && ctx.Err() == nil && err.Error() != lastErr {
			r.log.Warn("cannot read the input's positions; keeping the last answer", "err", err)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// delivered implements stallRole.
func (r *Role) delivered(p int, since time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return p < len(r.catchUp.parts) && !r.catchUp.parts[p].seen.Before(since)
}

// reached implements stallRole.
func (r *Role) reached(ends map[int]int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, end := range ends {
		if end > 0 && (p >= len(r.readTo) || r.readTo[p] < end) {
			return false
		}
	}
	return true
}

// readLocked notes that the message at offset of partition p of the
// input was evaluated. r.mu is held.
func (r *Role) readLocked(p int, offset int64) {
	if p < 0 {
		return
	}
	if p >= len(r.readTo) {
		r.readTo = append(r.readTo, make([]int64, p+1-len(r.readTo))...)
	}
	r.readTo[p] = max(r.readTo[p], offset+1)
}

// awaitFirstPoll waits for the stall watch's first answer, a poll's
// timeout at most (two ticks), or ctx.
func (r *Role) awaitFirstPoll(ctx context.Context) {
	t := time.NewTimer(2 * r.tickEvery)
	defer t.Stop()
	select {
	case <-r.polled:
	case <-t.C:
	case <-ctx.Done():
	}
}

// catchUpStale is how long a partition holds the watermark after its last
// message (see catchUp): longer than a fetch takes under load, far shorter
// than any rule's timeout.
const catchUpStale = 10 * time.Second

// queueLocked encodes alerts onto the outbox, dropping those the
// restart's check finds already written. r.mu is held. Alerts are rare
// next to events, so each message gets its own buffer: the queue can then
// be handed to a write without copying.
func (r *Role) queueLocked(now time.Time, alerts []event.Alert) {
	r.queueCheckedLocked(&r.check, r.eng, now, alerts)
}

// queueCheckedLocked is queueLocked for the alerts of eng, checked by
// *check until eng's watermark passes its end. r.mu is held.
func (r *Role) queueCheckedLocked(check **replayCheck, eng *Engine, now time.Time, alerts []event.Alert) {
	for i := range alerts {
		a := &alerts[i]
		if *check != nil {
			if !(*check).keep(a) {
				if r.metrics != nil {
					r.metrics.restoreDropped.Inc()
				}
				continue
			}
			a.RaisedAt = now
		}
		r.outbox.Add(kafka.Message{
			Topic: r.alertsTopic,
			Key:   []byte(a.ID),
			Value: a.AppendJSON(make([]byte, 0, 512)),
		})
	}
	clear(alerts)
	if *check != nil && eng.maxEvent != 0 && eng.wm > (*check).until {
		*check = nil // no situation of the replay can still emit
	}
}

// flushPending writes every queued message (see kafkaio.Outbox).
func (r *Role) flushPending(ctx context.Context) error { return r.outbox.Flush(ctx, r.writer) }

// handler is the consumer's Handler: Add runs the engine, Flush writes.
type handler struct {
	r   *Role
	dec event.Decoder
	ev  event.Event
}

// Add implements kafkaio.Handler.
func (h *handler) Add(m *kafka.Message) {
	r := h.r
	if m.Offset < r.skipBelow[m.Partition] {
		return // replayed by the restart
	}
	// m.Value was read for this message alone and is not used after Add:
	// the event may share it (the engine copies what it keeps).
	if err := h.dec.DecodeNormalizedShared(m.Value, &h.ev); err != nil {
		r.skipUndecodable(m, err)
		return
	}
	now := r.now()
	r.mu.Lock()
	r.readLocked(m.Partition, m.Offset)
	t := clockTime(h.ev.Time, m.Time)
	r.catchUp.resume(now)
	r.catchUp.observe(m.Partition, t.UnixMilli(), now)
	r.eng.Hold(r.holdLocked(now))
	r.scratch = r.eng.ProcessReceived(now, &h.ev, m.Time, r.scratch[:0])
	if len(r.scratch) > 0 {
		r.queueLocked(now, r.scratch)
	}
	r.mu.Unlock()
}

// clockTime is the time an event received at received (its record time;
// zero: unknown) moves the clock to: its own time, or its receipt when
// its device's clock runs ahead (see Engine.ProcessReceived).
func clockTime(t, received time.Time) time.Time {
	if !received.IsZero() && received.Before(t) {
		return received
	}
	return t
}

// skipUndecodable counts, logs and passes over a message of the events
// topic that does not decode. Ingest wrote it: a bug or a foreign writer.
// The payload is not logged (it may hold anything).
func (r *Role) skipUndecodable(m *kafka.Message, err error) {
	if r.metrics != nil {
		r.metrics.undecodable.Inc()
	}
	r.log.Error("cannot decode normalised event; skipped", "partition", m.Partition, "offset", m.Offset, "err", err)
	r.mu.Lock()
	r.readLocked(m.Partition, m.Offset)
	r.mu.Unlock()
}

// Full implements kafkaio.Handler.
func (h *handler) Full() bool {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	return h.r.outbox.Len() >= h.r.cfg.MaxPending
}

// Flush implements kafkaio.Handler: the batch's alerts (and any the ticker
// queued meanwhile) are written before the batch is committed.
func (h *handler) Flush(ctx context.Context) error { return h.r.flushPending(ctx) }
