package rules

import (
	"testing"
	"time"

	"citywatch/event"
)

// TestMatchResolve checks a match rule with resolve: the "ok" event that
// the filter rejects still closes the open alert, for its own key only.
func TestMatchResolve(t *testing.T) {
	rs, err := Load([]byte(`rules:
  - id: vf
    severity: medium
    types: [camera.health]
    filter: status == "video_loss"
    match: {key: device, resolve: 'status == "ok"'}
`), Lists{})
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := New(Config{}, rs, nil)
	health := func(id, dev, status string, s int) *event.Event {
		return &event.Event{ID: id, Type: event.TypeCameraHealth, DeviceID: dev, Status: status, Time: t0.Add(time.Duration(s) * time.Second)}
	}
	var out []event.Alert
	for _, e := range []*event.Event{
		health("1", "cam-1", "video_loss", 0),
		health("2", "cam-2", "ok", 1),
		health("3", "cam-1", "ok", 2),
	} {
		out = eng.Process(e.Time, e, out)
	}
	if len(out) != 2 || out[0].Status != event.AlertFiring || out[1].Status != event.AlertResolved || out[1].ID != out[0].ID {
		t.Fatalf("got %+v", keysOf(out))
	}
}
