package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
)

// TestSharedDistrictsRebalanceEqualsOneDispatcher runs dispatchers that
// share the districts, scaled 1 → 3 → 1 while dispatches are open, on a
// clock the test moves (every dispatcher reads the same fake clock, so
// timers fire at instants that do not depend on the machine's speed). One
// dispatcher takes the first alerts alone; two more join and take over
// districts with assignments pending; one stops cleanly; one dies with the
// reassignments its timers decided unwritten; the survivor finishes. After
// every step the dispatch messages (assignments, answers, reassignments,
// escalations, breaches) and the dispatcher's own alerts equal what one
// dispatcher engine decides from the same input at the same instants, and
// no message is written twice.
func TestSharedDistrictsRebalanceEqualsOneDispatcher(t *testing.T) {
	c := testCity(t)
	kc := kafkatest.Broker(t, 4)
	kc.HeartbeatInterval = 200 * time.Millisecond
	kc.SessionTimeout = 6 * time.Second
	kc.RebalanceTimeout = 6 * time.Second
	ctx := t.Context()
	cfg := Config{ShareDistricts: true, CoverageTiers: []int{}, Tick: 50 * time.Millisecond}

	// Alerts in districts that a range split of the nine gives to three
	// different processes (襄城 0, 南漳 3, 老河口 6, 宜城 8), each with
	// its own units, so that no dispatcher reaches for another's units.
	type site struct {
		alert    string
		circle   string
		severity event.Severity
		units    []float64 // metres east of the site
	}
	sites := []site{
		{"a-xc", "circle-04", event.SeverityHigh, []float64{300, 500, 800, 1000}}, // tier 1, two units
		{"a-nz", "circle-32", event.SeverityMedium, []float64{200, 600, 900}},     // tier 5
		{"a-yc", "circle-37", event.SeverityMedium, []float64{200, 600, 900}},     // tier 5
		{"a-lhk", "circle-14", event.SeverityLow, []float64{5000}},                // tier 1, no unit in reach
	}
	for i, want := range []string{"420602", "420624", "420684", "420682"} {
		ci := c.Circle(sites[i].circle)
		if got := c.DistrictOf(ci.Lat, ci.Lon).Code; got != want {
			t.Fatalf("%s is in district %s, want %s", sites[i].circle, got, want)
		}
	}
	t0 := time.Date(2026, 11, 26, 8, 0, 0, 0, city.Location)
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).In(city.Location) }

	// ref is one dispatcher's engine, fed what the dispatchers are fed at
	// the same instants.
	ref, err := NewEngine(Config{CoverageTiers: []int{}}, c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var refOut Out
	var wantDispatches []event.Dispatch
	var wantAlerts []event.Alert
	refAdvance := func() {
		ref.Advance(now(), &refOut)
		wantDispatches = append(wantDispatches, refOut.Dispatches...)
		wantAlerts = append(wantAlerts, refOut.Alerts...)
		refOut = Out{}
	}

	w := kc.NewWriter()
	defer w.Close()
	write := func(topic, key string, v []byte) {
		t.Helper()
		if err := w.WriteMessages(ctx, kafka.Message{Topic: kc.Topic(topic), Key: []byte(key), Value: v}); err != nil {
			t.Fatal(err)
		}
	}
	unitAt := map[string][2]float64{}
	var nev int
	patrol := func(e event.Event) {
		nev++
		e.ID, e.Time = fmt.Sprintf("ev-%d", nev), now()
		e.Lat, e.Lon = unitAt[e.DeviceID][0], unitAt[e.DeviceID][1]
		write(kafkaio.TopicEvents, e.DeviceID, event.AppendJSON(nil, &e))
		switch e.Type {
		case event.TypePatrolPosition:
			ref.Position(now(), &e)
		case event.TypePatrolStatus:
			ref.Status(now(), &e, &refOut)
		}
	}
	answer := func(alert, unit string, status event.DispatchStatus) {
		patrol(event.Event{Type: event.TypePatrolStatus, DeviceID: unit, DispatchID: DispatchID(alert, unit), Status: string(status)})
	}
	raise := func(s site) {
		ci := c.Circle(s.circle)
		a := event.Alert{ID: s.alert, Rule: "camera.violence", Severity: s.severity, Status: event.AlertFiring,
			Subject: event.Subject{Kind: "device", ID: "cam-" + s.alert}, EventTime: now(), RaisedAt: now(),
			Lat: ci.Lat, Lon: ci.Lon, Evidence: []string{"ev-" + s.alert}}
		write(kafkaio.TopicAlerts, a.ID, a.AppendJSON(nil))
		ref.Alert(now(), &a, &refOut)
	}
	// The units report before any dispatcher starts, so that every
	// restore knows them; the test stays within their freshness.
	for _, s := range sites {
		ci := c.Circle(s.circle)
		for j, dx := range s.units {
			u := fmt.Sprintf("u-%s-%d", strings.TrimPrefix(s.alert, "a-"), j+1)
			lat, lon := city.Offset(ci.Lat, ci.Lon, dx, 0)
			unitAt[u] = [2]float64{lat, lon}
			patrol(event.Event{Type: event.TypePatrolPosition, DeviceID: u, Status: "available"})
		}
	}
	refAdvance()

	type proc struct {
		stop   func() error
		writer *killableWriter
	}
	var mu sync.Mutex
	owned := map[int][]string{}
	procs := map[int]*proc{}
	start := func(i int) {
		t.Helper()
		kw := &killableWriter{w: kc.NewWriter()}
		r, err := NewRole(cfg, c, kc, kw, prometheus.NewRegistry(), nil, slog.New(slog.NewTextHandler(testLog{t}, nil)).With("process", i))
		if err != nil {
			t.Fatal(err)
		}
		r.now = now
		r.assigned = func(d []string) {
			mu.Lock()
			owned[i] = d
			mu.Unlock()
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		var once sync.Once
		var stopErr error
		p := &proc{writer: kw}
		p.stop = func() error {
			once.Do(func() {
				cancel()
				select {
				case stopErr = <-done:
				case <-time.After(time.Minute):
					stopErr = errors.New("did not stop within a minute")
				}
				kw.w.Close()
				mu.Lock()
				delete(owned, i)
				mu.Unlock()
			})
			return stopErr
		}
		procs[i] = p
		t.Cleanup(func() { p.stop() })
	}
	waitShared := func(live ...int) {
		t.Helper()
		waitFor(t, fmt.Sprintf("dispatchers %v sharing the districts", live), func() bool {
			mu.Lock()
			defer mu.Unlock()
			total := 0
			for _, i := range live {
				if len(owned[i]) == 0 {
					return false
				}
				total += len(owned[i])
			}
			return total == len(c.Districts)
		})
		mu.Lock()
		t.Logf("dispatchers %v share the districts: %v", live, owned)
		mu.Unlock()
	}
	// check waits for the messages one dispatcher would have written by
	// now, then a little longer for any extra one, and compares.
	check := func(step string) {
		t.Helper()
		refAdvance()
		var gotD []event.Dispatch
		var gotA []event.Alert
		waitFor(t, fmt.Sprintf("%d dispatch messages %s", len(wantDispatches), step), func() bool {
			gotD, gotA = readDispatcherOutput(t, kc)
			return len(gotD) >= len(wantDispatches) && len(gotA) >= len(wantAlerts)
		})
		time.Sleep(time.Second)
		gotD, gotA = readDispatcherOutput(t, kc)
		if diff := cmp.Diff(dispatchKeys(wantDispatches), dispatchKeys(gotD)); diff != "" {
			t.Fatalf("dispatches %s differ from one dispatcher's (-want +got):\n%s", step, diff)
		}
		if diff := cmp.Diff(dispatcherAlertKeys(wantAlerts), dispatcherAlertKeys(gotA)); diff != "" {
			t.Fatalf("dispatcher alerts %s differ from one dispatcher's (-want +got):\n%s", step, diff)
		}
	}
	tick := func(d time.Duration) { clock.Add(int64(d)) }

	// One dispatcher: the first alerts get their units.
	start(0)
	waitShared(0)
	for _, s := range sites[:3] {
		raise(s)
	}
	check("with one dispatcher")

	// 1 → 3 with three assignments waiting for an answer.
	start(1)
	start(2)
	waitShared(0, 1, 2)
	check("after two dispatchers joined")
	tick(20 * time.Second)
	check("at +20s")
	answer("a-xc", "u-xc-1", event.DispatchAccepted)
	raise(sites[3]) // escalated at once: its one unit is 5 km away
	check("with three dispatchers")
	answer("a-lhk", "u-lhk-1", event.DispatchEnRoute)
	check("after an answer skipping a step")

	// 3 → 2: dispatcher 1 stops cleanly.
	if err := procs[1].stop(); err != nil {
		t.Fatalf("dispatcher 1: %v", err)
	}
	waitShared(0, 2)
	check("after dispatcher 1 stopped")

	// 2 → 1: the dispatcher that owns 南漳 (a-nz's assignment times out
	// next; the group decides who owns it) loses its connection to Kafka;
	// the acceptance timers of its districts fire, and what it decides is
	// never written. It is stopped, and the other decides the same again.
	victim, survivor := 2, 0
	mu.Lock()
	if slices.Contains(owned[0], "420624") {
		victim, survivor = 0, 2
	}
	mu.Unlock()
	procs[victim].writer.kill()
	tick(15 * time.Second) // +35s: the first assignments time out
	waitFor(t, fmt.Sprintf("dispatcher %d deciding what it cannot write", victim), func() bool { return procs[victim].writer.refused() > 0 })
	if err := procs[victim].stop(); err != nil {
		t.Fatalf("dispatcher %d: %v", victim, err)
	}
	t.Logf("dispatcher %d died with %d messages unwritten", victim, procs[victim].writer.refused())
	waitShared(survivor)
	check(fmt.Sprintf("after dispatcher %d died", victim))

	// One dispatcher again: the next timeouts, an SLA breach, answers.
	tick(30 * time.Second) // +65s: a-xc's 1-minute deadline has passed
	check("at +65s")
	answer("a-nz", "u-nz-3", event.DispatchOnScene)
	answer("a-yc", "u-yc-3", event.DispatchAccepted)
	answer("a-xc", "u-xc-4", event.DispatchAccepted)
	check("after the answers at +65s")
	tick(30 * time.Second) // +95s: a-lhk's deadline has passed
	check("at +95s")
	if err := procs[survivor].stop(); err != nil {
		t.Errorf("dispatcher %d: %v", survivor, err)
	}

	seen := map[event.DispatchStatus]int{}
	for _, d := range wantDispatches {
		seen[d.Status]++
	}
	for _, st := range []event.DispatchStatus{event.DispatchAssigned, event.DispatchAccepted, event.DispatchEnRoute, event.DispatchOnScene,
		event.DispatchReassigned, event.DispatchEscalated, event.DispatchBreached} {
		if seen[st] == 0 {
			t.Errorf("the scenario has no %s dispatch message: %v", st, seen)
		}
	}
	gotD, _ := readDispatcherOutput(t, kc)
	written := map[string]int{}
	for _, d := range gotD {
		written[d.ID+" "+string(d.Status)]++
	}
	for k, n := range written {
		if n > 1 {
			t.Errorf("dispatch %s written %d times", k, n)
		}
	}
}

// killableWriter writes through w until killed; then every write fails,
// as to a process cut off from Kafka.
type killableWriter struct {
	w    *kafka.Writer
	dead atomic.Bool
	lost atomic.Int64
}

func (k *killableWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if k.dead.Load() {
		k.lost.Add(int64(len(msgs)))
		return errors.New("connection lost")
	}
	return k.w.WriteMessages(ctx, msgs...)
}

func (k *killableWriter) kill()          { k.dead.Store(true) }
func (k *killableWriter) refused() int64 { return k.lost.Load() }

// readDispatcherOutput reads citywatch.dispatches whole, and the messages
// of citywatch.alerts that a dispatcher wrote (its own rules' alerts and
// escalation updates).
func readDispatcherOutput(t *testing.T, kc kafkaio.Config) ([]event.Dispatch, []event.Alert) {
	t.Helper()
	var ds []event.Dispatch
	var as []event.Alert
	for _, topic := range []string{kafkaio.TopicDispatches, kafkaio.TopicAlerts} {
		for p := range kc.Partitions {
			pr, err := kafkaio.OpenPartition(t.Context(), kc, kc.Topic(topic), p)
			if err != nil {
				t.Fatal(err)
			}
			err = pr.Each(func(m *kafka.Message) {
				if topic == kafkaio.TopicDispatches {
					d, err := event.DecodeDispatch(m.Value)
					if err != nil {
						t.Errorf("dispatch at offset %d: %v", m.Offset, err)
					}
					ds = append(ds, d)
					return
				}
				a, err := event.DecodeAlert(m.Value)
				if err != nil {
					t.Errorf("alert at offset %d: %v", m.Offset, err)
				}
				if strings.HasPrefix(a.Rule, "dispatch.") || a.Status == event.AlertUpdated {
					as = append(as, a)
				}
			})
			pr.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return ds, as
}

// dispatchKey is a dispatch message whole, in a form that compares
// across JSON (times in UTC milliseconds), sorted.
type dispatchKey struct {
	Time                    string
	ID, Alert, Unit, Status string
	ETA, Distance           float64
	Circle                  string
	Tier                    int
}

func dispatchKeys(ds []event.Dispatch) []dispatchKey {
	out := make([]dispatchKey, 0, len(ds))
	for _, d := range ds {
		out = append(out, dispatchKey{d.Time.UTC().Format(time.RFC3339Nano), d.ID, d.AlertID, d.UnitID, string(d.Status),
			d.ETASeconds, d.DistanceM, d.CircleID, d.TierMinutes})
	}
	slices.SortFunc(out, func(a, b dispatchKey) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return out
}

// dispatcherAlertKey is what the comparison of a dispatcher's alert
// messages holds.
type dispatcherAlertKey struct {
	ID, Rule, Status, Subject string
	EventTime, RaisedAt       string
	Details                   string
}

func dispatcherAlertKeys(as []event.Alert) []dispatcherAlertKey {
	out := make([]dispatcherAlertKey, 0, len(as))
	for _, a := range as {
		out = append(out, dispatcherAlertKey{a.ID, a.Rule, string(a.Status), fmt.Sprint(a.Subject.Kind, ":", a.Subject.ID),
			a.EventTime.UTC().Format(time.RFC3339Nano), a.RaisedAt.UTC().Format(time.RFC3339Nano), fmt.Sprint(a.Details)})
	}
	slices.SortFunc(out, func(a, b dispatcherAlertKey) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return out
}
