package rules

import (
	"testing"
	"time"

	"citywatch/event"
)

func TestCatchUpHold(t *testing.T) {
	now := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	ms := func(s int) int64 { return now.Add(time.Duration(s) * time.Second).UnixMilli() }
	c := catchUp{stale: 10 * time.Second}
	if h := c.hold(now); !h.IsZero() {
		t.Fatalf("hold with no input = %v, want none", h)
	}
	// Partition 0 delivers a backlog up to +60 s; partition 1 has
	// delivered up to +5 s.
	c.observe(0, ms(60), now)
	c.observe(1, ms(5), now)
	if h, want := c.hold(now), time.UnixMilli(ms(5)); !h.Equal(want) {
		t.Errorf("hold = %v, want the slowest partition's newest event %v", h, want)
	}
	c.observe(1, ms(61), now)
	if h, want := c.hold(now), time.UnixMilli(ms(60)); !h.Equal(want) {
		t.Errorf("hold = %v, want %v", h, want)
	}
	// Event times never move a partition back.
	c.observe(0, ms(1), now)
	if h, want := c.hold(now), time.UnixMilli(ms(60)); !h.Equal(want) {
		t.Errorf("hold = %v, want %v", h, want)
	}
	// A partition that stops delivering (idle, revoked) holds only for
	// stale.
	later := now.Add(5 * time.Second)
	c.observe(1, ms(70), later)
	if h, want := c.hold(now.Add(10*time.Second)), time.UnixMilli(ms(60)); !h.Equal(want) {
		t.Errorf("hold = %v before partition 0 is idle, want %v", h, want)
	}
	if h, want := c.hold(now.Add(11*time.Second)), time.UnixMilli(ms(70)); !h.Equal(want) {
		t.Errorf("hold = %v once partition 0 is idle, want %v", h, want)
	}
	if h := c.hold(later.Add(11 * time.Second)); !h.IsZero() {
		t.Errorf("hold = %v with every partition idle, want none", h)
	}
}

func TestEngineHoldKeepsBacklogOnTime(t *testing.T) {
	rs, err := DefaultRuleSet(testPseudonymizer(t))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := New(Config{}, rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	hb := func(dev string, at time.Duration) *event.Event {
		return &event.Event{ID: dev + at.String(), Type: event.TypeDeviceHeartbeat, DeviceID: dev, Time: t0.Add(at), Lat: 32, Lon: 112}
	}
	// Partition A's backlog runs a minute ahead while partition B, behind,
	// has delivered only its first second.
	eng.Hold(t0.Add(time.Second))
	eng.Process(t0, hb("a", 0), nil)
	eng.Process(t0, hb("b", time.Second), nil)
	eng.Process(t0, hb("a", time.Minute), nil)
	eng.Process(t0, hb("b", 30*time.Second), nil)
	if late := eng.Stats().Late; late != 0 {
		t.Fatalf("%d events late while held, want 0", late)
	}
	eng.Hold(time.Time{})
	eng.Process(t0, hb("a", 2*time.Minute), nil)
	eng.Process(t0, hb("b", 31*time.Second), nil)
	if late := eng.Stats().Late; late != 1 {
		t.Fatalf("%d events late after release, want 1", late)
	}
}

func TestCatchUpWaitsForTheFirstDelivery(t *testing.T) {
	start := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	ms := func(s int) int64 { return start.Add(time.Duration(s) * time.Second).UnixMilli() }
	at := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	seeded := func() catchUp {
		// A restart replayed partition 0 up to -2 s and 1 up to -1 s, then
		// waits for the group (session + rebalance timeouts: 60 s).
		c := catchUp{stale: 10 * time.Second}
		c.observe(0, ms(-2), start)
		c.observe(1, ms(-1), start)
		c.wait(at(60))
		return c
	}

	// The group takes 30 s to give the consumer its partitions: the
	// replayed partitions hold all along, not only for stale.
	c := seeded()
	if h, want := c.hold(at(30)), time.UnixMilli(ms(-2)); !h.Equal(want) {
		t.Fatalf("hold = %v while the consumer waits for its partitions, want %v", h, want)
	}
	// Its first delivery, from partition 1: partition 0 has stale from
	// now to deliver its backlog, as it would live.
	c.resume(at(30))
	c.observe(1, ms(20), at(30))
	c.observe(1, ms(25), at(35))
	if h, want := c.hold(at(40)), time.UnixMilli(ms(-2)); !h.Equal(want) {
		t.Errorf("hold = %v stale after the first delivery, want %v", h, want)
	}
	if h, want := c.hold(at(41)), time.UnixMilli(ms(25)); !h.Equal(want) {
		t.Errorf("hold = %v once partition 0 is idle, want %v", h, want)
	}
	// Nothing comes at all: past the bound the input is silent, and the
	// watermark may move with the clock.
	c = seeded()
	if h := c.hold(at(60)); !h.IsZero() {
		t.Errorf("hold = %v once the wait is over without input, want none", h)
	}
}
