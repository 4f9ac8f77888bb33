package rules

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// TestShardsOwnEveryKeyOnce checks that the shards of a key are those of
// its alerts, so that a restart reopens exactly the alerts it owns.
func TestShardsOwnEveryKeyOnce(t *testing.T) {
	rs, err := DefaultRuleSet(testPseudonymizer(t))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	before, after := roleStream(t, t0)
	evs := append(before, after...)
	const n = 7
	var raised int
	for shard := range n {
		eng, err := New(Config{}, rs, nil)
		if err != nil {
			t.Fatal(err)
		}
		eng.SetShards(NewShards(n, []int{shard}))
		var out []event.Alert
		for i := range evs {
			out = eng.Process(evs[i].Time, &evs[i], out)
		}
		for i := range out {
			if !eng.ownsAlert(&out[i]) {
				t.Errorf("shard %d raised %s for %v, which it does not own", shard, out[i].Rule, out[i].Subject)
			}
		}
		raised += len(out)
	}
	if want := len(referenceAlerts(t, evs)); raised != want {
		t.Errorf("the %d shards raised %d alert messages together, one engine %d", n, raised, want)
	}
}

// TestRoleShardedEqualsOneProcess runs three scaled-out rules processes
// in one group and kills one of them mid-stream, before it writes the
// alerts it computed: the alerts topic holds exactly what one uninterrupted
// engine raises from the same input, every message once.
func TestRoleShardedEqualsOneProcess(t *testing.T) {
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	before, after := roleStream(t, t0)
	wantBefore := referenceAlerts(t, before)
	want := referenceAlerts(t, append(slices.Clone(before), after...))
	h := newRoleHarness(t)
	h.kc.HeartbeatInterval = 200 * time.Millisecond
	h.kc.SessionTimeout = 6 * time.Second
	h.kc.RebalanceTimeout = 6 * time.Second
	h.produce(before)

	const shards = 12
	var mu sync.Mutex
	owned := map[int][]int{}
	var crashing atomic.Bool
	errCrash := errors.New("killed")
	stops := make([]func() error, 3)
	dones := make([]<-chan error, 3)
	for i := range 3 {
		r, err := NewRole(RoleConfig{Shards: shards}, Config{}, h.kc, testPseudonymizer(t), nil, prometheus.NewRegistry(), kafkaio.NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("process", i))
		if err != nil {
			t.Fatal(err)
		}
		r.now = func() time.Time { return t0.Add(10 * time.Minute) }
		r.tickEvery = time.Hour
		r.assigned = func(o []int) {
			mu.Lock()
			owned[i] = o
			mu.Unlock()
		}
		if i == 1 {
			r.SetCrashHook(func() error {
				if crashing.Load() {
					return errCrash
				}
				return nil
			})
		}
		stops[i], dones[i] = h.start(r)
	}
	// Wait for a generation in which every process owns shards.
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		total, busy := 0, 0
		for _, o := range owned {
			total += len(o)
			if len(o) > 0 {
				busy++
			}
		}
		mu.Unlock()
		if total == shards && busy == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the three processes did not share the %d shards within a minute: %v", shards, owned)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if diff := cmp.Diff(wantBefore, sortedKeys(h.waitAlerts(len(wantBefore)))); diff != "" {
		t.Fatalf("alerts before the kill (-want +got):\n%s", diff)
	}

	// Process 1 dies with the alerts of the input after the split computed
	// and not written; the other two take its shards over.
	crashing.Store(true)
	h.produce(after)
	select {
	case err := <-dones[1]:
		if !errors.Is(err, errCrash) {
			t.Fatalf("process 1: %v, want the kill", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("process 1 was not killed")
	}
	got := h.waitAlerts(len(want))
	for _, i := range []int{0, 2} {
		if err := stops[i](); err != nil {
			t.Errorf("process %d: %v", i, err)
		}
	}
	if diff := cmp.Diff(want, sortedKeys(got)); diff != "" {
		t.Errorf("alerts of three processes, one killed, differ from one process (-want +got):\n%s", diff)
	}
}
