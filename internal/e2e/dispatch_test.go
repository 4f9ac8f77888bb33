package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/dispatch"
	"citywatch/event"
	"citywatch/internal/chtest"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/store"
)

func (p *pipeline) newDispatcher(cfg dispatch.Config) *dispatch.Role {
	p.t.Helper()
	c, err := city.Default()
	if err != nil {
		p.t.Fatal(err)
	}
	r, err := dispatch.NewRole(cfg, c, p.kc, nil, nil, p.km, p.log)
	if err != nil {
		p.t.Fatal(err)
	}
	return r
}

// unitSays writes a patrol unit's report, as ingest would have
// normalised it, to the internal events topic.
func (p *pipeline) unitSays(ctx context.Context, e event.Event) {
	p.t.Helper()
	e.ID = fmt.Sprintf("%s-%s-%d", e.DeviceID, e.Status, e.Time.UnixNano())
	msg := kafka.Message{Topic: p.kc.Topic(kafkaio.TopicEvents), Key: []byte(e.DeviceID), Value: event.AppendJSON(nil, &e)}
	if err := p.writer.WriteMessages(ctx, msg); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pipeline) position(ctx context.Context, unit string, lat, lon float64) {
	p.unitSays(ctx, event.Event{Type: event.TypePatrolPosition, DeviceID: unit, Time: time.Now(), Lat: lat, Lon: lon, Status: "available"})
}

func (p *pipeline) answer(ctx context.Context, unit, dispatchID, status string) {
	p.unitSays(ctx, event.Event{Type: event.TypePatrolStatus, DeviceID: unit, Time: time.Now(), Lat: 32, Lon: 112,
		DispatchID: dispatchID, Status: status})
}

func (p *pipeline) raiseAlert(ctx context.Context, a event.Alert) {
	p.t.Helper()
	msg := kafka.Message{Topic: p.kc.Topic(kafkaio.TopicAlerts), Key: []byte(a.ID), Value: a.AppendJSON(nil)}
	if err := p.writer.WriteMessages(ctx, msg); err != nil {
		p.t.Fatal(err)
	}
}

// once makes a stop func safe to call twice (deferred and at the end).
func once(stop func() error) func() error {
	var err error
	var done bool
	return func() error {
		if !done {
			done, err = true, stop()
		}
		return err
	}
}

// step is one dispatch message as the tests compare them.
type step struct{ Unit, Status string }

