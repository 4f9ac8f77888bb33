package rules

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"citywatch/event"
)

// TestThresholdAgainstModel compares the threshold kind with a direct
// reading of its definition on random in-order streams: it fires at the
// first event that closes a window of the rule's length holding count
// events.
func TestThresholdAgainstModel(t *testing.T) {
	rs, err := Load([]byte("rules:\n  - {id: th, severity: low, threshold: {key: device, window: 60s, count: 4}}\n"), Lists{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 500 {
		eng, _ := New(Config{}, rs, nil)
		at := t0
		var times []time.Time
		firstModel, firstEngine := -1, -1
		for i := range 12 {
			at = at.Add(time.Duration(rng.IntN(40)) * time.Second)
			times = append(times, at)
			if firstModel < 0 {
				n := 0
				for _, x := range times {
					if at.Sub(x) <= time.Minute {
						n++
					}
				}
				if n >= 4 {
					firstModel = i
				}
			}
			out := eng.Process(at, &event.Event{ID: fmt.Sprint(i), Type: event.TypeDeviceHeartbeat, DeviceID: "d", Time: at}, nil)
			if len(out) > 0 && out[0].Status == event.AlertFiring && firstEngine < 0 {
				firstEngine = i
			}
		}
		if firstModel != firstEngine {
			t.Fatalf("round %d: model fires at %d, engine at %d (times %v)", round, firstModel, firstEngine, times)
		}
	}
}

// TestCompanionAgainstModel compares the co-occurrence kind with a
// brute-force reading of its definition on random small traffic.
