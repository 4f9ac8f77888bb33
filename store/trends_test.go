package store_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
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

// TestTrendsMatchBaseTables checks the rollup-based trends against the
// base tables counted with FINAL (the queries they replaced), on replayed
// data, for ranges that start and end inside an hour, in zones with whole
// and half-hour offsets, after a backfill and after a backfill run twice.
func TestTrendsMatchBaseTables(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(1, 2))
	const span = 3 * 24 * time.Hour
	at := func() time.Time {
		return base.Add(time.Duration(rng.Int64N(int64(span/time.Millisecond))) * time.Millisecond)
	}

	evs := sampleEvents(3000, base)
	for i := range evs {
		evs[i].Time = at()
		if evs[i].Type == event.TypeCameraHealth && i%3 == 0 {
			evs[i].Status = "ok"
		}
	}
	b := store.NewBatch()
	for i := range evs {
		b.AddEvent(&evs[i], base)
	}
	for range 2 { // a retried insert
		if err := db.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	b.Reset()
	for i := range evs[:700] { // replayed after a crash, in another batch
		b.AddEvent(&evs[i], base.Add(span))
	}
	if err := db.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}

	var rows store.AlertRows
	rules := []string{"camera.violence", "crowd.gathering", "vehicle.hotlist"}
	districts := []string{"襄城区", "樊城区", "襄州区"}
	severities := []event.Severity{event.SeverityHigh, event.SeverityCritical}
	for i := range 300 {
		raised := at().Truncate(time.Second) // as the base table stores it
		a := event.Alert{ID: fmt.Sprintf("al-%d", i), Rule: rules[rng.IntN(len(rules))], Severity: severities[rng.IntN(len(severities))],
			Status: event.AlertFiring, Subject: event.Subject{Kind: "device", ID: "cam"}, EventTime: raised.Add(-time.Second), RaisedAt: raised,
			District: districts[rng.IntN(len(districts))], CircleID: fmt.Sprintf("C%02d", rng.IntN(5)), TierMinutes: 3}
		for _, st := range []event.AlertStatus{event.AlertFiring, event.AlertUpdated, event.AlertResolved} {
			a.Status = st
			for range 1 + i%2 { // every other message replayed
				if err := rows.AddAlert(a.AppendJSON(nil), raised); err != nil {
					t.Fatal(err)
				}
			}
			a.RaisedAt = a.RaisedAt.Add(time.Minute)
		}
	}
	if err := db.InsertAlerts(ctx, &rows); err != nil {
		t.Fatal(err)
	}

	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	var queries []store.TrendQuery
	for _, r := range [][2]time.Duration{
		{0, span},                      // whole hours
		{-time.Hour, span + time.Hour}, // beyond the data
		{17*time.Minute + 3*time.Second, 53*time.Hour + 31*time.Minute},    // parts of hours at both ends
		{17 * time.Minute, 53*time.Hour + 31*time.Minute},                  // whole minutes at both ends
		{59*time.Second + 500*time.Millisecond, 2*time.Hour + time.Second}, // part-minutes, minutes and hours
		{25*time.Hour + 10*time.Minute, 25*time.Hour + 40*time.Minute},     // within one hour
		{5 * time.Hour, 5 * time.Hour},                                     // empty
	} {
		for _, loc := range []*time.Location{nil, shanghai, kolkata} {
			for _, bucket := range []string{"hour", "day"} {
				queries = append(queries, store.TrendQuery{From: base.Add(r[0]), To: base.Add(r[1]), Location: loc, Bucket: bucket})
			}
		}
	}

	check := func(t *testing.T) {
		t.Helper()
		for _, q := range queries {
			name := fmt.Sprintf("%s–%s %v %s", q.From.Format(time.DateTime), q.To.Format(time.DateTime), q.Location, q.Bucket)
			for _, by := range []string{"rule", "district", "circle", "severity"} {
				for _, ds := range [][]string{nil, districts[:2]} {
					aq := q
					aq.By, aq.Districts = by, ds
					got, err := db.AlertsTrend(ctx, aq)
					if err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff(baseAlertsTrend(t, db, aq), got); diff != "" {
						t.Errorf("AlertsTrend %s by %s in %v (-base +rollup):\n%s", name, by, ds, diff)
					}
				}
			}
			got, err := db.EventsTrend(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(baseEventsTrend(t, db, q), got); diff != "" {
				t.Errorf("EventsTrend %s (-base +rollup):\n%s", name, diff)
			}
			got, err = db.HealthTrend(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(baseHealthTrend(t, db, q), got); diff != "" {
				t.Errorf("HealthTrend %s (-base +rollup):\n%s", name, diff)
			}
		}
	}
	t.Run("kept on insert", check)
	if t.Failed() {
		return
	}

	// As if the data had been stored before the rollups existed: the
	// migration backfills them.
	d := "`" + db.Database() + "`."
	for _, table := range []string{"alerts_hourly_mv", "events_hourly_mv", "fuel_hourly_mv", "health_hourly_mv", "alerts_hourly", "events_hourly", "health_hourly",
		"events_minutely_mv", "fuel_minutely_mv", "health_minutely_mv", "events_minutely", "health_minutely", "schema_migrations"} {
		if err := db.Conn().Exec(ctx, "DROP TABLE "+d+table); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Run("backfilled", check)

	// A migration that failed before it was recorded runs again: the
	// backfill adds nothing twice.
	if err := db.Conn().Exec(ctx, "DROP TABLE "+d+"schema_migrations"); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Run("backfilled twice", check)
}

// The trends as they were computed before the rollups: from the base
// tables, with FINAL.

func baseBucket(q store.TrendQuery, col string) string {
	tz := "UTC"
	if q.Location != nil {
		tz = q.Location.String()
	}
	fn := "toStartOfHour"
	if q.Bucket == "day" {
		fn = "toStartOfDay"
	}
	return "toUInt32(" + fn + "(" + col + ", '" + tz + "'))"
}

func baseCounts(t testing.TB, db *store.DB, q string, args ...any) []store.BucketCount {
	t.Helper()
	var out []store.BucketCount
	for _, r := range query(t, db, q, args...) {
		var b int64
		var n uint64
		fmt.Sscan(r[0], &b)
		fmt.Sscan(r[2], &n)
		if n > 0 {
			out = append(out, store.BucketCount{Bucket: time.Unix(b, 0).UTC(), Key: r[1], Count: n})
		}
	}
	slices.SortFunc(out, func(a, b store.BucketCount) int {
		if c := a.Bucket.Compare(b.Bucket); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out
}

func baseAlertsTrend(t testing.TB, db *store.DB, q store.TrendQuery) []store.BucketCount {
	key := map[string]string{"rule": "rule", "district": "district", "circle": "circle_id", "severity": "severity"}[q.By]
	where := "status = 'firing' AND raised_at >= toDateTime(?) AND raised_at < toDateTime(?)"
	args := []any{q.From.Unix(), q.To.Unix()}
	if len(q.Districts) > 0 {
		where += " AND district IN (?" + strings.Repeat(", ?", len(q.Districts)-1) + ")"
		for _, d := range q.Districts {
			args = append(args, d)
		}
	}
	return baseCounts(t, db, "SELECT "+baseBucket(q, "raised_at")+" AS b, "+key+" AS k, count() FROM `"+db.Database()+"`.alerts FINAL WHERE "+where+" GROUP BY b, k", args...)
}

func baseEventsTrend(t testing.TB, db *store.DB, q store.TrendQuery) []store.BucketCount {
	var parts []string
	var args []any
	for table, typ := range map[string]string{"events": "type", "fuel_purchases": "'fuel.purchase'", "device_health": "type"} {
		parts = append(parts, "SELECT "+baseBucket(q, "time")+" AS b, "+typ+" AS k, count() AS n FROM `"+db.Database()+"`."+table+
			" FINAL WHERE time >= toDateTime(?) AND time < toDateTime(?) GROUP BY b, k")
		args = append(args, q.From.Unix(), q.To.Unix())
	}
	return baseCounts(t, db, "SELECT b, k, n FROM ("+strings.Join(parts, " UNION ALL ")+")", args...)
}

func baseHealthTrend(t testing.TB, db *store.DB, q store.TrendQuery) []store.BucketCount {
	return baseCounts(t, db, "SELECT "+baseBucket(q, "time")+" AS b, if(type = 'device.heartbeat', 'heartbeat_devices', status) AS k,"+
		" if(type = 'device.heartbeat', uniqExact(device_id), count()) FROM `"+db.Database()+"`.device_health FINAL"+
		" WHERE time >= toDateTime(?) AND time < toDateTime(?) GROUP BY b, k, type", q.From.Unix(), q.To.Unix())
}
