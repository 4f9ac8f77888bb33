package rules

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
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

// TestRoleRebalanceEqualsOneProcess scales a sharded rules role out and
// back in while situations are open: one process takes the first part of
// the stream, two more join (1 → 3) and share the second part, then one
// stops cleanly and one dies before writing the alerts it computed
// (3 → 1), and the survivor takes the rest. After every step the alerts
// topic holds exactly what one uninterrupted engine raises from the input
// so far: every message once, windows and open alerts carried across each
// rebalance, the dead process's unwritten alerts raised by the survivor.
func TestRoleRebalanceEqualsOneProcess(t *testing.T) {
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	before, after := roleStream(t, t0)
	evs := append(slices.Clone(before), after...)
	// Cuts inside open situations: at 2:30 the crowd window holds one
	// report and the fight and hotlist alerts are open; at 6:50 the crowd
	// has fired and cam-quiet's absence is open; at 8:20 it is resolved
	// and the plate's second pass is still to come.
	cut := func(d time.Duration) int {
		return slices.IndexFunc(evs, func(e event.Event) bool { return e.Time.Sub(t0) >= d })
	}
	c1, c2, c3 := cut(2*time.Minute+30*time.Second), cut(6*time.Minute+50*time.Second), cut(8*time.Minute+20*time.Second)
	ends := []int{c1, c2, c3, len(evs)}
	parts := [][]event.Event{evs[:c1], evs[c1:c2], evs[c2:c3], evs[c3:]}
	want := make([][]alertKey, len(parts))
	for i, end := range ends {
		want[i] = referenceAlerts(t, evs[:end])
	}
	for i := 1; i < len(want); i++ {
		if len(want[i]) <= len(want[i-1]) {
			t.Fatalf("part %d of the stream raises nothing new: %v", i, want[i])
		}
	}

	h := newRoleHarness(t)
	h.kc.HeartbeatInterval = 200 * time.Millisecond
	h.kc.SessionTimeout = 6 * time.Second
	h.kc.RebalanceTimeout = 6 * time.Second

	const shards = 12
	var mu sync.Mutex
	owned := map[int][]int{} // live process → shards of its last restored generation
	var victim atomic.Int32
	victim.Store(-1)
	errKill := errors.New("killed")
	stops := map[int]func() error{}
	dones := map[int]<-chan error{}
	start := func(i int) {
		t.Helper()
		log := slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("process", i)
		r, err := NewRole(RoleConfig{Shards: shards}, Config{}, h.kc, testPseudonymizer(t), nil, prometheus.NewRegistry(), kafkaio.NewMetrics(prometheus.NewRegistry()), log)
		if err != nil {
			t.Fatal(err)
		}
		// A fixed clock and no ticker: the alerts depend on the input alone.
		r.now = func() time.Time { return t0.Add(10 * time.Minute) }
		r.tickEvery = time.Hour
		r.assigned = func(o []int) {
			mu.Lock()
			owned[i] = o
			mu.Unlock()
		}
		// The victim dies at its first write with alerts in its queue:
		// they were computed and are lost with it.
		r.SetCrashHook(func() error {
			if victim.Load() == int32(i) && r.outbox.Len() > 0 {
				return errKill
			}
			return nil
		})
		stops[i], dones[i] = h.start(r)
	}
	gone := func(i int) {
		mu.Lock()
		delete(owned, i)
		mu.Unlock()
	}
	// waitShared waits for a generation in which exactly the processes
	// live share every shard, each restored.
	waitShared := func(live ...int) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			mu.Lock()
			total, busy := 0, 0
			for _, i := range live {
				total += len(owned[i])
				if len(owned[i]) > 0 {
					busy++
				}
			}
			got := fmt.Sprint(owned)
			mu.Unlock()
			if total == shards && busy == len(live) {
				t.Logf("processes %v share the shards: %s", live, got)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("processes %v did not share the %d shards within a minute: %s", live, shards, got)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	check := func(step string, want []alertKey) {
		t.Helper()
		got := h.waitAlerts(len(want))
		if diff := cmp.Diff(want, sortedKeys(got)); diff != "" {
			t.Fatalf("alerts %s differ from one process over the same input (-want +got):\n%s", step, diff)
		}
	}

	// One process.
	h.produce(parts[0])
	start(0)
	waitShared(0)
	check("with one process", want[0])

	// 1 → 3: two processes join with the first part's situations open.
	start(1)
	start(2)
	waitShared(0, 1, 2)
	check("after two processes joined", want[0])
	h.produce(parts[1])
	check("with three processes", want[1])

	// 3 → 2: process 1 stops cleanly.
	if err := stops[1](); err != nil {
		t.Fatalf("process 1: %v", err)
	}
	gone(1)
	waitShared(0, 2)
	check("after process 1 stopped", want[1])

	// 2 → 1: the process that owns an alert of the third part dies with
	// it computed and not written; the other takes its shards over and
	// raises it.
	mu.Lock()
	split := map[int][]int{0: owned[0], 2: owned[2]}
	mu.Unlock()
	dead := ownerOf(t, evs[:c2], parts[2], shards, split)
	survivor := 2 - dead
	victim.Store(int32(dead))
	h.produce(parts[2])
	select {
	case err := <-dones[dead]:
		if !errors.Is(err, errKill) {
			t.Fatalf("process %d: %v, want the kill", dead, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("process %d was not killed", dead)
	}
	gone(dead)
	waitShared(survivor)
	check("after process 2 died", want[2])

	h.produce(parts[3])
	check("with the one process left", want[3])
	if err := stops[survivor](); err != nil {
		t.Errorf("process %d: %v", survivor, err)
	}

	firing := map[string]int{}
	for _, a := range h.alerts() {
		if a.Status == event.AlertFiring {
			firing[a.ID]++
		}
	}
	for id, n := range firing {
		if n > 1 {
			t.Errorf("alert %s fired %d times", id, n)
		}
	}
}

// ownerOf returns the process (a key of owned, its shards) that holds the
// state of an alert message that the events next raise after the events
// seen; the lowest when several do.
func ownerOf(t *testing.T, seen, next []event.Event, shards int, owned map[int][]int) int {
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
	for i := range seen {
		out = eng.Process(seen[i].Time, &seen[i], out)
	}
	out = out[:0]
	for i := range next {
		out = eng.Process(next[i].Time, &next[i], out)
	}
	procs := slices.Sorted(maps.Keys(owned))
	for _, p := range procs {
		eng.SetShards(NewShards(shards, owned[p]))
		for i := range out {
			if eng.ownsAlert(&out[i]) {
				return p
			}
		}
	}
	t.Fatalf("no process owns an alert of the next events: %v", sortedKeys(out))
	return -1
}
