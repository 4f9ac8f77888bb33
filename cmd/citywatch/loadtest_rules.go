package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/ingest"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/rules"
	"citywatch/simulators"
)

// probeEvery is how often the rules load run produces a probe: a fight
// seen by a camera of its own, which the default pack alerts on at once.
const probeEvery = 20 * time.Millisecond

// loadtestRules is `citywatch loadtest --chain rules`: the alerting path
// in one process (embedded broker, ingest, rules with the default pack),
// in two parts.
//
//  1. Latency: rate events/s of city traffic for duration, and beside them
//     a probe every 20 ms; for each probe, the time from the moment it is
//     handed to the producer to the moment its alert is readable on
//     citywatch.alerts.
//  2. Throughput: n normalised events written to a fresh events topic,
//     then read through the broker in turns, three times each: by a bare
//     kafka-go consumer group that only decodes them, and by a rules role
//     with the whole pack, which on its start evaluates the backlog it
//     finds (the replay of Role). The figures are events per second
//     through the broker and the process's CPU time per event, of each
//     round and of the median one.
func loadtestRules(ctx context.Context, cfg Config, rate int, duration time.Duration, n int, span time.Duration, stdout io.Writer, log *slog.Logger) error {
	broker, err := kafkaio.StartEmbedded(cfg.Kafka)
	if err != nil {
		return err
	}
	defer broker.Close()
	broker.Use(&cfg.Kafka)
	c, err := city.Default()
	if err != nil {
		return fmt.Errorf("cannot load the city model: %w", err)
	}
	p, err := event.NewPseudonymizer(cfg.PseudonymKey)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "loadtest --chain rules: %d CPUs, GOMAXPROCS %d, embedded broker, %d partitions\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), cfg.Kafka.Partitions)
	if err := rulesLatency(ctx, cfg, c, p, rate, duration, stdout, log); err != nil {
		return err
	}
	return rulesThroughput(ctx, cfg, broker, c, p, n, span, stdout, log)
}

func newRulesRole(cfg Config, c *city.City, p *event.Pseudonymizer, reg prometheus.Registerer, km *kafkaio.Metrics, log *slog.Logger) (*rules.Role, error) {
	ecfg := rules.CityConfig(c)
	ecfg.TimeZone = cfg.Timezone
	return rules.NewRole(cfg.Rules, ecfg, cfg.Kafka, p, nil, reg, km, log)
}

