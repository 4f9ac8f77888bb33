package e2e

import (
	"strings"
	"testing"
	"time"

	"citywatch/dispatch"
	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/simulators"
)

// TestScenarioDispatchGroundTruth closes the loop of the default scenario
// in simulated time, in process: the simulated city's events through the
// rule pack, its alerts to the dispatcher, the dispatcher's orders to the
// simulated units, their answers and positions back to the dispatcher.
// The dispatcher's own planted incidents must come out as the truth says:
// a circle left without units raises dispatch.coverage_gap and one left
// 90 s does not; a fight beyond every unit's reach raises
// dispatch.sla_breach and one at a circle's centre, reached in time, does
// not. (The other rules are checked by TestScenarioGroundTruth.)
func TestScenarioDispatchGroundTruth(t *testing.T) {
	c, err := city.Default()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := simulators.LoadScenario(simulators.DefaultScenario)
	if err != nil {
		t.Fatal(err)
	}
	d := 70 * time.Minute
	cfg := simulators.Config{Seed: 1, Scale: 0.02, Start: simulators.DefaultStart, Duration: d}
	sim, err := simulators.New(c, cfg, sc)
	if err != nil {
		t.Fatal(err)
	}
	pseud, err := event.NewPseudonymizer([]byte("scenario-test-pseudonym-key"))
	if err != nil {
		t.Fatal(err)
	}
	sim.Truth.Pseudonymize(pseud)
	eng := newScenarioEngine(t, c, sc, pseud)
	disp, err := dispatch.NewEngine(dispatch.Config{}, c, dispatch.NewMetrics(nil), nil)
	if err != nil {
		t.Fatal(err)
	}

	var raw event.Decoder
	var now time.Time
	raw.Now = func() time.Time { return now }
	var ev event.Event
	var ruleOut []event.Alert
	var out dispatch.Out
	var alerts []simulators.Alert
	statuses := map[event.DispatchStatus]int{}
	keep := func(a *event.Alert) {
		b := a.AppendJSON(nil)
		sa, err := simulators.ParseAlert(b)
		if err != nil {
			t.Fatal(err)
		}
		alerts = append(alerts, sa)
	}
	// route hands what the dispatcher decided to the units and keeps its
	// alerts, as the topics would.
	route := func() {
		for i := range out.Dispatches {
			dd := out.Dispatches[i]
			statuses[dd.Status]++
			disp.Observed(&dd)
			sim.Dispatch(&dd, now)
		}
		for i := range out.Alerts {
			keep(&out.Alerts[i])
		}
		out.Reset()
	}
	for now = cfg.Start; !now.After(cfg.Start.Add(d)); now = now.Add(time.Second) {
		sim.Step(now, func(m *simulators.Message) {
			if err := raw.Decode(m.Value, &ev); err != nil {
				return // planted bad input: ingest's business
			}
			pseud.Apply(&ev)
			switch ev.Type {
			case event.TypePatrolPosition:
				disp.Position(now, &ev)
			case event.TypePatrolStatus:
				disp.Status(now, &ev, &out)
				route()
			}
			ruleOut = eng.Process(now, &ev, ruleOut)
		})
		ruleOut = eng.Advance(now, ruleOut)
		for i := range ruleOut {
			a := &ruleOut[i]
			keep(a)
			sim.NoteAlert(a)
			disp.Alert(now, a, &out)
			route()
		}
		ruleOut = ruleOut[:0]
		disp.Advance(now, &out)
		route()
	}

	dispatchRules := []string{simulators.RuleCoverageGap, simulators.RuleSLABreach}
	rep := simulators.Verify(&sim.Truth, alerts, simulators.VerifyOptions{Rules: dispatchRules})
	var b strings.Builder
	if err := rep.Write(&b, 20); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s simulated; dispatch messages by status %v\n%s", d, statuses, b.String())
	for _, r := range dispatchRules {
		var expected int
		for _, x := range rep.Rules {
			if x.Rule == r {
				expected = x.Expected
			}
		}
		if expected == 0 {
			t.Errorf("%s: nothing planted in %s", r, d)
		}
	}
	if !rep.OK() || len(rep.Duplicates) > 0 {
		t.Errorf("the dispatcher and the scenario disagree (see the report above)")
	}
	if statuses[event.DispatchOnScene] == 0 || statuses[event.DispatchCleared] == 0 {
		t.Errorf("no simulated unit reached a scene and cleared it: %v", statuses)
	}
}
