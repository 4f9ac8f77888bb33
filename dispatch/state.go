package dispatch

import (
	"slices"
	"strings"
	"time"

	"citywatch/event"
)

// Recorded applies a message read back from citywatch.dispatches (on a
// start, see the package doc): the dispatch, its alert (by id, until
// RecordedAlert supplies the rest) and its unit's assignment are rebuilt
// as they were, so that acceptance timers and SLA deadlines run on, a unit
// is not sent twice and an escalation or breach is not raised again.
// Messages of one dispatch must come in the order they were written (one
// partition: they share the unit key). It emits nothing.
func (e *Engine) Recorded(d *event.Dispatch) {
	ds := e.dispatches[d.ID]
	if ds == nil {
		as := e.alerts[d.AlertID]
		if as == nil {
			as = &alertState{id: strings.Clone(d.AlertID), circleID: d.CircleID, tier: d.TierMinutes, eventTime: d.Time}
			e.alerts[as.id] = as
			e.open = append(e.open, as)
		}
		ds = &dispatchState{id: strings.Clone(d.ID), alert: as, unit: strings.Clone(d.UnitID), assignedAt: d.Time,
			eta: d.ETASeconds, dist: d.DistanceM}
		e.dispatches[ds.id] = ds
		as.ds = append(as.ds, ds)
		if as.closed {
			// An answer for an alert already done: keep the record only.
			return
		}
	}
	as := ds.alert
	switch d.Status {
	case event.DispatchEscalated:
		as.escalated = true
		if ds.unit == "" && ds.phase == "" {
			ds.phase = event.DispatchEscalated
		}
	case event.DispatchBreached:
		as.breached = true
	case event.DispatchAssigned:
		if ds.phase == "" {
			ds.assignedAt, ds.eta, ds.dist = d.Time, d.ETASeconds, d.DistanceM
			as.assigned = true
			e.advancePhase(ds, event.DispatchAssigned, d.Time)
		}
	default:
		if ds.unit != "" && rank(d.Status) > rank(ds.phase) {
			e.advancePhase(ds, d.Status, d.Time)
		}
	}
}

// Observed applies a message of citywatch.dispatches that this engine
// did not write (another dispatcher's, in a split city) or wrote itself
// (read back by the tail, a no-op): a unit another dispatcher assigned is
// not available here until its dispatch ends.
func (e *Engine) Observed(d *event.Dispatch) {
	if e.dispatches[d.ID] != nil || d.UnitID == "" {
		return
	}
	u := e.reg.Ensure(strings.Clone(d.UnitID))
	switch {
	case active(d.Status):
		if u.Dispatch == "" || e.dispatches[u.Dispatch] == nil {
			u.Dispatch = strings.Clone(d.ID)
		}
	case rank(d.Status) == 5:
		if u.Dispatch == d.ID {
			u.Dispatch = ""
		}
	}
}

// owns reports whether alert a is this engine's to dispatch (its district
// is among Config.Districts, or every district is).
func (e *Engine) owns(a *event.Alert) bool {
	if e.districts == nil {
		return true
	}
	d := a.District
	if d == "" {
		d = e.circles.DistrictName(a.Lat, a.Lon)
	}
	return e.districts[d]
}

// RecordedAlert applies a message read back from citywatch.alerts on a
// start, after the dispatches: an alert with recorded dispatches gets its
// place and deadline back (and its resolution), a dispatch.sla_breach
// marks its alert breached, and an open dispatch.coverage_gap is adopted,
// so that it is resolved, not raised again.
func (e *Engine) RecordedAlert(a *event.Alert) {
	switch a.Rule {
	case RuleSLABreach:
		if as := e.alerts[a.Subject.ID]; as != nil {
			as.breached = true
		}
		return
	case RuleCoverageGap:
		for i := range e.circles.list {
			if e.circles.list[i].ID == a.Subject.ID {
				g := &e.gaps[i]
				if a.Status == event.AlertResolved {
					if g.alertID == a.ID {
						*g = gapState{}
					}
				} else {
					g.open, g.alertID = true, strings.Clone(a.ID)
					g.since = a.EventTime.Add(-e.cfg.CoverageGapAfter)
				}
			}
		}
		return
	}
	as := e.alerts[a.ID]
	if as == nil {
		return
	}
	switch a.Status {
	case event.AlertFiring:
		if !as.known {
			e.attach(as, a)
		}
	case event.AlertResolved:
		as.resolved = true
	}
}

