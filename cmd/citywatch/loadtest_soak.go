package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"citywatch/dispatch"
	"citywatch/event"
	"citywatch/ingest"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
	"citywatch/store"
)

const (
	// soakCityPeak is the default rate of a soak, events/s: the simulated
	// city at its morning peak.
	soakCityPeak = 3250
	// soakProbeEvery is how often the soak plants a probe: a fight seen by
	// one of soakProbeCameras cameras of its own, which camera.violence
	// raises at once. Each camera sees one every 11 minutes, after the
	// rule's 10 minutes of suppression: a fight sooner would update the
	// open alert, and updates wait for the rule's update_interval. The
	// cameras send a heartbeat every soakProbeHeartbeat meanwhile, so that
	// device.offline does not see them fall silent.
	soakProbeEvery     = 500 * time.Millisecond
	soakProbeCameras   = 1320
	soakProbeHeartbeat = time.Minute
	// soakSampleEvery is how often heap and goroutines are sampled for
	// the verdict.
	soakSampleEvery = 5 * time.Second
	// soakTrimEvery is how often the broker's log is cut behind the
	// slowest consumer group; what is cut was already behind every group
	// one round earlier, so readers without a group (the dispatcher's
	// tails, the probe readers) have a round to spare.
	soakTrimEvery = 10 * time.Second
	// soakSegmentBytes is the broker's segment size: a cut frees whole
	// segments only.
	soakSegmentBytes = 1 << 20

	// The verdict's tolerances: the last quarter's mean live heap may
	// exceed the second quarter's by soakHeapTolerance plus soakHeapSlack
	// (what the garbage collector's timing moves it by), its largest
	// goroutine count the second quarter's by soakGoroutineSlack or 10 %,
	// whichever is more.
	soakHeapTolerance  = 0.10
	soakHeapSlack      = 16 << 20
	soakGoroutineSlack = 10
	// soakDedupeEntryBytes is what one id in ingest's dedupe cache costs
	// (an LRU list element and a map slot), from a heap profile of a
	// soak: 62 MB for its 500,000 entries. The cache fills in
	// dedupe_size / rate (154 s at the defaults), so a short soak judges
	// the heap without it; its size is bounded by the configuration.
	soakDedupeEntryBytes = 124
)

// soakOptions are the flags of `citywatch loadtest --soak`.
type soakOptions struct {
	rate            int
	duration, every time.Duration
	drain           time.Duration
	keep            bool
	memProfile      string // heap profile written when the load stops
}

