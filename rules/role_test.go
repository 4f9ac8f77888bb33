package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
)

// roleStream is a ten-minute stream of normalised events, in two parts
// split at six minutes, with situations open across the split: a crowd
// whose third report comes after it (a window to rebuild), a fight and a
// hotlist plate seen on both sides (an open alert to update, not raise
// again; the fight's last update before it held by the update interval), a camera that falls silent before it and speaks after it (an
// open absence alert to resolve), a bulk purchase before it. Every other
// device sends a heartbeat every 20 s, so that only the one camera falls
// silent.
func roleStream(t *testing.T, t0 time.Time) (before, after []event.Event) {
	t.Helper()
	p := testPseudonymizer(t)
	dec := event.Decoder{Now: func() time.Time { return t0.Add(time.Hour) }}
	var evs []event.Event
	add := func(at time.Duration, raw string) {
		raw = strings.Replace(raw, "{", fmt.Sprintf(`{"id":"e%d","time":%q,`, len(evs), t0.Add(at).Format(time.RFC3339Nano)), 1)
		var e event.Event
		if err := dec.Decode([]byte(raw), &e); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		p.Apply(&e)
		evs = append(evs, e)
	}
	// Each device in its own 0.01° cell, so that no site groups them.
	devices := map[string]string{
		"cam-crowd": `"lat":32.011,"lon":112.111`,
		"cam-fight": `"lat":32.021,"lon":112.121`,
		"cam-quiet": `"lat":32.031,"lon":112.131`,
		"kk-1":      `"lat":32.041,"lon":112.141`,
		"fuel-1":    `"lat":32.051,"lon":112.151`,
	}
	for s := time.Duration(0); s <= 10*time.Minute; s += 20 * time.Second {
		for _, d := range []string{"cam-crowd", "cam-fight", "kk-1", "fuel-1"} {
			add(s, `{"type":"device.heartbeat","device_id":"`+d+`",`+devices[d]+`}`)
		}
	}
	add(0, `{"type":"device.heartbeat","device_id":"cam-quiet",`+devices["cam-quiet"]+`}`)
	add(8*time.Minute+5*time.Second, `{"type":"device.heartbeat","device_id":"cam-quiet",`+devices["cam-quiet"]+`}`)
	crowd := `{"type":"camera.detection","device_id":"cam-crowd",` + devices["cam-crowd"] + `,"camera_class":"A","object":"person","count":60}`
	add(2*time.Minute+5*time.Second, crowd)
	add(3*time.Minute+5*time.Second, crowd)
	add(6*time.Minute+35*time.Second, crowd)
	fight := `{"type":"camera.detection","device_id":"cam-fight",` + devices["cam-fight"] + `,"camera_class":"A","object":"person","behavior":"fight","confidence":0.9}`
	add(1*time.Minute+5*time.Second, fight)
	// Within the update interval of the one before: held across the
	// split, sent when the watermark passes 6:30.
	add(5*time.Minute+30*time.Second, fight)
	add(5*time.Minute+50*time.Second, fight)
	add(7*time.Minute+5*time.Second, fight)
	pass := `{"type":"checkpoint.pass","device_id":"kk-1",` + devices["kk-1"] + `,"lane":1,"plate":"鄂F12345","plate_color":"blue","vehicle_type":"car","speed_kmh":50}`
	add(35*time.Second, pass)
	add(8*time.Minute+35*time.Second, pass)
	add(4*time.Minute+5*time.Second, `{"type":"fuel.purchase","device_id":"fuel-1",`+devices["fuel-1"]+`,"station_id":"st-1","buyer_id":"420602199001011233","buyer_name":"张三","fuel":"92","container":"bulk","volume_l":40}`)
	slices.SortStableFunc(evs, func(a, b event.Event) int { return a.Time.Compare(b.Time) })
	split := slices.IndexFunc(evs, func(e event.Event) bool { return e.Time.Sub(t0) >= 6*time.Minute })
	return evs[:split], evs[split:]
}

