package e2e

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/chtest"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
	"citywatch/rules"
	"citywatch/simulators"
	"citywatch/store"
)

var (
	crashIterations = flag.Int("crashloop.iterations", 16, "kills of TestCrashLoop, spread evenly over the four roles")
	crashEvery      = flag.Duration("crashloop.every", 2500*time.Millisecond, "mean time between two kills of TestCrashLoop")
	crashScale      = flag.Float64("crashloop.scale", 0.02, "share of the city's cameras and fuel terminals simulated in TestCrashLoop")
	crashSeed       = flag.Uint64("crashloop.seed", 0, "seed of TestCrashLoop's city, kills and probes; 0 draws one (logged)")
	crashRace       = flag.Bool("crashloop.race", false, "build TestCrashLoop's role processes with the race detector")
	crashKeep       = flag.String("crashloop.keep", "", "directory where TestCrashLoop leaves the roles' logs, truth.json, alerts.jsonl and dispatches.jsonl")
	crashLateness   = flag.Duration("crashloop.lateness", rules.DefaultLateness, "the rules' allowed lateness in TestCrashLoop (see crashConfig)")
	crashShards     = flag.Int("crashloop.shards", 0, "rules.shards of TestCrashLoop's rules process: 0 holds every key; N forwards the input to the repartition topic and evaluates its N shards")
)

const (
	// crashAcceptTimeout is the dispatcher's acceptance timeout in the
	// loop: short enough that many timers fall due while roles are being
	// killed, longer than the simulated units take to answer (3–15 s).
	crashAcceptTimeout = 20 * time.Second
	// crashDowntime is the longest a killed role stays down.
	crashDowntime = 1500 * time.Millisecond
	// crashIncidentEvery and crashProbeEvery space the planted incidents
	// and the SLA probes.
	crashIncidentEvery = 4 * time.Second
	crashProbeEvery    = 5 * time.Second
	crashPartitions    = 4
	// crashWorkers is the group members of an ingest or sink process.
	crashWorkers = 2
)