// loadtestSoak is `citywatch loadtest --soak`: every role that runs
// without a browser (ingest, rules with the default pack, dispatch, sink)
// in one process with an embedded broker and the configured ClickHouse,
// at a steady rate of city traffic with a probe fight every 500 ms, for
// the duration. Every report interval it prints one line: events offered
// and stored, heap, goroutines, consumer lag, and over that interval the
// produced → alert latency of the probes and the device time → stored
// latency of every event. At the end it waits for the backlog, then
// judges: nothing lost (ClickHouse's distinct count), every probe
// alerted, heap and goroutines of the last quarter flat against the
// second quarter within the stated tolerance. It returns an error when
// any of these fails.
//
// The embedded broker keeps every message in memory, which for an hour at
// city load is gigabytes that a Kafka cluster would keep on its disks.
// The soak therefore runs its own kfake broker with small segments and
// cuts each partition's log behind the slowest consumer group every 10 s
// (DeleteRecords, as retention would), so that the heap measured is the
// roles' and not a growing log.
func loadtestSoak(ctx context.Context, cfg Config, o soakOptions, stdout io.Writer, log *slog.Logger) error {
	// Every consumer group's position must be known to cut the log; a
	// sharded rules role keeps its own.
	cfg.Rules.Shards = 0
	logCounts := &soakLogCounts{n: map[string]int{}}
	log = slog.New(&soakLog{h: log.Handler(), counts: logCounts})
	topics := cfg.Kafka.Topics(kafkaio.AllTopics...)
	cl, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(int32(cfg.Kafka.Partitions), topics...),
		kfake.AllowAutoTopicCreation(),
		kfake.BrokerConfigs(map[string]string{"log.segment.bytes": strconv.Itoa(soakSegmentBytes)}),
	)
	if err != nil {
		return fmt.Errorf("cannot start embedded broker: %w", err)
	}
	defer cl.Close()
	cfg.Kafka.Brokers = cl.ListenAddrs()
	cfg.Kafka.TLS, cfg.Kafka.SASL = kafkaio.TLS{}, kafkaio.SASL{}

	cfg.ClickHouse.Database = "citywatch_soak_" + strconv.FormatInt(time.Now().Unix(), 10)
	db, err := store.Open(ctx, cfg.ClickHouse)
	if err != nil {
		return fmt.Errorf("cannot reach ClickHouse: %w", err)
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		return err
	}
	if !o.keep {
		defer func() {
			if err := db.DropDatabase(context.WithoutCancel(ctx)); err != nil {
				log.Warn("cannot drop soak database", "err", err)
			}
		}()
	}

	c, err := city.Default()
	if err != nil {
		return fmt.Errorf("cannot load the city model: %w", err)
	}
	ps, err := event.NewPseudonymizer(cfg.PseudonymKey)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	km := kafkaio.NewMetrics(reg)
	in, err := ingest.New(cfg.Ingest, cfg.Kafka, cfg.PseudonymKey, nil, reg, km, log)
	if err != nil {
		return err
	}
	rr, err := newRulesRole(cfg, c, ps, reg, km, log)
	if err != nil {
		return err
	}
	dr, err := dispatch.NewRole(cfg.Dispatch, c, cfg.Kafka, nil, reg, km, log)
	if err != nil {
		return err
	}
	sink, err := store.NewSink(cfg.Sink, cfg.Kafka, db, reg, km, log)
	if err != nil {
		return err
	}
	st := &soakStats{pending: map[string]time.Time{}}
	sink.SetStoredHook(st.storedHook)

	// Which groups read which topic, for the lag and for cutting the log.
	groups := map[string][]string{}
	for g, ts := range map[string][]string{in.Group(): in.Topics(), rr.Group(): rr.Topics(), dr.Group(): dr.Topics(), sink.Group(): sink.Topics()} {
		if len(ts) > 0 {
			groups[g] = ts
		}
	}
	trim := newSoakTrimmer(cl, cfg.Kafka, groups)

	fmt.Fprintf(stdout, "loadtest --soak: %d CPUs, GOMAXPROCS %d, %d events/s of city traffic and a probe every %v for %v, report every %v\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), o.rate, soakProbeEvery, o.duration, o.every)
	fmt.Fprintf(stdout, "  roles ingest, rules (default pack), dispatch, sink; embedded broker, %d partitions, log cut behind the slowest group every %v; ClickHouse %s, database %s\n",
		cfg.Kafka.Partitions, soakTrimEvery, strings.Join(cfg.ClickHouse.Addr, ","), cfg.ClickHouse.Database)

	// The roles, the probe readers and the trimmer run until the end.
	rctx, stopRoles := context.WithCancel(ctx)
	defer stopRoles()
	var wg sync.WaitGroup
	roleErrs := make([]error, 4)
	for i, run := range []func(context.Context) error{in.Run, rr.Run, dr.Run, sink.Run} {
		wg.Go(func() {
			if roleErrs[i] = run(rctx); roleErrs[i] != nil {
				stopRoles() // one role down ends the run
			}
		})
	}
	for p := range cfg.Kafka.Partitions {
		wg.Go(func() { st.followAlerts(rctx, cfg.Kafka, p) })
	}
	wg.Go(func() { trim.run(rctx) })

	// The load and the probes run for the duration.
	start := time.Now()
	lctx, stopLoad := context.WithTimeout(rctx, o.duration)
	defer stopLoad()
	var lwg sync.WaitGroup
	var offered atomic.Int64
	var loadErr, probeErr error
	lwg.Go(func() { loadErr = soakLoad(lctx, cfg.Kafka, o.rate, start, &offered) })
	lwg.Go(func() { probeErr = st.probe(lctx, cfg.Kafka) })

	fmt.Fprintf(stdout, "%9s %10s %10s %8s %8s %6s %9s %10s %10s %10s %10s\n",
		"elapsed", "offered", "stored", "heap MiB", "live MiB", "gorout", "lag", "alert p50", "alert p99", "store p50", "store p99")
	var samples []soakSample
	line := func(now time.Time) {
		alert, stored := st.interval()
		s := samples[len(samples)-1]
		fmt.Fprintf(stdout, "%9v %10d %10d %8.0f %8.0f %6d %9d %10v %10v %10v %10v\n",
			now.Sub(start).Round(time.Second), offered.Load()+st.written(), st.storedTotal(), float64(s.heapInuse)/(1<<20), float64(s.heapLive)/(1<<20),
			s.goroutines, trim.lag(rctx), soakPct(alert, 0.5), soakPct(alert, 0.99), soakPct(stored, 0.5), soakPct(stored, 0.99))
	}
	tick := time.NewTicker(soakSampleEvery)
	lastLine := start
	for running := true; running; {
		select {
		case <-lctx.Done():
			running = false
		case now := <-tick.C:
			samples = append(samples, soakSampleNow(now.Sub(start), reg))
			if now.Sub(lastLine) >= o.every-soakSampleEvery/2 {
				lastLine = now
				line(now)
			}
		}
	}
	tick.Stop()
	lwg.Wait()
	loadTime := time.Since(start)
	if ctx.Err() != nil || rctx.Err() != nil {
		stopRoles()
		wg.Wait()
		return errors.Join(ctx.Err(), errors.Join(roleErrs...), errors.New("the soak stopped before its end"))
	}
	if err := errors.Join(loadErr, probeErr); err != nil {
		stopRoles()
		wg.Wait()
		return err
	}
	if len(samples) == 0 || loadTime-samples[len(samples)-1].at > soakSampleEvery/2 {
		samples = append(samples, soakSampleNow(loadTime, reg))
		line(time.Now())
	}
	if o.memProfile != "" {
		if err := writeHeapProfile(o.memProfile); err != nil {
			log.Error("cannot write heap profile", "err", err)
		}
	}
	total := offered.Load() + st.written()
	fmt.Fprintf(stdout, "load stopped after %v: %d events offered (%.0f/s), %d of them probes\n",
		loadTime.Round(time.Millisecond), total, float64(total)/loadTime.Seconds(), st.probes())

	// The backlog: every event stored, every probe alerted. The stored
	// counter includes rows inserted again after a rebalance, so it only
	// says when to ask ClickHouse for the distinct count, which decides.
	deadline := time.Now().Add(o.drain)
	var inDB uint64
	poll := time.NewTicker(time.Second)
	for time.Now().Before(deadline) && rctx.Err() == nil {
		if st.storedTotal() >= total && st.waiting() == 0 {
			if n, err := distinctEvents(rctx, db); err == nil && n >= uint64(total) {
				inDB = n
				break
			}
		}
		select {
		case <-rctx.Done():
		case <-poll.C:
		}
	}
	poll.Stop()
	drained := time.Since(start) - loadTime
	stopRoles()
	wg.Wait()
	if err := errors.Join(roleErrs...); err != nil {
		return err
	}
	if inDB < uint64(total) {
		if inDB, err = distinctEvents(context.WithoutCancel(ctx), db); err != nil {
			return err
		}
	}

	// The verdict.
	fmt.Fprintf(stdout, "after the load: %v to store the backlog\n", drained.Round(time.Millisecond))
	lost := total - int64(inDB)
	missing := st.waiting()
	fmt.Fprintf(stdout, "stored: %d distinct events in ClickHouse of %d offered (%d lost); probes: %d planted, %d without an alert\n",
		inDB, total, lost, st.probes(), missing)
	v := soakJudge(samples, o.duration)
	fmt.Fprintln(stdout, v.text)
	fmt.Fprintln(stdout, logCounts.summary())
	var problems []string
	if lost != 0 {
		problems = append(problems, fmt.Sprintf("%d events lost", lost))
	}
	if missing > 0 {
		problems = append(problems, fmt.Sprintf("%d probes without an alert", missing))
	}
	problems = append(problems, v.problems...)
	if len(problems) > 0 {
		fmt.Fprintf(stdout, "verdict: FAIL (%s)\n", strings.Join(problems, "; "))
		return fmt.Errorf("soak failed: %s", strings.Join(problems, "; "))
	}
	fmt.Fprintln(stdout, "verdict: PASS (nothing lost, every probe alerted, heap and goroutines flat)")
	return nil
}

