package store_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"citywatch/event"
	"citywatch/store"
)

var base = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

func TestMigrateTwice(t *testing.T) {
	db := open(t) // migrates once
	ctx := t.Context()
	if err := db.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = db.Migrate(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Migrate: %v", err)
	}

	got := query(t, db, "SELECT version, count() FROM `"+db.Database()+"`.schema_migrations FINAL GROUP BY version ORDER BY version")
	if diff := cmp.Diff([][]string{{"1", "1"}, {"2", "1"}, {"3", "1"}}, got); diff != "" {
		t.Errorf("schema_migrations (-want +got):\n%s", diff)
	}

	tables := query(t, db, "SELECT name FROM system.tables WHERE database = ? ORDER BY name", db.Database())
	want := [][]string{{"alerts"}, {"alerts_hourly"}, {"alerts_hourly_mv"}, {"audit"}, {"device_health"}, {"dispatches"},
		{"events"}, {"events_hourly"}, {"events_hourly_mv"}, {"events_minutely"}, {"events_minutely_mv"}, {"fuel_hourly_mv"}, {"fuel_minutely_mv"},
		{"fuel_purchases"}, {"health_hourly"}, {"health_hourly_mv"}, {"health_minutely"}, {"health_minutely_mv"}, {"rejected"}, {"schema_migrations"}}
	if diff := cmp.Diff(want, tables); diff != "" {
		t.Errorf("tables (-want +got):\n%s", diff)
	}

	// Insert writes every column of the tables it fills, in table order,
	// so that no column is silently left at its default.
	for _, table := range store.BatchTables() {
		var cols []string
		for _, r := range query(t, db, "DESCRIBE TABLE `"+db.Database()+"`.`"+table+"`") {
			cols = append(cols, r[0])
		}
		if diff := cmp.Diff(cols, store.InsertColumns(table)); diff != "" {
			t.Errorf("%s: table columns (-) vs insert columns (+):\n%s", table, diff)
		}
	}
}

// TestInsertReplay inserts a batch of every event type, the same batch
// again, and then the same events in a new batch stored later, as after a
// crash of the sink: every query counts each event once.
func TestInsertReplay(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	const perType = 100
	evs := sampleEvents(perType*len(event.Types()), base)

	b := store.NewBatch()
	for i := range evs {
		b.AddEvent(&evs[i], base.Add(time.Hour))
	}
	if got, want := b.Len(), len(evs); got != want {
		t.Fatalf("Len = %d, want %d", got, want)
	}
	for range 2 {
		if err := db.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	b.Reset()
	for i := range evs {
		b.AddEvent(&evs[i], base.Add(2*time.Hour))
	}
	if err := db.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}

	counts, err := db.CountEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[event.Type]uint64)
	for _, typ := range event.Types() {
		want[typ] = perType
	}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("CountEvents (-want +got):\n%s", diff)
	}

	ids, err := db.EventIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != len(evs) {
		t.Errorf("EventIDs has %d ids, want %d", len(ids), len(evs))
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s is stored %d times", id, n)
		}
	}
}