func rulesLatency(ctx context.Context, cfg Config, c *city.City, p *event.Pseudonymizer, rate int, duration time.Duration, stdout io.Writer, log *slog.Logger) error {
	kc := cfg.Kafka
	kc.TopicPrefix = "lat."
	if err := kafkaio.EnsureTopics(ctx, kc, kafkaio.AllTopics...); err != nil {
		return err
	}
	cfg.Kafka = kc
	reg := prometheus.NewRegistry()
	km := kafkaio.NewMetrics(reg)
	in, err := ingest.New(cfg.Ingest, kc, cfg.PseudonymKey, nil, reg, km, log)
	if err != nil {
		return err
	}
	role, err := newRulesRole(cfg, c, p, reg, km, log)
	if err != nil {
		return err
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Add(2)
	go func() { defer wg.Done(); errs[0] = in.Run(rctx) }()
	go func() { defer wg.Done(); errs[1] = role.Run(rctx) }()

	// Alerts are read from the end of every partition, without a group.
	var (
		mu     sync.Mutex
		sentAt = map[string]time.Time{}
		lat    []time.Duration
		// When each probe was produced and raised, for the latency's
		// parts (see below).
		sentOf, raisedOf = map[string]time.Time{}, map[string]time.Time{}
		fromRaise        []time.Duration
		waiting          sync.WaitGroup
	)
	readers := make([]*kafka.Reader, kc.Partitions)
	for i := range readers {
		readers[i] = kc.NewPartitionReader(kc.Topic(kafkaio.TopicAlerts), i)
		if err := readers[i].SetOffset(kafka.LastOffset); err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer readers[i].Close()
			for {
				m, err := readers[i].ReadMessage(rctx)
				if err != nil {
					return
				}
				at := time.Now()
				a, err := event.DecodeAlert(m.Value)
				if err != nil || a.Status != event.AlertFiring || len(a.Evidence) == 0 {
					continue
				}
				id := a.Evidence[len(a.Evidence)-1]
				mu.Lock()
				if t, ok := sentAt[id]; ok {
					lat = append(lat, at.Sub(t))
					sentOf[id], raisedOf[id] = t, a.RaisedAt
					fromRaise = append(fromRaise, at.Sub(a.RaisedAt))
					delete(sentAt, id)
					waiting.Done()
				}
				mu.Unlock()
			}
		}()
	}

	// The load stands in for devices on other machines, but runs in this
	// process: with batches sized for a backlog (kafka.batch_size) its
	// writes of a millisecond's events made 290 MB/s of garbage,
	// collected on the cores of the roles under test. A PromptWriter
	// sizes its batches to each write, as the roles' own writers do.
	w := kc.NewPromptWriter(nil, log)
	defer w.Close()
	probeW := kc.NewWriter()
	probeW.BatchSize = 1
	defer probeW.Close()
	// Let the rules role finish its start before measuring.
	time.Sleep(2 * time.Second)

	start := time.Now()
	lctx, stopLoad := context.WithTimeout(rctx, duration)
	defer stopLoad()
	var produced atomic.Int64
	// The producer has a wait of its own: its last write may still be in
	// flight when the probes end, and stopping the roles then cancelled
	// it ("cannot produce: context canceled").
	var producing sync.WaitGroup
	producing.Add(1)
	go func() {
		defer producing.Done()
		load := simulators.NewLoad(7, kc.TopicPrefix, "rl")
		var msgs []kafka.Message
		var arena []byte
		sent := 0
		var last time.Time
		for lctx.Err() == nil {
			want := int(float64(rate) * time.Since(start).Seconds())
			k := min(want-sent, 2000)
			if k <= 0 || time.Since(last) < loadLinger {
				time.Sleep(time.Millisecond)
				continue
			}
			last = time.Now()
			msgs, arena = load.Append(msgs[:0], arena[:0], time.Now(), k)
			if err := w.WriteMessages(rctx, msgs...); err != nil {
				errs[2] = fmt.Errorf("cannot produce: %w", err)
				return
			}
			sent += k
			produced.Add(int64(k))
		}
	}()
	tick := time.NewTicker(probeEvery)
	probes := 0
	for lctx.Err() == nil {
		<-tick.C
		probes++
		id := "probe-" + strconv.Itoa(probes)
		dev := "probe-cam-" + strconv.Itoa(probes)
		now := time.Now()
		v := fmt.Appendf(nil, `{"id":%q,"type":"camera.detection","device_id":%q,"time":%q,"lat":32.0421,"lon":112.1442,"camera_class":"A","object":"person","behavior":"fight","confidence":0.95}`,
			id, dev, now.Format(time.RFC3339Nano))
		mu.Lock()
		sentAt[id] = now
		mu.Unlock()
		waiting.Add(1)
		if err := probeW.WriteMessages(rctx, kafka.Message{Topic: kc.Topic(kafkaio.TopicCamera), Key: []byte(dev), Value: v}); err != nil {
			stopLoad()
			producing.Wait()
			return fmt.Errorf("cannot produce a probe: %w", err)
		}
	}
	tick.Stop()
	elapsed := time.Since(start)
	producing.Wait()
	done := make(chan struct{})
	go func() { waiting.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	stop()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	// The latency's parts: produced → ingest took it (the events
	// record's time), → the rules raised it (raised_at), → readable.
	var toIngest, toRaise []time.Duration
	recordTime := func(m *kafka.Message) (int64, bool) { return m.Time.UnixMilli(), true }
	if _, err := kafkaio.ReadSince(ctx, kc, kc.Topic(kafkaio.TopicEvents), time.Time{}, recordTime, func(m *kafka.Message) {
		if !bytes.HasPrefix(m.Key, []byte("probe-cam-")) {
			return
		}
		id := "probe-" + string(m.Key[len("probe-cam-"):])
		if sent, ok := sentOf[id]; ok {
			toIngest = append(toIngest, m.Time.Sub(sent))
			toRaise = append(toRaise, raisedOf[id].Sub(m.Time))
		}
	}); err != nil {
		return err
	}
	slices.Sort(lat)
	slices.Sort(toIngest)
	slices.Sort(toRaise)
	slices.Sort(fromRaise)
	pctOf := func(lat []time.Duration, q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(int(q*float64(len(lat))), len(lat)-1)].Round(10 * time.Microsecond)
	}
	pct := func(q float64) time.Duration { return pctOf(lat, q) }
	fmt.Fprintf(stdout, "latency: %.0f events/s offered for %v (%d events) plus %d probes; %d probe alerts read, %d missing\n",
		float64(produced.Load())/elapsed.Seconds(), elapsed.Round(time.Millisecond), produced.Load(), probes, len(lat), len(sentAt))
	fmt.Fprintf(stdout, "  produced → alert readable on citywatch.alerts: p50 %v  p90 %v  p99 %v  max %v\n", pct(0.5), pct(0.9), pct(0.99), pct(1))
	for _, part := range []struct {
		name string
		lat  []time.Duration
	}{
		{"    of which produced → taken by ingest (produce, fetch)", toIngest},
		{"    of which taken by ingest → raised_at (ingest, write, fetch, rules)", toRaise},
		{"    of which raised_at → readable (alert write, fetch)", fromRaise},
	} {
		fmt.Fprintf(stdout, "%s: p50 %v  p90 %v  p99 %v  max %v\n", part.name,
			pctOf(part.lat, 0.5), pctOf(part.lat, 0.9), pctOf(part.lat, 0.99), pctOf(part.lat, 1))
	}
	if len(sentAt) > 0 {
		return fmt.Errorf("%d probes raised no alert", len(sentAt))
	}
	return nil
}

