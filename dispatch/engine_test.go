package dispatch

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"citywatch/event"
	"citywatch/internal/city"
)

var (
	cityOnce sync.Once
	cityVal  *city.City
	cityErr  error
)

func testCity(t testing.TB) *city.City {
	t.Helper()
	cityOnce.Do(func() { cityVal, cityErr = city.Default() })
	if cityErr != nil {
		t.Fatal(cityErr)
	}
	return cityVal
}

var t0 = time.Date(2026, 11, 26, 8, 0, 0, 0, city.Location)

func newTestEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := NewEngine(cfg, testCity(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// at returns the point dx metres east and dy metres north of a circle's
// centre.
func at(t testing.TB, circleID string, dx, dy float64) (float64, float64) {
	c := testCity(t).Circle(circleID)
	if c == nil {
		t.Fatalf("no circle %s", circleID)
	}
	return city.Offset(c.Lat, c.Lon, dx, dy)
}

func pos(e *Engine, now time.Time, unit string, lat, lon float64, status string, tm time.Time) {
	ev := event.Event{Type: event.TypePatrolPosition, DeviceID: unit, Time: tm, Lat: lat, Lon: lon, Status: status}
	e.Position(now, &ev)
}

func answer(e *Engine, now time.Time, unit, dispatchID, status string, out *Out) {
	ev := event.Event{Type: event.TypePatrolStatus, DeviceID: unit, Time: now, DispatchID: dispatchID, Status: status}
	e.Status(now, &ev, out)
}

func alertAt(id string, sev event.Severity, lat, lon float64, t time.Time) *event.Alert {
	return &event.Alert{ID: id, Rule: "camera.violence", Severity: sev, Status: event.AlertFiring,
		Subject: event.Subject{Kind: "device", ID: "cam-1"}, EventTime: t, RaisedAt: t, Lat: lat, Lon: lon}
}

// brief is the part of a dispatch message the tests compare.
type brief struct {
	Unit   string
	Status event.DispatchStatus
	Time   time.Time
}

func briefs(ds []event.Dispatch) []brief {
	out := []brief{}
	for _, d := range ds {
		out = append(out, brief{d.UnitID, d.Status, d.Time})
	}
	return out
}

func TestRankPicksNearestAvailableFreshUnit(t *testing.T) {
	e := newTestEngine(t, Config{})
	alat, alon := at(t, "circle-15", 0, 0)
	place := func(unit string, dx float64, status string, tm time.Time) {
		lat, lon := city.Offset(alat, alon, dx, 0)
		pos(e, t0, unit, lat, lon, status, tm)
	}
	place("stale", 50, "available", t0.Add(-3*time.Minute))
	place("busy", 80, "busy", t0)
	place("offduty", 90, "off_duty", t0)
	place("dispatched", 100, "available", t0)
	e.reg.Unit("dispatched").Dispatch = "d-other"
	place("near", 250, "available", t0.Add(-90*time.Second))
	place("far", 900, "available", t0)

	var out Out
	e.Alert(t0, alertAt("a1", event.SeverityMedium, alat, alon, t0), &out)
	want := []brief{{"near", event.DispatchAssigned, t0}}
	if diff := cmp.Diff(want, briefs(out.Dispatches)); diff != "" {
		t.Errorf("dispatches (-want +got):\n%s", diff)
	}
	if len(out.Alerts) != 0 {
		t.Errorf("alerts = %+v, want none (near can make the minute)", out.Alerts)
	}
	if d := out.Dispatches[0]; d.ID != DispatchID("a1", "near") || d.TierMinutes != 1 || d.CircleID == "" {
		t.Errorf("dispatch = %+v", d)
	}
}

func TestRankByTravelTimeNotStraightLine(t *testing.T) {
	// Slow town streets, fast country roads: a unit just outside the
	// town beats a nearer one inside it.
	cfg := Config{Model: Model{Town: Road{RoadFactor: 1.4, SpeedKmh: 20}, Rural: Road{RoadFactor: 1.0, SpeedKmh: 120}}}
	e := newTestEngine(t, cfg)
	alat, alon := at(t, "circle-32", 5000, 0)
	xlat, xlon := at(t, "circle-32", 4000, 0) // in town, 1.0 km
	ylat, ylon := at(t, "circle-32", 6300, 0) // outside, 1.3 km
	if _, _, a := e.circles.Place(ylat, ylon); a != AreaRural {
		t.Fatalf("test point is %v, want rural", a)
	}
	if _, _, a := e.circles.Place(alat, alon); a != AreaTown {
		t.Fatalf("alert point is %v, want town", a)
	}
	pos(e, t0, "town", xlat, xlon, "available", t0)
	pos(e, t0, "rural", ylat, ylon, "available", t0)
	got := e.reg.Rank(nil, alat, alon, AreaTown, t0, 2, 0, nil)
	if len(got) != 2 || got[0].Unit.ID != "rural" || got[0].DistM < got[1].DistM {
		t.Fatalf("ranking = %+v, want rural (farther, faster) first", got)
	}
}

func TestReassignAfterTimeoutAndDecline(t *testing.T) {
	e := newTestEngine(t, Config{})
	alat, alon := at(t, "circle-32", 0, 0) // a town: 5 minutes
	for i, u := range []string{"u1", "u2", "u3"} {
		lat, lon := city.Offset(alat, alon, float64(200*(i+1)), 0)
		pos(e, t0, u, lat, lon, "available", t0)
	}
	var out Out
	e.Alert(t0, alertAt("a1", event.SeverityLow, alat, alon, t0), &out)
	e.Advance(t0.Add(29*time.Second), &out)
	e.Advance(t0.Add(31*time.Second), &out)
	answer(e, t0.Add(40*time.Second), "u2", DispatchID("a1", "u2"), "declined", &out)
	d3 := DispatchID("a1", "u3")
	answer(e, t0.Add(45*time.Second), "u3", d3, "accepted", &out)
	answer(e, t0.Add(46*time.Second), "u3", d3, "accepted", &out) // resent
	answer(e, t0.Add(50*time.Second), "u3", d3, "en_route", &out)
	answer(e, t0.Add(55*time.Second), "u1", DispatchID("a1", "u1"), "accepted", &out) // too late
	answer(e, t0.Add(70*time.Second), "u3", d3, "on_scene", &out)
	answer(e, t0.Add(71*time.Second), "u3", d3, "en_route", &out) // out of order
	answer(e, t0.Add(80*time.Second), "u3", "no-such-dispatch", "on_scene", &out)
	answer(e, t0.Add(9*time.Minute), "u3", d3, "cleared", &out)
	want := []brief{
		{"u1", event.DispatchAssigned, t0},
		{"u1", event.DispatchReassigned, t0.Add(30 * time.Second)},
		{"u2", event.DispatchAssigned, t0.Add(31 * time.Second)},
		{"u2", event.DispatchDeclined, t0.Add(40 * time.Second)},
		{"u3", event.DispatchAssigned, t0.Add(40 * time.Second)},
		{"u3", event.DispatchAccepted, t0.Add(45 * time.Second)},
		{"u3", event.DispatchEnRoute, t0.Add(50 * time.Second)},
		{"u3", event.DispatchOnScene, t0.Add(70 * time.Second)},
		{"u3", event.DispatchCleared, t0.Add(9 * time.Minute)},
	}
	if diff := cmp.Diff(want, briefs(out.Dispatches)); diff != "" {
		t.Errorf("dispatches (-want +got):\n%s", diff)
	}
	if n := value(e.metrics.unknown); n != 1 {
		t.Errorf("unknown answers = %v, want 1", n)
	}
	if len(out.Alerts) != 0 {
		t.Errorf("alerts = %+v, want none", out.Alerts)
	}
	e.Advance(t0.Add(10*time.Minute), &out)
	if len(e.open) != 0 || e.reg.Unit("u3").Dispatch != "" {
		t.Errorf("after clearing: %d open alerts, u3 on %q", len(e.open), e.reg.Unit("u3").Dispatch)
	}
}

func TestCriticalAlertGetsSeveralUnits(t *testing.T) {
	e := newTestEngine(t, Config{})
	alat, alon := at(t, "circle-16", 0, 0)
	for i, u := range []string{"u1", "u2", "u3", "u4"} {
		lat, lon := city.Offset(alat, alon, 0, float64(150*(4-i)))
		pos(e, t0, u, lat, lon, "available", t0)
	}
	var out Out
	e.Alert(t0, alertAt("a1", event.SeverityCritical, alat, alon, t0), &out)
	e.Alert(t0, alertAt("a1", event.SeverityCritical, alat, alon, t0), &out) // replayed
	want := []brief{{"u4", event.DispatchAssigned, t0}, {"u3", event.DispatchAssigned, t0}, {"u2", event.DispatchAssigned, t0}}
	if diff := cmp.Diff(want, briefs(out.Dispatches)); diff != "" {
		t.Errorf("dispatches (-want +got):\n%s", diff)
	}
}

func TestEscalationWhenNoUnitCanMakeTheTier(t *testing.T) {
	e := newTestEngine(t, Config{})
	alat, alon := at(t, "circle-15", 0, 0)
	var out Out
	// No unit at all: escalated without a unit.
	e.Alert(t0, alertAt("a0", event.SeverityHigh, alat, alon, t0), &out)
	if diff := cmp.Diff([]brief{{"", event.DispatchEscalated, t0}}, briefs(out.Dispatches)); diff != "" {
		t.Errorf("no unit: dispatches (-want +got):\n%s", diff)
	}
	out.Reset()
	// One unit 5 km away: sent anyway, and escalated.
	lat, lon := city.Offset(alat, alon, 5000, 0)
	pos(e, t0, "far", lat, lon, "available", t0)
	e.Alert(t0, alertAt("a1", event.SeverityMedium, alat, alon, t0), &out)
	want := []brief{{"far", event.DispatchAssigned, t0}, {"far", event.DispatchEscalated, t0}}
	if diff := cmp.Diff(want, briefs(out.Dispatches)); diff != "" {
		t.Errorf("dispatches (-want +got):\n%s", diff)
	}
	if len(out.Alerts) != 1 {
		t.Fatalf("alerts = %+v, want one update", out.Alerts)
	}
	u := out.Alerts[0]
	if u.ID != "a1" || u.Status != event.AlertUpdated || u.Detail(DetailEscalated) != true || u.Detail(DetailBestETA).(float64) <= 60 {
		t.Errorf("update = %+v", u)
	}
	// The unit-less alert gets the next free unit, still escalated once.
	out.Reset()
	pos(e, t0.Add(time.Second), "late", alat, alon, "available", t0.Add(time.Second))
	e.Advance(t0.Add(time.Second), &out)
	if diff := cmp.Diff([]brief{{"late", event.DispatchAssigned, t0.Add(time.Second)}}, briefs(out.Dispatches)); diff != "" {
		t.Errorf("later: dispatches (-want +got):\n%s", diff)
	}
}

func TestSLABreach(t *testing.T) {
	e := newTestEngine(t, Config{})
	alat, alon := at(t, "circle-29", 0, 0) // urban core: 3 minutes
	lat, lon := city.Offset(alat, alon, 500, 0)
	pos(e, t0, "u1", lat, lon, "available", t0)
	sensed := t0.Add(-10 * time.Second) // the camera saw it 10 s before the alert reached us
	var out Out
	e.Alert(t0, alertAt("a1", event.SeverityHigh, alat, alon, sensed), &out)
	d := DispatchID("a1", "u1")
	answer(e, t0.Add(5*time.Second), "u1", d, "accepted", &out)
	e.Advance(t0.Add(2*time.Minute+49*time.Second), &out)
	if len(out.Alerts) != 0 {
		t.Fatalf("breach before the deadline: %+v", out.Alerts)
	}
	e.Advance(t0.Add(2*time.Minute+50*time.Second), &out)
	e.Advance(t0.Add(2*time.Minute+51*time.Second), &out)
	deadline := sensed.Add(3 * time.Minute)
	want := []brief{{"u1", event.DispatchAssigned, t0}, {"u1", event.DispatchAccepted, t0.Add(5 * time.Second)}, {"u1", event.DispatchBreached, deadline}}
	if diff := cmp.Diff(want, briefs(out.Dispatches)); diff != "" {
		t.Errorf("dispatches (-want +got):\n%s", diff)
	}
	if len(out.Alerts) != 1 {
		t.Fatalf("alerts = %+v, want one sla_breach", out.Alerts)
	}
	subj := event.Subject{Kind: event.SubjectAlert, ID: "a1"}
	a := out.Alerts[0]
	if a.Rule != RuleSLABreach || a.Status != event.AlertFiring || a.Subject != subj ||
		a.ID != event.AlertID(RuleSLABreach, subj, sensed) || !a.EventTime.Equal(deadline) || a.TierMinutes != 3 {
		t.Errorf("breach alert = %+v", a)
	}
}

func TestCoverageGap(t *testing.T) {
	e := newTestEngine(t, Config{})
	const circle = "circle-15"
	lat, lon := at(t, circle, 100, 0)
	var out Out
	gaps := func() []event.Alert {
		var g []event.Alert
		for _, a := range out.Alerts {
			if a.Subject.ID == circle {
				g = append(g, a)
			}
		}
		out.Reset()
		return g
	}
	step := func(now time.Time, status string) {
		pos(e, now, "u1", lat, lon, status, now)
		e.Advance(now, &out)
	}
	step(t0, "available")
	if c := e.cover[14]; c.Circle.ID != circle || !c.Covered || c.Best != "u1" {
		t.Fatalf("coverage = %+v", c)
	}
	lost := t0.Add(10 * time.Second)
	for now := lost; now.Before(lost.Add(2 * time.Minute)); now = now.Add(5 * time.Second) {
		step(now, "busy")
	}
	if g := gaps(); len(g) != 0 {
		t.Fatalf("gap alert before 2 min: %+v", g)
	}
	if n := value(e.metrics.uncovered.WithLabelValues("1")); n != 15 {
		t.Errorf("uncovered tier-1 circles = %v, want 15", n)
	}
	step(lost.Add(2*time.Minute), "busy")
	g := gaps()
	subj := event.Subject{Kind: event.SubjectCircle, ID: circle}
	if len(g) != 1 || g[0].Status != event.AlertFiring || g[0].ID != event.AlertID(RuleCoverageGap, subj, lost) ||
		!g[0].EventTime.Equal(lost.Add(2*time.Minute)) {
		t.Fatalf("gap alerts = %+v", g)
	}
	step(lost.Add(3*time.Minute), "busy")
	back := lost.Add(3*time.Minute + 5*time.Second)
	step(back, "available")
	g = gaps()
	if len(g) != 1 || g[0].Status != event.AlertResolved || g[0].ID != event.AlertID(RuleCoverageGap, subj, lost) {
		t.Fatalf("after coverage returned: %+v", g)
	}
	// A stale position is no coverage either.
	e.Advance(back.Add(2*time.Minute+time.Second), &out)
	if e.cover[14].Covered {
		t.Error("covered by a stale position")
	}
}

func TestBadReportsFlagged(t *testing.T) {
	e := newTestEngine(t, Config{})
	lat, lon := at(t, "circle-16", 0, 0)
	pos(e, t0, "u1", lat, lon, "available", t0)
	far, flon := city.Offset(lat, lon, 3000, 0) // 3 km in 5 s: 2160 km/h
	pos(e, t0.Add(5*time.Second), "u1", far, flon, "available", t0.Add(5*time.Second))
	pos(e, t0.Add(5*time.Second), "u1", lat, lon, "available", t0.Add(5*time.Minute)) // from the future
	near, nlon := city.Offset(lat, lon, 40, 0)
	pos(e, t0.Add(10*time.Second), "u1", near, nlon, "available", t0.Add(10*time.Second))
	u := e.reg.Unit("u1")
	if u.Flagged != 2 || u.Lat != near || !u.PosTime.Equal(t0.Add(10*time.Second)) {
		t.Errorf("unit = %+v, want 2 flagged and the last sane position", u)
	}
	for _, r := range []string{"jump", "future"} {
		if n := value(e.metrics.flagged.WithLabelValues(r)); n != 1 {
			t.Errorf("flagged %s = %v, want 1", r, n)
		}
	}
}

func TestRestartKeepsTimersAndSendsNobodyTwice(t *testing.T) {
	alat, alon := at(t, "circle-32", 0, 0)
	units := func(e *Engine, now time.Time) {
		for i, u := range []string{"u1", "u2"} {
			lat, lon := city.Offset(alat, alon, float64(200*(i+1)), 0)
			pos(e, now, u, lat, lon, "available", now)
		}
	}
	a := alertAt("a1", event.SeverityLow, alat, alon, t0)
	e1 := newTestEngine(t, Config{})
	units(e1, t0)
	var out Out
	e1.Alert(t0, a, &out)

	// A new engine reads back what the first wrote, then the alert is
	// consumed again (its batch was not committed).
	e2 := newTestEngine(t, Config{})
	for i := range out.Dispatches {
		e2.Recorded(&out.Dispatches[i])
	}
	e2.RecordedAlert(a)
	restart := t0.Add(20 * time.Second)
	units(e2, restart)
	var out2 Out
	e2.Alert(restart, a, &out2)
	e2.Advance(restart, &out2)
	if out2.Len() != 0 {
		t.Fatalf("after restart: %+v, want nothing yet", out2)
	}
	e2.Advance(t0.Add(30*time.Second), &out2)
	want := []brief{{"u1", event.DispatchReassigned, t0.Add(30 * time.Second)}, {"u2", event.DispatchAssigned, t0.Add(30 * time.Second)}}
	if diff := cmp.Diff(want, briefs(out2.Dispatches)); diff != "" {
		t.Errorf("dispatches (-want +got):\n%s", diff)
	}
}

// value reads a counter or gauge (without go.mod's testutil dependencies).
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