// TestInsertRoundTrip reads back one row of each table and compares it with
// what was added.
func TestInsertRoundTrip(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	evs := sampleEvents(len(event.Types()), base)
	b := store.NewBatch()
	ingested := base.Add(3 * time.Second)
	for i := range evs {
		b.AddEvent(&evs[i], ingested)
	}
	b.AddRejected(&event.Rejected{
		Topic: "citywatch.camera", Partition: 3, Offset: 1 << 40, Key: []byte("cam-1"),
		Error: `missing field "lat"`, Code: event.CodeMissing, ReceivedAt: base, Payload: []byte(`{"id":"x"}`),
	})
	if err := db.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	byType := make(map[event.Type]*event.Event)
	for i := range evs {
		byType[evs[i].Type] = &evs[i]
	}
	d := "`" + db.Database() + "`."

	cp := byType[event.TypeCheckpointPass]
	got := query(t, db, "SELECT id, type, device_id, toUnixTimestamp(time), time_ms, lat, lon, lane, plate, plate_valid, plate_color, vehicle_type, vehicle_color, speed_kmh, heading_deg, has_heading, confidence, attrs, toUnixTimestamp(ingested_at) FROM "+d+"events WHERE id = ?", cp.ID)
	want := [][]string{{cp.ID, "checkpoint.pass", cp.DeviceID, fmt.Sprint(cp.Time.Unix()), "125", fmt.Sprint(cp.Lat), fmt.Sprint(cp.Lon),
		fmt.Sprint(cp.Lane), cp.Plate, "1", "blue", "car", "white", "62.5", "270", "1", "0.98", string(cp.Attrs), fmt.Sprint(ingested.Unix())}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("checkpoint.pass row (-want +got):\n%s", diff)
	}

	dt := byType[event.TypeDroneTelemetry]
	got = query(t, db, "SELECT mission_id, alt_m, heading_deg, speed_ms, battery_pct FROM "+d+"events WHERE id = ?", dt.ID)
	if diff := cmp.Diff([][]string{{"m-1", "120", "90", "12.5", "77"}}, got); diff != "" {
		t.Errorf("drone.telemetry row (-want +got):\n%s", diff)
	}

	fp := byType[event.TypeFuelPurchase]
	got = query(t, db, "SELECT id, station_id, buyer_pseudonym, buyer_id_masked, buyer_name_masked, plate, fuel, container, volume_l, permit_no FROM "+d+"fuel_purchases")
	if diff := cmp.Diff([][]string{{fp.ID, fp.StationID, fp.BuyerPseudonym, "420602********123X", "张*", "鄂F12345", "92", "bulk", "25", "XY-2026-0001"}}, got); diff != "" {
		t.Errorf("fuel_purchases row (-want +got):\n%s", diff)
	}

	got = query(t, db, "SELECT type, status, detail FROM "+d+"device_health ORDER BY type")
	if diff := cmp.Diff([][]string{{"camera.health", "video_loss", "no signal on input 1"}, {"device.heartbeat", "", ""}}, got); diff != "" {
		t.Errorf("device_health rows (-want +got):\n%s", diff)
	}

	got = query(t, db, "SELECT topic, `partition`, `offset`, key, error, code, toUnixTimestamp(received_at), payload FROM "+d+"rejected")
	if diff := cmp.Diff([][]string{{"citywatch.camera", "3", "1099511627776", "cam-1", `missing field "lat"`, "missing_field", fmt.Sprint(base.Unix()), `{"id":"x"}`}}, got); diff != "" {
		t.Errorf("rejected row (-want +got):\n%s", diff)
	}
}

func TestRejectedDedupe(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	rej := func(partition int, offset int64, code event.Code, received time.Time) *event.Rejected {
		return &event.Rejected{
			Topic: "citywatch.checkpoint", Partition: partition, Offset: offset, Key: []byte("cp-7"),
			Error: "invalid message", Code: code, ReceivedAt: received, Payload: []byte("not json"),
		}
	}
	b := store.NewBatch()
	b.AddRejected(rej(0, 10, event.CodeMalformed, base))
	b.AddRejected(rej(0, 10, event.CodeMalformed, base)) // the DLQ message read twice
	b.AddRejected(rej(0, 11, event.CodeMalformed, base))
	b.AddRejected(rej(1, 10, event.CodeMissing, base)) // same offset, other partition
	b.AddRejected(rej(0, 12, event.CodeFuture, base))
	for range 2 {
		if err := db.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// Ingest rejects the same input again after a restart, later that day.
	b.Reset()
	b.AddRejected(rej(0, 12, event.CodeFuture, base.Add(5*time.Hour)))
	if err := db.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}

	got, err := db.CountRejected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[event.Code]uint64{event.CodeMalformed: 2, event.CodeMissing: 1, event.CodeFuture: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CountRejected (-want +got):\n%s", diff)
	}
}

// TestFuelNeverStoresRawBuyer hands the store a fuel purchase that still
// carries the raw ID number and name, as a bug upstream might: nothing of
// them may reach any table.
func TestFuelNeverStoresRawBuyer(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	const rawID, rawName = "42060219900101123X", "张三丰"
	e := sampleEvents(len(event.Types()), base)[event.TypeFuelPurchase-1]
	if e.Type != event.TypeFuelPurchase {
		t.Fatalf("sample is %v", e.Type)
	}
	e.BuyerID, e.BuyerName = rawID, rawName
	b := store.NewBatch()
	b.AddEvent(&e, base)
	if err := db.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}

	cols := query(t, db, "SELECT table, name FROM system.columns WHERE database = ? AND type = 'String'", db.Database())
	if len(cols) == 0 {
		t.Fatal("no String columns found")
	}
	for _, c := range cols {
		table, col := c[0], c[1]
		if col == "buyer_id" || col == "buyer_name" {
			t.Errorf("%s has a column %s", table, col)
		}
		q := fmt.Sprintf("SELECT count() FROM `%s`.`%s` WHERE position(`%s`, ?) > 0 OR position(`%s`, ?) > 0", db.Database(), table, col, col)
		if n := query(t, db, q, rawID, rawName)[0][0]; n != "0" {
			t.Errorf("%s.%s holds the raw buyer in %s rows", table, col, n)
		}
	}
	if n := query(t, db, "SELECT count() FROM `"+db.Database()+"`.fuel_purchases")[0][0]; n != "1" {
		t.Errorf("fuel_purchases has %s rows, want 1", n)
	}
}