// writeHeapProfile writes the heap profile of the process to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cannot create heap profile: %w", err)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("cannot write heap profile: %w", err)
	}
	return f.Close()
}

// soakLoad offers rate events/s of the city mix until ctx is done,
// counting them in offered. A write in progress when ctx ends completes,
// so that every event counted was handed to the broker.
func soakLoad(ctx context.Context, kc kafkaio.Config, rate int, start time.Time, offered *atomic.Int64) error {
	w := kc.NewWriter()
	// kafka-go gives every partition's batch room for BatchSize messages
	// up front; a tick's few dozen messages spread over forty partitions
	// would otherwise cost the load, not the roles, hundreds of MB/s of
	// garbage.
	w.BatchSize = 64
	defer w.Close()
	load := simulators.NewLoad(3, kc.TopicPrefix, "soak")
	var msgs []kafka.Message
	var arena []byte
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		n := min(int(float64(rate)*time.Since(start).Seconds())-int(offered.Load()), 5000)
		if n <= 0 {
			continue
		}
		msgs, arena = load.Append(msgs[:0], arena[:0], time.Now(), n)
		if err := w.WriteMessages(context.WithoutCancel(ctx), msgs...); err != nil {
			return fmt.Errorf("cannot produce: %w", err)
		}
		offered.Add(int64(n))
	}
}

