package dispatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
)

// BenchmarkAlertToAssignment measures, through an in-process broker, the
// time from writing an alert to citywatch.alerts until its assigned
// message can be read from citywatch.dispatches, with 1,000 units and
// alerts written one every 10 ms. It reports p50 and p99 in ms.
//
//	go test ./dispatch/ -run '^$' -bench AlertToAssignment -benchtime 500x
func BenchmarkAlertToAssignment(b *testing.B) {
	kc := kafkatest.Broker(b, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := kc.NewWriter()
	defer w.Close()
	rng := rand.New(rand.NewPCG(7, 7))
	cs := NewCircles(testCity(b)).List()
	now := time.Now()
	var units []kafka.Message
	for i := range 1000 {
		c := cs[rng.IntN(len(cs))]
		lat, lon := city.Offset(c.Lat, c.Lon, (rng.Float64()-0.5)*c.RadiusM, (rng.Float64()-0.5)*c.RadiusM)
		e := event.Event{ID: fmt.Sprint("p", i), Type: event.TypePatrolPosition, DeviceID: fmt.Sprint("unit-", i), Time: now,
			Lat: lat, Lon: lon, Status: "available"}
		units = append(units, kafka.Message{Topic: kc.Topic(kafkaio.TopicEvents), Key: []byte(e.DeviceID), Value: event.AppendJSON(nil, &e)})
	}
	if err := w.WriteMessages(ctx, units...); err != nil {
		b.Fatal(err)
	}
	role, err := NewRole(Config{AcceptTimeout: time.Hour, CoverageTiers: []int{}}, testCity(b), kc, nil, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	role.restored = make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := role.Run(ctx); err != nil {
			b.Error(err)
		}
	}()
	<-role.restored

	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
	got := make(chan struct{}, 1)
	parts, err := kafkaio.Partitions(ctx, kc, kc.Topic(kafkaio.TopicDispatches))
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			role.tail(ctx, kc.Topic(kafkaio.TopicDispatches), p, 0, func(m *kafka.Message) {
				d, err := event.DecodeDispatch(m.Value)
				if err != nil || d.Status != event.DispatchAssigned {
					return
				}
				mu.Lock()
				if t, ok := sent[d.AlertID]; ok {
					lat = append(lat, time.Since(t))
					delete(sent, d.AlertID)
					select {
					case got <- struct{}{}:
					default:
					}
				}
				mu.Unlock()
			})
		}()
	}
	b.ResetTimer()
	tick := time.NewTicker(10 * time.Millisecond)
	for i := 0; b.Loop(); i++ {
		<-tick.C
		c := cs[rng.IntN(len(cs))]
		a := event.Alert{ID: fmt.Sprint("lat-", i), Rule: "camera.violence", Severity: event.SeverityMedium, Status: event.AlertFiring,
			Subject: event.Subject{Kind: "device", ID: "cam"}, EventTime: time.Now(), RaisedAt: time.Now(), Lat: c.Lat, Lon: c.Lon}
		mu.Lock()
		sent[a.ID] = time.Now()
		mu.Unlock()
		if err := w.WriteMessages(ctx, kafka.Message{Topic: kc.Topic(kafkaio.TopicAlerts), Key: []byte(a.ID), Value: a.AppendJSON(nil)}); err != nil {
			b.Fatal(err)
		}
	}
	tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		mu.Lock()
		left := len(sent)
		mu.Unlock()
		if left == 0 {
			break
		}
		select {
		case <-got:
		case <-deadline:
			b.Fatalf("%d alerts got no assignment", left)
		}
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[min(int(p*float64(len(lat))), len(lat)-1)]) / 1e6 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