func TestApplyRetention(t *testing.T) {
	db := open(t) // default retention: events 90, fuel 7, rejected 14, health 30 days
	ctx := t.Context()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	b := store.NewBatch()
	add := func(typ event.Type, id string, at time.Time) {
		b.AddEvent(&event.Event{ID: id, Type: typ, DeviceID: "d", Time: at}, now)
	}
	add(event.TypeCameraDetection, "ev-old", now.Add(-100*day)) // 2026-08-18: gone
	add(event.TypeCameraDetection, "ev-edge", now.Add(-90*day)) // 2026-08-28: its last 12 h are within 90 days
	add(event.TypeCheckpointPass, "ev-new", now)                // kept
	add(event.TypeFuelPurchase, "fuel-old", now.Add(-8*day))    // 2026-11-18: gone
	add(event.TypeFuelPurchase, "fuel-new", now.Add(-6*day))    // kept
	add(event.TypeDeviceHeartbeat, "hb-old", now.Add(-31*day))  // 2026-10-26: gone
	add(event.TypeCameraHealth, "health-new", now.Add(-29*day)) // kept
	b.AddRejected(&event.Rejected{Topic: "t", Offset: 1, Code: event.CodeMalformed, ReceivedAt: now.Add(-15 * day)})
	b.AddRejected(&event.Rejected{Topic: "t", Offset: 2, Code: event.CodeMalformed, ReceivedAt: now})
	if err := db.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}

	dropped, err := db.ApplyRetention(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	// The minutely rollups go with the rows they count; a fuel purchase's
	// minute stays with the events' (events_minutely/20261118).
	wantDropped := []string{"device_health/20261026", "events/20260818", "events_minutely/20260818", "fuel_purchases/20261118", "health_minutely/20261026", "rejected/20261111"}
	if diff := cmp.Diff(wantDropped, dropped); diff != "" {
		t.Errorf("dropped (-want +got):\n%s", diff)
	}

	ids, err := db.EventIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for id := range ids {
		kept = append(kept, id)
	}
	slices.Sort(kept)
	if diff := cmp.Diff([]string{"ev-edge", "ev-new", "fuel-new", "health-new"}, kept); diff != "" {
		t.Errorf("events kept (-want +got):\n%s", diff)
	}
	rej, err := db.CountRejected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[event.Code]uint64{event.CodeMalformed: 1}, rej); diff != "" {
		t.Errorf("rejected kept (-want +got):\n%s", diff)
	}

	again, err := db.ApplyRetention(ctx, now)
	if err != nil || len(again) != 0 {
		t.Errorf("second ApplyRetention = %v, %v; want nothing dropped", again, err)
	}
}

func TestApplyRetentionPerTable(t *testing.T) {
	db := open(t, func(c *store.Config) { c.Retention.Events = 1; c.Retention.Fuel = 1 })
	ctx := t.Context()
	now := time.Date(2026, 11, 26, 0, 30, 0, 0, time.UTC)
	b := store.NewBatch()
	for _, typ := range []event.Type{event.TypeCameraDetection, event.TypeFuelPurchase, event.TypeDeviceHeartbeat} {
		b.AddEvent(&event.Event{ID: typ.String(), Type: typ, Time: now.Add(-48 * time.Hour)}, now)
	}
	if err := db.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	dropped, err := db.ApplyRetention(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"events/20261124", "events_minutely/20261124", "fuel_purchases/20261124"}, dropped); diff != "" {
		t.Errorf("dropped (-want +got):\n%s", diff)
	}
}

