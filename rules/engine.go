package rules

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/expr-lang/expr/vm"

	"citywatch/event"
)

// tickEvery is how far the watermark moves between two runs of expiry and
// timeouts: the resolution of every timer of the engine, in stream time.
const tickEvery = int64(time.Second / time.Millisecond)

// Engine runs one RuleSet over a stream of events. It is owned by one
// goroutine (see the package doc); Offer is safe from any goroutine.
type Engine struct {
	cfg     Config
	metrics *Metrics

	rs     *RuleSet
	runs   []*ruleRun
	byType [32][]*ruleRun

	pending atomic.Pointer[RuleSet]

	// Time, in Unix milliseconds of event time.
	maxEvent  int64     // highest event time seen; 0 before the first event
	stream    int64     // stream time: maxEvent, moved on by the wall clock while idle
	lastInput time.Time // wall clock when the last event arrived
	wm        int64     // watermark
	hold      int64     // stream time the watermark may not pass (Unix ms); 0: none
	lastTick  int64     // watermark at the last tick

	// shards, when not nil, limits evaluation to the owned keys (scale-out).
	shards   *Shards
	shardBuf [64]byte
	// driven is set for an engine whose watermark the forwarders of a
	// scaled-out role set (ProcessStamped, AdvanceStamped): it has no clock
	// of its own, and judges nothing late.
	driven bool
	// forwarding is set for the engine of a scaled-out role's forwarder,
	// which keeps the clock and routes events, and holds no state.
	forwarding bool
	zones      []Zone

	env       exprEnv
	envFilled bool // env holds the event of the current Process call
	vm        vm.VM
	ctx       evalCtx

	// The call in progress: its wall clock and where its alerts go.
	now time.Time
	out []event.Alert

	stats Stats
}

// Stats are the engine's counters since it was made.
type Stats struct {
	Events       uint64 // events evaluated
	Late         uint64 // events older than the watermark, not evaluated
	Alerts       uint64 // alert messages emitted
	FilterErrors uint64 // filter evaluations that failed (counted as false)
	Reloads      uint64 // rule sets installed after the first
}

// ruleRun is one rule with its state.
type ruleRun struct {
	r    *rule
	st   kindState
	sits *table[situation]
	m    *ruleMetrics
	// held lists the keys of situations that hold evidence their last
	// message did not carry (the rule's update interval); heldDue is the
	// watermark (Unix ms) at which the first of them is due.
	held    []string
	heldDue int64
	// evicted is the evictions counted so far (countEvicted).
	evicted uint64
	// since is, during a start's replay, the event time (Unix ms) before
	// which the rule evaluates nothing: it looks back no further
	// (replayFrom). 0 outside a replay.
	since int64
}

// ErrNoRules is returned by New for a nil RuleSet.
var ErrNoRules = errors.New("no rule set")

// New returns an Engine running rs. cfg is completed with its defaults and
// validated; m may be nil (no metrics).
func New(cfg Config, rs *RuleSet, m *Metrics) (*Engine, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cannot start rule engine: %w", err)
	}
	if rs == nil {
		return nil, fmt.Errorf("cannot start rule engine: %w", ErrNoRules)
	}
	e := &Engine{cfg: cfg, metrics: m}
	e.ctx.eng = e
	e.install(rs)
	e.stats.Reloads = 0
	return e, nil
}

// Config returns the engine's configuration with its defaults.
func (e *Engine) Config() Config { return e.cfg }

// RuleSet returns the rule set the engine runs.
func (e *Engine) RuleSet() *RuleSet { return e.rs }

