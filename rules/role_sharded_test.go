package rules

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// packAndStream returns the default rule pack and the role test's stream
// (roleStream) whole.
func packAndStream(t *testing.T) (*RuleSet, []event.Event) {
	t.Helper()
	rs, err := DefaultRuleSet(testPseudonymizer(t))
	if err != nil {
		t.Fatal(err)
	}
	before, after := roleStream(t, time.Now().Add(-time.Hour).Truncate(time.Minute))
	return rs, append(before, after...)
}

// TestShardsOwnEveryKeyOnce checks that the shards of a key are those of
// its alerts, so that a restart reopens exactly the alerts it owns.
func TestShardsOwnEveryKeyOnce(t *testing.T) {
	rs, evs := packAndStream(t)
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

// TestRouteReachesEveryOwner checks that a forwarder sends every event to
// each shard whose keys it concerns: engines fed only the events routed
// to their shard, at the watermark of the forwarder's clock, raise
// together exactly what one engine raises.
func TestRouteReachesEveryOwner(t *testing.T) {
	rs, evs := packAndStream(t)
	const n = 7
	clock, err := New(Config{}, rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock.forwarding = true
	engines := make([]*Engine, n)
	for s := range engines {
		if engines[s], err = New(Config{}, rs, nil); err != nil {
			t.Fatal(err)
		}
		engines[s].SetShards(NewShards(n, []int{s}))
	}
	var got []event.Alert
	routed := 0
	for i := range evs {
		e := &evs[i]
		if !clock.observe(e.Time, e, time.Time{}) {
			t.Fatalf("event %s judged late", e.ID)
		}
		targets := clock.route(e, n, nil)
		routed += len(targets)
		for s, eng := range engines {
			if slices.Contains(targets, s) {
				got = eng.ProcessStamped(e.Time, e, clock.wm, got)
			} else {
				got = eng.AdvanceStamped(e.Time, clock.wm, got)
			}
		}
	}
	if diff := cmp.Diff(referenceAlerts(t, evs), sortedKeys(got)); diff != "" {
		t.Errorf("shards fed by route (-one engine +shards):\n%s", diff)
	}
	if routed >= n*len(evs) {
		t.Errorf("route sent %d copies of %d events to %d shards: every event everywhere", routed, len(evs), n)
	}
}

// TestShardDropsCopies feeds a shard records by hand: a forwarder that
// crashed between its write and its commit forwards events again, and the
// shard evaluates each once; records whose headers cannot be read are
// counted and skipped.
func TestShardDropsCopies(t *testing.T) {
	h := newRoleHarness(t)
	r, err := NewRole(RoleConfig{Shards: 4}, Config{}, h.kc, testPseudonymizer(t), nil, prometheus.NewRegistry(), kafkaio.NewMetrics(prometheus.NewRegistry()), nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	before, _ := roleStream(t, t0)
	eng, err := New(r.ecfg, r.eng.RuleSet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sh := &shardRun{r: r, eng: eng, start: t0, restored: func() {}, kick: func() {}, dec: event.Decoder{Now: r.now}, sizes: map[string]stateSize{}}
	sh.stampSource(0, unheard)
	be := binary.BigEndian
	stamp := func(p int, wm int64) []byte { return be.AppendUint64(be.AppendUint32(nil, uint32(p)), uint64(wm)) }
	wm := before[0].Time.UnixMilli()
	sh.add(&kafka.Message{Headers: []kafka.Header{{Key: headerSources, Value: stamp(0, wm)}}})
	forwarded := func(off int64, e *event.Event) *kafka.Message {
		return &kafka.Message{Value: event.AppendJSON(nil, e), Headers: []kafka.Header{
			{Key: headerWatermark, Value: be.AppendUint64(nil, uint64(wm))},
			{Key: headerSource, Value: stamp(0, off)},
		}}
	}
	for i := range 3 {
		sh.add(forwarded(int64(i), &before[i]))
	}
	for i := range 3 { // forwarded again
		sh.add(forwarded(int64(i), &before[i]))
	}
	sh.add(forwarded(3, &before[3]))
	if got := eng.Stats().Events; got != 4 {
		t.Errorf("engine evaluated %d events, want 4 (3 copies dropped)", got)
	}
	bad := forwarded(4, &before[4])
	bad.Headers = bad.Headers[:1]
	sh.add(bad)
	sh.add(&kafka.Message{Headers: []kafka.Header{{Key: headerSources, Value: []byte{1, 2, 3}}}})
	if got := testutil.ToFloat64(r.metrics.undecodable); got != 2 {
		t.Errorf("undecodable records counted: %v, want 2", got)
	}
	if got := eng.Stats().Events; got != 4 {
		t.Errorf("engine evaluated %d events after the bad records, want 4", got)
	}
}