func TestEventsPerHour(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Skipf("no time zone database: %v", err)
	}
	at := func(hh, mm, ss, ms int) time.Time {
		return time.Date(2026, 11, 26, hh, mm, ss, ms*1e6, shanghai)
	}
	evs := []event.Event{
		{ID: "a", Type: event.TypeCameraDetection, Time: at(8, 59, 59, 999)}, // before from
		{ID: "b", Type: event.TypeCameraDetection, Time: at(9, 0, 0, 0)},
		{ID: "c", Type: event.TypeCameraDetection, Time: at(9, 30, 0, 0)},
		{ID: "d", Type: event.TypeFuelPurchase, Time: at(9, 45, 0, 0)},
		{ID: "e", Type: event.TypeDeviceHeartbeat, Time: at(9, 59, 59, 999)},
		{ID: "f", Type: event.TypeCameraDetection, Time: at(10, 0, 0, 0)},
		{ID: "g", Type: event.TypeCheckpointPass, Time: at(10, 10, 0, 0)},
		{ID: "h", Type: event.TypeCheckpointPass, Time: at(10, 59, 59, 0)},
		{ID: "i", Type: event.TypeCheckpointPass, Time: at(11, 0, 0, 0)}, // at to: excluded
	}
	b := store.NewBatch()
	for i := range evs {
		b.AddEvent(&evs[i], at(12, 0, 0, 0))
	}
	for range 2 { // replayed
		if err := db.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}

	got, err := db.EventsPerHour(ctx, at(9, 0, 0, 0), at(11, 0, 0, 0), shanghai)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.HourCount{
		{Hour: at(9, 0, 0, 0), Type: event.TypeCameraDetection, Count: 2},
		{Hour: at(9, 0, 0, 0), Type: event.TypeFuelPurchase, Count: 1},
		{Hour: at(9, 0, 0, 0), Type: event.TypeDeviceHeartbeat, Count: 1},
		{Hour: at(10, 0, 0, 0), Type: event.TypeCameraDetection, Count: 1},
		{Hour: at(10, 0, 0, 0), Type: event.TypeCheckpointPass, Count: 2},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("EventsPerHour (-want +got):\n%s", diff)
	}
	if got[0].Hour.Location() != shanghai {
		t.Errorf("hours are in %v, want %v", got[0].Hour.Location(), shanghai)
	}

	// A zone with a half-hour offset buckets by its own hours.
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Skipf("no time zone database: %v", err)
	}
	got, err = db.EventsPerHour(ctx, at(9, 0, 0, 0), at(10, 0, 0, 0), kolkata)
	if err != nil {
		t.Fatal(err)
	}
	var hours []string
	for _, h := range got {
		hours = append(hours, h.Hour.Format("15:04")+" "+h.Type.String()+" "+fmt.Sprint(h.Count))
	}
	// 09:00–10:00 in Shanghai is 06:30–07:30 in Kolkata: b at 06:30, c at
	// 07:00, d at 07:15, e at 07:29.
	wantHours := []string{"06:00 camera.detection 1", "07:00 camera.detection 1", "07:00 fuel.purchase 1", "07:00 device.heartbeat 1"}
	if diff := cmp.Diff(wantHours, hours); diff != "" {
		t.Errorf("EventsPerHour in Kolkata (-want +got):\n%s", diff)
	}
}

func TestEventsPerHourLocation(t *testing.T) {
	db := open(t)
	from := base
	tests := []struct {
		name string
		loc  *time.Location
		ok   bool
	}{
		{"nil is UTC", nil, true},
		{"UTC", time.UTC, true},
		{"fixed zone", time.FixedZone("CST", 8*3600), false},
		{"fixed zone named like a real one", time.FixedZone("EST", 8*3600), false},
		{"local", time.Local, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := db.EventsPerHour(t.Context(), from, from.Add(time.Hour), tt.loc)
			if tt.ok && err != nil {
				t.Errorf("err = %v", err)
			}
			if !tt.ok && !errors.Is(err, store.ErrLocation) {
				t.Errorf("err = %v, want ErrLocation", err)
			}
		})
	}
}

func TestCountsEmpty(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	ev, err := db.CountEvents(ctx)
	if err != nil || len(ev) != 0 {
		t.Errorf("CountEvents = %v, %v; want empty", ev, err)
	}
	rej, err := db.CountRejected(ctx)
	if err != nil || len(rej) != 0 {
		t.Errorf("CountRejected = %v, %v; want empty", rej, err)
	}
	if err := db.Insert(ctx, store.NewBatch()); err != nil {
		t.Errorf("Insert of an empty batch: %v", err)
	}
}

// TestInsertErrorNamesTable checks that a failing insert says which table
// failed: here one table is missing.
func TestInsertErrorNamesTable(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	if err := db.Conn().Exec(ctx, "DROP TABLE `"+db.Database()+"`.fuel_purchases"); err != nil {
		t.Fatal(err)
	}
	b := store.NewBatch()
	for _, e := range sampleEvents(len(event.Types()), base) {
		b.AddEvent(&e, base)
	}
	err := db.Insert(ctx, b)
	if err == nil || !strings.Contains(err.Error(), "cannot insert into fuel_purchases") {
		t.Errorf("Insert = %v, want an error naming fuel_purchases", err)
	}
}
