package rules

import (
	"fmt"
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

// TestAbsenceAdoptsSiteAlert restarts an engine whose replay begins after
// a whole site fell silent: the site alert read back is adopted with the
// devices it names, and their return resolves it under its own id,
// raising nothing new.
func TestAbsenceAdoptsSiteAlert(t *testing.T) {
	rs, err := DefaultRuleSet(testPseudonymizer(t))
	if err != nil {
		t.Fatal(err)
	}
	hb := func(dev string, at time.Time) *event.Event {
		return &event.Event{ID: dev + at.Format("150405"), Type: event.TypeDeviceHeartbeat, DeviceID: dev, Time: at, Lat: 32.0105, Lon: 112.1105}
	}
	devs := []string{"cam-s1", "cam-s2", "cam-s3", "cam-s4"}
	other := &event.Event{Type: event.TypeDeviceHeartbeat, DeviceID: "clock", Lat: 31.5, Lon: 111.5}

	first, _ := New(Config{}, rs, nil)
	var out []event.Alert
	at := t0
	for _, d := range devs {
		out = first.Process(at, hb(d, at), out)
	}
	// The site falls silent; another device keeps stream time moving.
	for s := 20; s <= 10*60; s += 20 {
		at = t0.Add(time.Duration(s) * time.Second)
		other.ID, other.Time = fmt.Sprint("c", s), at
		out = first.Process(at, other, out)
	}
	var site *event.Alert
	for i := range out {
		if out[i].Rule == "device.offline" && out[i].Subject.Kind == event.SubjectArea {
			site = &out[i]
		}
		if out[i].Rule == "device.offline" && out[i].Subject.Kind == event.SubjectDevice && out[i].Subject.ID != "clock" {
			t.Errorf("a device alert of the silent site: %v", out[i].Subject)
		}
	}
	if site == nil {
		t.Fatalf("no site alert: %v", keysOf(out))
	}

	// A new engine whose replay saw none of the site's devices.
	second, _ := New(Config{}, rs, nil)
	if !second.seed(site) {
		t.Fatal("site alert not seeded")
	}
	at = t0.Add(11 * time.Minute)
	other.ID, other.Time = "c-after", at
	out = second.Process(at, other, out[:0])
	second.adoptSeeded()
	for i, d := range devs {
		at = t0.Add(11*time.Minute + time.Duration(i+1)*time.Second)
		out = second.Process(at, hb(d, at), out)
	}
	out = second.Advance(at.Add(time.Minute), out)
	var resolved bool
	for _, a := range out {
		switch {
		case a.ID == site.ID && a.Status == event.AlertResolved:
			resolved = true
		case a.Rule == "device.offline" && a.Subject.ID != "clock" && a.Status == event.AlertFiring:
			t.Errorf("raised again after the restart: %v %v", a.Subject, a.Status)
		}
	}
	if !resolved {
		t.Errorf("the adopted site alert %s was not resolved when its devices came back: %v", site.ID, keysOf(out))
	}
}
