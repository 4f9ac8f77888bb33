package dispatch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"citywatch/event"
	"citywatch/internal/city"
)

// Rule ids of the alerts the dispatcher raises (CONTRACT.md section 6).
const (
	RuleSLABreach   = "dispatch.sla_breach"
	RuleCoverageGap = "dispatch.coverage_gap"
)

// Details the dispatcher adds to an alert it re-publishes as updated when
// the alert is escalated (docs/contract-notes.md, "Dispatch").
const (
	DetailEscalated   = "dispatch_escalated"
	DetailBestETA     = "dispatch_best_eta_s"
	DetailTierMinutes = "dispatch_tier_minutes"
)

// DispatchID returns the deterministic id of the dispatch of unit to
// alert: the first 16 bytes of SHA-256 over the alert id, a zero byte and
// the unit id, in hex. An escalation that found no unit has unit "".
func DispatchID(alertID, unitID string) string {
	var buf [256]byte
	b := append(buf[:0], alertID...)
	b = append(b, 0)
	b = append(b, unitID...)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Out collects what the Engine decided, in order: dispatch messages for
// citywatch.dispatches and alert messages for citywatch.alerts.
type Out struct {
	Dispatches []event.Dispatch
	Alerts     []event.Alert
}

// Len returns the number of messages.
func (o *Out) Len() int { return len(o.Dispatches) + len(o.Alerts) }

// Reset empties o, keeping its capacity.
func (o *Out) Reset() {
	clear(o.Dispatches)
	clear(o.Alerts)
	o.Dispatches, o.Alerts = o.Dispatches[:0], o.Alerts[:0]
}

// phase order of a dispatch's lifecycle; declined and reassigned end it
// before the scene, cleared after.
func rank(s event.DispatchStatus) int {
	switch s {
	case event.DispatchAssigned:
		return 1
	case event.DispatchAccepted:
		return 2
	case event.DispatchEnRoute:
		return 3
	case event.DispatchOnScene:
		return 4
	case event.DispatchCleared, event.DispatchDeclined, event.DispatchReassigned:
		return 5
	}
	return 0
}

// active reports whether a dispatch in phase s holds its unit.
func active(s event.DispatchStatus) bool { r := rank(s); return r >= 1 && r <= 4 }

// dispatchState is one dispatch: one unit sent to one alert.
type dispatchState struct {
	id         string
	alert      *alertState
	unit       string
	phase      event.DispatchStatus // assigned … cleared; escalated for a unit-less escalation
	assignedAt time.Time
	eta, dist  float64
}

// alertState is one alert being served.
type alertState struct {
	id string
	// known is false for an alert restored from its dispatches only (its
	// alert message is older than the lookback): its answers are still
	// recorded, but it gets no new units.
	known     bool
	alert     event.Alert // the firing message, for the escalation update
	severity  event.Severity
	eventTime time.Time
	lat, lon  float64
	circleID  string
	tier      int
	district  string
	area      Area
	want      int
	deadline  time.Time
	ds        []*dispatchState

	escalated, breached, resolved bool
	assigned, accepted, onScene   bool
	closed                        bool // moved to Engine.closed
}

func (as *alertState) activeCount() int {
	n := 0
	for _, d := range as.ds {
		if active(d.phase) {
			n++
		}
	}
	return n
}

// gapState is the coverage-gap timer of one circle.
type gapState struct {
	since   time.Time // start of the current lack of coverage; zero when covered
	open    bool      // a coverage_gap alert is firing
	alertID string
}

// Engine is the dispatcher's logic: the unit registry, the alerts being
// served and their dispatches, the acceptance, SLA and coverage timers. It
// takes the time of every call as an argument (the role's ticker and
// consumer pass the clock) and is not safe for concurrent use.
type Engine struct {
	cfg       Config
	circles   *Circles
	reg       *Registry
	metrics   *Metrics
	log       *slog.Logger
	districts map[string]bool // nil: every district
	skipRules map[string]bool
	gapTiers  map[int]bool
	maxUnits  int

	alerts     map[string]*alertState
	dispatches map[string]*dispatchState
	open       []*alertState // alerts with work left, in arrival order
	closed     []*alertState // done, kept until the lookback passes
	cover      []CircleCoverage
	gaps       []gapState
	cand       []Candidate
	cur        *alertState
	skipTried  func(*Unit) bool
}

// MaxUnits bounds the registry: reports of further new units are dropped
// (citywatch_dispatch_units_dropped_total).
const MaxUnits = 100_000

// NewEngine returns an engine for the city c. m may be nil (metrics not
// registered anywhere).
func NewEngine(cfg Config, c *city.City, m *Metrics, log *slog.Logger) (*Engine, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	circles := NewCircles(c)
	e := &Engine{
		cfg: cfg, circles: circles, metrics: m, log: log,
		reg:       NewRegistry(circles, cfg.Model, cfg.StaleAfter, cfg.CellM),
		skipRules: map[string]bool{}, gapTiers: map[int]bool{}, maxUnits: MaxUnits,
		alerts: map[string]*alertState{}, dispatches: map[string]*dispatchState{},
		gaps: make([]gapState, len(circles.List())),
		cand: make([]Candidate, 0, 16),
	}
	if len(cfg.Districts) > 0 {
		e.districts = map[string]bool{}
		for _, d := range cfg.Districts {
			e.districts[d] = true
			if dd := c.District(d); dd != nil { // a code: also by name
				e.districts[dd.Name] = true
			}
		}
	}
	for _, r := range cfg.SkipRules {
		e.skipRules[r] = true
	}
	for _, t := range cfg.CoverageTiers {
		e.gapTiers[t] = true
	}
	e.skipTried = func(u *Unit) bool {
		for _, d := range e.cur.ds {
			if d.unit == u.ID {
				return true
			}
		}
		return false
	}
	return e, nil
}

// Registry returns the engine's unit registry (read it under the same
// lock as the engine).
func (e *Engine) Registry() *Registry { return e.reg }

// Circles returns the circles the engine serves.
func (e *Engine) Circles() *Circles { return e.circles }

// Position takes a patrol.position event. A report from the future (beyond
// Config.FutureTolerance) or implying an impossible jump from the last
// trusted position is flagged and not trusted; a report older than the
// last trusted one is ignored.
func (e *Engine) Position(now time.Time, ev *event.Event) {
	u := e.reg.Unit(ev.DeviceID)
	if u == nil {
		if e.reg.Len() >= e.maxUnits {
			e.metrics.unitsDropped.Inc()
			return
		}
		u = e.reg.Ensure(strings.Clone(ev.DeviceID))
	}
	if ev.Time.Sub(now) > e.cfg.FutureTolerance {
		e.flag(u, "future")
		return
	}
	if u.HasPos {
		dt := ev.Time.Sub(u.PosTime)
		if dt <= 0 {
			return // out of order or resent: the newer report stands
		}
		d := city.DistanceM(u.Lat, u.Lon, ev.Lat, ev.Lon)
		if d > e.cfg.JumpMinM && d/dt.Seconds()*3.6 > e.cfg.MaxSpeedKmh {
			e.flag(u, "jump")
			return
		}
	}
	if u.Status != ev.Status {
		u.Status = strings.Clone(ev.Status)
	}
	u.SpeedKmh, u.HeadingDeg = ev.SpeedKmh, ev.HeadingDeg
	e.reg.Move(u, ev.Lat, ev.Lon, ev.Time)
}

func (e *Engine) flag(u *Unit, reason string) {
	u.Flagged++
	e.metrics.flagged.WithLabelValues(reason).Inc()
	// The unit id is in the log (an operator must find the terminal),
	// never in a label. A terminal that keeps sending bad positions is
	// logged at its 1st, 2nd, 4th, 8th… flagged report, not at every one.
	if u.Flagged&(u.Flagged-1) == 0 {
		e.log.Warn("untrusted position report", "unit", u.ID, "reason", reason, "flagged_reports", u.Flagged)
	}
}

// Alert takes an alert message from citywatch.alerts. A firing alert gets
// its units at once (see fill); a resolved one is noted (no more units are
// sent; those on their way go on); updates and the dispatcher's own alerts
// are ignored, and so is an alert already being served (a replay).
func (e *Engine) Alert(now time.Time, a *event.Alert, out *Out) {
	if strings.HasPrefix(a.Rule, "dispatch.") {
		return
	}
	as := e.alerts[a.ID]
	switch a.Status {
	case event.AlertResolved:
		if as != nil {
			as.resolved = true
		}
		return
	case event.AlertFiring:
	default:
		return
	}
	if as != nil {
		if !as.known {
			e.attach(as, a)
		}
		return
	}
	if e.skipRules[a.Rule] {
		e.metrics.skipped.WithLabelValues("rule").Inc()
		return
	}
	if a.Lat == 0 && a.Lon == 0 {
		e.metrics.skipped.WithLabelValues("no_location").Inc()
		return
	}
	district := a.District
	if district == "" {
		district = e.circles.DistrictName(a.Lat, a.Lon)
	}
	if e.districts != nil && !e.districts[district] {
		e.metrics.skipped.WithLabelValues("district").Inc()
		return
	}
	if now.Sub(a.EventTime) > e.cfg.MaxAlertAge {
		e.metrics.skipped.WithLabelValues("too_old").Inc()
		return
	}
	as = &alertState{id: a.ID}
	e.attach(as, a)
	e.alerts[a.ID] = as
	e.open = append(e.open, as)
	if !a.RaisedAt.IsZero() {
		e.observe(e.metrics.alertDelay, as, a.RaisedAt)
	}
	start := time.Now()
	e.fill(now, as, out)
	e.metrics.assignLatency.Observe(time.Since(start).Seconds())
}

// attach fills the alert's place, tier and deadline from its message.
func (e *Engine) attach(as *alertState, a *event.Alert) {
	as.known = true
	as.alert = *a
	as.alert.Evidence = slices.Clone(a.Evidence)
	as.alert.Details = slices.Clone(a.Details)
	as.severity, as.eventTime, as.lat, as.lon = a.Severity, a.EventTime, a.Lat, a.Lon
	ci, tier, area := e.circles.Place(a.Lat, a.Lon)
	as.area = area
	as.circleID, as.tier = a.CircleID, a.TierMinutes
	if as.tier != 1 && as.tier != 3 && as.tier != 5 {
		as.circleID, as.tier = "", tier
		if ci >= 0 {
			as.circleID = e.circles.list[ci].ID
		}
	}
	as.district = a.District
	if as.district == "" {
		as.district = e.circles.DistrictName(a.Lat, a.Lon)
	}
	as.want = e.cfg.Units.unitsFor(string(a.Severity))
	as.deadline = a.EventTime.Add(time.Duration(as.tier) * time.Minute)
}

// fill assigns the fastest available units the alert still lacks (its
// severity's count minus those holding a dispatch), never a unit that
// already had a dispatch for it. When none of its units can be on scene
// by the deadline (event time + tier), the alert is escalated once: an
// escalated dispatch message and the alert re-published as updated.
func (e *Engine) fill(now time.Time, as *alertState, out *Out) {
	if !as.known || as.resolved || as.onScene {
		return
	}
	act := as.activeCount()
	need := as.want - act
	if need <= 0 && as.escalated {
		return
	}
	var cands []Candidate
	if need > 0 {
		e.cur = as
		cands = e.reg.Rank(e.cand[:0], as.lat, as.lon, as.area, now, need, 0, e.skipTried)
		e.cur = nil
	}
	first := ""
	for _, c := range cands {
		d := &dispatchState{id: DispatchID(as.id, c.Unit.ID), alert: as, unit: c.Unit.ID, phase: event.DispatchAssigned,
			assignedAt: now, eta: c.ETA, dist: c.DistM}
		e.dispatches[d.id] = d
		as.ds = append(as.ds, d)
		c.Unit.Dispatch = d.id
		e.emit(out, d, event.DispatchAssigned, now)
		if first == "" {
			first = d.id
		}
		if !as.assigned {
			as.assigned = true
			e.observe(e.metrics.assignDelay, as, now)
		}
	}
	if as.escalated {
		return
	}
	// Can any unit holding a dispatch make the deadline?
	best := math.Inf(1)
	for _, d := range as.ds {
		if active(d.phase) {
			arrive := d.assignedAt.Add(time.Duration(d.eta * float64(time.Second)))
			if !arrive.After(as.deadline) {
				return
			}
			best = math.Min(best, d.eta)
		}
	}
	as.escalated = true
	e.metrics.escalations.Inc()
	var esc *dispatchState
	switch {
	case first != "":
		esc = e.dispatches[first]
	default:
		for _, d := range as.ds {
			if active(d.phase) {
				esc = d
				break
			}
		}
	}
	if esc == nil {
		// No unit at all: a dispatch without a unit records the
		// escalation (CONTRACT.md section 4).
		esc = &dispatchState{id: DispatchID(as.id, ""), alert: as, phase: event.DispatchEscalated, assignedAt: now}
		e.dispatches[esc.id] = esc
		as.ds = append(as.ds, esc)
	}
	e.emit(out, esc, event.DispatchEscalated, now)
	u := as.alert
	u.Status, u.RaisedAt = event.AlertUpdated, now
	u.Details = slices.DeleteFunc(slices.Clone(u.Details), func(d event.Detail) bool {
		return d.Name == DetailEscalated || d.Name == DetailBestETA || d.Name == DetailTierMinutes
	})
	bestETA := -1.0
	if !math.IsInf(best, 1) {
		bestETA = math.Round(best*10) / 10
	}
	u.Details = append(u.Details, event.Detail{Name: DetailEscalated, Value: true},
		event.Detail{Name: DetailBestETA, Value: bestETA}, event.Detail{Name: DetailTierMinutes, Value: as.tier})
	out.Alerts = append(out.Alerts, u)
}

// emit appends the message of d reaching status at t.
func (e *Engine) emit(out *Out, d *dispatchState, status event.DispatchStatus, t time.Time) {
	as := d.alert
	out.Dispatches = append(out.Dispatches, event.Dispatch{
		ID: d.id, AlertID: as.id, UnitID: d.unit, Status: status, Time: t,
		ETASeconds: math.Round(d.eta*10) / 10, DistanceM: math.Round(d.dist),
		CircleID: as.circleID, TierMinutes: as.tier,
	})
	e.metrics.dispatches.WithLabelValues(string(status)).Inc()
}

// observe records the time from the alert's sensor event time to t.
func (e *Engine) observe(h *prometheus.HistogramVec, as *alertState, t time.Time) {
	district := as.district
	if !e.circles.knownDistrict(district) {
		district = "other" // labels stay bounded whatever an alert carries
	}
	h.WithLabelValues(strconv.Itoa(as.tier), district).Observe(math.Max(t.Sub(as.eventTime).Seconds(), 0))
}

// Status takes a patrol.status event: a unit's answer to a dispatch. The
// lifecycle only moves forward (accepted → en_route → on_scene →
// cleared); an answer that skips steps moves it to that step, one that
// comes after a later step or after the dispatch ended (reassigned, say)
// is counted and ignored, and so is one for an unknown dispatch id or from
// another unit. A decline before acceptance frees the unit and sends the
// next one at once.
func (e *Engine) Status(now time.Time, ev *event.Event, out *Out) {
	d := e.dispatches[ev.DispatchID]
	if d == nil || d.unit == "" || d.unit != ev.DeviceID {
		e.metrics.unknown.Inc()
		return
	}
	st := event.DispatchStatus(ev.Status)
	if rank(st) < 2 { // assigned or unknown words are not answers
		e.metrics.unknown.Inc()
		return
	}
	switch {
	case rank(d.phase) == 5:
		e.metrics.ignored.WithLabelValues("after_end").Inc()
		return
	case st == event.DispatchDeclined && d.phase != event.DispatchAssigned:
		e.metrics.ignored.WithLabelValues("out_of_order").Inc()
		return
	case st == d.phase:
		e.metrics.ignored.WithLabelValues("duplicate").Inc()
		return
	case rank(st) < rank(d.phase):
		e.metrics.ignored.WithLabelValues("out_of_order").Inc()
		return
	}
	e.advancePhase(d, st, ev.Time)
	e.emit(out, d, st, ev.Time)
	if st == event.DispatchDeclined {
		e.fill(now, d.alert, out)
	}
}

// advancePhase moves d to st (reached at t) with its effects on the unit
// and the alert; it is shared by live answers and the restart's read-back.
func (e *Engine) advancePhase(d *dispatchState, st event.DispatchStatus, t time.Time) {
	as := d.alert
	d.phase = st
	u := e.reg.Ensure(d.unit)
	if active(st) {
		u.Dispatch = d.id
	} else if u.Dispatch == d.id {
		u.Dispatch = ""
	}
	switch st {
	case event.DispatchAccepted, event.DispatchEnRoute, event.DispatchOnScene:
		if !as.accepted && as.known {
			e.observe(e.metrics.acceptDelay, as, t)
		}
		as.accepted = true
	}
	if st == event.DispatchOnScene {
		if !as.onScene && as.known {
			e.observe(e.metrics.onSceneDelay, as, t)
		}
		as.onScene = true
	}
}

// Advance runs the timers at now: acceptance timeouts (the unit's
// dispatch is reassigned and the next unit sent), units still lacking
// (sent as soon as one is free), SLA deadlines (dispatch.sla_breach and a
// breached dispatch message), the coverage of every circle and the
// coverage-gap alerts; it forgets alerts whose work is done.
func (e *Engine) Advance(now time.Time, out *Out) {
	keep := e.open[:0]
	for _, as := range e.open {
		for _, d := range as.ds {
			if d.phase == event.DispatchAssigned {
				if due := d.assignedAt.Add(e.cfg.AcceptTimeout); !now.Before(due) {
					e.advancePhase(d, event.DispatchReassigned, due)
					e.emit(out, d, event.DispatchReassigned, due)
				}
			}
		}
		e.fill(now, as, out)
		act := as.activeCount()
		if as.known && !as.breached && !as.onScene && !now.Before(as.deadline) && (act > 0 || !as.resolved) {
			e.breach(now, as, out)
		}
		if act == 0 && (as.onScene || as.resolved || !as.known) || now.Sub(as.eventTime) > e.cfg.Lookback {
			as.closed = true
			for _, d := range as.ds {
				if u := e.reg.Unit(d.unit); u != nil && u.Dispatch == d.id {
					u.Dispatch = "" // a dispatch older than the lookback: its unit is free again
				}
			}
			e.closed = append(e.closed, as)
			continue
		}
		keep = append(keep, as)
	}
	clear(e.open[len(keep):])
	e.open = keep
	// Closed alerts are remembered for the lookback, so that a replayed
	// alert message or a late answer is recognised.
	n := 0
	for n < len(e.closed) && now.Sub(e.closed[n].eventTime) > e.cfg.Lookback {
		as := e.closed[n]
		for _, d := range as.ds {
			delete(e.dispatches, d.id)
		}
		delete(e.alerts, as.id)
		n++
	}
	if n > 0 {
		e.closed = slices.Delete(e.closed, 0, n)
	}
	e.metrics.openAlerts.Set(float64(len(e.open)))
	e.coverage(now, out)
	e.countUnits(now)
}

// breach raises dispatch.sla_breach for as and marks its first active
// dispatch (or its last one) breached; an alert that no unit could be sent
// to (escalated with none in reach) gets the alert alone.
func (e *Engine) breach(now time.Time, as *alertState, out *Out) {
	as.breached = true
	e.metrics.breaches.WithLabelValues(strconv.Itoa(as.tier)).Inc()
	var d *dispatchState
	for _, x := range as.ds {
		if active(x.phase) {
			d = x
			break
		}
	}
	if d == nil && len(as.ds) > 0 {
		d = as.ds[len(as.ds)-1]
	}
	if d != nil {
		e.emit(out, d, event.DispatchBreached, as.deadline)
	}
	subj := event.Subject{Kind: event.SubjectAlert, ID: as.id}
	out.Alerts = append(out.Alerts, event.Alert{
		ID: event.AlertID(RuleSLABreach, subj, as.eventTime), Rule: RuleSLABreach, Severity: as.severity,
		Status: event.AlertFiring, Subject: subj, EventTime: as.deadline, RaisedAt: now,
		Lat: as.lat, Lon: as.lon, District: as.district, CircleID: as.circleID, TierMinutes: as.tier,
		Evidence: []string{}, Summary: fmt.Sprintf("%d分钟内无警力到场", as.tier),
		Details: []event.Detail{
			{Name: "alert_rule", Value: as.alert.Rule},
			{Name: "tier_minutes", Value: as.tier},
			{Name: "units_sent", Value: len(as.ds)},
			{Name: "escalated", Value: as.escalated},
		},
	})
}

// coverage measures every circle at now and runs the coverage-gap timers.
func (e *Engine) coverage(now time.Time, out *Out) {
	e.cover = e.reg.Coverage(e.cover, e.circles, now)
	var uncovered [6]int
	for i := range e.cover {
		c := &e.cover[i]
		if !c.Covered {
			uncovered[c.Circle.TierMinutes]++
		}
		if !e.gapTiers[c.Circle.TierMinutes] || e.districts != nil && !e.districts[c.Circle.District] {
			continue
		}
		g := &e.gaps[i]
		subj := event.Subject{Kind: event.SubjectCircle, ID: c.Circle.ID}
		if c.Covered {
			g.since = time.Time{}
			if g.open {
				g.open = false
				out.Alerts = append(out.Alerts, e.gapAlert(c.Circle, g.alertID, event.AlertResolved, now, now))
			}
			continue
		}
		if g.since.IsZero() {
			g.since = now
		}
		if !g.open && now.Sub(g.since) >= e.cfg.CoverageGapAfter {
			g.open = true
			g.alertID = event.AlertID(RuleCoverageGap, subj, g.since)
			out.Alerts = append(out.Alerts, e.gapAlert(c.Circle, g.alertID, event.AlertFiring, g.since.Add(e.cfg.CoverageGapAfter), now))
		}
	}
	for _, t := range []int{1, 3, 5} {
		e.metrics.uncovered.WithLabelValues(strconv.Itoa(t)).Set(float64(uncovered[t]))
	}
}

func (e *Engine) gapAlert(c *Circle, id string, status event.AlertStatus, at, now time.Time) event.Alert {
	return event.Alert{
		ID: id, Rule: RuleCoverageGap, Severity: event.SeverityHigh, Status: status,
		Subject:   event.Subject{Kind: event.SubjectCircle, ID: c.ID},
		EventTime: at, RaisedAt: now, Lat: c.Lat, Lon: c.Lon, District: c.District,
		CircleID: c.ID, TierMinutes: c.TierMinutes, Evidence: []string{},
		Summary: fmt.Sprintf("%s：无可用警力可在%d分钟内到达", c.Name, c.TierMinutes),
		Details: []event.Detail{{Name: "gap_after_s", Value: int(e.cfg.CoverageGapAfter / time.Second)}},
	}
}

func (e *Engine) countUnits(now time.Time) {
	var avail, dispatched, busy, off, stale int
	for _, u := range e.reg.units {
		switch {
		case !u.HasPos || now.Sub(u.PosTime) > e.cfg.StaleAfter:
			stale++
		case u.Dispatch != "":
			dispatched++
		case u.Status == "available":
			avail++
		case u.Status == "off_duty":
			off++
		default:
			busy++
		}
	}
	e.metrics.units.WithLabelValues("available").Set(float64(avail))
	e.metrics.units.WithLabelValues("dispatched").Set(float64(dispatched))
	e.metrics.units.WithLabelValues("busy").Set(float64(busy))
	e.metrics.units.WithLabelValues("off_duty").Set(float64(off))
	e.metrics.units.WithLabelValues("stale").Set(float64(stale))
}
