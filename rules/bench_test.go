package rules

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"citywatch/event"
)

// cityStream returns n events of a city's mix, one every step of event
// time from start: camera detections 50 % (half of them vehicles with
// plates, a few fights and crowds), checkpoint passes 20 % over a pool of
// 50,000 plates, heartbeats 20 %, camera health, fuel purchases and drone
// telemetry 3 % each. The same seed gives the same stream.
func cityStream(seed uint64, n int, start time.Time, step time.Duration) []event.Event {
	rng := rand.New(rand.NewPCG(seed, 1))
	plates := make([]string, 50_000)
	const serial = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
	for i := range plates {
		b := []byte("鄂F")
		for range 5 {
			b = append(b, serial[rng.IntN(len(serial))])
		}
		plates[i], _ = event.NormalizePlate(string(b))
	}
	// A few plates of the sample hotlist, and a pair of companions.
	plates[0], plates[1], plates[2] = "鄂F12345", "鄂FA8B52", "鄂F1Z345"
	cams := make([]string, 28_200)
	for i := range cams {
		cams[i] = fmt.Sprintf("cam-%05d", i)
	}
	kks := make([]string, 110)
	for i := range kks {
		kks[i] = fmt.Sprintf("kk-%03d", i)
	}
	buyers := make([]string, 5_000)
	for i := range buyers {
		buyers[i] = fmt.Sprintf("%032x", rng.Uint64())
	}
	pos := func(i int) (float64, float64) {
		return 31.9 + float64(i%97)*0.004, 112.0 + float64(i%89)*0.005
	}
	evs := make([]event.Event, n)
	t := start
	for i := range evs {
		e := &evs[i]
		t = t.Add(step)
		e.ID = fmt.Sprintf("ev-%d-%08d", seed, i)
		e.Time = t
		e.Confidence = 1
		r := rng.IntN(100)
		switch {
		case r < 50:
			c := rng.IntN(len(cams))
			e.Type, e.DeviceID, e.CameraClass = event.TypeCameraDetection, cams[c], "A"
			e.Lat, e.Lon = pos(c)
			e.Count = 1
			switch x := rng.IntN(1000); {
			case x < 500:
				// A vehicle is seen near its home, so that plates do not
				// jump across the city (vehicle.cloned_plate stays quiet).
				p := rng.IntN(len(plates))
				e.DeviceID = cams[(p*131+rng.IntN(3))%len(cams)]
				e.Lat, e.Lon = pos(p)
				e.Lat += float64(rng.IntN(3)) * 0.001
				e.Object = "vehicle"
				e.Plate, e.PlateValid = plates[p], true
			case x < 502:
				e.Object, e.Behavior, e.Confidence = "person", "fight", 0.9
			case x < 505:
				e.Object, e.Count = "person", 60
			default:
				e.Object = "person"
			}
		case r < 70:
			p := rng.IntN(len(plates))
			e.Type, e.DeviceID, e.Lane = event.TypeCheckpointPass, kks[rng.IntN(len(kks))], 1
			e.Lat, e.Lon = pos(p)
			e.Lon += float64(rng.IntN(3)) * 0.001
			e.Plate, e.PlateValid = plates[p], true
			e.PlateColor, e.VehicleType, e.SpeedKmh = "blue", "car", 60
		case r < 90:
			c := rng.IntN(len(cams))
			e.Type, e.DeviceID = event.TypeDeviceHeartbeat, cams[c]
			e.Lat, e.Lon = pos(c)
		case r < 93:
			c := rng.IntN(len(cams))
			e.Type, e.DeviceID, e.Status = event.TypeCameraHealth, cams[c], "ok"
			if rng.IntN(50) == 0 {
				e.Status = "video_loss"
			}
			e.Lat, e.Lon = pos(c)
		case r < 96:
			s := rng.IntN(450)
			e.Type, e.DeviceID, e.StationID = event.TypeFuelPurchase, fmt.Sprintf("fuel-%03d-t1", s), fmt.Sprintf("st-%03d", s)
			e.BuyerPseudonym, e.BuyerIDMasked = buyers[rng.IntN(len(buyers))], "420602********123X"
			e.Fuel, e.Container, e.VolumeL = "92", "vehicle", 40
			if rng.IntN(10) == 0 {
				e.Container, e.VolumeL = "bulk", 25
			}
			e.Lat, e.Lon = pos(s)
		default:
			d := rng.IntN(20)
			e.Type, e.DeviceID, e.MissionID = event.TypeDroneTelemetry, fmt.Sprintf("uav-%02d", d), "m-1"
			e.AltM, e.SpeedMs, e.BatteryPct = 100, 10, 80
			e.Lat, e.Lon = pos(d)
		}
	}
	return evs
}

