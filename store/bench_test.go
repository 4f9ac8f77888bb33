package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"citywatch/event"
	"citywatch/store"
)

// benchRows is the sink's batch size.
const benchRows = 10_000

// benchEvents returns benchRows events in roughly the city's mix: mostly
// checkpoint passes, detections and heartbeats.
func benchEvents() []event.Event {
	all := sampleEvents(9*benchRows, base)
	mix := map[event.Type]int{
		event.TypeCheckpointPass:  35,
		event.TypeCameraDetection: 30,
		event.TypeDeviceHeartbeat: 15,
		event.TypePatrolPosition:  6,
		event.TypeDroneTelemetry:  4,
		event.TypeCameraHealth:    3,
		event.TypeDroneDetection:  3,
		event.TypeFuelPurchase:    2,
		event.TypePatrolStatus:    2,
	}
	var evs []event.Event
	taken := make(map[event.Type]int)
	for _, e := range all {
		if taken[e.Type] < mix[e.Type]*benchRows/100 {
			taken[e.Type]++
			evs = append(evs, e)
		}
	}
	return evs
}

// BenchmarkInsert fills a Batch with 10,000 events and inserts it, as the
// sink does for each batch.
func BenchmarkInsert(b *testing.B) {
	db := open(b)
	evs := benchEvents()
	batch := store.NewBatch()
	ctx := context.Background()
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for b.Loop() {
		batch.Reset()
		for i := range evs {
			batch.AddEvent(&evs[i], now)
		}
		if err := db.Insert(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	reportRates(b, len(evs), cpu0)
}

// BenchmarkInsertPlain inserts the same rows as BenchmarkInsert the usual
// way: PrepareBatch per table and Append row by row.
func BenchmarkInsertPlain(b *testing.B) {
	db := open(b)
	evs := benchEvents()
	ctx := context.Background()
	now := time.Now()
	conn := db.Conn()
	stmt := func(table string) string {
		cols := store.InsertColumns(table)
		for i, c := range cols {
			cols[i] = "`" + c + "`"
		}
		return fmt.Sprintf("INSERT INTO `%s`.%s (%s)", db.Database(), table, strings.Join(cols, ", "))
	}
	tables := []string{"events", "fuel_purchases", "device_health"}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for b.Loop() {
		for _, table := range tables {
			batch, err := conn.PrepareBatch(ctx, stmt(table))
			if err != nil {
				b.Fatal(err)
			}
			for i := range evs {
				e := &evs[i]
				ms := uint16(e.Time.Nanosecond() / 1e6)
				attrs := string(e.Attrs)
				var err error
				switch {
				case table == "fuel_purchases" && e.Type == event.TypeFuelPurchase:
					err = batch.Append(e.ID, e.DeviceID, e.Time, ms, e.Lat, e.Lon, e.StationID,
						e.BuyerPseudonym, e.BuyerIDMasked, e.BuyerNameMasked, e.Plate, boolU8(e.PlateValid), e.PlateColor,
						e.Fuel, e.Container, e.VolumeL, e.PermitNo, attrs, now)
				case table == "device_health" && (e.Type == event.TypeCameraHealth || e.Type == event.TypeDeviceHeartbeat):
					err = batch.Append(e.ID, e.Type.String(), e.DeviceID, e.Time, ms, e.Lat, e.Lon, e.Status, e.Detail, attrs, now)
				case table == "events" && e.Type != event.TypeFuelPurchase && e.Type != event.TypeCameraHealth && e.Type != event.TypeDeviceHeartbeat:
					err = batch.Append(e.ID, e.Type.String(), e.DeviceID, e.Time, ms, e.Lat, e.Lon,
						e.CameraClass, e.Object, e.Behavior, uint32(e.Count), e.TrackID, e.AltM,
						e.Plate, boolU8(e.PlateValid), e.PlateColor, e.Confidence, e.Status, uint16(e.Lane),
						e.VehicleType, e.VehicleColor, e.SpeedKmh, e.HeadingDeg, boolU8(e.HasHeading),
						e.MissionID, e.SpeedMs, e.BatteryPct, e.DispatchID, attrs, now)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			if err := batch.Send(); err != nil {
				b.Fatal(err)
			}
		}
	}
	reportRates(b, len(evs), cpu0)
}

// reportRates reports rows inserted per second of wall time, and the CPU
// time this process (the client) spent per row: the server's share is the
// rest.
func reportRates(b *testing.B, rows int, cpu0 time.Duration) {
	total := float64(rows) * float64(b.N)
	b.ReportMetric(total/b.Elapsed().Seconds(), "rows/s")
	if cpu := processCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/total, "client-cpu-ns/row")
	}
}

func boolU8(v bool) uint8 {
	if v {
		return 1
	}
	return 0
}
