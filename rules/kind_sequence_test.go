package rules

import (
	"testing"
	"time"

	"citywatch/event"
)

// TestSequenceRestartsAfterMatch checks that a completed sequence starts
// over: A B A B is two matches, one alert updated.
func TestSequenceRestartsAfterMatch(t *testing.T) {
	rs, err := Load([]byte(`rules:
  - id: seq
    severity: low
    sequence:
      within: 10m
      steps: [{filter: 'status == "tamper"'}, {filter: 'status == "video_loss"'}]
`), Lists{})
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := New(Config{}, rs, nil)
	var out []event.Alert
	for i, st := range []string{"tamper", "video_loss", "ok", "tamper", "video_loss"} {
		e := &event.Event{ID: st + string(rune('0'+i)), Type: event.TypeCameraHealth, DeviceID: "cam-1", Status: st, Time: t0.Add(time.Duration(i) * time.Minute)}
		out = eng.Process(e.Time, e, out)
	}
	if len(out) != 2 || out[0].Status != event.AlertFiring || out[1].Status != event.AlertUpdated {
		t.Fatalf("got %+v", keysOf(out))
	}
	if got := out[1].Evidence; len(got) != 4 {
		t.Errorf("evidence %v, want 4 ids", got)
	}
}
