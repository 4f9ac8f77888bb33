package simulators

import (
	"testing"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

func TestDrones(t *testing.T) {
	s := newSim(t, Config{Seed: 8, Scale: 0.05}, false)
	evs := stepEvents(DefaultStart, DefaultStart.Add(2*time.Hour), 500*time.Millisecond, s.Drones.Step)
	last := map[string]event.Event{}
	var flying, detections int
	for i := range evs {
		e := &evs[i]
		if e.Type == event.TypeDroneDetection {
			detections++
			switch e.Behavior {
			case "fight", "crowd", "smoke_fire":
				t.Errorf("background drone detection %s", e.Behavior)
			}
			if e.Object == "person" && len(s.City.ZonesAt(e.Lat, e.Lon)) > 0 {
				t.Errorf("background person in a zone seen from the air")
			}
			continue
		}
		p, seen := last[e.DeviceID]
		last[e.DeviceID] = *e
		if e.MissionID == "dock" {
			continue
		}
		flying++
		if seen && p.MissionID == e.MissionID && e.Time.Sub(p.Time) != time.Second {
			t.Fatalf("%s: telemetry %s apart on a mission", e.DeviceID, e.Time.Sub(p.Time))
		}
		if d := s.City.Device(e.DeviceID); city.DistanceM(d.Lat, d.Lon, e.Lat, e.Lon) > 3100 {
			t.Fatalf("%s strayed from its dock", e.DeviceID)
		}
	}
	// Each drone flies 35 minutes in 50: about 70 % of 2 hours at 1 Hz.
	want := 20 * 7200 * 0.7
	if f := float64(flying); f < 0.85*want || f > 1.15*want {
		t.Errorf("%d flying reports, want about %.0f", flying, want)
	}
	if detections == 0 {
		t.Error("no drone detections")
	}
}