// TestCrashLoop is the "crash anywhere" proof. Each role (ingest, rules,
// dispatch, sink) runs as its own citywatch process against an in-process
// Kafka broker and the ClickHouse server; the simulated city (2 % of it,
// every patrol unit, resends and malformed input among its messages) is
// produced at its real rate, with incidents planted every few seconds,
// while the loop kills a role with SIGKILL at random moments (including
// during its start and restore) and restarts it, every role in turn. The
// simulated units answer the dispatches as people would, and SLA probes
// (alerts whose tier deadline falls within the run) are raised beside the
// rules' alerts. Once every role has run undisturbed and caught up:
//
//   - every valid event produced is stored exactly once as the store's
//     queries count it (FINAL, by id), and every malformed one is in the
//     DLQ table once;
//   - every planted incident raised exactly one alert and no near miss
//     raised one (simulators.Verify), and no alert id has two firing
//     messages on citywatch.alerts;
//   - no dispatch message was sent twice (alert, unit, state);
//   - no timer was forgotten: every assignment whose acceptance deadline
//     passed was answered or reassigned (at exactly assignment time +
//     timeout), and every dispatched alert whose SLA deadline passed has
//     a unit on scene or its dispatch.sla_breach.
//
// The in-process broker keeps the group member of a process killed while
// its join was pending, with no session timeout, holding its partitions
// unread (Kafka would time it out); the test has such a group rebalance,
// as the session timeout would, and counts the members dropped
// (crashGhosts).
//
// The default run is 16 kills in about 45 s, about 90 s in all with -race
// on two cores; -crashloop.iterations, -crashloop.every and
// -crashloop.scale make longer runs (make bench), -crashloop.seed repeats
// one (the seed is logged).
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash loop runs for about a minute and a half")
	}
	began := time.Now()
	chCfg := chtest.Config(t)
	ctx := t.Context()
	kc := kafkatest.Broker(t, crashPartitions)
	bin := crashBuild(t, *crashRace)

	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("crash loop seed %d (repeat with -args -crashloop.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0xc7a5))

	db, err := store.Open(ctx, chCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}

	// The roles, their configuration and lists.
	dir := t.TempDir()
	if *crashKeep != "" {
		dir = *crashKeep
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	key := "crash-loop-pseudonym-key-0123456789"
	pseud, err := event.NewPseudonymizer([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	roles := []*crashRole{{name: "ingest"}, {name: "rules"}, {name: "dispatch"}, {name: "sink"}}
	chaos := newCrashChaos(rng, roles, *crashIterations, *crashEvery, crashDowntime)
	load := chaos.end()
	simRun := load + crashAcceptTimeout // the last assignments of the load answered or timed out
	sc, err := crashScenario(load, crashIncidentEvery)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"hotlist.csv":   sc.HotlistCSV(),
		"watchlist.csv": sc.WatchlistCSV(),
		"config.yaml":   fmt.Appendf(nil, crashConfig, crashPartitions, crashSessionTimeout, crashRebalanceTimeout, crashWorkers, *crashLateness, *crashShards, crashAcceptTimeout, crashWorkers),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := crashEnv(map[string]string{
		"CITYWATCH_KAFKA_BROKERS":       strings.Join(kc.Brokers, ","),
		"CITYWATCH_CLICKHOUSE_ADDR":     strings.Join(chCfg.Addr, ","),
		"CITYWATCH_CLICKHOUSE_DB":       chCfg.Database,
		"CITYWATCH_CLICKHOUSE_USER":     chCfg.User,
		"CITYWATCH_CLICKHOUSE_PASSWORD": chCfg.Password,
		"CITYWATCH_PSEUDONYM_KEY":       key,
		"CITYWATCH_HOTLIST":             filepath.Join(dir, "hotlist.csv"),
		"CITYWATCH_WATCHLIST":           filepath.Join(dir, "watchlist.csv"),
		"CITYWATCH_CONFIG":              filepath.Join(dir, "config.yaml"),
		"CITYWATCH_HTTP_ADDR":           "127.0.0.1:0", // each process serves its probes on a port of its own
		"CITYWATCH_ALLOW_PLAINTEXT":     "true",
	})
	for _, r := range roles {
		r.bin, r.env, r.logPath = bin, env, filepath.Join(dir, r.name+".log")
	}
	t.Cleanup(func() {
		for _, r := range roles {
			r.stop()
		}
	})
	defer func() {
		if t.Failed() {
			for _, r := range roles {
				t.Logf("last lines of the %s log:\n%s", r.name, r.logTail(40))
			}
		}
	}()

	c, err := city.Default()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Truncate(time.Second).In(city.Location)
	sim, err := simulators.New(c, simulators.Config{Seed: seed, Scale: *crashScale, Start: start, Duration: simRun,
		Faults: simulators.Faults{DupShare: 0.01, BadShare: 0.005}}, sc)
	if err != nil {
		t.Fatal(err)
	}
	sim.Truth.Pseudonymize(pseud)
	for _, s := range sim.Truth.Skipped {
		t.Logf("skipped incident: %s", s)
	}
	for _, r := range roles {
		if err := r.start(); err != nil {
			t.Fatal(err)
		}
	}

	// The simulated units hear the alerts and their orders.
	inbox := make(chan func(), 1024)
	fctx, stopFeed := context.WithCancel(ctx)
	var feed sync.WaitGroup
	follow(fctx, &feed, kc, kafkaio.TopicAlerts, inbox, func(v []byte) func() {
		a, err := event.DecodeAlert(v)
		if err != nil {
			return nil
		}
		return func() { sim.NoteAlert(&a) }
	})
	follow(fctx, &feed, kc, kafkaio.TopicDispatches, inbox, func(v []byte) func() {
		d, err := event.DecodeDispatch(v)
		if err != nil {
			return nil
		}
		return func() { sim.Dispatch(&d, time.Now()) }
	})
	defer func() {
		stopFeed()
		feed.Wait()
	}()

	// The consumer groups of the roles, their topics and their members
	// per process.
	groups := map[string][]string{
		"citywatch-ingest":   kafkaio.RawTopics,
		"citywatch-rules":    {kafkaio.TopicEvents},
		"citywatch-dispatch": {kafkaio.TopicAlerts},
		"citywatch-sink":     {kafkaio.TopicEvents, kafkaio.TopicDLQ, kafkaio.TopicAlerts, kafkaio.TopicDispatches},
	}
	members := map[string]int{
		"citywatch-ingest": crashWorkers, "citywatch-rules": 1, "citywatch-dispatch": 1, "citywatch-sink": crashWorkers}
	watched := maps.Clone(groups)
	if *crashShards > 0 {
		// The shards' group commits nothing (its lag is not a backlog),
		// but a killed member lingers in it as in the others.
		watched["citywatch-rules"+rules.ByKeyGroupSuffix] = []string{rules.TopicByKey}
		members["citywatch-rules"+rules.ByKeyGroupSuffix] = 1
	}
	ghosts := newCrashGhostWatch(t, kc, watched, members)
	defer ghosts.wait()

	// The city in real time, 100 ms at a time; the kills and probes while
	// the load lasts, then the roles left alone.
	w := kc.NewWriter()
	defer w.Close()
	produced := &crashProduced{ids: map[string]bool{}}
	probes := 0
	nextProbe := start.Add(3 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	var batch []kafka.Message
	for now := time.Now(); now.Before(start.Add(simRun)); {
		<-tick.C
		now = time.Now()
		for drained := false; !drained; {
			select {
			case f := <-inbox:
				f()
			default:
				drained = true
			}
		}
		batch = batch[:0]
		sim.Step(now, func(m *simulators.Message) {
			produced.note(m)
			batch = append(batch, kafka.Message{Topic: kc.Topic(m.Topic), Key: []byte(string(m.Key)), Value: append([]byte(nil), m.Value...)})
		})
		elapsed := now.Sub(start)
		if elapsed < load && !now.Before(nextProbe) {
			ci := &c.Circles[rng.IntN(len(c.Circles))]
			a := crashProbe(probes, ci, now, 5*time.Second+time.Duration(rng.Float64()*float64(15*time.Second)))
			batch = append(batch, kafka.Message{Topic: kc.Topic(kafkaio.TopicAlerts), Key: []byte(a.ID), Value: a.AppendJSON(nil)})
			probes++
			nextProbe = now.Add(time.Duration((0.5 + rng.Float64()) * float64(crashProbeEvery)))
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			t.Fatalf("cannot produce: %v", err)
		}
		crashSupervise(t, roles, now)
		chaos.step(t, now, elapsed)
		ghosts.check(ctx, now)
	}
	tick.Stop()
	cut := time.Now()
	stopFeed()
	feed.Wait()

	// Every role runs undisturbed now: wait until storage holds every
	// event, every planted incident has its alert, every timer that fell
	// due has its outcome and every group has caught up, then judge.
	planted := map[string]bool{}
	for _, in := range sc.Incidents {
		planted[in.Rule] = true
	}
	rules := slices.Sorted(maps.Keys(planted))
	drain := max(3*time.Minute, load)
	deadline := time.Now().Add(drain)
	var (
		stored  crashStorage
		alerts  *crashAlerts
		disp    *crashDispatches
		rep     *simulators.Report
		timers  crashTimers
		lagging []string
		lagErr  error
	)
	for {
		now := time.Now()
		crashSupervise(t, roles, now)
		chaos.step(t, now, now.Sub(start)) // restarts only: the kills are over
		stored = crashCheckStorage(ctx, db, produced)
		alerts = crashReadAlerts(ctx, t, kc)
		disp = crashReadDispatches(ctx, t, kc)
		rep = simulators.Verify(&sim.Truth, alerts.msgs, simulators.VerifyOptions{Rules: rules})
		timers = crashCheckTimers(alerts, disp, crashAcceptTimeout, cut)
		lagging, lagErr = crashLagging(ctx, kc, groups)
		if stored.complete && len(rep.Missed) == 0 && len(timers.open) == 0 && lagErr == nil && len(lagging) == 0 {
			break
		}
		ghosts.check(ctx, now)
		if now.After(deadline) {
			t.Errorf("the run did not settle within %s of the load's end: %d events not stored (first %q), %d of %d rejected messages stored (last error: %v); %d planted incidents without their alert; %d timers without their outcome; groups lagging: %v (error: %v)",
				drain, len(stored.missing), crashFirst(stored.missing, 5), stored.rejected, stored.rejectedWant, stored.err,
				len(rep.Missed), len(timers.open), lagging, lagErr)
			for _, g := range slices.Sorted(maps.Keys(groups)) {
				t.Logf("group %s", crashDescribeGroup(ctx, kc, g))
			}
			break
		}
		time.Sleep(time.Second)
	}

	if *crashKeep != "" {
		crashDump(ctx, t, kc, dir, &sim.Truth)
	}
	var b strings.Builder
	if err := rep.Write(&b, 20); err != nil {
		t.Fatal(err)
	}
	t.Logf("alerts against the planted incidents:\n%s", b.String())
	var kills, exits []string
	total := 0
	for _, r := range roles {
		kills = append(kills, fmt.Sprintf("%s %d", r.name, r.kills))
		total += r.kills
		for _, e := range r.exits {
			exits = append(exits, r.name+": "+e)
		}
	}
	t.Logf("crash loop (seed %d, scale %v): %d iterations in %s (kills: %s; exits on their own: %d); "+
		"events: %d produced, %d stored, %d lost, %d stored twice, %d unexpected, DLQ %d of %d (%d resends); "+
		"alerts: %d planted incidents expected, %d raised, %d near misses raised, %d raised twice, %d ids fired twice, %d SLA probes; "+
		"dispatch: %d messages, %d assignments, %d duplicates; "+
		"%d group members of killed processes dropped by a nudge; "+
		"timers: %d acceptance deadlines checked (%d reassigned), %d SLA deadlines checked (%d breached, %d on scene), %d forgotten, %d not due by the end; "+
		"wall time %s",
		seed, *crashScale, total, load.Round(100*time.Millisecond), strings.Join(kills, ", "), len(exits),
		len(produced.ids), stored.stored, len(stored.missing), len(stored.twice), len(stored.extra), stored.rejected, produced.rejected, produced.resent,
		rep.Total.Expected, rep.Total.Detected, rep.Total.MustNotRaised, len(rep.Duplicates), len(alerts.twice), probes,
		len(disp.msgs), disp.assigned, len(disp.twice), ghosts.dropped,
		timers.accept, timers.reassigned, timers.slas, timers.breached, timers.scene, len(timers.open), timers.notDue,
		time.Since(began).Round(time.Second))

	// What must hold whatever the timing.
	if len(exits) > 0 {
		t.Logf("processes that exited on their own (restarted): %s", strings.Join(exits, "; "))
	}
	for _, r := range roles {
		out, err := os.ReadFile(r.logPath)
		if err != nil {
			t.Fatal(err)
		}
		if p := crashPanics(out); len(p) > 0 {
			t.Errorf("%s panicked: %s", r.name, strings.Join(p, "; "))
		}
	}
	if len(stored.twice) > 0 || len(stored.extra) > 0 || stored.rejected != uint64(produced.rejected) {
		t.Errorf("storage: %d events counted twice (first %q), %d unexpected (first %q); %d rejected messages stored, want %d",
			len(stored.twice), crashFirst(stored.twice, 5), len(stored.extra), crashFirst(stored.extra, 5), stored.rejected, produced.rejected)
	}
	if !rep.OK() || len(rep.Duplicates) > 0 {
		t.Errorf("the planted incidents and the alerts disagree (see the report above)")
	}
	if len(alerts.twice) > 0 {
		t.Errorf("alerts with more than one firing message: %s", strings.Join(alerts.twice, "; "))
	}
	if len(disp.twice) > 0 {
		t.Errorf("dispatch messages sent twice: %s", strings.Join(disp.twice, "; "))
	}
	if len(timers.open) > 0 {
		t.Errorf("forgotten timers:\n%s", strings.Join(timers.open, "\n"))
	}
	if len(timers.wrongTime) > 0 {
		t.Errorf("reassignments not at assignment + %s:\n%s", crashAcceptTimeout, strings.Join(timers.wrongTime, "\n"))
	}
	// A run that checked nothing proves nothing.
	if timers.accept == 0 || timers.slas == 0 || rep.Total.Expected == 0 {
		t.Errorf("the run checked %d acceptance deadlines, %d SLA deadlines and %d planted incidents: too short to prove anything", timers.accept, timers.slas, rep.Total.Expected)
	}
	for _, r := range roles {
		if r.kills == 0 {
			t.Errorf("%s was never killed", r.name)
		}
	}
}

// crashSupervise notices the role processes that stopped on their own
// (a role that fails stops its process, for the orchestrator to restart)
// and restarts them a second later, as an orchestrator would.
func crashSupervise(t *testing.T, roles []*crashRole, now time.Time) {
	t.Helper()
	for _, r := range roles {
		if r.exited() {
			t.Logf("%s exited on its own: %s", r.name, r.exits[len(r.exits)-1])
			r.restartAt = now.Add(time.Second)
		}
	}
}