// loadLinger is how long the load's producer gathers events before it
// writes them, as the Java producer does by default (linger.ms, 5 ms since
// Kafka 4.0). The load stands in for the city's devices, which produce
// from their own machines; writing every millisecond, this one producer
// made the broker, in this process, handle five times the produce
// requests on the roles' cores, and the roles as many small batches (p50
// 2.8–3.2 ms, p99 15.9–19.8 ms in three runs; lingering, alternating with
// them: 1.5–2.1 ms and 12.8–15.0 ms). The probes are written at once, one
// by one.
const loadLinger = 5 * time.Millisecond

// backlogRate is the event-time density of the throughput part's backlog,
// in events per second: the rate the latency part offers, about three
// times the city's peak.
const backlogRate = 10_000

func rulesThroughput(ctx context.Context, cfg Config, broker *kafkaio.Embedded, c *city.City, p *event.Pseudonymizer, n int, span time.Duration, stdout io.Writer, log *slog.Logger) error {
	kc := cfg.Kafka
	kc.TopicPrefix = "tp."
	if err := kafkaio.EnsureTopics(ctx, kc, kafkaio.AllTopics...); err != nil {
		return err
	}
	cfg.Kafka = kc
	// The events topic gets what ingest would write: normalised events.
	w := kc.NewWriter()
	load := simulators.NewLoad(11, "", "tp")
	var dec event.Decoder
	var e event.Event
	var raw []kafka.Message
	var arena []byte
	batch := make([]kafka.Message, 0, 5000)
	// The events span the backlog's time (at backlogRate unless span is
	// given), up to now, perMs events per Append: a backlog whose events
	// all had one time made the replay's merge drain the partitions one
	// after the other, one reader at a time. Each record's time is its
	// event's, as when ingest took it at once.
	if span <= 0 {
		span = time.Duration(n) * time.Second / backlogRate
	}
	first := time.Now().Add(-span)
	const perMs = backlogRate / 1000
	for written := 0; written < n; {
		k := min(5000, n-written)
		batch = batch[:0]
		for j := 0; j < k; j += perMs {
			at := first.Add(time.Duration(float64(span) * float64(written+j) / float64(n)))
			raw, arena = load.Append(raw, arena, at, min(perMs, k-j))
		}
		for i := range raw {
			if err := dec.Decode(raw[i].Value, &e); err != nil {
				return fmt.Errorf("cannot decode the load's own event: %w", err)
			}
			p.Apply(&e)
			v := event.AppendJSON(nil, &e)
			batch = append(batch, kafka.Message{Topic: kc.Topic(kafkaio.TopicEvents), Key: []byte(e.DeviceID), Value: v, Time: e.Time})
			if e.Type == event.TypeFuelPurchase {
				// As ingest writes them: on the buyers' topic too.
				batch = append(batch, kafka.Message{Topic: kc.Topic(kafkaio.TopicFuelEvents), Key: []byte(e.BuyerPseudonym), Value: v, Time: e.Time})
			}
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			w.Close()
			return fmt.Errorf("cannot produce: %w", err)
		}
		raw, arena = raw[:0], arena[:0]
		written += k
	}
	w.Close()

	// The two readers take turns, throughputRounds times, and the median
	// round is reported beside each: one pair alone spread from 0.6× to
	// 0.9× on this machine.
	var res []throughputRound
	for i := range throughputRounds {
		var r throughputRound
		var err error
		if r.bare, r.bareCPU, err = readBare(ctx, kc, n, fmt.Sprintf("loadtest-bare-%d", i)); err != nil {
			return err
		}
		// Each round's role raises its alerts anew, on an empty alerts
		// topic, as the first did.
		if err := broker.Empty(kc.Topic(kafkaio.TopicAlerts), kc.Partitions); err != nil {
			return err
		}
		read := readRules
		if cfg.Rules.Shards > 0 {
			read = func(ctx context.Context, cfg Config, c *city.City, p *event.Pseudonymizer, r *throughputRound, log *slog.Logger) error {
				return readRulesSharded(ctx, cfg, broker, c, p, r, i, log)
			}
		}
		if err := read(ctx, cfg, c, p, &r, log); err != nil {
			return err
		}
		res = append(res, r)
	}
	fmt.Fprintf(stdout, "throughput: %d normalised events through the broker, %d rounds, each the bare consumer then the rules role\n", n, len(res))
	if cfg.Rules.Shards > 0 {
		fmt.Fprintf(stdout, "  (scaled out: one process forwarding the backlog to %d shards and evaluating them all)\n", cfg.Rules.Shards)
	}
	for i, r := range res {
		fmt.Fprintf(stdout, "  round %d: bare %.0f events/s (%.2f CPU-s), rules %.0f events/s (%.2f CPU-s): %.2f×\n", i+1,
			float64(n)/r.bare.Seconds(), r.bareCPU.Seconds(), float64(n)/r.rules.Seconds(), r.rulesCPU.Seconds(), r.ratio())
	}
	slices.SortFunc(res, func(a, b throughputRound) int { return cmp.Compare(a.ratio(), b.ratio()) })
	m := res[len(res)/2]
	fmt.Fprintf(stdout, "  median round:\n")
	fmt.Fprintf(stdout, "  bare kafka-go consumer group, decode only: %.0f events/s, %.0f CPU-ns an event\n",
		float64(n)/m.bare.Seconds(), float64(m.bareCPU.Nanoseconds())/float64(n))
	fmt.Fprintf(stdout, "  rules role, whole default pack:          %.0f events/s, %.0f CPU-ns an event (%.2f× the bare consumer's rate)\n",
		float64(n)/m.rules.Seconds(), float64(m.rulesCPU.Nanoseconds())/float64(n), m.ratio())
	fmt.Fprintf(stdout, "  alert messages the pack raised:          %.0f\n", m.alerts)
	fmt.Fprintf(stdout, "  records the replay passed over, older than the rules reading them look back: %.0f\n", m.skipped)
	return nil
}

