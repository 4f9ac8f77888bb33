package store_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"

	"citywatch/event"
	"citywatch/internal/chtest"
	"citywatch/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// open returns a migrated store in a database of its own, closed when t
// ends.
func open(t testing.TB, edit ...func(*store.Config)) *store.DB {
	t.Helper()
	cfg := chtest.Config(t)
	for _, f := range edit {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}

// query runs a query on db's server and returns its rows as strings.
func query(t testing.TB, db *store.DB, q string, args ...any) [][]string {
	t.Helper()
	rows, err := db.Conn().Query(t.Context(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out [][]string
	types := rows.ColumnTypes()
	for rows.Next() {
		ptrs := make([]any, len(types))
		for i, ct := range types {
			ptrs[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		row := make([]string, len(ptrs))
		for i, p := range ptrs {
			row[i] = fmt.Sprint(reflect.ValueOf(p).Elem().Interface())
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

// sampleEvents returns n realistic events of every type, round robin, the
// i-th at base + i seconds, with ids unique within the call.
func sampleEvents(n int, base time.Time) []event.Event {
	cst := time.FixedZone("CST", 8*3600)
	types := event.Types()
	evs := make([]event.Event, n)
	for i := range evs {
		e := &evs[i]
		typ := types[i%len(types)]
		*e = event.Event{
			ID:       fmt.Sprintf("%s-%08d", typ, i),
			Type:     typ,
			DeviceID: fmt.Sprintf("dev-%04d", i%997),
			Time:     base.Add(time.Duration(i) * time.Second).Add(125 * time.Millisecond).In(cst),
			Lat:      32.0 + float64(i%1000)/10000,
			Lon:      112.1 + float64(i%1000)/10000,
		}
		switch typ {
		case event.TypeCameraDetection, event.TypeDroneDetection:
			e.Object = "vehicle"
			e.Behavior = "fight"
			e.Count = 1 + i%60
			e.TrackID = fmt.Sprintf("trk-%d", i%5000)
			e.Plate, e.PlateValid, e.PlateColor = fmt.Sprintf("鄂F%05d", i%100000), true, "blue"
			e.Confidence = 0.93
			if typ == event.TypeCameraDetection {
				e.CameraClass = "A"
			} else {
				e.AltM = 120
			}
		case event.TypeCameraHealth:
			e.Status, e.Detail = "video_loss", "no signal on input 1"
		case event.TypeCheckpointPass:
			e.Lane = 1 + i%4
			e.Plate, e.PlateValid, e.PlateColor = fmt.Sprintf("鄂F%05d", i%100000), true, "blue"
			e.VehicleType, e.VehicleColor = "car", "white"
			e.SpeedKmh, e.HeadingDeg, e.HasHeading = 62.5, 270, true
			e.Confidence = 0.98
		case event.TypeFuelPurchase:
			e.StationID = fmt.Sprintf("st-%03d", i%300)
			e.BuyerPseudonym = fmt.Sprintf("%064x", i)
			e.BuyerIDMasked, e.BuyerNameMasked = "420602********123X", "张*"
			e.Plate, e.PlateValid = "鄂F12345", true
			e.Fuel, e.Container, e.VolumeL = "92", "bulk", 25
			e.PermitNo = "XY-2026-0001"
		case event.TypeDroneTelemetry:
			e.MissionID = "m-1"
			e.AltM, e.HeadingDeg, e.SpeedMs, e.BatteryPct = 120, 90, 12.5, 77
		case event.TypePatrolPosition:
			e.SpeedKmh, e.HeadingDeg, e.Status = 40, 180, "available"
		case event.TypePatrolStatus:
			e.DispatchID, e.Status = "dsp-1", "en_route"
		}
		if i%10 == 0 {
			e.Attrs = []byte(`{"vendor":"hikvision","fw":"5.7.3"}`)
		}
	}
	return evs
}
