package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
)

// TestSharedDistrictsTakeOver runs two dispatchers sharing the districts
// in one group. The one that owns an alert's district assigns a unit and
// stops before the unit answers; the other takes the district over,
// rebuilds the open dispatch and its timer, times the assignment out at
// the same instant, and assigns the next unit: nobody is sent twice.
func TestSharedDistrictsTakeOver(t *testing.T) {
	kc := kafkatest.Broker(t, 4)
	kc.HeartbeatInterval = 200 * time.Millisecond
	kc.SessionTimeout = 6 * time.Second
	kc.RebalanceTimeout = 6 * time.Second
	ctx := t.Context()
	c := testCity(t)
	w := kc.NewWriter()
	defer w.Close()
	write := func(topic, key string, v []byte) {
		t.Helper()
		if err := w.WriteMessages(ctx, kafka.Message{Topic: kc.Topic(topic), Key: []byte(key), Value: v}); err != nil {
			t.Fatal(err)
		}
	}
	position := func(unit string, lat, lon float64) {
		e := event.Event{ID: fmt.Sprint(unit, time.Now().UnixNano()), Type: event.TypePatrolPosition, DeviceID: unit, Time: time.Now(),
			Lat: lat, Lon: lon, Status: "available"}
		write(kafkaio.TopicEvents, unit, event.AppendJSON(nil, &e))
	}

	// The units report before the dispatchers start, so that each
	// dispatcher's restore knows them before any alert (live, positions
	// and alerts come on different partitions in no set order).
	const lat, lon = 31.775, 111.839 // circle-32
	near, far := [2]float64{}, [2]float64{}
	near[0], near[1] = city.Offset(lat, lon, 200, 0)
	far[0], far[1] = city.Offset(lat, lon, 600, 0)
	position("unit-near", near[0], near[1])
	position("unit-far", far[0], far[1])

	var mu sync.Mutex
	owned := map[int][]string{}
	type proc struct {
		stop func() error
	}
	procs := make([]proc, 2)
	for i := range procs {
		r, err := NewRole(Config{ShareDistricts: true, AcceptTimeout: 6 * time.Second, CoverageTiers: []int{}}, c, kc, nil, nil, nil,
			slog.New(slog.NewTextHandler(testLog{t}, nil)).With("process", i))
		if err != nil {
			t.Fatal(err)
		}
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
		procs[i].stop = func() error {
			once.Do(func() {
				cancel()
				select {
				case stopErr = <-done:
				case <-time.After(time.Minute):
					stopErr = errors.New("did not stop within a minute")
				}
			})
			return stopErr
		}
		defer procs[i].stop()
	}
	waitFor(t, "two dispatchers sharing the districts", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(owned[0]) > 0 && len(owned[1]) > 0 && len(owned[0])+len(owned[1]) == len(c.Districts)
	})

	now := time.Now()
	a := event.Alert{ID: "shared-1", Rule: "camera.violence", Severity: event.SeverityMedium, Status: event.AlertFiring,
		Subject: event.Subject{Kind: "device", ID: "cam-1"}, EventTime: now, RaisedAt: now, Lat: lat, Lon: lon, Evidence: []string{"e1"}}
	write(kafkaio.TopicAlerts, a.ID, a.AppendJSON(nil))

	dispatches := func() []event.Dispatch {
		var out []event.Dispatch
		for p := range kc.Partitions {
			rd := kc.NewPartitionReader(kc.Topic(kafkaio.TopicDispatches), p)
			end, err := rd.ReadLag(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for range end {
				m, err := rd.FetchMessage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				d, err := event.DecodeDispatch(m.Value)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, d)
			}
			rd.Close()
		}
		slices.SortStableFunc(out, func(a, b event.Dispatch) int { return a.Time.Compare(b.Time) })
		return out
	}
	var got []event.Dispatch
	waitFor(t, "the first assignment", func() bool { got = dispatches(); return len(got) > 0 })

	district := c.DistrictOf(lat, lon).Code
	mu.Lock()
	owner := 0
	if slices.Contains(owned[1], district) {
		owner = 1
	}
	mu.Unlock()
	if err := procs[owner].stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the next unit assigned by the other dispatcher", func() bool {
		got = dispatches()
		return slices.ContainsFunc(got, func(d event.Dispatch) bool { return d.UnitID == "unit-far" })
	})
	time.Sleep(time.Second) // a duplicate, if any, has time to show
	got = dispatches()
	type step struct{ Unit, Status string }
	var steps []step
	for _, d := range got {
		steps = append(steps, step{d.UnitID, string(d.Status)})
	}
	want := []step{{"unit-near", "assigned"}, {"unit-near", "reassigned"}, {"unit-far", "assigned"}}
	if diff := cmp.Diff(want, steps); diff != "" {
		t.Errorf("dispatches (-want +got):\n%s", diff)
	}
	if len(got) == 3 && !got[1].Time.Equal(got[0].Time.Add(6*time.Second)) {
		t.Errorf("reassigned at %s, want the assignment's time + 6 s (%s)", got[1].Time, got[0].Time.Add(6*time.Second))
	}
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 45 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
