package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/ingest"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
	"citywatch/store"
)

// cmdLoadtest runs the foundation's chain in one process (embedded broker,
// ingest, sink) against the configured ClickHouse, offers a steady load of
// valid events for a while, waits until every one is stored, and prints
// throughput and latency percentiles.
func cmdLoadtest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", time.Minute, "how long to offer load")
	rate := fs.Int("rate", 100_000, "events per second offered (0: as fast as the producers go)")
	producers := fs.Int("producers", 2, "producing goroutines")
	drain := fs.Duration("drain", 5*time.Minute, "longest wait for the backlog to be stored after the load stops")
	keep := fs.Bool("keep", false, "keep the load-test database")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run (any chain, or the soak) to this file")
	chain := fs.String("chain", "store", "store: ingest and sink into ClickHouse; rules: ingest and rules, alert latency and throughput; all: every role on a backlog, beside a plain consumer and a plain insert")
	events := fs.Int("events", 1_000_000, "with --chain rules or all: events in the backlog of the throughput part")
	span := fs.Duration("span", 0, "with --chain rules: event time the throughput part's backlog spans, up to now (default: its events at 10,000/s); a day shows what a restart replays")
	soak := fs.Bool("soak", false, "soak: every role but web (ingest, rules, dispatch, sink) at city load for --duration, a line every --report-every, and a verdict on loss, memory and goroutines at the end (--rate defaults to the city's peak, 3,250/s)")
	reportEvery := fs.Duration("report-every", time.Minute, "with --soak: how often to print a line")
	memProfile := fs.String("memprofile", "", "with --soak: write a heap profile to this file when the load stops")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		return err
	}
	// The roles under test run with the memory policy a deployment gives
	// them (runtime in CITYWATCH_CONFIG, or GOGC and GOMEMLIMIT).
	policy, err := applyRuntime(cfg, newLogger(stderr, "warn"))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "loadtest: %s\n", policy)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("cannot create profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cannot start profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if *soak {
		rateSet := false
		fs.Visit(func(f *flag.Flag) { rateSet = rateSet || f.Name == "rate" })
		if !rateSet {
			*rate = soakCityPeak
		}
		if *rate <= 0 || *duration <= 0 || *reportEvery <= 0 {
			return errors.New("--soak needs a positive --rate, --duration and --report-every")
		}
		if len(cfg.PseudonymKey) == 0 {
			cfg.PseudonymKey = randomKey()
		}
		return loadtestSoak(ctx, cfg, soakOptions{rate: *rate, duration: *duration, every: *reportEvery, drain: *drain, keep: *keep, memProfile: *memProfile}, stdout, newLogger(stderr, "warn"))
	}
	switch *chain {
	case "store":
	case "rules":
		if len(cfg.PseudonymKey) == 0 {
			cfg.PseudonymKey = randomKey()
		}
		return loadtestRules(ctx, cfg, *rate, *duration, *events, *span, stdout, newLogger(stderr, "warn"))
	case "all":
		if len(cfg.PseudonymKey) == 0 {
			cfg.PseudonymKey = randomKey()
		}
		return loadtestAll(ctx, cfg, *events, stdout, newLogger(stderr, "warn"))
	default:
		return fmt.Errorf("--chain: %q is not store, rules or all", *chain)
	}
	cfg.ClickHouse.Database = "citywatch_loadtest_" + strconv.FormatInt(time.Now().Unix(), 10)
	if len(cfg.PseudonymKey) == 0 {
		cfg.PseudonymKey = randomKey()
	}
	cfg.LogLevel = "warn"
	log := newLogger(stderr, cfg.LogLevel)

	broker, err := kafkaio.StartEmbedded(cfg.Kafka)
	if err != nil {
		return err
	}
	defer broker.Close()
	broker.Use(&cfg.Kafka)

	db, err := store.Open(ctx, cfg.ClickHouse)
	if err != nil {
		return fmt.Errorf("cannot reach ClickHouse: %w", err)
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		return err
	}
	if !*keep {
		defer func() {
			if err := db.DropDatabase(context.WithoutCancel(ctx)); err != nil {
				log.Warn("cannot drop load-test database", "err", err)
			}
		}()
	}

	reg := prometheus.NewRegistry()
	km := kafkaio.NewMetrics(reg)
	w := cfg.Kafka.NewWriter()
	defer w.Close()
	in, err := ingest.New(cfg.Ingest, cfg.Kafka, cfg.PseudonymKey, nil, reg, km, log)
	if err != nil {
		return err
	}
	sink, err := store.NewSink(cfg.Sink, cfg.Kafka, db, reg, km, log)
	if err != nil {
		return err
	}
	var (
		mu        sync.Mutex
		latencies []int32 // ms, device time → stored
		stored    atomic.Int64
		lastStore atomic.Int64
	)
	sink.SetStoredHook(func(times []int64, at time.Time) {
		ms := at.UnixMilli()
		mu.Lock()
		for _, t := range times {
			latencies = append(latencies, int32(ms-t))
		}
		mu.Unlock()
		stored.Add(int64(len(times)))
		lastStore.Store(at.UnixNano())
	})

	rctx, stopRoles := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var ingestErr, sinkErr error
	wg.Add(2)
	go func() { defer wg.Done(); ingestErr = in.Run(rctx) }()
	go func() { defer wg.Done(); sinkErr = sink.Run(rctx) }()

	fmt.Fprintf(stdout, "loadtest: %d CPUs, GOMAXPROCS %d, rate %d/s for %v, %d producers, ClickHouse %v\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), *rate, *duration, *producers, cfg.ClickHouse.Addr)

	// Producers: each offers rate/producers events per second in 10 ms
	// steps, writing synchronously (acks from the broker) in batches.
	start := time.Now()
	pctx, stopLoad := context.WithTimeout(ctx, *duration)
	var produced atomic.Int64
	var pwg sync.WaitGroup
	var prodErr error
	var prodOnce sync.Once
	for p := range *producers {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			load := simulators.NewLoad(uint64(p+1), cfg.Kafka.TopicPrefix, fmt.Sprintf("lt%d", p))
			var msgs []kafka.Message
			var arena []byte
			per := float64(*rate) / float64(*producers)
			sent := 0
			for pctx.Err() == nil {
				n := 2000
				if *rate > 0 {
					want := int(per * time.Since(start).Seconds())
					n = min(want-sent, 5000)
					if n <= 0 {
						time.Sleep(2 * time.Millisecond)
						continue
					}
				}
				msgs, arena = load.Append(msgs[:0], arena[:0], time.Now(), n)
				if err := w.WriteMessages(ctx, msgs...); err != nil {
					prodOnce.Do(func() { prodErr = err })
					return
				}
				sent += n
				produced.Add(int64(n))
			}
		}()
	}
	ticker := time.NewTicker(5 * time.Second)
	go func() {
		for {
			select {
			case <-pctx.Done():
				return
			case <-ticker.C:
				fmt.Fprintf(stdout, "  %4.0fs: produced %d, ingested %.0f, stored %d\n", time.Since(start).Seconds(), produced.Load(), sumSeries(reg, "citywatch_ingest_events_total"), stored.Load())
			}
		}
	}()
	pwg.Wait()
	stopLoad()
	ticker.Stop()
	loadTime := time.Since(start)
	if prodErr != nil {
		stopRoles()
		wg.Wait()
		return fmt.Errorf("cannot produce: %w", prodErr)
	}
	total := produced.Load()
	fmt.Fprintf(stdout, "load stopped after %v: %d events offered (%.0f/s)\n", loadTime.Round(time.Millisecond), total, float64(total)/loadTime.Seconds())

	// The stored counter includes rows inserted again after a rebalance
	// (replays the tables absorb), so it only says when to start asking
	// ClickHouse for the distinct count, which decides.
	deadline := time.Now().Add(*drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if stored.Load() >= total {
			if n, err := distinctEvents(ctx, db); err == nil && n >= uint64(total) {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopRoles()
	wg.Wait()
	if err := errors.Join(ingestErr, sinkErr); err != nil {
		return err
	}
	allStored := time.Unix(0, lastStore.Load()).Sub(start)

	inDB, err := distinctEvents(context.WithoutCancel(ctx), db)
	if err != nil {
		return err
	}
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return time.Duration(latencies[min(int(p*float64(len(latencies))), len(latencies)-1)]) * time.Millisecond
	}
	fmt.Fprintf(stdout, "stored: %d distinct events in ClickHouse of %d offered (%d lost); last stored %v after start\n",
		inDB, total, total-int64(inDB), allStored.Round(time.Millisecond))
	fmt.Fprintf(stdout, "throughput: %.0f events/s sustained (offered ÷ time until the last was stored)\n", float64(total)/allStored.Seconds())
	fmt.Fprintf(stdout, "latency device time → stored in ClickHouse: p50 %v  p90 %v  p99 %v  max %v\n", pct(0.5), pct(0.9), pct(0.99), pct(1))
	for _, h := range []string{"citywatch_kafka_batch_messages", "citywatch_kafka_flush_seconds", "citywatch_kafka_commit_seconds"} {
		for group, mean := range histogramMeans(reg, h) {
			fmt.Fprintf(stdout, "  mean %s{%s}: %.4g\n", h, group, mean)
		}
	}
	if int64(inDB) != total {
		return fmt.Errorf("%d events offered but %d stored", total, inDB)
	}
	return nil
}

// sumSeries adds up every series of the counters or gauges called names
// in reg, from one gathering.
func sumSeries(reg *prometheus.Registry, names ...string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	m := metrics{}
	for _, mf := range mfs {
		m[mf.GetName()] = mf
	}
	var total float64
	for _, name := range names {
		total += m.sum(name, nil)
	}
	return total
}

// histogramMeans returns the mean of each series of histogram name in reg,
// by its label values.
func histogramMeans(reg *prometheus.Registry, name string) map[string]float64 {
	out := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			if h := m.GetHistogram(); h.GetSampleCount() > 0 {
				out[strings.Join(labels, ",")] = h.GetSampleSum() / float64(h.GetSampleCount())
			}
		}
	}
	return out
}

// distinctEvents counts the events stored, each once.
func distinctEvents(ctx context.Context, db *store.DB) (uint64, error) {
	counts, err := db.CountEvents(ctx)
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range counts {
		n += c
	}
	return n, nil
}
