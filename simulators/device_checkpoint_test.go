package simulators

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"citywatch/event"
	"citywatch/internal/city"
)

func TestRoadsConnected(t *testing.T) {
	r := NewRoads(mustCity(t))
	for a := range r.Nodes {
		for b := range r.Nodes {
			if r.Route(a, b) == nil {
				t.Fatalf("no route from %s to %s", r.Nodes[a].ID, r.Nodes[b].ID)
			}
		}
	}
}

func TestCheckpoints(t *testing.T) {
	s := newSim(t, Config{Seed: 4, Scale: 0.2, Start: DefaultStart.Add(7 * time.Hour)}, false)
	var evs []event.Event
	keep := func(e *event.Event) {
		if e.Plate != "" {
			evs = append(evs, *e)
		}
	}
	for now := s.cfg.Start; now.Before(s.cfg.Start.Add(2 * time.Hour)); now = now.Add(time.Second) {
		// Cameras too, for their plate reads.
		s.Cameras.Step(now, keep)
		s.Checkpoints.Step(now, keep)
	}
	type sighting struct {
		t        time.Time
		lat, lon float64
	}
	last := map[string]sighting{}
	var passes, ef, green, greenBad, yellowBad, other int
	for i := range evs {
		e := &evs[i]
		if e.Plate == "" {
			continue
		}
		if p, ok := last[e.Plate]; ok {
			km := city.DistanceM(p.lat, p.lon, e.Lat, e.Lon) / 1000
			if h := e.Time.Sub(p.t).Hours(); km >= 2 && km/h > 200 {
				t.Fatalf("%s: %.1f km in %s: a background cloned plate", e.Plate, km, e.Time.Sub(p.t))
			}
		}
		last[e.Plate] = sighting{e.Time, e.Lat, e.Lon}
		if e.Type != event.TypeCheckpointPass {
			continue
		}
		passes++
		if passes%50 == 0 {
			decodeOK(t, e)
		}
		switch {
		case strings.HasPrefix(e.Plate, "鄂F"):
			ef++
		case !strings.HasPrefix(e.Plate, "鄂"):
			other++
		}
		if e.PlateColor == "green" {
			green++
			if utf8.RuneCountInString(e.Plate) != 8 {
				greenBad++
			}
		}
		if (e.VehicleType == "truck" || e.VehicleType == "bus") != (e.PlateColor == "yellow") {
			yellowBad++
		}
	}
	if passes < 1000 {
		t.Fatalf("only %d passes", passes)
	}
	share := func(n int) float64 { return float64(n) / float64(passes) }
	if share(ef) < 0.65 || share(ef) > 0.85 || share(other) < 0.05 || share(other) > 0.2 || share(green) < 0.05 || greenBad > 0 || yellowBad > 0 {
		t.Errorf("plates: 鄂F %.2f, other provinces %.2f, green %.2f (%d not 8 characters), %d yellow mismatches",
			share(ef), share(other), share(green), greenBad, yellowBad)
	}
}
