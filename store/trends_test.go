package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"citywatch/event"
	"citywatch/store"
)

// insertAlert stores one alert message.
func insertAlert(t *testing.T, db *store.DB, a event.Alert) {
	t.Helper()
	var rows store.AlertRows
	if err := rows.AddAlert(a.AppendJSON(nil), a.RaisedAt); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertAlerts(t.Context(), &rows); err != nil {
		t.Fatal(err)
	}
}

// insertDispatch stores one dispatch state change directly: the sink's
// writer of this table belongs to the dispatch work.
func insertDispatch(t *testing.T, db *store.DB, d event.Dispatch) {
	t.Helper()
	b, err := db.Conn().PrepareBatch(t.Context(), "INSERT INTO `"+db.Database()+"`.dispatches (id, alert_id, unit_id, status, time, time_ms, eta_s, distance_m, circle_id, tier_minutes, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	sec := d.Time.UTC().Truncate(time.Second)
	if err := b.Append(d.ID, d.AlertID, d.UnitID, string(d.Status), sec, uint16(d.Time.Nanosecond()/1e6), d.ETASeconds, d.DistanceM, d.CircleID, uint8(d.TierMinutes), sec); err != nil {
		t.Fatal(err)
	}
	err = b.Send()
	if err != nil {
		t.Fatal(err)
	}
}

func TestTrends(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	// 2026-11-26 00:00 UTC is 08:00 in Shanghai.
	mk := func(id, rule, district, circle string, tier int, at time.Time, status event.AlertStatus) event.Alert {
		return event.Alert{ID: id, Rule: rule, Severity: event.SeverityHigh, Status: status, Subject: event.Subject{Kind: "device", ID: "cam-1"},
			EventTime: at.Add(-2 * time.Second), RaisedAt: at, Lat: 32, Lon: 112, District: district, CircleID: circle, TierMinutes: tier,
			Evidence: []string{"e1"}, Summary: "测试", Details: []event.Detail{{Name: "count", Value: 3.0}}}
	}
	insertAlert(t, db, mk("a1", "camera.violence", "襄城区", "C01", 1, base.Add(10*time.Minute), event.AlertFiring))
	insertAlert(t, db, mk("a1", "camera.violence", "襄城区", "C01", 1, base.Add(11*time.Minute), event.AlertUpdated))
	insertAlert(t, db, mk("a2", "camera.violence", "樊城区", "C02", 3, base.Add(70*time.Minute), event.AlertFiring))
	insertAlert(t, db, mk("a3", "crowd.gathering", "襄城区", "C01", 1, base.Add(75*time.Minute), event.AlertFiring))

	q := store.TrendQuery{From: base, To: base.Add(24 * time.Hour), Location: shanghai}
	got, err := db.AlertsTrend(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.BucketCount{
		{Bucket: base, Key: "camera.violence", Count: 1},
		{Bucket: base.Add(time.Hour), Key: "camera.violence", Count: 1},
		{Bucket: base.Add(time.Hour), Key: "crowd.gathering", Count: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AlertsTrend by rule (-want +got):\n%s", diff)
	}
	q.Bucket, q.By, q.Districts = "day", "district", []string{"襄城区"}
	got, err = db.AlertsTrend(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	// The Shanghai day of 2026-11-26 starts at 2026-11-25 16:00 UTC.
	want = []store.BucketCount{{Bucket: base.Add(-8 * time.Hour), Key: "襄城区", Count: 2}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AlertsTrend by district per day (-want +got):\n%s", diff)
	}

	// Latest message per alert, and one alert's history.
	latest, err := db.LatestAlerts(ctx, store.AlertFilter{Rule: "camera.violence"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range latest {
		ids = append(ids, a.ID+" "+a.Status)
	}
	if diff := cmp.Diff([]string{"a2 firing", "a1 updated"}, ids); diff != "" {
		t.Errorf("LatestAlerts (-want +got):\n%s", diff)
	}
	msgs, err := db.AlertMessages(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].Status != "firing" || msgs[1].Details != `{"count":3}` || msgs[1].Evidence[0] != "e1" {
		t.Errorf("AlertMessages(a1) = %+v", msgs)
	}

	// Response times: a1 on scene 50 s after its event, a2 after 200 s.
	insertDispatch(t, db, event.Dispatch{ID: "d1", AlertID: "a1", UnitID: "u1", Status: event.DispatchAssigned, Time: base.Add(10 * time.Minute), CircleID: "C01", TierMinutes: 1})
	insertDispatch(t, db, event.Dispatch{ID: "d1", AlertID: "a1", UnitID: "u1", Status: event.DispatchOnScene, Time: base.Add(10*time.Minute + 48*time.Second), CircleID: "C01", TierMinutes: 1})
	insertDispatch(t, db, event.Dispatch{ID: "d2", AlertID: "a2", UnitID: "u2", Status: event.DispatchOnScene, Time: base.Add(70*time.Minute + 198*time.Second), CircleID: "C02", TierMinutes: 3})
	rt, err := db.ResponseTimes(ctx, store.TrendQuery{From: base, To: base.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	wantRT := []store.ResponseTime{
		{Key: "1", N: 1, P50: 50, P90: 50, Within1: 1, Within3: 1, Within5: 1},
		{Key: "3", N: 1, P50: 200, P90: 200, Within1: 0, Within3: 0, Within5: 1},
	}
	if diff := cmp.Diff(wantRT, rt); diff != "" {
		t.Errorf("ResponseTimes (-want +got):\n%s", diff)
	}
	ds, err := db.AlertDispatches(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[1].Status != event.DispatchOnScene || ds[1].UnitID != "u1" {
		t.Errorf("AlertDispatches(a1) = %+v", ds)
	}

	// Outcomes from the audit log, entered twice (a retried insert).
	entries := []store.AuditEntry{
		{Time: base.Add(20 * time.Minute), Who: "op1", Action: store.AuditClose, Object: "a1", Details: `{"rule":"camera.violence","outcome":"false_alarm","district":"襄城区"}`},
		{Time: base.Add(80 * time.Minute), Who: "op1", Action: store.AuditClose, Object: "a2", Details: `{"rule":"camera.violence","outcome":"confirmed","district":"樊城区"}`},
		{Time: base.Add(81 * time.Minute), Who: "op2", Action: "alert.ack", Object: "a3", Details: `{}`},
	}
	for range 2 {
		if err := db.InsertAudit(ctx, entries...); err != nil {
			t.Fatal(err)
		}
	}
	rates, err := db.OutcomeRates(ctx, store.TrendQuery{From: base, To: base.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	wantRates := []store.OutcomeRate{{Rule: "camera.violence", Closed: 2, Confirmed: 1, FalseAlarm: 1, FalseAlarmRate: 0.5}}
	if diff := cmp.Diff(wantRates, rates); diff != "" {
		t.Errorf("OutcomeRates (-want +got):\n%s", diff)
	}
	audit, err := db.AuditSince(ctx, base, 100, "alert.ack", store.AuditClose)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(entries, audit); diff != "" {
		t.Errorf("AuditSince (-want +got):\n%s", diff)
	}

	for _, f := range []func() error{
		func() error { _, err := db.EventsTrend(ctx, q); return err },
		func() error { _, err := db.HealthTrend(ctx, q); return err },
	} {
		if err := f(); err != nil {
			t.Error(err)
		}
	}
	if _, err := db.AlertsTrend(ctx, store.TrendQuery{From: base, To: base.Add(time.Hour), By: "plate"}); err == nil {
		t.Error("AlertsTrend by plate: no error")
	}
}
