package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"citywatch/event"
	"citywatch/ingest"
	"citywatch/internal/chtest"
	"citywatch/internal/kafkaio/kafkatest"
	"citywatch/rules"
	"citywatch/store"
)

// overloadCityPeak is the city's rate at the morning peak, events/s (the
// simulated Xiangyang at 08:00).
const overloadCityPeak = 3250

var (
	overloadRate     = flag.Int("overload.rate", 0, "events/s TestOverloadDegradesByLag offers during its burst (0: ten times the city's peak under -race, thirty times without)")
	overloadDuration = flag.Duration("overload.duration", 3*time.Second, "how long TestOverloadDegradesByLag offers its burst")
)

const (
	overloadSampleEvery = 250 * time.Millisecond
	overloadProbeEvery  = 100 * time.Millisecond
	// overloadMinBacklog is the share of the burst that must still wait
	// in Kafka for one of the roles when the burst ends for the run to
	// count as an overload: the offered rate was at least 4/3 of what the
	// slowest role sustained.
	overloadMinBacklog = 0.25
)

// TestOverloadDegradesByLag offers a burst far above what the roles
// sustain (-overload.rate, for -overload.duration) to ingest, the rules
// role and the sink, with a probe fight every 100 ms among it, and checks
// that the system degrades by lag, never by loss or crash, and recovers:
//
//   - it was overloaded: when the burst ends, at least a quarter of it is
//     still waiting in Kafka for one of the roles (the offered rate was at
//     least 4/3 of what the slowest role sustained; the rates are
//     reported);
//   - no role stopped and nothing panicked;
//   - every consumer group's lag grew, then came back to zero once the
//     input stopped;
//   - every event of the burst is stored exactly once, nothing rejected;
//   - every probe raised its alert exactly once (late: the produced →
//     alert latency is reported, not asserted).
//
// The default burst is ten times the city's peak under the race detector
// (make test), where the producer reaches most of it and the roles far
// less. Without -race the three roles sustain about eight times the peak
// on two cores, so the default is then thirty times. A burst the roles
// kept up with fails the test: it proved nothing.
func TestOverloadDegradesByLag(t *testing.T) {
	if testing.Short() {
		t.Skip("offers a burst far above what the roles sustain")
	}
	ctx := t.Context()
	// Without compression, as in the outage test: under -race, lz4's
	// block buffers would cost most of the CPU and the test would measure
	// the detector.
	kc := kafkatest.Broker(t, 4)
	kc.Compression = "none"
	p := newPipelineOn(t, chtest.Config(t), kc)
	db := p.openDB(ctx)

	inCfg := ingest.Config{Workers: 2}
	inCfg.SetDefaults()
	in, err := ingest.New(inCfg, p.kc, p.key, p.writer, p.reg, p.km, p.log)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := event.NewPseudonymizer(p.key)
	if err != nil {
		t.Fatal(err)
	}
	rulesReg := prometheus.NewRegistry()
	rr, err := rules.NewRole(rules.RoleConfig{}, rules.Config{}, p.kc, ps, nil, rulesReg, p.km, p.log)
	if err != nil {
		t.Fatal(err)
	}
	sinkCfg := store.SinkConfig{}
	sinkCfg.SetDefaults()
	sinkReg := prometheus.NewRegistry()
	sink, err := store.NewSink(sinkCfg, p.kc, db, sinkReg, p.km, p.log)
	if err != nil {
		t.Fatal(err)
	}
	groups := []overloadGroup{
		{name: "ingest", group: in.Group(), topics: in.Topics()},
		{name: "rules", group: rr.Group(), topics: rr.Topics()},
		{name: "sink", group: sink.Group(), topics: sink.Topics()},
	}

	roles := overloadStartRoles(ctx, map[string]func(context.Context) error{"ingest": in.Run, "rules": rr.Run, "sink": sink.Run})
	defer roles.stop()
	probes := outageFollowProbes(ctx, t, p.kc, "oprobe-")
	defer probes.close()
	probes.startSending(ctx, overloadProbeEvery)
	defer probes.stopSending()

	// The roles are up when a probe planted before the burst is alerted on.
	probes.setPhase("before")
	overloadWait(t, "a probe's alert before the burst", time.Minute, func() bool { return probes.alerted("before") > 0 })

	// The burst.
	rate := *overloadRate
	if rate == 0 {
		rate = 30 * overloadCityPeak
		if overloadRace() {
			rate = 10 * overloadCityPeak
		}
	}
	probes.setPhase("burst")
	burstStart := time.Now()
	load := outageStartLoad(ctx, p.kc, "ovl", rate, 0)
	defer load.stop()
	tick := time.NewTicker(overloadSampleEvery)
	defer tick.Stop()
	peak := make([]int64, len(groups))
	// sampleLags returns the lag of every group together, or -1 when the
	// broker did not answer.
	sampleLags := func() (total int64) {
		for i, g := range groups {
			n := outageLag(ctx, p.kc, g.group, g.topics)
			if n < 0 {
				return -1
			}
			peak[i] = max(peak[i], n)
			total += n
		}
		return total
	}
	for now := range tick.C {
		sampleLags()
		if now.Sub(burstStart) >= *overloadDuration {
			break
		}
	}
	// No more input, probes included, so that every lag can reach zero.
	probes.setPhase("")
	if err := load.stop(); err != nil {
		t.Fatal(err)
	}
	burstLen := time.Since(burstStart)
	offered := load.produced.Load()
	atEnd := make([]int64, len(groups))
	for i, g := range groups {
		atEnd[i] = outageLag(ctx, p.kc, g.group, g.topics)
	}
	sampleLags()

	// Recovery: every group's lag comes back to zero.
	var recovered time.Duration
	overloadWait(t, "every consumer group's lag back to zero", 3*time.Minute, func() bool {
		if roles.exited() != "" {
			t.Fatalf("the %s role stopped during the overload: %v", roles.exited(), roles.stop())
		}
		if sampleLags() != 0 {
			return false
		}
		recovered = time.Since(burstStart)
		return true
	})
	sustained := float64(offered) / recovered.Seconds()
	offeredRate := float64(offered) / burstLen.Seconds()
	t.Logf("burst: %d events in %v (%.0f/s offered of %d/s asked, %.1f× the city's peak); all roles through %v after its start (%.0f/s sustained): offered/sustained %.2f",
		offered, burstLen.Round(time.Millisecond), offeredRate, rate, offeredRate/overloadCityPeak, recovered.Round(time.Millisecond), sustained, offeredRate/sustained)
	var lagText []string
	var backlog int64
	for i, g := range groups {
		lagText = append(lagText, fmt.Sprintf("%s %d (%d when the burst ended)", g.name, peak[i], atEnd[i]))
		backlog = max(backlog, atEnd[i])
	}
	t.Logf("peak consumer-group lag, messages: %s", strings.Join(lagText, ", "))
	if float64(backlog) < overloadMinBacklog*float64(offered) {
		t.Fatalf("not an overload: when the burst of %d events ended the largest lag was %d (want at least %.0f %% of the burst); the roles kept up with %.0f/s: raise -overload.rate",
			offered, backlog, 100*overloadMinBacklog, offeredRate)
	}
	for i, g := range groups {
		if peak[i] <= 0 {
			t.Errorf("the %s group's lag never grew (peak %d)", g.name, peak[i])
		}
	}

	// Nothing lost, nothing twice.
	want := expectation{ids: map[string]bool{}}
	load.expect(want.ids)
	probes.expect(want.ids)
	waitStored(ctx, t, db, want, 3*time.Minute)
	probes.waitAll(t, time.Minute)
	probes.check(t)
	probes.report(t, "before", "burst")
	if n := counterValue(t, rulesReg, "citywatch_rules_late_events_total"); n > 0 {
		t.Logf("the rules role counted %.0f late events", n)
	}

	if name := roles.exited(); name != "" {
		t.Errorf("the %s role stopped on its own", name)
	}
	if err := roles.stop(); err != nil {
		t.Error(err)
	}
	if strings.Contains(p.logs.String(), "panic") {
		t.Error("a panic was logged")
	}
}