// UnitView is a unit as the web UI shows it.
type UnitView struct {
	ID         string    `json:"id"`
	Lat        float64   `json:"lat"`
	Lon        float64   `json:"lon"`
	PosTime    time.Time `json:"pos_time"`
	SpeedKmh   float64   `json:"speed_kmh"`
	HeadingDeg float64   `json:"heading_deg"`
	Status     string    `json:"status"`
	Dispatch   string    `json:"dispatch_id,omitempty"`
	Fresh      bool      `json:"fresh"`
	Available  bool      `json:"available"`
	Area       string    `json:"area"`
	Flagged    int       `json:"flagged"`
}

// CoverageView is a circle's coverage as the web UI shows it.
type CoverageView struct {
	CircleID    string  `json:"circle_id"`
	Name        string  `json:"name"`
	TierMinutes int     `json:"tier_minutes"`
	District    string  `json:"district"`
	Covered     bool    `json:"covered"`
	BestUnit    string  `json:"best_unit,omitempty"`
	ETASeconds  float64 `json:"eta_s"`
	// Units is how many available units can make the tier (counted up to
	// CoverageCountMax).
	Units int `json:"units"`
	// UncoveredSince is when the circle lost coverage (tiers with a
	// coverage-gap timer only); zero when covered.
	UncoveredSince time.Time `json:"uncovered_since,omitzero"`
}

// DispatchView is an open dispatch as the web UI shows it.
type DispatchView struct {
	ID          string               `json:"id"`
	AlertID     string               `json:"alert_id"`
	UnitID      string               `json:"unit_id"`
	Status      event.DispatchStatus `json:"status"`
	AssignedAt  time.Time            `json:"assigned_at"`
	ETASeconds  float64              `json:"eta_s"`
	DistanceM   float64              `json:"distance_m"`
	CircleID    string               `json:"circle_id"`
	TierMinutes int                  `json:"tier_minutes"`
	Deadline    time.Time            `json:"deadline"`
	Escalated   bool                 `json:"escalated"`
	Breached    bool                 `json:"breached"`
}

// Snapshot is a copy of the dispatcher's state at one moment, for the web
// UI in the same process.
type Snapshot struct {
	At       time.Time      `json:"at"`
	Units    []UnitView     `json:"units"`
	Coverage []CoverageView `json:"coverage"`
	Open     []DispatchView `json:"open"`
}

// Snapshot copies the state at now: every unit, the coverage of every
// circle as of the last Advance, and the dispatches still holding a unit
// or waiting for one.
func (e *Engine) Snapshot(now time.Time) Snapshot {
	s := Snapshot{At: now, Units: make([]UnitView, 0, e.reg.Len()), Coverage: make([]CoverageView, 0, len(e.cover))}
	for _, u := range e.reg.units {
		fresh := u.HasPos && now.Sub(u.PosTime) <= e.cfg.StaleAfter
		s.Units = append(s.Units, UnitView{ID: u.ID, Lat: u.Lat, Lon: u.Lon, PosTime: u.PosTime, SpeedKmh: u.SpeedKmh,
			HeadingDeg: u.HeadingDeg, Status: u.Status, Dispatch: u.Dispatch, Fresh: fresh,
			Available: u.Available(now, e.cfg.StaleAfter), Area: u.Area.String(), Flagged: u.Flagged})
	}
	for i, c := range e.cover {
		s.Coverage = append(s.Coverage, CoverageView{CircleID: c.Circle.ID, Name: c.Circle.Name, TierMinutes: c.Circle.TierMinutes,
			District: c.Circle.District, Covered: c.Covered, BestUnit: c.Best, ETASeconds: c.ETA, Units: c.Units, UncoveredSince: e.gaps[i].since})
	}
	for _, as := range e.open {
		for _, d := range as.ds {
			if !active(d.phase) && d.phase != event.DispatchEscalated {
				continue
			}
			s.Open = append(s.Open, DispatchView{ID: d.id, AlertID: as.id, UnitID: d.unit, Status: d.phase, AssignedAt: d.assignedAt,
				ETASeconds: d.eta, DistanceM: d.dist, CircleID: as.circleID, TierMinutes: as.tier, Deadline: as.deadline,
				Escalated: as.escalated, Breached: as.breached})
		}
	}
	slices.SortFunc(s.Open, func(a, b DispatchView) int { return a.AssignedAt.Compare(b.AssignedAt) })
	return s
}
