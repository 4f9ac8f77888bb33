package simulators

import (
	"testing"
	"time"

	"citywatch/event"
)

// TestGenerator checks the simple stream generator's labels: valid events
// decode, bad input is rejected, resends repeat an earlier id.
func TestGenerator(t *testing.T) {
	now := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	g := NewGenerator(GeneratorConfig{Seed: 1, BadShare: 0.1, DupShare: 0.05, LateShare: 0.1, Now: func() time.Time { return now }})
	d := event.Decoder{Now: func() time.Time { return now }}
	var e event.Event
	ids := map[string]bool{}
	for range 5000 {
		m := g.Next()
		err := d.Decode(m.Value, &e)
		switch m.Want {
		case WantReject:
			if err == nil {
				t.Fatalf("bad input accepted: %s", m.Value)
			}
		case WantEvent:
			if err != nil {
				t.Fatalf("%v: %s", err, m.Value)
			}
			ids[m.ID] = true
		case WantDuplicate:
			if err != nil || !ids[m.ID] {
				t.Fatalf("resend of unknown id %s", m.ID)
			}
		}
	}
}