// throughputRounds is how many times the throughput part reads the
// backlog with each reader.
const throughputRounds = 3

// throughputRound is one turn of each reader on the backlog: wall and CPU
// time (the process's, the embedded broker's included).
type throughputRound struct {
	bare, bareCPU, rules, rulesCPU time.Duration
	alerts, skipped                float64
}

// ratio is the rules role's rate over the bare consumer's.
func (r throughputRound) ratio() float64 { return r.bare.Seconds() / r.rules.Seconds() }

// readBare reads n events of the events topic with a new consumer group
// that only decodes them.
func readBare(ctx context.Context, kc kafkaio.Config, n int, group string) (wall, cpu time.Duration, err error) {
	bare := kc.NewReader(group, []string{kc.Topic(kafkaio.TopicEvents)})
	defer bare.Close()
	start, cpu0 := time.Now(), processCPU()
	var dec event.Decoder
	var e event.Event
	for range n {
		m, err := bare.FetchMessage(ctx)
		if err != nil {
			return 0, 0, fmt.Errorf("bare consumer: %w", err)
		}
		_ = dec.DecodeNormalized(m.Value, &e)
	}
	return time.Since(start), processCPU() - cpu0, nil
}

// readRules starts a rules role with the whole pack on the events topic,
// as one restarted after it took them in live: its group has committed
// them all, and its start replays each rule's horizon of them. It fills
// r's rules figures.
func readRules(ctx context.Context, cfg Config, c *city.City, p *event.Pseudonymizer, r *throughputRound, log *slog.Logger) error {
	kc := cfg.Kafka
	return timeRole(ctx, cfg, c, p, r, log,
		func(role *rules.Role) error { return commitEnds(ctx, kc, role.Group(), kc.Topic(kafkaio.TopicEvents)) },
		// Until the restore is over: the records older than every rule's
		// look (a backlog spanning more than a day) are not read at all.
		func(ctx context.Context, role *rules.Role, _ *prometheus.Registry) bool {
			return role.Ready(ctx) == nil
		})
}