// referenceAlerts runs evs through one engine without a restart.
func referenceAlerts(t *testing.T, evs []event.Event) []alertKey {
	t.Helper()
	rs, err := DefaultRuleSet(testPseudonymizer(t))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := New(Config{}, rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Alert
	for i := range evs {
		out = eng.Process(evs[i].Time, &evs[i], out)
	}
	return sortedKeys(out)
}

func sortedKeys(as []event.Alert) []alertKey {
	k := keysOf(as)
	slices.SortFunc(k, func(a, b alertKey) int {
		return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
	})
	return k
}

type roleHarness struct {
	t      *testing.T
	kc     kafkaio.Config
	writer *kafka.Writer
}

func newRoleHarness(t *testing.T) *roleHarness {
	t.Helper()
	kc := kafkatest.Broker(t, 4)
	w := kc.NewWriter()
	t.Cleanup(func() { w.Close() })
	return &roleHarness{t: t, kc: kc, writer: w}
}

func (h *roleHarness) produce(evs []event.Event) {
	h.t.Helper()
	msgs := make([]kafka.Message, len(evs))
	for i := range evs {
		msgs[i] = kafka.Message{Topic: h.kc.Topic(kafkaio.TopicEvents), Key: []byte(evs[i].DeviceID), Value: event.AppendJSON(nil, &evs[i])}
	}
	if err := h.writer.WriteMessages(h.t.Context(), msgs...); err != nil {
		h.t.Fatal(err)
	}
}

// produceLive produces evs a few seconds of event time at a time, each
// part once the group has consumed the one before, as input arrives live.
func (h *roleHarness) produceLive(evs []event.Event, group string) {
	h.t.Helper()
	for len(evs) > 0 {
		n := 1
		for n < len(evs) && evs[n].Time.Sub(evs[0].Time) < 4*time.Second {
			n++
		}
		h.produce(evs[:n])
		evs = evs[n:]
		deadline := time.Now().Add(10 * time.Second)
		for {
			sum, err := kafkaio.TotalLag(h.t.Context(), h.kc.Client(), group, []string{h.kc.Topic(kafkaio.TopicEvents)})
			if err == nil && sum == 0 {
				break
			}
			if time.Now().After(deadline) {
				h.t.Fatalf("group %s lags %d messages after 10 s (%v)", group, sum, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// newRole returns a role whose clock reads clock and whose ticker does
// not run within a test: the only Advance is the restart's, so the alerts
// depend on the input alone.
func (h *roleHarness) newRole(clock time.Time) *Role {
	h.t.Helper()
	r, err := NewRole(RoleConfig{}, Config{}, h.kc, testPseudonymizer(h.t), nil, prometheus.NewRegistry(), kafkaio.NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(testWriter{h.t}, nil)))
	if err != nil {
		h.t.Fatal(err)
	}
	r.now = func() time.Time { return clock }
	r.tickEvery = time.Hour
	return r
}

// start runs r; the returned func stops it and returns Run's error.
func (h *roleHarness) start(r *Role) (stop func() error, done <-chan error) {
	ctx, cancel := context.WithCancel(h.t.Context())
	ch := make(chan error, 1)
	go func() { ch <- r.Run(ctx) }()
	return func() error {
		cancel()
		select {
		case err := <-ch:
			return err
		case <-time.After(time.Minute):
			h.t.Fatal("rules role did not stop within a minute")
			return nil
		}
	}, ch
}

// alerts reads every alert message on the alerts topic.
func (h *roleHarness) alerts() []event.Alert {
	h.t.Helper()
	var out []event.Alert
	for p := range h.kc.Partitions {
		pr, err := kafkaio.OpenPartition(h.t.Context(), h.kc, h.kc.Topic(kafkaio.TopicAlerts), p)
		if err != nil {
			h.t.Fatal(err)
		}
		err = pr.Each(func(m *kafka.Message) {
			a, err := event.DecodeAlert(m.Value)
			if err != nil {
				h.t.Errorf("offset %d: %v", m.Offset, err)
			}
			out = append(out, a)
		})
		pr.Close()
		if err != nil {
			h.t.Fatal(err)
		}
	}
	return out
}

// waitAlerts waits until the alerts topic holds n messages, then a little
// longer to see any extra one.
func (h *roleHarness) waitAlerts(n int) []event.Alert {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := h.alerts()
		if len(got) >= n {
			time.Sleep(1500 * time.Millisecond)
			return h.alerts()
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("alerts topic holds %d messages after 30 s, want %d:\n%v", len(got), n, sortedKeys(got))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRoleRestartMidSituation stops the rules role with situations open
// (cleanly, and by a crash between a durable write and its commit), then
// starts another: the alerts topic holds exactly what one uninterrupted
// engine raises from the same input: every alert once, windows rebuilt,
// open alerts updated and resolved under their first id.
//
// In the burst case the input after the split arrives all at once after
// the restart, as a backlog does after a stall: the partitions' backlogs
// reach the engine one after another, and the held watermark (catchUp)
// keeps the later ones on time.
func TestRoleRestartMidSituation(t *testing.T) {
	for _, mode := range []string{"stop", "crash", "burst"} {
		crash := mode == "crash"
		t.Run(mode, func(t *testing.T) {
			t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
			before, after := roleStream(t, t0)
			wantBefore := referenceAlerts(t, before)
			want := referenceAlerts(t, append(slices.Clone(before), after...))
			if len(wantBefore) < 4 || len(want) <= len(wantBefore)+3 {
				t.Fatalf("stream too tame: %d alerts before the split, %d in all:\n%v", len(wantBefore), len(want), want)
			}
			h := newRoleHarness(t)
			h.produce(before)

			first := h.newRole(t0.Add(6 * time.Minute))
			var crashing atomic.Bool
			errCrash := errors.New("crash")
			first.SetCrashHook(func() error {
				if crashing.Load() {
					return errCrash
				}
				return nil
			})
			stop, done := h.start(first)
			if diff := cmp.Diff(wantBefore, sortedKeys(h.waitAlerts(len(wantBefore)))); diff != "" {
				t.Fatalf("alerts before the restart (-want +got):\n%s", diff)
			}
			if crash {
				// The first input after the split is processed and its
				// alerts written; the process dies before the commit.
				crashing.Store(true)
				h.produce(after)
				select {
				case err := <-done:
					if !errors.Is(err, errCrash) {
						t.Fatalf("first role: %v, want the crash", err)
					}
				case <-time.After(30 * time.Second):
					t.Fatalf("first role did not crash; alerts: %v", sortedKeys(h.alerts()))
				}
			} else {
				if err := stop(); err != nil {
					t.Fatalf("first role: %v", err)
				}
			}

			clock := t0.Add(6 * time.Minute)
			if crash {
				clock = t0.Add(10 * time.Minute) // the input after the split is replayed, not live
			}
			second := h.newRole(clock)
			second.restored = make(chan struct{})
			stop2, _ := h.start(second)
			if !crash {
				// The input after the split arrives live, after the restore.
				<-second.restored
				if mode == "burst" {
					h.produce(after)
				} else {
					h.produceLive(after, second.Group())
				}
			}
			got := h.waitAlerts(len(want))
			if err := stop2(); err != nil {
				t.Errorf("second role: %v", err)
			}
			if diff := cmp.Diff(want, sortedKeys(got)); diff != "" {
				t.Errorf("alerts after a restart differ from an uninterrupted run (-want +got):\n%s", diff)
			}
			firing := map[string]int{}
			for _, a := range got {
				if a.Status == event.AlertFiring {
					firing[a.ID]++
				}
			}
			for id, n := range firing {
				if n > 1 {
					t.Errorf("alert %s fired %d times", id, n)
				}
			}
		})
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
