package e2e

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
	"citywatch/rules"
	"citywatch/simulators"
)

var (
	scenarioHours = flag.Float64("scenario.hours", 3.5, "simulated hours of TestScenarioGroundTruth")
	scenarioScale = flag.Float64("scenario.scale", 0.02, "share of the cameras and fuel terminals in TestScenarioGroundTruth")
)

// TestScenarioGroundTruth runs the default scenario through event
// decoding, pseudonymisation and the default rule pack in process, as
// ingest and the rules role do, and checks the alerts against the
// scenario's truth: every planted incident raises its alert exactly once
// and no near miss raises one. dispatch.coverage_gap belongs to the
// dispatcher, not to the rule pack, and is not checked here.
//
// The default run is 3.5 simulated hours from Thursday midnight at 2 % of
// the cameras and fuel terminals: the first round of the scenario whole
// (the night intrusion at 02:10 among it) and the start of the second,
// where a watched buyer's second purchase within a day must update the
// first alert rather than raise another. It takes about 4 s, 40 s with
// -race on two cores. With CITYWATCH_SCENARIO_OUT set to a directory it
// leaves truth.json and alerts.jsonl there, for citywatch sim verify.
func TestScenarioGroundTruth(t *testing.T) {
	c, err := city.Default()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := simulators.LoadScenario(simulators.DefaultScenario)
	if err != nil {
		t.Fatal(err)
	}
	d := time.Duration(*scenarioHours * float64(time.Hour))
	cfg := simulators.Config{Seed: 1, Scale: *scenarioScale, Start: simulators.DefaultStart, Duration: d}
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

	// Ingest's path: decode the device message, pseudonymise, write the
	// normalised form; the rules role decodes it. The run has no faults,
	// so no resent ids to drop.
	var raw, norm event.Decoder
	var now time.Time
	raw.Now = func() time.Time { return now }
	norm.Now = raw.Now
	var ev, in event.Event
	var buf []byte
	var out []event.Alert
	// Alerts go through their wire form, as citywatch sim verify reads
	// them from the alerts topic.
	var alerts []simulators.Alert
	var lines []byte
	collect := func() {
		for i := range out {
			at := len(lines)
			lines = out[i].AppendJSON(lines)
			a, err := simulators.ParseAlert(lines[at:])
			if err != nil {
				t.Fatal(err)
			}
			alerts = append(alerts, a)
			lines = append(lines, '\n')
		}
		out = out[:0]
	}
	events := 0
	started := time.Now()
	for now = cfg.Start; !now.After(cfg.Start.Add(d)); now = now.Add(time.Second) {
		sim.Step(now, func(m *simulators.Message) {
			if err := raw.Decode(m.Value, &ev); err != nil {
				if m.Want != simulators.WantReject {
					t.Fatalf("simulated message rejected: %v\n%s", err, m.Value)
				}
				return
			}
			pseud.Apply(&ev)
			buf = event.AppendJSON(buf[:0], &ev)
			if err := norm.DecodeNormalized(buf, &in); err != nil {
				t.Fatalf("normalised event rejected: %v\n%s", err, buf)
			}
			out = eng.Process(now, &in, out)
			events++
		})
		out = eng.Advance(now, out)
		collect()
	}
	elapsed := time.Since(started)

	rep := simulators.Verify(&sim.Truth, alerts, simulators.VerifyOptions{Rules: eng.RuleSet().Rules()})
	var b strings.Builder
	if err := rep.Write(&b, 0); err != nil {
		t.Fatal(err)
	}
	st := eng.Stats()
	t.Logf("%s simulated at scale %v: %d events, %d alert messages, %d late, in %s\n%s", d, cfg.Scale, events, st.Alerts, st.Late, elapsed.Round(time.Millisecond), b.String())
	if len(sim.Truth.Skipped) > 0 {
		t.Logf("skipped incidents: %s", strings.Join(sim.Truth.Skipped, "; "))
	}
	if dir := os.Getenv("CITYWATCH_SCENARIO_OUT"); dir != "" {
		writeScenarioRun(t, dir, sim, lines)
	}
	if !rep.OK() || len(rep.Duplicates) > 0 {
		t.Errorf("the rule engine and the scenario disagree (see the report above)")
	}
	t.Run("from the alerts topic", func(t *testing.T) {
		got := alertsThroughKafka(t, lines)
		if len(got) != len(alerts) {
			t.Fatalf("read %d alert messages back, wrote %d", len(got), len(alerts))
		}
		again := simulators.Verify(&sim.Truth, got, simulators.VerifyOptions{Rules: eng.RuleSet().Rules()})
		if d := cmp.Diff(rep.Rules, again.Rules); d != "" {
			t.Errorf("report from the topic differs (- from the engine, + from the topic):\n%s", d)
		}
	})
	// Every rule of the pack is planted and checked in these hours.
	for _, r := range eng.RuleSet().Rules() {
		if !slices.ContainsFunc(rep.Rules, func(x simulators.RuleReport) bool { return x.Rule == r && x.Expected > 0 }) {
			t.Errorf("%s: no incident planted in %s", r, d)
		}
	}
}

// newScenarioEngine returns an engine running the default rule pack with
// the scenario's hotlist and watchlist and the city's zones, sites and
// circles.
func newScenarioEngine(t *testing.T, c *city.City, sc *simulators.Scenario, p *event.Pseudonymizer) *rules.Engine {
	t.Helper()
	hot, err := rules.LoadHotlist(bytes.NewReader(sc.HotlistCSV()))
	if err != nil {
		t.Fatal(err)
	}
	watch, err := rules.LoadWatchlist(bytes.NewReader(sc.WatchlistCSV()), p)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Load(rules.DefaultRules(), rules.Lists{Hotlist: hot, Watchlist: watch})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rules.CityConfig(c)
	eng, err := rules.New(cfg, rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// writeScenarioRun keeps the truth and the alerts of a run, for
// `citywatch sim verify --truth … --alerts …`.
func writeScenarioRun(t *testing.T, dir string, sim *simulators.Sim, alerts []byte) {
	t.Helper()
	tb, err := sim.Truth.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "truth.json"), tb, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.jsonl"), alerts, 0o600); err != nil {
		t.Fatal(err)
	}
}

// alertsThroughKafka writes alert messages (JSON lines) to the alerts
// topic of an in-process broker, keyed by alert id as the rules role
// writes them, and reads them back as citywatch sim verify does.
func alertsThroughKafka(t *testing.T, lines []byte) []simulators.Alert {
	t.Helper()
	kc := kafkatest.Broker(t, 4)
	if err := kafkaio.EnsureTopics(t.Context(), kc, kafkaio.TopicAlerts); err != nil {
		t.Fatal(err)
	}
	topic := kc.Topic(kafkaio.TopicAlerts)
	var msgs []kafka.Message
	for line := range bytes.Lines(lines) {
		line = bytes.TrimSuffix(line, []byte("\n"))
		a, err := simulators.ParseAlert(line)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Topic: topic, Key: []byte(a.ID), Value: line})
	}
	w := kc.NewWriter()
	defer w.Close()
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	got, bad, err := simulators.ReadAlertsTopic(ctx, kc, topic)
	if err != nil {
		t.Fatal(err)
	}
	if bad > 0 {
		t.Errorf("%d messages read back are not alerts", bad)
	}
	return got
}