// soakStats collects the soak's latencies; the interval figures are
// taken and reset by interval.
type soakStats struct {
	mu        sync.Mutex
	storedLat []time.Duration // device time → stored, this interval
	alertLat  []time.Duration // probe produced → alert readable, this interval
	stored    int64
	pending   map[string]time.Time // probes without an alert yet, by event id
	planted   int64
	beats     int64 // heartbeats of the probes' cameras
}

// storedHook is the sink's stored hook.
func (s *soakStats) storedHook(times []int64, at time.Time) {
	ms := at.UnixMilli()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range times {
		s.storedLat = append(s.storedLat, time.Duration(ms-t)*time.Millisecond)
	}
	s.stored += int64(len(times))
}

func (s *soakStats) storedTotal() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored
}

func (s *soakStats) probes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.planted
}

// written returns the events the probe loop wrote: probes and their
// cameras' heartbeats.
func (s *soakStats) written() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.planted + s.beats
}

func (s *soakStats) waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// interval returns this interval's latencies, sorted, and starts the next.
func (s *soakStats) interval() (alert, stored []time.Duration) {
	s.mu.Lock()
	alert, stored = s.alertLat, s.storedLat
	s.alertLat, s.storedLat = nil, make([]time.Duration, 0, cap(stored))
	s.mu.Unlock()
	slices.Sort(alert)
	slices.Sort(stored)
	return alert, stored
}

