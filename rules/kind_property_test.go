package rules

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"citywatch/event"
)

// TestVelocityAgainstModel compares the velocity kind with a direct
// reading of its definition on random in-order sightings of one plate at a
// few checkpoints: it fires at the first sighting that, with the sighting
// before it, is within 6 h, at least 2 km away at another checkpoint, and
// faster than 200 km/h.
func TestVelocityAgainstModel(t *testing.T) {
	rs, err := Load([]byte("rules:\n  - {id: vel, severity: low, types: [checkpoint.pass], velocity: {key: plate, max_kmh: 200, min_distance_km: 2, within: 6h}}\n"), Lists{})
	if err != nil {
		t.Fatal(err)
	}
	// Checkpoints from 0 to about 40 km apart.
	type place struct {
		id       string
		lat, lon float64
	}
	places := []place{{"kk-0", 32.0, 112.0}, {"kk-1", 32.005, 112.0}, {"kk-2", 32.03, 112.01}, {"kk-3", 32.1, 112.1}, {"kk-4", 32.3, 112.2}}
	rng := rand.New(rand.NewPCG(3, 4))
	fired := 0
	for round := range 1000 {
		eng, _ := New(Config{}, rs, nil)
		at := t0
		firstModel, firstEngine := -1, -1
		var prev *place
		var prevT time.Time
		for i := range 6 {
			at = at.Add(time.Duration(rng.IntN(1800)) * time.Second)
			p := &places[rng.IntN(len(places))]
			if firstModel < 0 && prev != nil && prev.id != p.id {
				km := haversineKm(float64(float32(prev.lat)), float64(float32(prev.lon)), p.lat, p.lon)
				dt := at.Sub(prevT)
				speed := math.Inf(1)
				if dt > 0 {
					speed = km / dt.Hours()
				}
				if dt <= 6*time.Hour && km >= 2 && speed > 200 {
					firstModel = i
				}
			}
			prev, prevT = p, at
			e := event.Event{ID: fmt.Sprint(i), Type: event.TypeCheckpointPass, DeviceID: p.id, Time: at, Lat: p.lat, Lon: p.lon,
				Plate: "鄂F12345", PlateValid: true}
			out := eng.Process(at, &e, nil)
			if len(out) > 0 && out[0].Status == event.AlertFiring && firstEngine < 0 {
				firstEngine = i
			}
		}
		if firstModel != firstEngine {
			t.Fatalf("round %d: model fires at %d, engine at %d", round, firstModel, firstEngine)
		}
		if firstModel >= 0 {
			fired++
		}
	}
	if fired < 100 || fired > 900 {
		t.Errorf("%d of 1000 rounds fired: the random streams do not probe both sides of the rule", fired)
	}
}

// TestSequenceAgainstModel compares the sequence kind with a direct
// reading of its definition on random in-order streams of one device: it
// fires at the first B whose latest A (at or before it) is at most 10
// minutes older.
func TestSequenceAgainstModel(t *testing.T) {
	rs, err := Load([]byte(`rules:
  - id: seq
    severity: low
    sequence:
      key: device
      within: 10m
      steps:
        - {name: a, types: [device.heartbeat]}
        - {name: b, types: [camera.health]}
`), Lists{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	fired := 0
	for round := range 1000 {
		eng, _ := New(Config{}, rs, nil)
		at := t0
		firstModel, firstEngine := -1, -1
		var lastA time.Time
		for i := range 6 {
			at = at.Add(time.Duration(rng.IntN(1200)) * time.Second)
			e := event.Event{ID: fmt.Sprint(i), DeviceID: "cam-1", Time: at, Lat: 32, Lon: 112}
			if rng.IntN(3) == 0 {
				e.Type, e.Status = event.TypeCameraHealth, "blur"
				if firstModel < 0 && !lastA.IsZero() && at.Sub(lastA) <= 10*time.Minute {
					firstModel = i
				}
			} else {
				e.Type = event.TypeDeviceHeartbeat
				lastA = at
			}
			out := eng.Process(at, &e, nil)
			if len(out) > 0 && out[0].Status == event.AlertFiring && firstEngine < 0 {
				firstEngine = i
			}
		}
		if firstModel != firstEngine {
			t.Fatalf("round %d: model fires at %d, engine at %d", round, firstModel, firstEngine)
		}
		if firstModel >= 0 {
			fired++
		}
	}
	if fired < 100 || fired > 900 {
		t.Errorf("%d of 1000 rounds fired: the random streams do not probe both sides of the rule", fired)
	}
}
