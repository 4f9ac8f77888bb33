package rules

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"citywatch/event"
)

func TestCompanionAgainstModel(t *testing.T) {
	rs, err := Load([]byte("rules:\n  - {id: co, severity: low, cooccurrence: {places: 3, gap: 30s, within: 2h}}\n"), Lists{})
	if err != nil {
		t.Fatal(err)
	}
	type pass struct {
		plate, place int
		at           time.Time
	}
	const gap, within = 30 * time.Second, 2 * time.Hour
	rng := rand.New(rand.NewPCG(3, 4))
	total := 0
	for round := range 300 {
		var passes []pass
		at := t0
		perPlate := map[int]int{}
		for len(passes) < 40 {
			p := rng.IntN(6)
			if perPlate[p] == 7 { // within the history a plate keeps
				continue
			}
			perPlate[p]++
			at = at.Add(time.Duration(rng.IntN(20)) * time.Second)
			passes = append(passes, pass{p, rng.IntN(4), at})
		}
		// Model: at each pass, each plate that passed the same place
		// within gap forms a pair if, counting passes up to now within
		// the window, they share 3 places each time within gap.
		want := map[string]bool{}
		for i, cur := range passes {
			for _, o := range passes[:i] {
				if o.plate == cur.plate || o.place != cur.place || cur.at.Sub(o.at) > gap {
					continue
				}
				places := map[int]bool{}
				for _, a := range passes[:i+1] {
					for _, b := range passes[:i+1] {
						if a.plate == cur.plate && b.plate == o.plate && a.place == b.place &&
							cur.at.Sub(a.at) <= within && cur.at.Sub(b.at) <= within &&
							a.at.Sub(b.at) <= gap && b.at.Sub(a.at) <= gap {
							places[a.place] = true
						}
					}
				}
				if len(places) >= 3 {
					want[pairName(cur.plate, o.plate)] = true
				}
			}
		}
		eng, _ := New(Config{}, rs, nil)
		got := map[string]bool{}
		for i, p := range passes {
			e := &event.Event{ID: fmt.Sprint(i), Type: event.TypeCheckpointPass, DeviceID: fmt.Sprintf("kk-%d", p.place),
				Time: p.at, Plate: fmt.Sprintf("鄂F0000%d", p.plate), PlateValid: true}
			for _, a := range eng.Process(p.at, e, nil) {
				got[a.Subject.ID] = true
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("round %d: pairs differ (-model +engine):\n%s", round, diff)
		}
		total += len(want)
	}
	if total == 0 {
		t.Fatal("the random traffic formed no pair")
	}
}

func pairName(a, b int) string {
	x, y := fmt.Sprintf("鄂F0000%d", a), fmt.Sprintf("鄂F0000%d", b)
	if y < x {
		x, y = y, x
	}
	return x + "|" + y
}