// probe plants a probe every soakProbeEvery until ctx is done.
func (s *soakStats) probe(ctx context.Context, kc kafkaio.Config) error {
	w := kc.NewWriter()
	w.BatchSize = 1
	defer w.Close()
	tick := time.NewTicker(soakProbeEvery)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		id := "soak-probe-" + strconv.Itoa(n)
		dev := "soak-probe-cam-" + strconv.Itoa(n%soakProbeCameras)
		now := time.Now()
		v := fmt.Appendf(nil, `{"id":%q,"type":"camera.detection","device_id":%q,"time":%q,"lat":32.0421,"lon":112.1442,"camera_class":"A","object":"person","behavior":"fight","confidence":0.95}`,
			id, dev, now.Format(time.RFC3339Nano))
		msgs := []kafka.Message{{Topic: kc.Topic(kafkaio.TopicCamera), Key: []byte(dev), Value: v}}
		// The heartbeats of the cameras whose turn it is this tick.
		turns := int(soakProbeHeartbeat / soakProbeEvery)
		for c := n % turns; c < soakProbeCameras; c += turns {
			hb := "soak-probe-cam-" + strconv.Itoa(c)
			msgs = append(msgs, kafka.Message{Topic: kc.Topic(kafkaio.TopicCamera), Key: []byte(hb),
				Value: fmt.Appendf(nil, `{"id":"%s-hb-%d","type":"device.heartbeat","device_id":%q,"time":%q,"lat":32.0421,"lon":112.1442}`,
					hb, n, hb, now.Format(time.RFC3339Nano))})
		}
		s.mu.Lock()
		s.pending[id] = now
		s.planted++
		s.beats += int64(len(msgs) - 1)
		s.mu.Unlock()
		if err := w.WriteMessages(context.WithoutCancel(ctx), msgs...); err != nil {
			return fmt.Errorf("cannot produce a probe: %w", err)
		}
	}
}

// followAlerts reads partition p of the alerts topic from its start until
// ctx is done and takes the latency of every probe whose alert (firing,
// or updated within the rule's suppression window) it sees.
func (s *soakStats) followAlerts(ctx context.Context, kc kafkaio.Config, p int) {
	rd := kc.NewPartitionReader(kc.Topic(kafkaio.TopicAlerts), p)
	defer rd.Close()
	for {
		m, err := rd.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		at := time.Now()
		a, err := event.DecodeAlert(m.Value)
		if err != nil || a.Rule != "camera.violence" || a.Status == event.AlertResolved || len(a.Evidence) == 0 {
			continue
		}
		id := a.Evidence[len(a.Evidence)-1]
		s.mu.Lock()
		if sent, ok := s.pending[id]; ok {
			s.alertLat = append(s.alertLat, at.Sub(sent))
			delete(s.pending, id)
		}
		s.mu.Unlock()
	}
}

// soakSample is the process's memory and goroutines at one moment.
type soakSample struct {
	at                  time.Duration
	heapInuse, heapLive uint64
	dedupe              uint64 // ids in ingest's dedupe cache
	goroutines          int
}

func soakSampleNow(at time.Duration, reg *prometheus.Registry) soakSample {
	ms := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(ms)
	return soakSample{at: at, heapInuse: ms[0].Value.Uint64(), heapLive: ms[1].Value.Uint64(),
		dedupe: uint64(sumSeries(reg, "citywatch_ingest_dedupe_entries")), goroutines: runtime.NumGoroutine()}
}

// soakVerdict is the judgement of flatness: a text and what failed.
type soakVerdict struct {
	text     string
	problems []string
}