// waitDispatches polls citywatch.dispatches until the messages of alertID
// (in order, per unit) satisfy done, and returns them.
func (p *pipeline) waitDispatches(ctx context.Context, alertID string, done func([]event.Dispatch) bool) []event.Dispatch {
	p.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		var got []event.Dispatch
		for _, m := range readTopic(ctx, p.t, p.kc, p.kc.Topic(kafkaio.TopicDispatches)) {
			d, err := event.DecodeDispatch(m.Value)
			if err != nil {
				p.t.Fatalf("undecodable dispatch %s: %v", m.Value, err)
			}
			if d.AlertID == alertID {
				got = append(got, d)
			}
		}
		slices.SortStableFunc(got, func(a, b event.Dispatch) int { return a.Time.Compare(b.Time) })
		if done(got) {
			return got
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("dispatches of %s after 45 s: %+v\nlogs:\n%s", alertID, got, p.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func steps(ds []event.Dispatch) []step {
	out := []step{}
	for _, d := range ds {
		out = append(out, step{d.UnitID, string(d.Status)})
	}
	return out
}

func has(ds []event.Dispatch, unit string, st event.DispatchStatus) bool {
	return slices.ContainsFunc(ds, func(d event.Dispatch) bool { return d.UnitID == unit && d.Status == st })
}

// townAlert returns a medium alert at the centre of a county circle (5
// minutes) raised now, and points 200 m and 600 m from it.
func townAlert(id string) (event.Alert, [2][2]float64) {
	const lat, lon = 31.775, 111.839 // circle-32
	now := time.Now()
	a := event.Alert{ID: id, Rule: "camera.violence", Severity: event.SeverityMedium, Status: event.AlertFiring,
		Subject: event.Subject{Kind: "device", ID: "cam-" + id}, EventTime: now, RaisedAt: now, Lat: lat, Lon: lon,
		Evidence: []string{"e1"}, Summary: "打架斗殴"}
	var pts [2][2]float64
	pts[0][0], pts[0][1] = city.Offset(lat, lon, 200, 0)
	pts[1][0], pts[1][1] = city.Offset(lat, lon, 600, 0)
	return a, pts
}

// TestDispatchLifecycleStored sends an alert through the dispatcher: the
// nearest unit is assigned, answers through to cleared, and every state
// change lands in ClickHouse through the sink, once.
func TestDispatchLifecycleStored(t *testing.T) {
	ctx := t.Context()
	p := newPipeline(t, chtest.Config(t))
	db := p.openDB(ctx)
	stopSink := p.start(ctx, "sink", p.newSink(db, prometheus.NewRegistry()).Run)
	defer stopSink()

	a, pts := townAlert("e2e-life")
	p.position(ctx, "unit-near", pts[0][0], pts[0][1])
	p.position(ctx, "unit-far", pts[1][0], pts[1][1])
	stop := once(p.start(ctx, "dispatch", p.newDispatcher(dispatch.Config{CoverageTiers: []int{}}).Run))
	defer stop()
	p.raiseAlert(ctx, a)

	got := p.waitDispatches(ctx, a.ID, func(ds []event.Dispatch) bool { return has(ds, "unit-near", event.DispatchAssigned) })
	id := got[0].ID
	if id != dispatch.DispatchID(a.ID, "unit-near") || got[0].TierMinutes != 5 || got[0].CircleID != "circle-32" {
		t.Fatalf("assignment = %+v", got[0])
	}
	for _, st := range []string{"accepted", "en_route", "on_scene", "cleared"} {
		p.answer(ctx, "unit-near", id, st)
		p.waitDispatches(ctx, a.ID, func(ds []event.Dispatch) bool { return has(ds, "unit-near", event.DispatchStatus(st)) })
	}
	p.answer(ctx, "unit-near", id, "on_scene") // a late resend changes nothing
	got = p.waitDispatches(ctx, a.ID, func(ds []event.Dispatch) bool { return len(ds) >= 5 })
	want := []step{{"unit-near", "assigned"}, {"unit-near", "accepted"}, {"unit-near", "en_route"}, {"unit-near", "on_scene"}, {"unit-near", "cleared"}}
	if diff := cmp.Diff(want, steps(got)); diff != "" {
		t.Errorf("dispatches (-want +got):\n%s", diff)
	}

	wantRows := map[string]uint64{"assigned": 1, "accepted": 1, "en_route": 1, "on_scene": 1, "cleared": 1}
	deadline := time.Now().Add(45 * time.Second)
	for {
		rows, err := db.CountDispatchMessages(ctx)
		if err == nil && cmp.Equal(rows, wantRows) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dispatches table after 45 s (-want +got, last error %v):\n%s", err, cmp.Diff(wantRows, rows))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Error(err)
	}
}

// TestDispatchRestartMidDispatch stops the dispatcher after an assignment
// and before the unit accepts: the restarted dispatcher still times the
// assignment out, reassigns it to the next unit, and sends nobody twice.
func TestDispatchRestartMidDispatch(t *testing.T) {
	ctx := t.Context()
	p := newPipeline(t, store.Config{}) // no ClickHouse needed
	a, pts := townAlert("e2e-restart")
	p.position(ctx, "unit-near", pts[0][0], pts[0][1])
	p.position(ctx, "unit-far", pts[1][0], pts[1][1])
	cfg := dispatch.Config{AcceptTimeout: 6 * time.Second, CoverageTiers: []int{}}

	stop := p.start(ctx, "dispatch", p.newDispatcher(cfg).Run)
	p.raiseAlert(ctx, a)
	p.waitDispatches(ctx, a.ID, func(ds []event.Dispatch) bool { return has(ds, "unit-near", event.DispatchAssigned) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	stop = once(p.start(ctx, "dispatch", p.newDispatcher(cfg).Run))
	defer stop()
	p.waitDispatches(ctx, a.ID, func(ds []event.Dispatch) bool { return has(ds, "unit-far", event.DispatchAssigned) })
	// Give a second assignment of unit-near, if any, time to show.
	p.position(ctx, "unit-near", pts[0][0], pts[0][1])
	time.Sleep(2 * time.Second)
	got := p.waitDispatches(ctx, a.ID, func(ds []event.Dispatch) bool { return true })
	want := []step{{"unit-near", "assigned"}, {"unit-near", "reassigned"}, {"unit-far", "assigned"}}
	if diff := cmp.Diff(want, steps(got)); diff != "" {
		t.Errorf("dispatches (-want +got):\n%s", diff)
	}
	if len(got) == 3 && !got[1].Time.Equal(got[0].Time.Add(6*time.Second)) {
		t.Errorf("reassigned at %s, want the assignment's time + 6 s (%s)", got[1].Time, got[0].Time.Add(6*time.Second))
	}
	if err := stop(); err != nil {
		t.Error(err)
	}
}
