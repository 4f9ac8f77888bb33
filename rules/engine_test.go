package rules

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"citywatch/event"
)

var t0 = time.Date(2026, 11, 26, 8, 0, 0, 0, time.FixedZone("CST", 8*3600))

type alertKey struct {
	ID, Rule string
	Status   event.AlertStatus
	Subject  event.Subject
	Evidence string
}

func keysOf(as []event.Alert) []alertKey {
	out := make([]alertKey, len(as))
	for i, a := range as {
		out[i] = alertKey{a.ID, a.Rule, a.Status, a.Subject, strings.Join(a.Evidence, ",")}
	}
	return out
}

// TestReplayAtAnySpeed feeds one recorded stream live (wall clock = event
// time, a tick every simulated second) and as fast as possible (the whole
// hour in a few wall-clock milliseconds): the alerts, and their ids, are
// the same.
func TestReplayAtAnySpeed(t *testing.T) {
	rs, err := DefaultRuleSet(testPseudonymizer(t))
	if err != nil {
		t.Fatal(err)
	}
	evs := cityStream(7, 200_000, t0, 2*time.Millisecond)
	run := func(wall func(i int) time.Time) []event.Alert {
		eng, err := New(Config{Zones: benchZones()}, rs, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []event.Alert
		for i := range evs {
			out = eng.Process(wall(i), &evs[i], out)
			if i%50 == 0 {
				out = eng.Advance(wall(i), out)
			}
		}
		return out
	}
	live := run(func(i int) time.Time { return evs[i].Time })
	fast := run(func(i int) time.Time { return t0.Add(time.Duration(i) * 10 * time.Nanosecond) })
	if len(live) == 0 {
		t.Fatal("no alerts")
	}
	if diff := cmp.Diff(keysOf(live), keysOf(fast)); diff != "" {
		t.Errorf("replay differs from live (-live +fast):\n%s", diff)
	}
}

func crowdEvent(id string, at time.Time) *event.Event {
	return &event.Event{ID: id, Type: event.TypeCameraDetection, DeviceID: "cam-1", Time: at,
		Object: "person", Count: 60, Confidence: 1, CameraClass: "A"}
}

// TestOfferKeepsState checks hot reload: an unchanged rule keeps its
// window and open alerts; a changed rule starts afresh and resolves what it
// had open; a removed rule resolves its open alerts.
func TestOfferKeepsState(t *testing.T) {
	file := func(count int) []byte {
		return fmt.Appendf(nil, `rules:
  - {id: crowd, severity: high, types: [camera.detection], filter: 'count >= 50', threshold: {key: device, window: 5m, count: %d}}
  - {id: fights, severity: high, types: [camera.detection], filter: 'behavior == "fight"', match: {}}
`, count)
	}
	rs1, err := Load(file(3), Lists{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := New(Config{}, rs1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Alert
	out = eng.Process(t0, crowdEvent("a", t0), out)
	out = eng.Process(t0, crowdEvent("b", t0.Add(time.Minute)), out)

	same, _ := Load(file(3), Lists{})
	eng.Offer(same)
	out = eng.Process(t0, crowdEvent("c", t0.Add(2*time.Minute)), out)
	if len(out) != 1 || out[0].Status != event.AlertFiring || strings.Join(out[0].Evidence, ",") != "a,b,c" {
		t.Fatalf("after reloading the same rules: %+v, want one firing alert with a,b,c", keysOf(out))
	}

	changed, _ := Load(file(4), Lists{})
	eng.Offer(changed)
	out = eng.Process(t0, crowdEvent("d", t0.Add(3*time.Minute)), out[:0])
	if len(out) != 1 || out[0].Status != event.AlertResolved || out[0].Rule != "crowd" {
		t.Fatalf("after changing the rule: %+v, want the open alert resolved and no new one", keysOf(out))
	}
	if s := eng.Stats(); s.Reloads != 2 {
		t.Errorf("reloads = %d, want 2", s.Reloads)
	}

	gone, _ := Load([]byte("rules:\n  - {id: fights, severity: high, types: [camera.detection], filter: 'behavior == \"fight\"', match: {}}\n"), Lists{})
	out = eng.Process(t0, crowdEvent("e", t0.Add(4*time.Minute)), out[:0])
	out = eng.Process(t0, crowdEvent("f", t0.Add(4*time.Minute)), out[:0])
	out = eng.Process(t0, crowdEvent("g", t0.Add(4*time.Minute)), out[:0])
	if len(out) != 1 || out[0].Status != event.AlertFiring {
		t.Fatalf("4 reports under count 4: %+v", keysOf(out))
	}
	eng.Offer(gone)
	out = eng.Advance(t0, out[:0])
	if len(out) != 1 || out[0].Status != event.AlertResolved || out[0].Rule != "crowd" {
		t.Fatalf("after removing the rule: %+v, want its alert resolved", keysOf(out))
	}
}

func TestLateEventsCounted(t *testing.T) {
	rs, _ := Load([]byte("rules:\n  - {id: any, severity: low, match: {}}\n"), Lists{})
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	eng, err := New(Config{Limits: Limits{Lateness: 10 * time.Second}}, rs, m)
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Alert
	out = eng.Process(t0, crowdEvent("a", t0.Add(time.Minute)), out)
	out = eng.Process(t0, crowdEvent("b", t0.Add(50*time.Second)), out) // 10 s behind: on time
	out = eng.Process(t0, crowdEvent("c", t0.Add(49*time.Second)), out) // late
	if eng.Stats().Late != 1 {
		t.Errorf("late = %d, want 1", eng.Stats().Late)
	}
	if got := metricValue(m.late); got != 1 {
		t.Errorf("citywatch_rules_late_events_total = %v, want 1", got)
	}
	if len(out) != 2 {
		t.Errorf("alerts = %d, want 2 (the late event raises nothing)", len(out))
	}
	if !eng.Watermark().Equal(t0.Add(50 * time.Second)) {
		t.Errorf("watermark = %v", eng.Watermark())
	}
	// While idle the watermark moves on with the wall clock.
	eng.Advance(t0.Add(30*time.Second), nil)
	if !eng.Watermark().Equal(t0.Add(80 * time.Second)) {
		t.Errorf("watermark after 30 s idle = %v, want %v", eng.Watermark(), t0.Add(80*time.Second))
	}
}

// TestStateMetrics checks the state metrics: sizes per rule, no keys in
// labels.
func TestStateMetrics(t *testing.T) {
	rs, err := DefaultRuleSet(testPseudonymizer(t))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	eng, err := New(Config{}, rs, NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	evs := cityStream(3, 20_000, t0, time.Millisecond)
	var out []event.Alert
	for i := range evs {
		out = eng.Process(evs[i].Time, &evs[i], out[:0])
	}
	eng.Advance(evs[len(evs)-1].Time, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
		if !strings.HasPrefix(mf.GetName(), "citywatch_rules_") {
			t.Errorf("metric %s outside citywatch_rules_", mf.GetName())
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if strings.Contains(l.GetValue(), "鄂") || strings.HasPrefix(l.GetValue(), "cam-") {
					t.Errorf("%s has a key in label %s=%s", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
	for _, name := range []string{"citywatch_rules_state_keys", "citywatch_rules_state_bytes", "citywatch_rules_alerts_total"} {
		if !seen[name] {
			t.Errorf("metric %s missing", name)
		}
	}
	if got := metricValue(eng.runs[1].m.keys); got == 0 {
		t.Error("vehicle.cloned_plate holds no keys")
	}
}

// TestBytesPerPlate checks the aim of at most 256 bytes per tracked plate
// in the plate-keyed rules.
func TestBytesPerPlate(t *testing.T) {
	rs, err := DefaultRuleSet(testPseudonymizer(t))
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := New(Config{}, rs, nil)
	const plates = 100_000
	var out []event.Alert
	for i := range plates {
		plate, ok := event.NormalizePlate(fmt.Sprintf("鄂F%05d", i))
		if !ok {
			t.Fatal(plate)
		}
		e := &event.Event{ID: fmt.Sprintf("e-%08d", i), Type: event.TypeCheckpointPass, DeviceID: fmt.Sprintf("kk-%03d", i%110),
			Time: t0.Add(time.Duration(i) * time.Millisecond), Lat: 32, Lon: 112, Plate: plate, PlateValid: true,
			Lane: 1, PlateColor: "blue", VehicleType: "car", Confidence: 1}
		out = eng.Process(e.Time, e, out[:0])
	}
	for _, id := range []string{"vehicle.cloned_plate", "vehicle.companion"} {
		keys, bytes := eng.StateSize(id)
		if keys != plates {
			t.Errorf("%s: %d keys, want %d", id, keys, plates)
		}
		per := bytes / keys
		t.Logf("%s: %d bytes per plate", id, per)
		if per > 256 {
			t.Errorf("%s: %d bytes per plate, aim ≤ 256", id, per)
		}
	}
}

// TestMaxKeysBound checks that a full table evicts the oldest key.
func TestMaxKeysBound(t *testing.T) {
	rs, _ := Load([]byte("rules:\n  - {id: v, severity: low, velocity: {max_kmh: 200, within: 1h}}\n"), Lists{})
	eng, _ := New(Config{Limits: Limits{MaxKeys: 1000}}, rs, nil)
	for i := range 5000 {
		e := &event.Event{ID: fmt.Sprint(i), Type: event.TypeCheckpointPass, DeviceID: "kk", Time: t0.Add(time.Duration(i) * time.Millisecond),
			Plate: fmt.Sprintf("鄂F%05d", i), PlateValid: true}
		eng.Process(e.Time, e, nil)
	}
	if keys, _ := eng.StateSize("v"); keys != 1000 {
		t.Errorf("keys = %d, want 1000", keys)
	}
}

func TestProcessAllocs(t *testing.T) {
	rs, err := DefaultRuleSet(testPseudonymizer(t))
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := New(Config{Zones: benchZones()}, rs, nil)
	evs := cityStream(5, 50_000, t0, time.Millisecond)
	out := make([]event.Alert, 0, 16)
	for i := range evs {
		out = eng.Process(evs[i].Time, &evs[i], out[:0])
	}
	// The same events again, one span later: every key is known.
	for i := range evs {
		evs[i].Time = evs[i].Time.Add(50 * time.Second)
	}
	// A heartbeat of a known camera and a pass of a known plate at its
	// usual place allocate nothing.
	var hb, pass *event.Event
	for i := range evs {
		switch {
		case hb == nil && evs[i].Type == event.TypeDeviceHeartbeat:
			hb = &evs[i]
		case pass == nil && evs[i].Type == event.TypeCheckpointPass:
			pass = &evs[i]
		}
	}
	for _, e := range []*event.Event{hb, pass} {
		// Fill the place's ring of recent passes once, as a running
		// engine has.
		for range 1100 {
			e.Time = e.Time.Add(time.Millisecond)
			out = eng.Process(e.Time, e, out[:0])
		}
		n := testing.AllocsPerRun(100, func() {
			e.Time = e.Time.Add(time.Millisecond)
			out = eng.Process(e.Time, e, out[:0])
		})
		if n != 0 {
			t.Errorf("%s: %v allocations per event", e.Type, n)
		}
	}
}

func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return -1
}

// TestClockAheadDoesNotMakeOthersLate feeds the events of a device whose
// clock runs a minute ahead among those of a right one: the watermark
// takes the fast clock's events at their receipt, so the right device's
// events stay on time and its fight raises its alert.
func TestClockAheadDoesNotMakeOthersLate(t *testing.T) {
	rs, err := DefaultRuleSet(testPseudonymizer(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, received := range []bool{true, false} {
		eng, _ := New(Config{}, rs, nil)
		var out []event.Alert
		for s := 0; s < 30; s++ {
			at := t0.Add(time.Duration(s) * time.Second)
			var recv time.Time
			if received {
				recv = at.Add(50 * time.Millisecond)
			}
			fast := &event.Event{ID: fmt.Sprint("f", s), Type: event.TypeDeviceHeartbeat, DeviceID: "cam-fast", Time: at.Add(time.Minute), Lat: 32, Lon: 112}
			out = eng.ProcessReceived(at, fast, recv, out)
			right := &event.Event{ID: fmt.Sprint("r", s), Type: event.TypeDeviceHeartbeat, DeviceID: "cam-right", Time: at, Lat: 32.1, Lon: 112.1}
			if s == 29 {
				right.Type, right.CameraClass, right.Object, right.Behavior, right.Confidence = event.TypeCameraDetection, "A", "person", "fight", 0.95
			}
			out = eng.ProcessReceived(at, right, recv, out)
		}
		late, fired := eng.Stats().Late, len(out) > 0
		if received && (late != 0 || !fired) {
			t.Errorf("with receipt times: %d late, alert raised %v; want 0 late and the fight's alert", late, fired)
		}
		if !received && late == 0 {
			t.Errorf("without receipt times the fast clock should have made the right device late (the hazard this guards against)")
		}
	}
}