// readRulesSharded is readRules for a scaled-out role (rules.shards): one
// process, in groups of its own for the round, forwards the backlog to
// the repartition topic (emptied first) and evaluates every shard. The
// round ends when the forwarders have committed the whole backlog and the
// shards have read every record forwarded.
func readRulesSharded(ctx context.Context, cfg Config, broker *kafkaio.Embedded, c *city.City, p *event.Pseudonymizer, r *throughputRound, round int, log *slog.Logger) error {
	kc := cfg.Kafka
	cfg.Rules.Group = fmt.Sprintf("loadtest-rules-sharded-%d", round)
	byKey := kc.Topic(rules.TopicByKey)
	if err := kafkaio.EnsureTopic(ctx, kc, rules.TopicByKey, cfg.Rules.Shards); err != nil {
		return err
	}
	if err := broker.Empty(byKey, cfg.Rules.Shards); err != nil {
		return err
	}
	client := kc.Client()
	before, err := kafkaio.EndOffsets(ctx, client, byKey)
	if err != nil {
		return err
	}
	forwarded := int64(-1) // records forwarded, once the backlog is committed
	return timeRole(ctx, cfg, c, p, r, log, nil, func(ctx context.Context, role *rules.Role, reg *prometheus.Registry) bool {
		if forwarded < 0 {
			lag, err := kafkaio.TotalLag(ctx, client, cfg.Rules.Group, []string{kc.Topic(kafkaio.TopicEvents)})
			if err != nil || lag > 0 {
				return false
			}
			ends, err := kafkaio.EndOffsets(ctx, client, byKey)
			if err != nil {
				return false
			}
			forwarded = 0
			for s, end := range ends {
				forwarded += end - before[s]
			}
		}
		return role.Ready(ctx) == nil && sumSeries(reg, "citywatch_rules_shard_records_total") >= float64(forwarded)
	})
}

// timeRole runs a rules role, after prepare (nil: nothing), until done
// says it has got through the backlog (asked every 5 ms, 10 minutes at
// most), and fills r's rules figures with its wall and CPU time.
func timeRole(ctx context.Context, cfg Config, c *city.City, p *event.Pseudonymizer, r *throughputRound, log *slog.Logger,
	prepare func(*rules.Role) error, done func(context.Context, *rules.Role, *prometheus.Registry) bool) error {
	reg := prometheus.NewRegistry()
	km := kafkaio.NewMetrics(reg)
	role, err := newRulesRole(cfg, c, p, reg, km, log)
	if err != nil {
		return err
	}
	if prepare != nil {
		if err := prepare(role); err != nil {
			return err
		}
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var rerr error
	var wg sync.WaitGroup
	wg.Add(1)
	start, cpu0 := time.Now(), processCPU()
	go func() { defer wg.Done(); rerr = role.Run(rctx) }()
	for !done(rctx, role, reg) && rctx.Err() == nil {
		if time.Since(start) > 10*time.Minute {
			stop()
			wg.Wait()
			return errors.New("the rules role did not get through the events in 10 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.rules, r.rulesCPU = time.Since(start), processCPU()-cpu0
	r.alerts = sumSeries(reg, "citywatch_rules_alerts_total")
	r.skipped = sumSeries(reg, "citywatch_rules_replay_skipped_total")
	stop()
	wg.Wait()
	return rerr
}

// commitEnds commits group's offsets on topic at the end of each partition,
// as a member that has processed everything would have.
func commitEnds(ctx context.Context, kc kafkaio.Config, group, topic string) error {
	client := kc.Client()
	pos, err := kafkaio.Positions(ctx, client, group, []string{topic})
	if err != nil {
		return err
	}
	var offsets []kafka.OffsetCommit
	for p, x := range pos[topic] {
		offsets = append(offsets, kafka.OffsetCommit{Partition: p, Offset: x.End})
	}
	res, err := client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID: group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{topic: offsets},
	})
	if err == nil {
		for _, ps := range res.Topics {
			for _, p := range ps {
				err = errors.Join(err, p.Error)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("cannot commit the end offsets of %s for %s: %w", topic, group, err)
	}
	return nil
}

// processCPU returns the CPU time the process has used, user and system:
// on a shared machine, a steadier measure of a phase's cost than its
// wall time. It counts the embedded broker's work too.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
