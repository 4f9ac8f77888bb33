package simulators

import (
	"testing"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

func TestPatrol(t *testing.T) {
	s := newSim(t, Config{Seed: 9, Scale: 0.05}, false)
	evs := stepEvents(DefaultStart, DefaultStart.Add(30*time.Minute), time.Second, s.Patrol.Step)
	last := map[string]time.Time{}
	for i := range evs {
		e := &evs[i]
		if e.Type != event.TypePatrolPosition || e.Status != "available" {
			t.Fatalf("unexpected %+v", e)
		}
		if p, ok := last[e.DeviceID]; ok && e.Time.Sub(p) != PositionEvery {
			t.Fatalf("%s: positions %s apart", e.DeviceID, e.Time.Sub(p))
		}
		last[e.DeviceID] = e.Time
		u := s.City.Device(e.DeviceID)
		c := s.City.Circle(u.Circle)
		if d := city.DistanceM(c.Lat, c.Lon, e.Lat, e.Lon); d > c.RadiusM {
			t.Fatalf("%s is %.0f m from the centre of its circle", e.DeviceID, d)
		}
		if e.SpeedKmh > 60 {
			t.Fatalf("%s at %.0f km/h", e.DeviceID, e.SpeedKmh)
		}
	}
	if len(last) != 300 {
		t.Errorf("%d units reported, want 300", len(last))
	}
}