func benchZones() ZoneFunc {
	return PolygonZones([]PolygonZone{
		{Zone: Zone{ID: "z1", Name: "学校", Kind: "school"}, Polygon: [][2]float64{{31.9, 112.0}, {31.9, 112.01}, {31.91, 112.01}, {31.91, 112.0}}},
		{Zone: Zone{ID: "z2", Name: "油库", Kind: "depot"}, Polygon: [][2]float64{{32.1, 112.2}, {32.1, 112.21}, {32.11, 112.21}, {32.11, 112.2}}},
	})
}

// BenchmarkDefaultPack runs the whole default rule pack on one goroutine
// over a city's mix of events at 10,000 events/s of event time.
func BenchmarkDefaultPack(b *testing.B) {
	rs, err := DefaultRuleSet(testPseudonymizer(b))
	if err != nil {
		b.Fatal(err)
	}
	start := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	const n = 1 << 18
	const step = 100 * time.Microsecond
	evs := cityStream(1, n, start, step)
	eng, err := New(Config{Zones: benchZones()}, rs, nil)
	if err != nil {
		b.Fatal(err)
	}
	out := make([]event.Alert, 0, 64)
	span := time.Duration(n) * step
	// Warm the state up with one pass, as a running engine would be.
	for i := range evs {
		out = eng.Process(evs[i].Time, &evs[i], out[:0])
	}
	b.ReportAllocs()
	b.ResetTimer()
	alerts := 0
	shift := span
	for i := 0; i < b.N; i++ {
		k := i % n
		if k == 0 && i > 0 {
			shift += span
			b.StopTimer()
			for j := range evs {
				evs[j].Time = evs[j].Time.Add(span)
			}
			b.StartTimer()
		}
		e := &evs[k]
		out = eng.Process(e.Time, e, out[:0])
		alerts += len(out)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(alerts)/float64(b.N)*1e6, "alerts/Mevent")
	_ = shift
}

// BenchmarkRoute is a scaled-out role's forwarding of one event, less the
// decoding and the write: its partition's clock, then the shards of its
// keys among 16 (Engine.route), over a city's mix of events. It reports
// the copies written per event.
func BenchmarkRoute(b *testing.B) {
	rs, err := DefaultRuleSet(testPseudonymizer(b))
	if err != nil {
		b.Fatal(err)
	}
	start := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	const n = 1 << 16
	const step = 100 * time.Microsecond
	evs := cityStream(1, n, start, step)
	clock, err := New(Config{Zones: benchZones()}, rs, nil)
	if err != nil {
		b.Fatal(err)
	}
	clock.forwarding = true
	span := time.Duration(n) * step
	var targets []int
	copies := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k := i % n
		if k == 0 && i > 0 {
			b.StopTimer()
			for j := range evs {
				evs[j].Time = evs[j].Time.Add(span)
			}
			b.StartTimer()
		}
		e := &evs[k]
		if clock.observe(e.Time, e, time.Time{}) {
			targets = clock.route(e, 16, targets[:0])
			copies += len(targets)
		}
	}
	b.ReportMetric(float64(copies)/float64(b.N), "copies/event")
}
