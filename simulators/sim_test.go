package simulators

import (
	"crypto/sha256"
	"fmt"
	"math"
	"testing"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

func newSim(t testing.TB, cfg Config, scenario bool) *Sim {
	t.Helper()
	var sc *Scenario
	if scenario {
		var err error
		if sc, err = LoadScenario(DefaultScenario); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(mustCity(t), cfg, sc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func digest(t testing.TB, s *Sim, d time.Duration) [32]byte {
	h := sha256.New()
	for now := s.cfg.Start; !now.After(s.cfg.Start.Add(d)); now = now.Add(250 * time.Millisecond) {
		s.Step(now, func(m *Message) {
			h.Write([]byte(m.Topic))
			h.Write(m.Key)
			h.Write(m.Value)
		})
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func TestDeterministic(t *testing.T) {
	cfg := Config{Seed: 7, Scale: 0.05, Duration: time.Hour, Faults: Faults{DupShare: 0.01, BadShare: 0.01, LateShare: 0.01, SkewShare: 0.01}}
	a := digest(t, newSim(t, cfg, true), 5*time.Minute)
	b := digest(t, newSim(t, cfg, true), 5*time.Minute)
	if a != b {
		t.Error("the same seed gave different streams")
	}
	cfg.Seed = 8
	if c := digest(t, newSim(t, cfg, true), 5*time.Minute); c == a {
		t.Error("two seeds gave the same stream")
	}
}

func TestEveryMessageDecodes(t *testing.T) {
	s := newSim(t, Config{Seed: 3, Scale: 0.05, Start: DefaultStart.Add(7 * time.Hour), Duration: time.Hour,
		Faults: Faults{DupShare: 0.01, BadShare: 0.01, LateShare: 0.01}}, true)
	recs := run(t, s, 20*time.Minute)
	types := map[string]int{}
	for i := range recs {
		r := &recs[i]
		if r.want == WantReject {
			continue
		}
		types[r.e.Type.String()]++
		if r.e.Plate != "" && !r.e.PlateValid {
			t.Errorf("invalid plate %q in %s", r.e.Plate, r.value)
		}
		if r.e.Type == event.TypeFuelPurchase && !event.ValidIDNumber(r.e.BuyerID) {
			t.Errorf("invalid ID number %q", r.e.BuyerID)
		}
		if got := TopicOf(r.e.Type, ""); r.e.Type != event.TypeDeviceHeartbeat && got != r.topic {
			t.Errorf("%s on topic %s, want %s", r.e.Type, r.topic, got)
		}
		if r.key != r.e.DeviceID {
			t.Errorf("key %q, device %q", r.key, r.e.DeviceID)
		}
	}
	for _, typ := range []string{"camera.detection", "camera.health", "checkpoint.pass", "fuel.purchase", "drone.telemetry",
		"patrol.position", "device.heartbeat"} {
		if types[typ] == 0 {
			t.Errorf("no %s in 20 minutes", typ)
		}
	}
	if s.Stats.Dups == 0 || s.Stats.Bad == 0 || s.Stats.Late == 0 {
		t.Errorf("faults missing: %+v", s.Stats)
	}
}

// TestFaultRates checks that faults come at their configured shares.
func TestFaultRates(t *testing.T) {
	s := newSim(t, Config{Seed: 5, Scale: 0.05, Faults: Faults{DupShare: 0.02, BadShare: 0.01, LateShare: 0.03}}, false)
	run(t, s, 10*time.Minute)
	n := float64(s.Stats.Total())
	for _, tc := range []struct {
		name      string
		got, want float64
	}{
		{"dup", float64(s.Stats.Dups), 0.02 * n},
		{"bad", float64(s.Stats.Bad), 0.01 * n},
		{"late", float64(s.Stats.Late), 0.03 * n},
	} {
		if math.Abs(tc.got-tc.want) > 0.05*tc.want {
			t.Errorf("%s: %v, want %v ± 5%%", tc.name, tc.got, tc.want)
		}
	}
}

// TestRates checks that every kind of event comes at its configured rate,
// within 5 %, over two simulated hours of the morning peak.
func TestRates(t *testing.T) {
	if testing.Short() {
		t.Skip("two simulated hours")
	}
	start := DefaultStart.Add(6 * time.Hour)
	d := 2 * time.Hour
	cfg := Config{Seed: 11, Scale: 0.2, Start: start, Fuel: FuelConfig{PurchasesPerHour: 60}}
	s := newSim(t, cfg, false)
	for now := start; now.Before(start.Add(d)); now = now.Add(time.Second) {
		s.Step(now, func(*Message) {})
	}
	cfg.SetDefaults()
	nCam := float64(len(s.all[city.KindCamera]))
	nTerm := float64(len(s.all[city.KindFuelTerminal]))
	nFixed := nCam + nTerm + float64(len(s.all[city.KindCheckpoint]))
	if len(s.all[city.KindCheckpoint]) != 110 || len(s.all[city.KindUnit]) != 300 || len(s.all[city.KindDrone]) != 20 {
		t.Errorf("checkpoints, units and drones are thinned by scale")
	}
	wantDet := 0.0
	for _, g := range s.Cameras.groups {
		wantDet += float64(len(g.cams)) * cfg.Camera.DetectionsPerHour / 3600 * g.rhythm.Integral(start, start.Add(d))
	}
	hours := d.Hours()
	for _, tc := range []struct {
		name      string
		got, want float64
	}{
		{"camera detections", float64(s.Cameras.Detections), wantDet},
		{"trips", float64(s.Checkpoints.starts.n), cfg.Checkpoint.TripsPerHour * cfg.Scale / 3600 * rhythmTraffic.Integral(start, start.Add(d))},
		{"fuel purchases", float64(s.Fuel.Purchases), nTerm * cfg.Fuel.PurchasesPerHour / 3600 * rhythmFuel.Integral(start, start.Add(d))},
		{"heartbeats", float64(s.Stats.ByType["device.heartbeat"]), nFixed * hours * 60},
		{"patrol positions", float64(s.Patrol.Positions), float64(len(s.all[city.KindUnit])) * d.Seconds() / 5},
	} {
		if math.Abs(tc.got-tc.want) > 0.05*tc.want {
			t.Errorf("%s: %.0f, want %.0f ± 5%%", tc.name, tc.got, tc.want)
		} else {
			t.Logf("%s: %.0f, want %.0f", tc.name, tc.got, tc.want)
		}
	}
	if skipped := float64(s.Checkpoints.Skipped) / float64(s.Checkpoints.starts.n); skipped > 0.01 {
		t.Errorf("%.1f%% of trips found no free vehicle", skipped*100)
	}
}

// TestPlantedIncidents runs the default scenario for an hour and checks
// that every planted event, silence and busy window shows in the output.
func TestPlantedIncidents(t *testing.T) {
	s := newSim(t, Config{Seed: 1, Scale: 0.1, Duration: 3 * time.Hour}, true)
	recs := run(t, s, time.Hour)
	seen := map[string]bool{}
	last := map[string]time.Time{}
	gaps := map[string][]time.Duration{}
	busy := map[string]int{}
	for i := range recs {
		e := &recs[i].e
		seen[e.ID] = true
		if p, ok := last[e.DeviceID]; ok {
			gaps[e.DeviceID] = append(gaps[e.DeviceID], e.Time.Sub(p))
		}
		last[e.DeviceID] = e.Time
		if e.Status == "busy" {
			busy[e.DeviceID]++
		}
	}
	// The devices of a silent site are near misses of their own alerts:
	// the site alert stands for them.
	inSite := map[string]bool{}
	sites := s.City.SiteDevices()
	for _, x := range s.Truth.Expect {
		if x.Rule == RuleOffline && x.Subject.Kind == "area" {
			for _, id := range sites[x.Subject.ID] {
				inSite[id] = true
			}
		}
	}
	rules := map[string]bool{}
	for _, x := range s.Truth.Expect {
		if x.From.After(s.cfg.Start.Add(time.Hour)) {
			continue
		}
		rules[x.Rule] = true
		for _, id := range x.Evidence {
			if !seen[id] {
				t.Errorf("%s %v: planted event %s missing", x.Rule, x.Subject, id)
			}
		}
		switch x.Rule {
		case RuleOffline, RuleLinkLost:
			if x.Subject.Kind != "device" {
				continue
			}
			longest := time.Duration(0)
			for _, g := range gaps[x.Subject.ID] {
				longest = max(longest, g)
			}
			switch {
			case x.Rule == RuleOffline && x.Raise && longest < 5*time.Minute:
				t.Errorf("%s: longest silence %s", x.Subject.ID, longest)
			case x.Rule == RuleOffline && !x.Raise && longest >= 5*time.Minute && !inSite[x.Subject.ID]:
				t.Errorf("near miss %s: silent for %s", x.Subject.ID, longest)
			case x.Rule == RuleLinkLost && x.Raise && longest < 30*time.Second:
				t.Errorf("drone %s: longest silence %s", x.Subject.ID, longest)
			}
		case RuleCoverageGap:
			for _, u := range s.City.Circle(x.Subject.ID).Units {
				if busy[u] == 0 {
					t.Errorf("unit %s of %s never busy", u, x.Subject.ID)
				}
			}
		}
	}
	for _, r := range []string{RuleHotlist, RuleCloned, RuleCompanion, RuleWatchlist, RuleBulkRepeat, RuleBulkNoPermit,
		RuleCrowd, RuleViolence, RuleOffline, RuleVideoFault, RuleDroneDetect, RuleLinkLost, RuleCoverageGap} {
		if !rules[r] {
			t.Errorf("no %s planted in the first hour", r)
		}
	}
	// Background devices are never silent for 5 minutes.
	planted := map[string]bool{}
	for _, x := range s.Truth.Expect {
		planted[x.Subject.ID] = true
	}
	for dev, gs := range gaps {
		for _, g := range gs {
			if g >= 5*time.Minute && !planted[dev] {
				if d := s.City.Device(dev); d != nil && d.Kind != city.KindDrone {
					t.Errorf("background device %s silent for %s", dev, g)
				}
			}
		}
	}
}

func TestScenarioTruth(t *testing.T) {
	s := newSim(t, Config{Seed: 1, Start: DefaultStart, Duration: 24 * time.Hour}, true)
	raise, miss := map[string]int{}, map[string]int{}
	for _, x := range s.Truth.Expect {
		if x.To.Before(x.From) {
			t.Errorf("%s %v: window ends before it starts", x.Rule, x.Subject)
		}
		if x.Raise {
			raise[x.Rule]++
		} else {
			miss[x.Rule]++
		}
	}
	for r := range planters {
		if raise[r] == 0 || miss[r] == 0 {
			t.Errorf("%s: %d to raise, %d near misses in a day", r, raise[r], miss[r])
		}
	}
	key, _ := event.NewPseudonymizer([]byte("0123456789abcdef0123"))
	s.Truth.Pseudonymize(key)
	for _, x := range s.Truth.Expect {
		if x.Subject.Kind == "person" && (x.Subject.ID == "" || x.Subject.BuyerID != "") {
			t.Errorf("person subject not pseudonymised: %+v", x.Subject)
		}
	}
}

func TestScenarioRejects(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"unknown rule", "incidents: [{rule: vehicle.teleport}]"},
		{"unknown field", "colour: red"},
		{"plate not on hotlist", "incidents: [{rule: vehicle.hotlist, plate: 鄂F12345}]"},
		{"bad plate", "hotlist: [{plate: 鄂F1}]"},
		{"bad id", `watchlist: [{buyer_id: "420606198503142010"}]`},
		{"at past repeat", "repeat: 1h\nincidents: [{rule: camera.violence, at: 2h}]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseScenario([]byte(tc.in)); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"scale", Config{Scale: 1.5}},
		{"rate", Config{Rate: -1}},
		{"fault share", Config{Faults: Faults{DupShare: 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults()
			if tc.cfg.Validate() == nil {
				t.Error("accepted")
			}
		})
	}
}

// BenchmarkSim measures how many events per second one core generates and
// encodes at full city scale during the morning peak.
func BenchmarkSim(b *testing.B) {
	s := newSim(b, Config{Seed: 1, Start: DefaultStart.Add(8 * time.Hour)}, true)
	now := s.cfg.Start
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		now = now.Add(100 * time.Millisecond)
		s.Step(now, func(*Message) { n++ })
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(n)/now.Sub(s.cfg.Start).Seconds(), "city-events/s")
}

func TestClockFaults(t *testing.T) {
	cfg := Config{Seed: 9, Faults: Faults{SkewShare: 0.2, DriftShare: 0.3, JumpShare: 0.1}}
	cfg.SetDefaults()
	var skewed, drifting, jumping, n int
	for i := range 20000 {
		id := fmt.Sprintf("cam-%05d", i)
		n++
		c := newClockFault(cfg, id)
		if c == nil {
			continue
		}
		if c.skew != 0 {
			skewed++
			if c.skew < -cfg.Faults.SkewMax || c.skew > cfg.Faults.SkewMax {
				t.Errorf("%s: skew %s beyond ±%s", id, c.skew, cfg.Faults.SkewMax)
			}
		}
		if c.drift != 0 {
			drifting++
			day := c.offset(cfg.Start, cfg.Start.Add(24*time.Hour)) - c.offset(cfg.Start, cfg.Start)
			if c.jumpAt.IsZero() && (day < -18*time.Second || day > 18*time.Second) { // 200 ppm of a day is 17.3 s
				t.Errorf("%s: drifted %s in a day", id, day)
			}
		}
		if !c.jumpAt.IsZero() {
			jumping++
			before := c.offset(cfg.Start, c.jumpAt.Add(-time.Millisecond))
			after := c.offset(cfg.Start, c.jumpAt)
			if got := after - before; got-c.jumpBy > time.Millisecond || c.jumpBy-got > time.Millisecond {
				t.Errorf("%s: clock moved %s at the jump, want %s", id, got, c.jumpBy)
			}
		}
	}
	for _, x := range []struct {
		name string
		got  int
		want float64
	}{{"skewed", skewed, 0.2}, {"drifting", drifting, 0.3}, {"jumping", jumping, 0.1}} {
		if share := float64(x.got) / float64(n); share < x.want*0.9 || share > x.want*1.1 {
			t.Errorf("%s: %.3f of devices, want %.2f ± 10 %%", x.name, share, x.want)
		}
	}
}