// Watermark returns the current watermark, or the zero time before the
// first event.
func (e *Engine) Watermark() time.Time {
	if e.maxEvent == 0 {
		return time.Time{}
	}
	return time.UnixMilli(e.wm)
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats { return e.stats }

// Offer hands the engine a new rule set; the engine's goroutine installs it
// at its next Process or Advance. Rules whose definition did not change keep
// their state and open alerts; the open alerts of rules that changed or
// went away are resolved. Safe to call from any goroutine.
func (e *Engine) Offer(rs *RuleSet) {
	if rs != nil {
		e.pending.Store(rs)
	}
}

func (e *Engine) installPending() {
	if rs := e.pending.Swap(nil); rs != nil {
		e.install(rs)
	}
}

// install replaces the running rule set with rs.
func (e *Engine) install(rs *RuleSet) {
	old := map[string]*ruleRun{}
	for _, run := range e.runs {
		old[run.r.id] = run
	}
	kept := map[string]bool{}
	runs := make([]*ruleRun, 0, len(rs.rules))
	for _, r := range rs.rules {
		kept[r.id] = true
		if prev, ok := old[r.id]; ok && prev.r.fingerprint == r.fingerprint {
			prev.r = r // same definition; the new one reads the new lists
			runs = append(runs, prev)
			delete(old, r.id)
			continue
		}
		run := &ruleRun{r: r, st: r.kind.newState(&e.cfg)}
		run.sits = newTable[situation](e.cfg.MaxOpenAlerts)
		if e.metrics != nil {
			run.m = e.metrics.forRule(r.id)
		}
		runs = append(runs, run)
	}
	// Rules that changed or went away close their open situations.
	for _, run := range e.runs {
		if o, ok := old[run.r.id]; ok && o == run {
			e.ctx.run = run
			run.sits.each(func(_ string, _ int64, s *situation) {
				e.emit(run, s, event.AlertResolved)
			})
			if e.metrics != nil && !kept[run.r.id] {
				e.metrics.dropRule(run.r.id)
			}
		}
	}
	if e.rs != nil {
		e.stats.Reloads++
	}
	e.rs, e.runs = rs, runs
	for i := range e.byType {
		e.byType[i] = e.byType[i][:0]
	}
	for _, run := range runs {
		for t := range e.byType {
			if run.r.reads(event.Type(t)) {
				e.byType[t] = append(e.byType[t], run)
			}
		}
	}
}

// Process evaluates one event at wall-clock time now and appends the alert
// messages it causes to out, returning the extended slice. An event older
// than the watermark is counted as late and raises nothing. e is not kept:
// every string the engine holds on to is copied.
func (e *Engine) Process(now time.Time, ev *event.Event, out []event.Alert) []event.Alert {
	return e.ProcessReceived(now, ev, time.Time{}, out)
}

// ProcessReceived is Process for an event citywatch received at received
// (the record time ingest stamped; zero when unknown). The watermark
// takes the event's time at most at its receipt: a device whose clock runs
// ahead (ingest accepts up to 5 minutes ahead) would otherwise drag the
// watermark ahead of every other device and make their events late,
// city-wide. The event is evaluated at its own time.
func (e *Engine) ProcessReceived(now time.Time, ev *event.Event, received time.Time, out []event.Alert) []event.Alert {
	e.now, e.out = now, out
	e.installPending()
	if e.observe(now, ev, received) {
		e.evaluate(ev)
	}
	return e.flushOut()
}

// observe moves the engine's clock on with ev, received at received (see
// ProcessReceived), and reports whether ev is in time: not older than the
// watermark before it. A late event is counted.
func (e *Engine) observe(now time.Time, ev *event.Event, received time.Time) bool {
	t := ev.Time.UnixMilli()
	wt := t
	if !received.IsZero() {
		wt = min(wt, received.UnixMilli())
	}
	if e.maxEvent != 0 && t < e.wm {
		e.countLate()
		return false
	}
	e.lastInput = now
	if wt > e.maxEvent {
		e.maxEvent = wt
	}
	if e.maxEvent > e.stream {
		e.stream = e.maxEvent
	}
	e.moveWatermark()
	return true
}

// evaluate runs the rules that read ev's type on it.
func (e *Engine) evaluate(ev *event.Event) {
	t := ev.Time.UnixMilli()
	e.stats.Events++
	runs := e.byType[ev.Type&31]
	e.envFilled = false
	for _, run := range runs {
		if t < run.since {
			continue
		}
		if e.shards != nil {
			if h, ok := run.r.shardHash(&e.cfg, ev, e.shardBuf[:0]); ok && !e.shards.ownsHash(h) {
				continue
			}
		}
		if f := run.r.filter; f != nil {
			ok, err := f.eval(&e.vm, e.envOf(ev))
			if err != nil {
				e.stats.FilterErrors++
				if run.m != nil {
					run.m.filterErrors.Inc()
				}
			}
			if !ok {
				if rs, ok := run.st.(resolver); ok {
					e.ctx.run = run
					rs.unmatched(&e.ctx, ev)
				}
				continue
			}
		}
		e.ctx.run = run
		run.st.process(&e.ctx, ev)
	}
}

// replayFrom readies the engine for a start's replay: each rule evaluates
// the events from its own horizon plus margin before ref on (from span
// before ref, when span is set), and no older ones. It returns, by event
// type, the earliest event time (Unix ms) any rule reading the type
// evaluates, and the earliest of all. A type no rule reads gets the
// latest: its events only move the watermark, which the recent ones do.
// endReplay lifts the limits.
func (e *Engine) replayFrom(ref time.Time, span, margin time.Duration) (byType [32]int64, earliest int64) {
	e.installPending()
	earliest, latest := int64(math.MaxInt64), int64(math.MinInt64)
	for i := range byType {
		byType[i] = math.MaxInt64
	}
	for _, run := range e.runs {
		back := span
		if back <= 0 {
			back = run.r.horizon() + margin
		}
		run.since = ref.Add(-back).UnixMilli()
		earliest, latest = min(earliest, run.since), max(latest, run.since)
		for t := range byType {
			if run.r.reads(event.Type(t)) {
				byType[t] = min(byType[t], run.since)
			}
		}
	}
	if len(e.runs) == 0 {
		earliest, latest = ref.UnixMilli(), ref.UnixMilli()
	}
	for t := range byType {
		if byType[t] == math.MaxInt64 {
			byType[t] = latest
		}
	}
	return byType, earliest
}

// endReplay ends the limits of replayFrom.
func (e *Engine) endReplay() {
	for _, run := range e.runs {
		run.since = 0
	}
}

// countLate counts an event that came too late to be evaluated.
func (e *Engine) countLate() {
	e.stats.Late++
	if e.metrics != nil {
		e.metrics.late.Inc()
	}
}

// resolver is a kind that also looks at the events its filter rejects (a
// match rule that resolves its alert on a later "ok" event).
type resolver interface {
	unmatched(x *evalCtx, e *event.Event)
}

// Advance moves stream time on with the wall clock while no input arrives
// (now minus the arrival of the last event, added to the highest event
// time), runs the timers that fall due, refreshes the state metrics, and
// appends the alert messages it causes to out. The owner calls it on a
// ticker (every second is enough); before the first event it does nothing
// but install a pending rule set.
func (e *Engine) Advance(now time.Time, out []event.Alert) []event.Alert {
	e.now, e.out = now, out
	e.installPending()
	if e.maxEvent != 0 {
		if idle := now.Sub(e.lastInput).Milliseconds(); idle > 0 && e.maxEvent+idle > e.stream {
			e.stream = e.maxEvent + idle
		}
		e.moveWatermark()
	}
	e.publishSizes()
	return e.flushOut()
}

// Hold keeps stream time, and with it the watermark, at or below t until
// the next call; the zero time releases it. A consumer catching up on a
// backlog holds the watermark at the newest event time of the partition
// furthest behind, so that events of partitions delivered later are not
// late only because another partition's backlog came first. Timers wait
// while held, as they do during a replay.
func (e *Engine) Hold(t time.Time) {
	if t.IsZero() {
		e.hold = 0
		return
	}
	e.hold = t.UnixMilli()
}

func (e *Engine) moveWatermark() {
	stream := e.stream
	if e.hold != 0 && e.hold < stream {
		stream = e.hold
	}
	e.setWatermark(stream - e.cfg.Lateness.Milliseconds())
}

// setWatermark moves the watermark to wm, when that is later, and runs
// the timers due once it has moved a tick since they last ran.
func (e *Engine) setWatermark(wm int64) {
	if wm <= e.wm {
		return
	}
	e.wm = wm
	if e.metrics != nil && !e.driven {
		e.metrics.watermark.Set(float64(wm) / 1000)
	}
	if wm-e.lastTick < tickEvery {
		return
	}
	e.lastTick = wm
	for _, run := range e.runs {
		e.ctx.run = run
		// Held updates first: a watermark that jumps past their time and
		// their situation's end sends both, as one that moves in steps.
		e.sendHeld(run)
		run.st.tick(&e.ctx)
		e.expireSituations(run)
	}
}

func (e *Engine) flushOut() []event.Alert {
	out := e.out
	e.out = nil
	return out
}

func (e *Engine) publishSizes() {
	if e.metrics == nil || e.forwarding || e.driven {
		return // a scaled-out role sums its shards' (publishShardSizes)
	}
	for _, run := range e.runs {
		keys, bytes, evicted := run.st.size()
		keys += run.sits.len()
		bytes += run.sits.bytes()
		run.m.keys.Set(float64(keys))
		run.m.bytes.Set(float64(bytes))
		run.countEvicted(evicted)
		run.m.open.Set(float64(run.sits.len()))
	}
}

// sizesInto records the size of each rule's state in dst and counts its
// evictions, for a scaled-out role's sum over its shards.
func (e *Engine) sizesInto(dst map[string]stateSize) {
	clear(dst)
	for _, run := range e.runs {
		keys, bytes, evicted := run.st.size()
		dst[run.r.id] = stateSize{keys: keys + run.sits.len(), bytes: bytes + run.sits.bytes(), open: run.sits.len()}
		run.countEvicted(evicted)
	}
}

// countEvicted adds to the rule's counter what its state's running total
// of evictions gained (the total is the run's: a changed rule starts a
// new one).
func (run *ruleRun) countEvicted(total uint64) {
	if run.m != nil && total > run.evicted {
		run.m.evicted.Add(float64(total - run.evicted))
	}
	run.evicted = max(run.evicted, total)
}

// StateSize returns the keys and estimated bytes held by the rule with
// the given id, or zeros when it is not running.
func (e *Engine) StateSize(ruleID string) (keys, bytes int) {
	for _, run := range e.runs {
		if run.r.id == ruleID {
			keys, bytes, _ = run.st.size()
			return keys, bytes
		}
	}
	return 0, 0
}

// evalCtx is what a kind sees while it evaluates: the engine's clock and
// configuration, and the way to raise and resolve alerts for its rule.
type evalCtx struct {
	eng *Engine
	run *ruleRun
}

func (x *evalCtx) cfg() *Config { return &x.eng.cfg }

// envOf returns the filter environment of e, filled once per event.
func (e *Engine) envOf(ev *event.Event) *exprEnv {
	if !e.envFilled {
		e.env.fill(ev, e.cfg.Location)
		e.envFilled = true
	}
	return &e.env
}

// eval runs f on the event being processed; a failure counts as false.
func (x *evalCtx) eval(f *filter, ev *event.Event) bool {
	if f == nil {
		return true
	}
	ok, err := f.eval(&x.eng.vm, x.eng.envOf(ev))
	if err != nil {
		x.eng.stats.FilterErrors++
		if x.run.m != nil {
			x.run.m.filterErrors.Inc()
		}
	}
	return ok
}

// wm returns the watermark in Unix milliseconds.
func (x *evalCtx) wm() int64 { return x.eng.wm }
