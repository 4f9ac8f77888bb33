package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"citywatch/event"
	"citywatch/store"
)

func TestDispatchesStoredAndReported(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	sensed := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	alert := func(id, district string, tier int) []byte {
		a := event.Alert{ID: id, Rule: "camera.violence", Severity: event.SeverityHigh, Status: event.AlertFiring,
			Subject: event.Subject{Kind: "device", ID: "cam"}, EventTime: sensed, RaisedAt: sensed.Add(time.Second),
			Lat: 32, Lon: 112, District: district, CircleID: "c-" + id, TierMinutes: tier}
		return a.AppendJSON(nil)
	}
	var arows store.AlertRows
	for _, a := range [][]byte{alert("a1", "樊城区", 3), alert("a2", "樊城区", 3), alert("a3", "襄城区", 1)} {
		if err := arows.AddAlert(a, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.InsertAlerts(ctx, &arows); err != nil {
		t.Fatal(err)
	}
	msg := func(alertID, unit string, st event.DispatchStatus, after time.Duration, tier int) []byte {
		d := event.Dispatch{ID: alertID + unit, AlertID: alertID, UnitID: unit, Status: st, Time: sensed.Add(after),
			ETASeconds: 90, DistanceM: 700, CircleID: "c-" + alertID, TierMinutes: tier}
		return d.AppendJSON(nil)
	}
	msgs := [][]byte{
		// a1: on scene after 2 min, within its 3.
		msg("a1", "u1", event.DispatchAssigned, 2*time.Second, 3),
		msg("a1", "u1", event.DispatchAccepted, 10*time.Second, 3),
		msg("a1", "u1", event.DispatchOnScene, 2*time.Minute, 3),
		// a2: on scene after 4 min, late.
		msg("a2", "u2", event.DispatchAssigned, 4*time.Second, 3),
		msg("a2", "u2", event.DispatchAccepted, 20*time.Second, 3),
		msg("a2", "u2", event.DispatchBreached, 3*time.Minute, 3),
		msg("a2", "u2", event.DispatchOnScene, 4*time.Minute, 3),
		// a3: no unit, escalated.
		msg("a3", "", event.DispatchEscalated, time.Second, 1),
	}
	var rows store.DispatchRows
	for _, m := range append(msgs, msgs[0]) { // a replayed copy
		if err := rows.AddDispatch(m, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.AddDispatch([]byte(`{"id":"x"}`), time.Now()); err == nil {
		t.Error("AddDispatch of a message without alert_id = nil, want an error")
	}
	for range 2 { // a retried insert
		if err := db.InsertDispatches(ctx, &rows); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.CountDispatchMessages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]uint64{"assigned": 2, "accepted": 2, "on_scene": 2, "breached": 1, "escalated": 1}, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	from, to := sensed.Add(-time.Hour), sensed.Add(time.Hour)
	byTier, err := db.ResponseStats(ctx, store.ByTier, from, to)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.ResponseStat{
		{Key: "1", Alerts: 1, Escalated: 1},
		{Key: "3", Alerts: 2, Reached: 2, WithinTier: 1, Breached: 1, Within3Min: 1, Within5Min: 2,
			AssignP50: 3, AssignP90: 3.8, AcceptP50: 15, AcceptP90: 19, OnSceneP50: 180, OnSceneP90: 228},
	}
	// quantile() interpolates linearly between the two values.
	approx := cmpopts.EquateApprox(0, 0.01)
	if diff := cmp.Diff(want, byTier, approx); diff != "" {
		t.Errorf("by tier (-want +got):\n%s", diff)
	}
	if share := byTier[1].WithinTierShare(); share != 0.5 {
		t.Errorf("within-tier share = %v, want 0.5", share)
	}
	byDistrict, err := db.ResponseStats(ctx, store.ByDistrict, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if len(byDistrict) != 2 || byDistrict[0].Key != "樊城区" && byDistrict[1].Key != "樊城区" {
		t.Errorf("by district = %+v", byDistrict)
	}
	byCircle, err := db.ResponseStats(ctx, store.ByCircle, from, to)
	if err != nil || len(byCircle) != 3 {
		t.Errorf("by circle = %+v, %v", byCircle, err)
	}
	none, err := db.ResponseStats(ctx, store.ByTier, to, to.Add(time.Hour))
	if err != nil || len(none) != 0 {
		t.Errorf("outside the window = %+v, %v", none, err)
	}
}