// soakJudge compares the last quarter of the run with the second: the
// mean live heap (the heap after the last collection) less ingest's dedupe
// cache, and the largest goroutine count. The first quarter is the
// warm-up: caches and pools fill, consumer groups settle.
func soakJudge(samples []soakSample, d time.Duration) soakVerdict {
	var q2, q4 []soakSample
	for _, s := range samples {
		switch {
		case s.at > d/4 && s.at <= d/2:
			q2 = append(q2, s)
		case s.at > 3*d/4:
			q4 = append(q4, s)
		}
	}
	if len(q2) == 0 || len(q4) == 0 {
		return soakVerdict{text: "flatness: too short to judge (no samples in the second or last quarter)", problems: []string{"too short to judge flatness"}}
	}
	mean := func(ss []soakSample, f func(soakSample) float64) float64 {
		var sum float64
		for _, s := range ss {
			sum += f(s)
		}
		return sum / float64(len(ss))
	}
	live := func(s soakSample) float64 { return float64(s.heapLive) }
	dedupe := func(s soakSample) float64 { return float64(s.dedupe) }
	rest := func(s soakSample) float64 { return float64(s.heapLive) - float64(s.dedupe*soakDedupeEntryBytes) }
	maxG := func(ss []soakSample) int {
		return slices.MaxFunc(ss, func(a, b soakSample) int { return cmp.Compare(a.goroutines, b.goroutines) }).goroutines
	}
	h2, h4 := mean(q2, rest), mean(q4, rest)
	hAllowed := h2*(1+soakHeapTolerance) + soakHeapSlack
	g2, g4 := maxG(q2), maxG(q4)
	gAllowed := g2 + max(soakGoroutineSlack, g2/10)
	var v soakVerdict
	verdict := func(ok bool) string {
		if ok {
			return "flat"
		}
		return "GROWING"
	}
	v.text = fmt.Sprintf("flatness, last quarter against the second (%d and %d samples):\n"+
		"  live heap, mean:                  %.1f → %.1f MiB (ingest's dedupe cache %.0f → %.0f ids, about %d B each)\n"+
		"  live heap less the dedupe cache:  %.1f → %.1f MiB (%+.1f %%; allowed up to %.1f MiB: +%.0f %% + %d MiB): %s\n"+
		"  goroutines, most:                 %d → %d (allowed up to %d: +%d or +10 %%): %s",
		len(q2), len(q4), mean(q2, live)/(1<<20), mean(q4, live)/(1<<20), mean(q2, dedupe), mean(q4, dedupe), soakDedupeEntryBytes,
		h2/(1<<20), h4/(1<<20), 100*(h4/h2-1), hAllowed/(1<<20), 100*soakHeapTolerance, soakHeapSlack>>20, verdict(h4 <= hAllowed),
		g2, g4, gAllowed, soakGoroutineSlack, verdict(g4 <= gAllowed))
	if h4 > hAllowed {
		v.problems = append(v.problems, "heap growing")
	}
	if g4 > gAllowed {
		v.problems = append(v.problems, "goroutines growing")
	}
	return v
}

// soakPct returns the q-quantile of sorted, rounded for printing.
func soakPct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	d := sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// soakLog passes the first record of each message on to h and counts the
// others, so that a warning repeated for every event (the load's synthetic
// patrol units jump from place to place, which the dispatcher reports)
// does not drown the report; the counts are in the summary at the end.
type soakLog struct {
	h      slog.Handler
	counts *soakLogCounts
}

type soakLogCounts struct {
	mu sync.Mutex
	n  map[string]int // by level and message
}

func (l *soakLog) Enabled(ctx context.Context, level slog.Level) bool { return l.h.Enabled(ctx, level) }

func (l *soakLog) Handle(ctx context.Context, r slog.Record) error {
	key := r.Level.String() + " " + r.Message
	l.counts.mu.Lock()
	l.counts.n[key]++
	first := l.counts.n[key] == 1
	l.counts.mu.Unlock()
	if !first {
		return nil
	}
	return l.h.Handle(ctx, r)
}

func (l *soakLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &soakLog{h: l.h.WithAttrs(as), counts: l.counts}
}

func (l *soakLog) WithGroup(name string) slog.Handler {
	return &soakLog{h: l.h.WithGroup(name), counts: l.counts}
}

// summary lists the messages logged, most frequent first.
func (c *soakLogCounts) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.n) == 0 {
		return "log: nothing at warning level or above"
	}
	keys := make([]string, 0, len(c.n))
	for k := range c.n {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(c.n[b], c.n[a]), cmp.Compare(a, b)) })
	var b strings.Builder
	b.WriteString("log, by level and message (each printed once above):")
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %8d× %s", c.n[k], k)
	}
	return b.String()
}

