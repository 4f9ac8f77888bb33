package rules

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// TestReplayJudgesDelayedEvents is a restart amid a backlog that ingest
// drained after a stall: within one partition of the events topic, a fight
// comes after 20 s of newer events of other devices. Live, the stall watch
// held the watermark for it. The replay has no record of that hold and
// judges by when the fight's raw message was published: one that waited
// upstream raises its alert, one that its device sent 19 s late is late,
// as it was live, and one written before the header existed is given the
// benefit of the doubt.
func TestReplayJudgesDelayedEvents(t *testing.T) {
	for _, tc := range []struct {
		name      string
		published time.Duration // after the fight; -1: no header
		wantAlert bool
	}{
		{"waited upstream", 0, true},
		{"sent late", 19 * time.Second, false},
		{"no header", -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newRoleHarness(t)
			t0 := time.Now().Truncate(time.Millisecond)
			dec := event.Decoder{Now: func() time.Time { return t0.Add(time.Hour) }}
			normalised := func(at time.Duration, device, fields string, published time.Duration) kafka.Message {
				raw := fmt.Sprintf(`{"id":"%s-%d","time":%q,"type":"%s","device_id":%q,"lat":32.02,"lon":112.12%s}`,
					device, at, t0.Add(at).Format(time.RFC3339Nano), map[bool]string{true: "camera.detection", false: "device.heartbeat"}[fields != ""], device, fields)
				var e event.Event
				if err := dec.Decode([]byte(raw), &e); err != nil {
					t.Fatalf("%s: %v", raw, err)
				}
				m := kafka.Message{Topic: h.kc.Topic(kafkaio.TopicEvents), Key: []byte(device), Value: event.AppendJSON(nil, &e), Time: t0.Add(at)}
				if published >= 0 {
					m.Headers = []kafka.Header{{Key: kafkaio.PublishedHeader, Value: kafkaio.AppendPublished(nil, t0.Add(at+published))}}
				}
				return m
			}
			var msgs []kafka.Message
			for s := time.Second; s < 20*time.Second; s += time.Second {
				msgs = append(msgs, normalised(s, "cam-other", "", 0))
			}
			// The event before the fight raises an alert of its own.
			msgs = append(msgs, normalised(20*time.Second, "cam-other", `,"camera_class":"A","object":"person","behavior":"fight","confidence":0.9`, 0))
			fight := normalised(100*time.Millisecond, "cam-fight", `,"camera_class":"A","object":"person","behavior":"fight","confidence":0.9`, tc.published)
			fight.Time = t0.Add(21 * time.Second) // ingest took it after the others
			msgs = append(msgs, fight)
			w := h.kc.NewWriter()
			defer w.Close()
			w.Balancer = partitionOf{} // all in partition 0, in this order
			if err := w.WriteMessages(t.Context(), msgs...); err != nil {
				t.Fatal(err)
			}

			reg := prometheus.NewRegistry()
			r, err := NewRole(RoleConfig{Upstream: "none"}, Config{}, h.kc, testPseudonymizer(t), nil, reg, kafkaio.NewMetrics(reg), slog.New(slog.NewTextHandler(testWriter{t}, nil)))
			if err != nil {
				t.Fatal(err)
			}
			r.tickEvery = 100 * time.Millisecond
			r.restored = make(chan struct{})
			stop, _ := h.start(r)
			defer stop()
			<-r.restored

			// A fight seen live afterwards: once its alert is on the topic,
			// so is any the replay raised (one queue writes both, in order).
			sentinel := normalised(22*time.Second, "cam-sentinel", `,"camera_class":"A","object":"person","behavior":"fight","confidence":0.9`, 0)
			if err := w.WriteMessages(t.Context(), sentinel); err != nil {
				t.Fatal(err)
			}
			devices := func() map[string]bool {
				out := map[string]bool{}
				for _, a := range h.alerts() {
					if a.Rule == "camera.violence" {
						out[a.Subject.ID] = true
					}
				}
				return out
			}
			waitUntil(t, "the sentinel's alert", func() bool { return devices()["cam-sentinel"] })
			firings := map[string]int{}
			for _, a := range h.alerts() {
				if a.ID == "" || a.Rule == "" {
					t.Errorf("alert message without id or rule: %+v", a)
				}
				if a.Status == event.AlertFiring {
					firings[a.ID]++
				}
			}
			for id, n := range firings {
				if n != 1 {
					t.Errorf("alert %s fired %d times", id, n)
				}
			}
			if !devices()["cam-other"] {
				t.Error("the fight before the delayed one raised no alert")
			}
			if got := devices()["cam-fight"]; got != tc.wantAlert {
				t.Errorf("fight raised an alert: %v, want %v", got, tc.wantAlert)
			}
			wantLate := map[bool]float64{true: 0, false: 1}[tc.wantAlert]
			if late := testutil.ToFloat64(r.metrics.late); late != wantLate {
				t.Errorf("%v events late, want %v", late, wantLate)
			}
		})
	}
}

