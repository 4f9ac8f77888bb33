package rules

import (
	"testing"
	"time"

	"citywatch/event"
)

// TestAbsenceRecoverAndForget checks the hysteresis of recover (one event
// after an outage is not a recovery) and that a key silent for forget is
// no longer watched.
func TestAbsenceRecoverAndForget(t *testing.T) {
	rs, err := Load([]byte(`rules:
  - id: off
    severity: low
    absence: {for: 1m, recover: 30s, forget: 10m}
`), Lists{})
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := New(Config{}, rs, nil)
	hb := func(id, dev string, s int) *event.Event {
		return &event.Event{ID: id, Type: event.TypeDeviceHeartbeat, DeviceID: dev, Time: t0.Add(time.Duration(s) * time.Second)}
	}
	var out []event.Alert
	step := func(e *event.Event) { out = eng.Process(e.Time, e, out) }
	step(hb("a1", "a", 0))
	step(hb("b1", "b", 0))
	out = eng.Advance(t0.Add(70*time.Second), out) // a and b silent 65 s
	if len(out) != 2 {
		t.Fatalf("after 65 s: %+v, want two firing", keysOf(out))
	}
	out = out[:0]
	step(hb("a2", "a", 80))  // back, but not yet for 30 s
	step(hb("a3", "a", 100)) // 20 s
	if len(out) != 0 {
		t.Fatalf("resolved before recover: %+v", keysOf(out))
	}
	step(hb("a4", "a", 110)) // 30 s
	if len(out) != 1 || out[0].Status != event.AlertResolved || out[0].Subject.ID != "a" {
		t.Fatalf("after 30 s back: %+v, want a resolved", keysOf(out))
	}
	out = out[:0]
	out = eng.Advance(eng.lastInput.Add(15*time.Minute), out)
	if keys, _ := eng.StateSize("off"); keys != 0 {
		t.Errorf("%d keys still watched after forget", keys)
	}
	var forgotten bool
	for _, a := range out {
		if a.Subject.ID == "b" && a.Status == event.AlertResolved && a.Detail("forgotten") == true {
			forgotten = true
		}
	}
	if !forgotten {
		t.Errorf("b not resolved as forgotten: %+v", keysOf(out))
	}
}