// soakTrimmer cuts the broker's log behind the slowest consumer group,
// as retention would on a real cluster, and measures the groups' lag.
type soakTrimmer struct {
	cl     *kfake.Cluster
	kc     kafkaio.Config
	groups map[string][]string // group → topics
	// unread are the topics no group reads (the buyers' topic: only a
	// rules start reads it, and none starts during the soak), cut where
	// they ended at the previous round.
	unread []string
	// safe holds, by topic and partition, the offset every group had
	// committed at the previous round: what the next round may cut.
	safe map[string]map[int]int64
	cut  map[string]map[int]int64
}

func newSoakTrimmer(cl *kfake.Cluster, kc kafkaio.Config, groups map[string][]string) *soakTrimmer {
	t := &soakTrimmer{cl: cl, kc: kc, groups: groups, safe: map[string]map[int]int64{}, cut: map[string]map[int]int64{}}
	read := map[string]bool{}
	for _, topics := range groups {
		for _, topic := range topics {
			read[topic] = true
		}
	}
	for _, topic := range kc.Topics(kafkaio.AllTopics...) {
		if !read[topic] {
			t.unread = append(t.unread, topic)
		}
	}
	return t
}

// run cuts every soakTrimEvery until ctx is done.
func (t *soakTrimmer) run(ctx context.Context) {
	tick := time.NewTicker(soakTrimEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.round(ctx)
	}
}

func (t *soakTrimmer) round(ctx context.Context) {
	client := t.kc.Client()
	parts := make([]int, t.kc.Partitions)
	for i := range parts {
		parts[i] = i
	}
	// The lowest committed offset of every partition over the groups
	// reading its topic; a partition some group has not committed on is
	// left alone.
	low := map[string]map[int]int64{}
	unknown := map[string]map[int]bool{}
	for group, topics := range t.groups {
		req := &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{}}
		for _, topic := range topics {
			req.Topics[topic] = parts
		}
		resp, err := client.OffsetFetch(ctx, req)
		if err != nil || resp.Error != nil {
			return // try again next round
		}
		for _, topic := range topics {
			if low[topic] == nil {
				low[topic], unknown[topic] = map[int]int64{}, map[int]bool{}
			}
			seen := map[int]bool{}
			for _, p := range resp.Topics[topic] {
				seen[p.Partition] = true
				if p.Error != nil || p.CommittedOffset < 0 {
					unknown[topic][p.Partition] = true
					continue
				}
				if cur, ok := low[topic][p.Partition]; !ok || p.CommittedOffset < cur {
					low[topic][p.Partition] = p.CommittedOffset
				}
			}
			for _, p := range parts {
				if !seen[p] {
					unknown[topic][p] = true
				}
			}
		}
	}
	for topic, ps := range t.safe {
		for p, off := range ps {
			if off <= t.cut[topic][p] {
				continue
			}
			if err := t.cl.DeleteRecords(topic, int32(p), off); err == nil {
				if t.cut[topic] == nil {
					t.cut[topic] = map[int]int64{}
				}
				t.cut[topic][p] = off
			}
		}
	}
	for _, topic := range t.unread {
		ends, err := kafkaio.EndOffsets(ctx, client, topic)
		if err != nil {
			return
		}
		low[topic], unknown[topic] = ends, map[int]bool{}
	}
	t.safe = map[string]map[int]int64{}
	for topic, ps := range low {
		for p, off := range ps {
			if unknown[topic][p] {
				continue
			}
			if t.safe[topic] == nil {
				t.safe[topic] = map[int]int64{}
			}
			t.safe[topic][p] = off
		}
	}
}

// lag returns the lag of every group together, or -1 when the broker
// does not answer.
func (t *soakTrimmer) lag(ctx context.Context) int64 {
	client := t.kc.Client()
	var n int64
	for group, topics := range t.groups {
		lag, err := kafkaio.TotalLag(ctx, client, group, topics)
		if err != nil {
			return -1
		}
		n += lag
	}
	return n
}
