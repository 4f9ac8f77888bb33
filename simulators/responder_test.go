package simulators

import (
	"fmt"
	"testing"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

func TestUnitsAnswerDispatches(t *testing.T) {
	s := newSim(t, Config{Seed: 3, Scale: 0.05}, false)
	start := s.cfg.Start
	// Twenty units, each sent 3 km from its home to an alert.
	type sent struct {
		unit, dispatch string
		lat, lon       float64
	}
	var all []sent
	for i := range 20 {
		u := s.Patrol.units[i*7]
		lat, lon := city.Offset(u.dev.Lat, u.dev.Lon, 3000, 0)
		a := event.Alert{ID: fmt.Sprintf("a%d", i), Status: event.AlertFiring, Lat: lat, Lon: lon}
		s.NoteAlert(&a)
		d := event.Dispatch{ID: fmt.Sprintf("d%d", i), AlertID: a.ID, UnitID: u.dev.ID, Status: event.DispatchAssigned, Time: start}
		s.Dispatch(&d, start)
		all = append(all, sent{u.dev.ID, d.ID, lat, lon})
	}
	answers := map[string][]string{}
	arrived := map[string]event.Event{}
	busy := 0
	for now := start; !now.After(start.Add(40 * time.Minute)); now = now.Add(time.Second) {
		s.Step(now, func(m *Message) {
			var e event.Event
			dec := event.Decoder{Now: func() time.Time { return now }}
			if err := dec.Decode(m.Value, &e); err != nil {
				t.Fatalf("%v: %s", err, m.Value)
			}
			switch e.Type {
			case event.TypePatrolStatus:
				answers[e.DispatchID] = append(answers[e.DispatchID], e.Status)
				if e.Status == "on_scene" {
					arrived[e.DispatchID] = e
				}
			case event.TypePatrolPosition:
				if e.Status == "busy" {
					busy++
				}
			}
		})
	}
	full := 0
	for _, x := range all {
		got := fmt.Sprint(answers[x.dispatch])
		switch got {
		case "[accepted en_route on_scene cleared]":
			full++
			e := arrived[x.dispatch]
			if d := city.DistanceM(e.Lat, e.Lon, x.lat, x.lon); d > 5 {
				t.Errorf("%s on scene %.0f m from the alert", x.unit, d)
			}
		case "[declined]", "[]":
		default:
			t.Errorf("%s answered %s", x.unit, got)
		}
	}
	if full < 15 || busy == 0 {
		t.Errorf("%d of 20 dispatches answered through to cleared, %d busy positions", full, busy)
	}
}

func TestReassignedUnitStops(t *testing.T) {
	s := newSim(t, Config{Seed: 3, Scale: 0.05}, false)
	start := s.cfg.Start
	u := s.Patrol.units[0]
	a := event.Alert{ID: "a", Status: event.AlertFiring, Lat: u.dev.Lat + 0.05, Lon: u.dev.Lon}
	s.NoteAlert(&a)
	d := event.Dispatch{ID: "d", AlertID: "a", UnitID: u.dev.ID, Status: event.DispatchAssigned, Time: start}
	s.Dispatch(&d, start)
	d.Status = event.DispatchReassigned
	s.Dispatch(&d, start.Add(time.Second))
	for now := start; !now.After(start.Add(time.Minute)); now = now.Add(time.Second) {
		s.Step(now, func(m *Message) {
			if m.Type == "patrol.status" {
				t.Fatalf("a reassigned unit answered: %s", m.Value)
			}
		})
	}
}