// overloadRace reports whether the test binary has the race detector.
func overloadRace() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// overloadGroup is a consumer group whose lag the overload test follows.
type overloadGroup struct {
	name, group string
	topics      []string
}

// overloadWait polls cond until it holds, or fails after within.
func overloadWait(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(overloadSampleEvery)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, within)
		}
		<-tick.C
	}
}

// overloadRoles runs roles until stop, and tells whether one of them
// returned before.
type overloadRoles struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    []error
	early   string
	stopped bool
}

func overloadStartRoles(ctx context.Context, runs map[string]func(context.Context) error) *overloadRoles {
	ctx, cancel := context.WithCancel(ctx)
	r := &overloadRoles{cancel: cancel}
	for name, run := range runs {
		r.wg.Go(func() {
			err := run(ctx)
			r.mu.Lock()
			defer r.mu.Unlock()
			if ctx.Err() == nil && r.early == "" {
				r.early = name
			}
			if err != nil {
				r.errs = append(r.errs, fmt.Errorf("%s: %w", name, err))
			}
		})
	}
	return r
}

// exited names a role that returned while it should have been running.
func (r *overloadRoles) exited() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.early
}

// stop stops every role, waits for them and returns their errors; it may
// be called again.
func (r *overloadRoles) stop() error {
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil
	}
	r.stopped = true
	return errors.Join(r.errs...)
}
