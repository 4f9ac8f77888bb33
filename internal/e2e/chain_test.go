package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/dispatch"
	"citywatch/event"
	"citywatch/ingest/gateway"
	"citywatch/ingest/rtp"
	"citywatch/internal/chtest"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/rules"
	"citywatch/simulators"
)

// chainRun is how long the full-chain test simulates the city, in real
// time: the dispatcher and the units answer on the wall clock.
const chainRun = 40 * time.Second

// TestFullChain runs the whole chain on one machine, as `citywatch demo`
// does: the simulated city at 2 % (every patrol unit), a tenth of its
// cameras streaming over RTP and a third of its checkpoints pushing GA/T
// 1400 records through the gateway, ingest, the rules role with the
// scenario's lists, the dispatcher, the simulated units answering its
// orders, and the sink into ClickHouse. It checks that the planted
// incidents raise their alerts once and the near misses none, that the
// critical alert is dispatched and a simulated unit's answers are
// recorded, that events from both gateway paths are stored, and that no
// raw ID number or name reached ClickHouse or the alerts topic.
func TestFullChain(t *testing.T) {
	if testing.Short() {
		t.Skip("the full chain runs for about a minute")
	}
	ctx := t.Context()
	c, err := city.Default()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := simulators.LoadScenario(filepath.Join("testdata", "chain.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Truncate(time.Second).In(city.Location)
	sim, err := simulators.New(c, simulators.Config{Seed: 5, Scale: 0.02, Start: start, Duration: chainRun}, sc)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("chain-test-pseudonym-key-0123456789")
	pseud, err := event.NewPseudonymizer(key)
	if err != nil {
		t.Fatal(err)
	}
	sim.Truth.Pseudonymize(pseud)
	dir := t.TempDir()
	hot, watch := filepath.Join(dir, "hotlist.csv"), filepath.Join(dir, "watchlist.csv")
	if err := os.WriteFile(hot, sc.HotlistCSV(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(watch, sc.WatchlistCSV(), 0o600); err != nil {
		t.Fatal(err)
	}

	p := newPipeline(t, chtest.Config(t))
	p.key = key
	db := p.openDB(ctx)
	reg := prometheus.NewRegistry()
	stops := []func() error{
		p.start(ctx, "ingest", p.newIngest(reg).Run),
		p.start(ctx, "sink", p.newSink(db, reg).Run),
	}
	ecfg := rules.CityConfig(c)
	// The test machine runs every package at once under the race
	// detector; a pass pushed over GA/T 1400 can then reach the rules
	// seconds after the direct traffic. A wider allowed lateness keeps the
	// check about the chain, not about the machine's load.
	rcfg := rules.RoleConfig{Hotlist: hot, Watchlist: watch}
	rcfg.Lateness = 30 * time.Second
	rr, err := rules.NewRole(rcfg, ecfg, p.kc, pseud, nil, reg, p.km, p.log)
	if err != nil {
		t.Fatal(err)
	}
	stops = append(stops, p.start(ctx, "rules", rr.Run))
	dr, err := dispatch.NewRole(dispatch.Config{CoverageTiers: []int{}}, c, p.kc, nil, reg, p.km, p.log)
	if err != nil {
		t.Fatal(err)
	}
	stops = append(stops, p.start(ctx, "dispatch", dr.Run))
	g, err := gateway.New(gateway.Config{HTTPAddr: "127.0.0.1:0", RTP: rtp.Config{Addr: "127.0.0.1:0"}}, p.kc, c, reg, p.km, p.log)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	stops = append(stops, p.start(ctx, "gateway", g.Run))
	share, err := simulators.NewGatewayShare(p.writer, p.kc.TopicPrefix, g.RTPAddr().String(), "http://"+g.HTTPAddr().String(), 10, 30, 5, p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer share.Close()
	stops = append(stops, p.start(ctx, "gateway share", share.Run))

	// The simulated units hear the alerts and their orders.
	inbox := make(chan func(), 1024)
	fctx, stopFeed := context.WithCancel(ctx)
	var feed sync.WaitGroup
	follow(fctx, &feed, p.kc, kafkaio.TopicAlerts, inbox, func(v []byte) func() {
		a, err := event.DecodeAlert(v)
		if err != nil {
			return nil
		}
		return func() { sim.NoteAlert(&a) }
	})
	follow(fctx, &feed, p.kc, kafkaio.TopicDispatches, inbox, func(v []byte) func() {
		d, err := event.DecodeDispatch(v)
		if err != nil {
			return nil
		}
		return func() { sim.Dispatch(&d, time.Now()) }
	})

	// The city, in real time, 100 ms at a time.
	tick := time.NewTicker(100 * time.Millisecond)
	var batch []kafka.Message
	for now := start; now.Before(start.Add(chainRun + 30*time.Second)); {
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
			batch = append(batch, kafka.Message{Topic: p.kc.TopicPrefix + m.Topic, Key: []byte(string(m.Key)), Value: append([]byte(nil), m.Value...)})
		})
		share.Tick(now)
		if err := share.WriteMessages(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	simEnd := time.Now()
	stopFeed()
	feed.Wait()

	// Alerts: every planted incident once, no near miss.
	var alerts []simulators.Alert
	var raw strings.Builder
	for _, m := range readTopic(ctx, t, p.kc, p.kc.Topic(kafkaio.TopicAlerts)) {
		raw.Write(m.Value)
		a, err := simulators.ParseAlert(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		alerts = append(alerts, a)
	}
	planted := []string{"vehicle.hotlist", "person.watchlist", "fuel.bulk_no_permit", "camera.violence"}
	rep := simulators.Verify(&sim.Truth, alerts, simulators.VerifyOptions{Rules: planted})
	var b strings.Builder
	if err := rep.Write(&b, 20); err != nil {
		t.Fatal(err)
	}
	t.Logf("alerts against the scenario's truth:\n%s", b.String())
	if !rep.OK() || len(rep.Duplicates) > 0 {
		t.Errorf("the chain and the scenario disagree (see the report above)")
	}

	// Dispatch: the fight (critical) got units, and the simulated units'
	// answers came back through ingest to the dispatcher.
	var fight string
	for _, a := range alerts {
		if a.Rule == "camera.violence" {
			fight = a.ID
		}
	}
	statuses := map[event.DispatchStatus]int{}
	for _, m := range readTopic(ctx, t, p.kc, p.kc.Topic(kafkaio.TopicDispatches)) {
		d, err := event.DecodeDispatch(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		if d.AlertID == fight {
			statuses[d.Status]++
		}
	}
	t.Logf("dispatch messages of the fight %s: %v", fight, statuses)
	if statuses[event.DispatchAssigned] == 0 {
		t.Errorf("the fight was not dispatched")
	}
	if statuses[event.DispatchAccepted]+statuses[event.DispatchDeclined] == 0 {
		t.Errorf("no simulated unit's answer to the fight was recorded")
	}

	// The RTP share's streams run at their frame rate between
	// detections: the gateway saw none stall while the city ran (they all
	// stall once it stops).
	stalls := 0
	var hdec event.Decoder
	var he event.Event
	for _, m := range readTopic(ctx, t, p.kc, p.kc.Topic(kafkaio.TopicCamera)) {
		if strings.Contains(string(m.Value), "stream stalled") && hdec.Decode(m.Value, &he) == nil && he.Time.Before(simEnd) {
			stalls++
		}
	}
	if stalls > 0 {
		t.Errorf("the gateway reported %d stalled RTP streams", stalls)
	}

	// Storage: both gateway paths, the dispatches, every event once.
	waitRows(t, "events from the RTP gateway", func() (uint64, error) { return db.CountEventsLike(ctx, "rtp-%") })
	waitRows(t, "events from the GA/T 1400 gateway", func() (uint64, error) { return db.CountEventsLike(ctx, "viid-mv-%") })
	waitRows(t, "dispatch rows", func() (uint64, error) {
		rows, err := db.CountDispatchMessages(ctx)
		return rows["assigned"], err
	})

	for _, stop := range stops {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}
	// No raw personal data in the alerts topic or the log: an ID number is
	// 18 characters standing alone with a right check digit (a hex id or
	// a hash may hold 18 digits in a row by chance).
	idNumber := regexp.MustCompile(`(?:^|[^0-9A-Za-z])(\d{17}[\dX])(?:[^0-9A-Za-z]|$)`)
	for _, s := range []string{raw.String(), p.logs.String()} {
		for _, m := range idNumber.FindAllStringSubmatchIndex(s, -1) {
			if id := s[m[2]:m[3]]; event.ValidIDNumber(id) {
				t.Errorf("an unmasked ID number left ingest: …%s…", s[max(m[2]-120, 0):min(m[3]+40, len(s))])
			}
		}
		if strings.Contains(s, "陈建华") {
			t.Error("a buyer's name left ingest")
		}
	}
}

// follow reads topic from its start on every partition, without a group,
// and hands what decode makes of each message to inbox until ctx is done.
func follow(ctx context.Context, wg *sync.WaitGroup, kc kafkaio.Config, topic string, inbox chan<- func(), decode func([]byte) func()) {
	for p := range kc.Partitions {
		wg.Go(func() {
			rd := kc.NewPartitionReader(kc.Topic(topic), p)
			defer rd.Close()
			for {
				m, err := rd.FetchMessage(ctx)
				if err != nil {
					return
				}
				if f := decode(m.Value); f != nil {
					select {
					case inbox <- f:
					case <-ctx.Done():
						return
					}
				}
			}
		})
	}
}

// waitRows waits until count reports at least one row.
func waitRows(t *testing.T, what string, count func() (uint64, error)) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		n, err := count()
		if err == nil && n > 0 {
			t.Logf("%s: %d", what, n)
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("no %s in ClickHouse after 45 s (last error: %v)", what, err)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}