// TestPublishedHeader reads back what AppendPublished writes and refuses
// what it cannot have written.
func TestPublishedHeader(t *testing.T) {
	at := time.UnixMilli(1795757452677)
	m := kafka.Message{Headers: []kafka.Header{{Key: "other", Value: []byte("1")}, {Key: kafkaio.PublishedHeader, Value: kafkaio.AppendPublished(nil, at)}}}
	if got, ok := kafkaio.Published(&m); !ok || !got.Equal(at) {
		t.Errorf("Published = %v, %v; want %v", got, ok, at)
	}
	for _, v := range []string{"", "-1", "12a", "1" + strconv.Itoa(1<<62)} {
		m := kafka.Message{Headers: []kafka.Header{{Key: kafkaio.PublishedHeader, Value: []byte(v)}}}
		if got, ok := kafkaio.Published(&m); ok {
			t.Errorf("Published(%q) = %v, want none", v, got)
		}
	}
}

// TestReplayStopsWhenCancelled stops a role in the middle of its restart's
// replay: Run returns, and the partitions' readers, blocked handing over
// chunks the replay no longer takes, end with it (the package's goleak
// check fails otherwise).
func TestReplayStopsWhenCancelled(t *testing.T) {
	h := newRoleHarness(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	const n = 40_000
	evs := make([]event.Event, 0, 1000)
	for i := range n {
		evs = append(evs, event.Event{ID: "hb-" + strconv.Itoa(i), Type: event.TypeDeviceHeartbeat, DeviceID: "cam-" + strconv.Itoa(i%500),
			Time: t0.Add(time.Duration(i) * 50 * time.Millisecond), Lat: 32.02, Lon: 112.12})
		if len(evs) == cap(evs) {
			h.produce(evs)
			evs = evs[:0]
		}
	}
	reg := prometheus.NewRegistry()
	r, err := NewRole(RoleConfig{Upstream: "none"}, Config{}, h.kc, testPseudonymizer(t), nil, reg, kafkaio.NewMetrics(reg), slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Ready(t.Context()); err == nil || !strings.Contains(err.Error(), "not restored yet") {
		t.Errorf("Ready before Run: %v, want not restored yet", err)
	}
	// The replay waits at its first progress until the test has looked
	// and stopped it: it reads 40,000 events in a few tens of ms.
	under := make(chan struct{})
	stopped := make(chan struct{})
	var once sync.Once
	r.replayed = func(int) {
		once.Do(func() {
			close(under)
			<-stopped
		})
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-under
	if err := r.Ready(t.Context()); err == nil || !strings.Contains(err.Error(), "restoring the state") {
		t.Errorf("Ready amid the replay: %v, want restoring the state", err)
	}
	cancel()
	close(stopped)
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := testutil.ToFloat64(r.metrics.replayed); got >= n {
		t.Errorf("the replay read all %v events after the stop", got)
	}
}

// TestReplayLooksBackPerRule restarts the rules on a day of input: each
// rule replays its own horizon, and the records no rule looks back to are
// passed over undecoded. A bulk purchase 20 hours old still counts toward
// fuel.bulk_repeat (24 h) when the third comes after the restart, while
// the heartbeats of that time, which only device.offline reads (5
// minutes, its wait and an hour), are skipped, as is a patrol unit's
// position that no rule reads. When ingest writes the purchases to the
// buyers' topic too (and has for longer than a day), the old one comes
// from there and the events topic is not read back beyond device.offline's
// look; every purchase counts once.
func TestReplayLooksBackPerRule(t *testing.T) {
	for _, buyers := range []bool{false, true} {
		t.Run(fmt.Sprintf("buyers=%v", buyers), func(t *testing.T) { testReplayLooksBackPerRule(t, buyers) })
	}
}

func testReplayLooksBackPerRule(t *testing.T, buyers bool) {
	h := newRoleHarness(t)
	now := time.Now().Truncate(time.Second)
	dec := event.Decoder{Now: func() time.Time { return now }}
	p := testPseudonymizer(t)
	var msgs []kafka.Message
	add := func(ago time.Duration, id, raw string) {
		at := now.Add(-ago)
		raw = fmt.Sprintf(`{"id":%q,"time":%q,`, id, at.Format(time.RFC3339Nano)) + raw[1:]
		var e event.Event
		if err := dec.Decode([]byte(raw), &e); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		p.Apply(&e)
		v := event.AppendJSON(nil, &e)
		msgs = append(msgs, kafka.Message{Topic: h.kc.Topic(kafkaio.TopicEvents), Key: []byte(e.DeviceID), Value: v, Time: at})
		if buyers && e.Type == event.TypeFuelPurchase {
			msgs = append(msgs, kafka.Message{Topic: h.kc.Topic(kafkaio.TopicFuelEvents), Key: []byte(e.BuyerPseudonym), Value: v, Time: at})
		}
	}
	const hours = 20
	for m := hours * 60; m >= 10; m-- {
		add(time.Duration(m)*time.Minute, fmt.Sprintf("hb-cam-%d", m), `{"type":"device.heartbeat","device_id":"cam-1","lat":32.01,"lon":112.11}`)
		add(time.Duration(m)*time.Minute, fmt.Sprintf("hb-fuel-%d", m), `{"type":"device.heartbeat","device_id":"fuel-1","lat":32.05,"lon":112.15}`)
	}
	bulk := `{"type":"fuel.purchase","device_id":"fuel-1","lat":32.05,"lon":112.15,"station_id":"st-1","buyer_id":"420602199001011233","buyer_name":"张三","fuel":"92","container":"bulk","volume_l":15}`
	if buyers {
		// Beyond the fuel rules' look (24 h and an hour): it tells that
		// the buyers' topic has been written for that long.
		add(26*time.Hour, "p-ancient", bulk)
	}
	add(hours*time.Hour, "p-old", bulk)
	add(10*time.Minute, "p-2", bulk)
	// No rule reads a patrol unit's position: only the recent ones are
	// decoded, for the watermark.
	add(2*time.Hour, "unit-old", `{"type":"patrol.position","device_id":"unit-1","lat":32.02,"lon":112.12,"speed_kmh":30,"heading_deg":90,"status":"available"}`)
	slices.SortStableFunc(msgs, func(a, b kafka.Message) int { return a.Time.Compare(b.Time) })
	if err := h.writer.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	// A first process takes it all in and commits; two purchases raise
	// nothing.
	h.runUntilCommitted(h.newRole(now))
	n := 0
	for _, m := range msgs {
		if m.Topic == h.kc.Topic(kafkaio.TopicEvents) {
			n++
		}
	}
	msgs = msgs[:0]
	add(5*time.Minute, "p-3", bulk)
	if err := h.writer.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}

	second := h.newRole(now)
	stop, _ := h.start(second)
	defer stop()
	want := 1
	if buyers {
		want = 3 // and fuel-1's device.offline, fired and resolved: silent for 6 h after p-ancient
	}
	var got []event.Alert
	for _, a := range h.waitAlerts(want) {
		if a.Rule == "fuel.bulk_repeat" {
			got = append(got, a)
		}
	}
	if len(got) != 1 || got[0].Status != event.AlertFiring || strings.Join(got[0].Evidence, ",") != "p-old,p-2,p-3" {
		t.Errorf("alerts %v, want fuel.bulk_repeat firing with p-old,p-2,p-3", sortedKeys(got))
	}
	skipped := testutil.ToFloat64(second.metrics.replaySkipped)
	replayed := testutil.ToFloat64(second.metrics.replayed)
	if buyers {
		// The events topic is read back 7 h 5 min from p-3, the longest
		// look but the fuel rules' (vehicle.cloned_plate's 6 h and an
		// hour), not 25 h: from the records received 5 minutes before
		// that (an event may be that far ahead of its receipt), 7 h 10
		// min. The heartbeats of the last 76 minutes are decoded, those
		// before skipped, as is the old position. p-old comes from the
		// buyers' topic; p-2 and p-3, in both topics, count once.
		if wantReplayed, wantSkipped := float64(2*(76-10+1)+3), float64(2*(430-76)+1); replayed != wantReplayed || skipped != wantSkipped {
			t.Errorf("%v replayed and %v skipped, want %v and %v", replayed, skipped, wantReplayed, wantSkipped)
		}
	} else {
		// The horizons count back from p-3, the oldest input not committed:
		// device.offline's 1h6m. A heartbeat is skipped when its record time
		// is more than 5 minutes (the most an event may be ahead of it) before
		// that: those more than 76 minutes old.
		wantSkipped := float64(2*(hours*60-76) + 1)
		if skipped != wantSkipped {
			t.Errorf("%v records skipped, want about %v (the heartbeats more than 76 minutes old, the old position)", skipped, wantSkipped)
		}
		if replayed+skipped != float64(n+1) {
			t.Errorf("%v replayed and %v skipped of %d", replayed, skipped, n+1)
		}
	}
	if err := second.Ready(t.Context()); err != nil {
		t.Errorf("Ready after the restore: %v", err)
	}
}

// TestReplayLooksBackFromUncommitted starts the rules after they were down
// for two hours: the input that waited for them is evaluated whatever its
// age, each rule looking back its horizon from the oldest of it, so that a
// crowd two hours old, beyond crowd.gathering's 5 minutes and an hour,
// still raises its alert.
func TestReplayLooksBackFromUncommitted(t *testing.T) {
	h := newRoleHarness(t)
	now := time.Now().Truncate(time.Second)
	dec := event.Decoder{Now: func() time.Time { return now }}
	msg := func(ago time.Duration, id, raw string) kafka.Message {
		at := now.Add(-ago)
		raw = fmt.Sprintf(`{"id":%q,"time":%q,`, id, at.Format(time.RFC3339Nano)) + raw[1:]
		var e event.Event
		if err := dec.Decode([]byte(raw), &e); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		return kafka.Message{Topic: h.kc.Topic(kafkaio.TopicEvents), Key: []byte(e.DeviceID), Value: event.AppendJSON(nil, &e), Time: at}
	}
	const cam = `"device_id":"cam-crowd","lat":32.01,"lon":112.11`
	if err := h.writer.WriteMessages(t.Context(), msg(3*time.Hour, "hb", `{"type":"device.heartbeat",`+cam+`}`)); err != nil {
		t.Fatal(err)
	}
	h.runUntilCommitted(h.newRole(now.Add(-3 * time.Hour)))

	crowd := `{"type":"camera.detection",` + cam + `,"camera_class":"A","object":"person","count":60}`
	if err := h.writer.WriteMessages(t.Context(),
		msg(2*time.Hour, "c1", crowd), msg(2*time.Hour-time.Minute, "c2", crowd), msg(2*time.Hour-2*time.Minute, "c3", crowd)); err != nil {
		t.Fatal(err)
	}
	second := h.newRole(now)
	stop, _ := h.start(second)
	defer stop()
	waitUntil(t, "the crowd's alert", func() bool {
		for _, a := range h.alerts() {
			if a.Rule == "crowd.gathering" && a.Status == event.AlertFiring && strings.Join(a.Evidence, ",") == "c1,c2,c3" {
				return true
			}
		}
		return false
	})
}

// runUntilCommitted runs r until its group has committed all the input,
// then stops it.
func (h *roleHarness) runUntilCommitted(r *Role) {
	h.t.Helper()
	stop, _ := h.start(r)
	waitUntil(h.t, "the commit of all input", func() bool {
		lag, err := kafkaio.TotalLag(h.t.Context(), h.kc.Client(), r.Group(), []string{h.kc.Topic(kafkaio.TopicEvents)})
		return err == nil && lag == 0
	})
	if err := stop(); err != nil {
		h.t.Fatal(err)
	}
}

// TestLateEventsReported: events judged late are warned of at most once a
// minute, with how many came since the last warning.
func TestLateEventsReported(t *testing.T) {
	h := newRoleHarness(t)
	var buf strings.Builder
	reg := prometheus.NewRegistry()
	r, err := NewRole(RoleConfig{}, Config{}, h.kc, testPseudonymizer(t), nil, reg, kafkaio.NewMetrics(reg), slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r.reportLateLocked(now)
	r.eng.stats.Late = 3
	r.reportLateLocked(now)
	r.eng.stats.Late = 5
	r.reportLateLocked(now.Add(30 * time.Second)) // within the minute: not again
	r.reportLateLocked(now.Add(61 * time.Second))
	r.reportLateLocked(now.Add(200 * time.Second)) // nothing new
	var got []string
	for line := range strings.Lines(buf.String()) {
		if strings.Contains(line, "later than the allowed lateness") {
			i := strings.Index(line, "late_events=")
			got = append(got, strings.Fields(line[i:])[0]+" "+strings.Fields(line[i:])[1])
		}
	}
	if want := []string{"late_events=3 total=3", "late_events=2 total=5"}; !slices.Equal(got, want) {
		t.Errorf("warnings %q, want %q", got, want)
	}
}

// TestMergeHeap checks the replay's merge order: event time first; among
// equal times the cursor taken least recently, so that partitions sharing
// a time are taken in turn rather than drained one after the other.
func TestMergeHeap(t *testing.T) {
	parts := [][]int64{
		{1, 5, 5, 5, 9},
		{2, 5, 5, 7},
		{},
		{5, 5, 10},
	}
	var cursors []*replayCursor
	for p, ats := range parts {
		c := newReplayCursor(p, "events", false)
		if len(ats) > 0 {
			ch := &replayChunk{}
			for _, at := range ats {
				ch.evs = append(ch.evs, replayedEvent{at: at})
			}
			c.chunks <- ch
		}
		close(c.chunks)
		if err := c.advance(); err != nil {
			t.Fatal(err)
		}
		cursors = append(cursors, c)
	}
	h := newMergeHeap(cursors)
	var got []string
	for len(h.cs) > 0 {
		c := h.take()
		got = append(got, fmt.Sprintf("%d@%d", c.partition, c.head.at))
		if err := h.advance(); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"0@1", "1@2",
		// Time 5 in turn: first by opening order, then least recently taken.
		"3@5", "0@5", "1@5", "3@5", "0@5", "1@5", "0@5",
		"1@7", "0@9", "3@10"}
	if !slices.Equal(got, want) {
		t.Errorf("order\n got %v\nwant %v", got, want)
	}
}
