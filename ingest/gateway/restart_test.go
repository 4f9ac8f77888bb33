package gateway

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio/kafkatest"
	"citywatch/simulators"
)

// TestRestartLosesNothingAcknowledged pushes GA/T 1400 records from
// several clients while the gateway is stopped and a new one started on
// the same address; every record that was acknowledged (StatusCode 0)
// must be on the topic afterwards.
func TestRestartLosesNothingAcknowledged(t *testing.T) {
	kc := kafkatest.Broker(t, 4)
	cfg := testConfig()
	r1 := start(t, cfg, kc, nil)
	addr := r1.g.HTTPAddr().String()
	kks := testCity(t).DevicesOf(city.KindCheckpoint)

	var mu sync.Mutex
	acked := map[string]bool{}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	waitFor := func(n int) {
		for count() < n {
			select {
			case <-t.Context().Done():
				t.Fatalf("only %d records acknowledged, want %d", count(), n)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	ctx, stopPush := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			cl := simulators.NewVIIDClient("http://"+addr, 25)
			cl.HTTP = httpClient(t)
			cl.OnStatus = func(id string, code int) {
				if code == 0 {
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				}
			}
			for i := 0; ctx.Err() == nil; i++ {
				e := event.Event{ID: fmt.Sprintf("w%d-%06d", w, i), Type: event.TypeCheckpointPass, DeviceID: kks[i%len(kks)].ID,
					Time: time.Now(), Lane: 1, Plate: "鄂F12345", PlateColor: "blue", VehicleType: "car", SpeedKmh: 40, Confidence: 1}
				if err := cl.Add(ctx, &e); err != nil && ctx.Err() == nil {
					// The gateway is restarting: the batch stays queued
					// in the client and goes again with the next record.
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}

	waitFor(300)
	if err := r1.stop(); err != nil {
		t.Fatal(err)
	}
	atStop := count()
	cfg2 := cfg
	cfg2.HTTPAddr = addr
	r2 := start(t, cfg2, kc, nil)
	waitFor(atStop + 300)
	stopPush()
	wg.Wait()
	if err := r2.stop(); err != nil {
		t.Fatal(err)
	}

	onTopic := recordsOnTopic(t.Context(), t, kc)
	mu.Lock()
	defer mu.Unlock()
	missing := 0
	for id := range acked {
		if !onTopic[id] {
			missing++
			if missing < 5 {
				t.Errorf("acknowledged record %s is not on the topic", id)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged records lost", missing, len(acked))
	}
	t.Logf("%d records acknowledged (%d before the restart), %d on the topic", len(acked), atStop, len(onTopic))
}
