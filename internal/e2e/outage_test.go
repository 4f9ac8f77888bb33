package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/ingest"
	"citywatch/internal/chtest"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
	"citywatch/store"
)

// The defaults keep TestClickHouseOutageUnderLoad short and well within
// what the roles sustain under the race detector on a busy two-core
// machine; make bench runs the city's morning peak (about 3,250 events/s)
// through a several-minute outage with the sink's production batch size.
var (
	outageDuration  = flag.Duration("outage.duration", 10*time.Second, "how long TestClickHouseOutageUnderLoad keeps ClickHouse down")
	outageRate      = flag.Int("outage.rate", 500, "events/s of city traffic TestClickHouseOutageUnderLoad offers before, during and after the outage")
	outageBatchRows = flag.Int("outage.batch-rows", 250, "the sink's batch_rows in TestClickHouseOutageUnderLoad (production: 10,000); the default is small so that the short outage fills the sink's batches")
)

const (
	// outagePartitions is the partition count of the test's topics.
	outagePartitions = 4
	// outageRowBytes is a generous ceiling on the memory one message held
	// by the sink costs (the fetched message, its copy in the batch's
	// columns): the messages of the load are 250–600 bytes.
	outageRowBytes = 2 << 10
	// outageDedupeEntryBytes is a generous ceiling on the memory one entry
	// of ingest's dedupe cache costs (an LRU list element and a map slot
	// for a 16-byte id hash).
	outageDedupeEntryBytes = 256
	// outageHeapSlack covers what the runtime and the roles' working sets
	// vary by between two samples of the live heap.
	outageHeapSlack = 64 << 20

	outageProbeEvery  = 100 * time.Millisecond
	outageSampleEvery = 500 * time.Millisecond
	outageBrokerEnv   = "CITYWATCH_E2E_OUTAGE_BROKER"
	outageBrokerLine  = "outage broker: "
)

// localServer is a ClickHouse server of the test's own, so that it can be
// stopped without disturbing other tests.
type localServer struct {
	t   *testing.T
	env []string
}

func startLocalServer(t *testing.T) (*localServer, store.Config) {
	t.Helper()
	if _, err := exec.LookPath("clickhouse-server"); err != nil {
		if _, err := os.Stat("/usr/sbin/clickhouse-server"); err != nil {
			if os.Getenv(chtest.EnvRequire) == "1" {
				t.Fatal("clickhouse-server is not installed; `make test` installs it")
			}
			t.Skip("clickhouse-server is not installed; run `make test`")
		}
	}
	tcp, http := freePort(t), freePort(t)
	s := &localServer{t: t, env: append(os.Environ(),
		"CLICKHOUSE_DIR="+t.TempDir(),
		"CLICKHOUSE_TCP_PORT="+strconv.Itoa(tcp),
		"CLICKHOUSE_HTTP_PORT="+strconv.Itoa(http),
	)}
	s.run("start")
	t.Cleanup(func() { s.run("stop") })
	cfg := store.Config{Addr: []string{"127.0.0.1:" + strconv.Itoa(tcp)}, Database: "citywatch_outage"}
	cfg.SetDefaults()
	return s, cfg
}

func (s *localServer) run(verb string) {
	s.t.Helper()
	cmd := exec.Command(filepath.Join("..", "..", "deploy", "clickhouse.sh"), verb)
	cmd.Env = s.env
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("clickhouse.sh %s: %v\n%s", verb, err, out)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// counterValue sums the series of metric name in reg whose labels include
// the name-value pairs of labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				sum += metricValue(m)
			}
		}
	}
	return sum
}

// hasLabels reports whether m carries every name-value pair of labels.
func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
		}
		if !found {
			return false
		}
	}
	return true
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// TestClickHouseOutageUnderLoad stops ClickHouse for -outage.duration while
// the city's traffic (-outage.rate events/s, and a probe fight every
// 100 ms) runs through ingest, the rules role and the sink, then starts it
// again. It proves the three promises of an outage:
//
//   - alerting is unaffected: every probe planted during the outage has its
//     alert on citywatch.alerts before the server is back, and each probe
//     raises exactly one; the produced → alert latency is reported by
//     phase (not asserted: the machine is shared);
//   - storage catches up: after the server returns, every event offered
//     (the load, the probes, a mixed stream with bad input and resends)
//     is stored exactly once and every rejected message once;
//   - memory is bounded: sampled during the outage, the rows the sink holds
//     (messages it consumed less rows written) stay under the bound its
//     configuration sets (two batches per member), the backlog stays in
//     Kafka (the sink's lag), and the live heap of the process running the
//     roles stays under its start plus what the configured buffers and
//     ingest's dedupe cache may hold. The broker runs in a process of its
//     own, as Kafka does in production, so that the messages it keeps do
//     not count in that heap.
//
// The default is 10 s of outage at 500 events/s (under a minute with
// -race on two cores); make bench runs several minutes at the city's peak:
// -outage.duration 5m -outage.rate 3250 -outage.batch-rows 10000.
func TestClickHouseOutageUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and stops a ClickHouse server of its own")
	}
	server, chCfg := startLocalServer(t)
	ctx := t.Context()
	p := newPipelineOn(t, chCfg, outageBroker(t))
	db := p.openDB(ctx)

	inCfg := ingest.Config{Workers: 2}
	inCfg.SetDefaults()
	in, err := ingest.New(inCfg, p.kc, p.key, p.writer, p.reg, p.km, p.log)
	if err != nil {
		t.Fatal(err)
	}
	sinkCfg := store.SinkConfig{MaxWait: 200 * time.Millisecond, BatchRows: *outageBatchRows}
	sinkCfg.SetDefaults()
	sinkReg := prometheus.NewRegistry()
	sink, err := store.NewSink(sinkCfg, p.kc, db, sinkReg, p.km, p.log)
	if err != nil {
		t.Fatal(err)
	}
	// What the configuration lets the sink hold: each member fills one
	// batch while it retries the other, and a batch is flushed as soon as
	// one of its six tables (events, fuel purchases, device health,
	// rejected, alerts, dispatches) holds BatchRows rows. Before a batch,
	// each member's channel holds up to BatchRows fetched messages and
	// kafka-go's queue QueueCapacity more.
	heldBound := float64(sinkCfg.Workers * 2 * (6*(sinkCfg.BatchRows-1) + 1))
	queuedBound := float64(sinkCfg.Workers * (sinkCfg.BatchRows + p.kc.QueueCapacity))
	heapAllowance := uint64((heldBound+queuedBound)*outageRowBytes) + uint64(inCfg.DedupeSize)*outageDedupeEntryBytes + outageHeapSlack

	stopIngest := once(p.start(ctx, "ingest", in.Run))
	defer stopIngest()
	rr := p.newRules()
	stopRules := once(p.start(ctx, "rules", rr.Run))
	defer stopRules()
	stopSink := once(p.start(ctx, "sink", sink.Run))
	defer stopSink()
	probes := outageFollowProbes(ctx, t, p.kc, "probe-")
	defer probes.close()
	load := outageStartLoad(ctx, p.kc, "out", *outageRate, 64)
	defer load.stop()

	// Bad input and resends beside the load, a batch in each phase.
	g := simulators.NewGenerator(simulators.GeneratorConfig{Seed: 5, BadShare: 0.05, DupShare: 0.05})
	var mixed []simulators.Message
	sendMixed := func() {
		msgs := make([]simulators.Message, 500)
		for i := range msgs {
			msgs[i] = g.Next()
		}
		p.produce(ctx, msgs)
		mixed = append(mixed, msgs...)
	}

	probes.startSending(ctx, outageProbeEvery)
	defer probes.stopSending()
	lags := func() (ingestLag, rulesLag int64) {
		return outageLag(ctx, p.kc, in.Group(), in.Topics()), outageLag(ctx, p.kc, rr.Group(), rr.Topics())
	}
	// runPhase plants probes of phase (none when phase is empty) for d
	// and then until until holds, when given, calling each every half
	// second.
	tick := time.NewTicker(outageSampleEvery)
	defer tick.Stop()
	runPhase := func(phase string, d time.Duration, until func() bool, each func(time.Time)) {
		probes.setPhase(phase)
		start := time.Now()
		giveUp := start.Add(d + 2*time.Minute)
		for {
			now := <-tick.C
			if each != nil {
				each(now)
			}
			if err := probes.err(); err != nil {
				t.Fatal(err)
			}
			if now.Sub(start) >= d && (until == nil || until()) {
				return
			}
			if now.After(giveUp) {
				il, rl := lags()
				t.Fatalf("phase %q: not done after %v; lag of ingest %d, of the rules %d; %s",
					phase, now.Sub(start).Round(time.Millisecond), il, rl, probes.summary())
			}
		}
	}

	// Before: until the rules role answers probes and the roles have
	// caught up with what was offered while they started (half a second
	// of load is in flight at any time).
	sendMixed()
	runPhase("before", 3*time.Second, func() bool {
		il, rl := lags()
		return probes.alerted("before") > 0 && il >= 0 && rl >= 0 && il+rl <= int64(max(*outageRate/2, 100))
	}, nil)

	// The outage.
	server.run("stop")
	outageStart := time.Now()
	ingested := counterValue(t, p.reg, "citywatch_ingest_events_total")
	sendMixed()
	var samples []outageSample
	sample := func(now time.Time) {
		s := outageSample{at: now.Sub(outageStart), heapLive: outageLiveHeap()}
		s.consumed = counterValue(t, p.reg, "citywatch_kafka_consumed_messages_total", "group", sinkCfg.Group)
		s.written = counterValue(t, sinkReg, "citywatch_sink_rows_written_total")
		s.skipped = counterValue(t, sinkReg, "citywatch_sink_undecodable_dropped_total")
		s.lag = outageLag(ctx, p.kc, sinkCfg.Group, sink.Topics())
		s.ingestLag, s.rulesLag = lags()
		s.offered = load.produced.Load()
		samples = append(samples, s)
	}
	runtime.GC() // a clean start for the live-heap figure
	sample(time.Now())
	heapStart := samples[0].heapLive
	half := *outageDuration / 2
	runPhase("outage, 1st half", half, nil, sample)
	runPhase("outage, 2nd half", *outageDuration-half, nil, sample)
	// Alerting did not wait for storage: the probes of the outage have
	// their alerts while the server is still down (the load goes on).
	runPhase("", 0, func() bool {
		return probes.alerted("outage, 1st half") == probes.sent("outage, 1st half") &&
			probes.alerted("outage, 2nd half") == probes.sent("outage, 2nd half")
	}, sample)
	outageLen := time.Since(outageStart)

	if after := counterValue(t, p.reg, "citywatch_ingest_events_total"); after <= ingested {
		t.Errorf("ingest stalled during the outage: %v events before, %v after", ingested, after)
	}
	if n := counterValue(t, sinkReg, "citywatch_sink_insert_errors_total"); n == 0 {
		t.Error("the sink never failed an insert while ClickHouse was down")
	}
	first, last := samples[0], samples[len(samples)-1]
	var maxHeld float64
	var maxHeap uint64
	var maxIngestLag, maxRulesLag int64
	for _, s := range samples {
		held := s.consumed - s.written - s.skipped
		maxHeld = max(maxHeld, held)
		maxHeap = max(maxHeap, s.heapLive)
		maxIngestLag, maxRulesLag = max(maxIngestLag, s.ingestLag), max(maxRulesLag, s.rulesLag)
		if held > heldBound {
			t.Errorf("at %v of the outage the sink held %.0f rows, more than its configuration allows (%.0f)", s.at.Round(time.Millisecond), held, heldBound)
		}
		if s.heapLive > heapStart+heapAllowance {
			t.Errorf("at %v of the outage the live heap was %d MiB, over the bound of %d MiB (%d at the start + %d the configured buffers and dedupe cache may hold)",
				s.at.Round(time.Millisecond), s.heapLive>>20, (heapStart+heapAllowance)>>20, heapStart>>20, heapAllowance>>20)
		}
	}
	if last.lag <= first.lag {
		t.Errorf("the sink's lag did not grow during the outage (%d → %d): was it down?", first.lag, last.lag)
	}
	t.Logf("outage of %v, %.0f events/s offered, %d samples: the sink held at most %.0f rows (bound from its configuration: %.0f; %.0f more may wait in its fetch queues) while its lag grew %d → %d; live heap %d MiB at the start, at most %d MiB (bound %d MiB); lag of ingest at most %d, of the rules %d",
		outageLen.Round(time.Millisecond), float64(last.offered-first.offered)/last.at.Seconds(), len(samples), maxHeld, heldBound, queuedBound,
		first.lag, last.lag, heapStart>>20, maxHeap>>20, (heapStart+heapAllowance)>>20, maxIngestLag, maxRulesLag)

	// The server returns; the load goes on a little, then stops.
	server.run("start")
	restarted := time.Now()
	sendMixed()
	runPhase("after restart", 3*time.Second, nil, nil)
	if err := probes.stopSending(); err != nil {
		t.Fatal(err)
	}
	if err := load.stop(); err != nil {
		t.Fatal(err)
	}

	want := expect(mixed)
	load.expect(want.ids)
	probes.expect(want.ids)
	waitStored(ctx, t, db, want, 3*time.Minute+time.Duration(len(want.ids)/1000)*time.Second)
	t.Logf("storage caught up %v after the server returned: %d events, %d rejected messages, each stored once",
		time.Since(restarted).Round(time.Millisecond), len(want.ids), want.rejected)

	probes.waitAll(t, time.Minute)
	probes.check(t)
	probes.report(t, "before", "outage, 1st half", "outage, 2nd half", "after restart")

	if err := stopSink(); err != nil {
		t.Errorf("sink: %v", err)
	}
	if err := stopRules(); err != nil {
		t.Errorf("rules: %v", err)
	}
	if err := stopIngest(); err != nil {
		t.Errorf("ingest: %v", err)
	}
	if strings.Contains(p.logs.String(), "panic") {
		t.Error("a panic was logged")
	}
}

// outageSample is what the outage test reads every half second.
type outageSample struct {
	at                         time.Duration // since the outage began
	consumed, written, skipped float64       // the sink group's messages taken, rows inserted, messages skipped
	lag                        int64         // the sink group's lag, in messages
	ingestLag, rulesLag        int64
	heapLive                   uint64 // the live heap after the last GC
	offered                    int64  // load messages produced so far
}

// outageLiveHeap returns the heap that survived the last garbage
// collection: the memory the process holds, without the garbage it has not
// collected yet.
func outageLiveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// outageLag returns the total lag of group on topics, or -1 when the
// broker does not answer.
func outageLag(ctx context.Context, kc kafkaio.Config, group string, topics []string) int64 {
	n, err := kafkaio.TotalLag(ctx, kc.Client(), group, topics)
	if err != nil {
		return -1
	}
	return n
}

// TestOutageBrokerProcess is not a test of its own: it is the broker of
// TestClickHouseOutageUnderLoad, which runs the test binary again with
// CITYWATCH_E2E_OUTAGE_BROKER set so that the messages the broker keeps
// live in another process than the roles whose memory it bounds. It
// prints the broker's address and serves until its standard input closes.
func TestOutageBrokerProcess(t *testing.T) {
	if os.Getenv(outageBrokerEnv) != "1" {
		t.Skip("the broker process of TestClickHouseOutageUnderLoad, started by it")
	}
	kc := kafkaio.Config{Partitions: outagePartitions}
	kc.SetDefaults()
	b, err := kafkaio.StartEmbedded(kc)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fmt.Printf("%s%s\n", outageBrokerLine, strings.Join(b.Brokers(), ","))
	var buf [64]byte
	for {
		if _, err := os.Stdin.Read(buf[:]); err != nil {
			return
		}
	}
}

// outageBroker starts TestOutageBrokerProcess and returns a Config that
// points at it; the process is stopped when the test ends.
func outageBroker(t *testing.T) kafkaio.Config {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOutageBrokerProcess$", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(os.Environ(), outageBrokerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &outageLineWriter{prefix: outageBrokerLine, found: make(chan string, 1)}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start the broker process: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stdin.Close() // the broker stops when its input closes
		select {
		case err := <-exited:
			if err != nil {
				t.Logf("broker process: %v\n%s", err, out.String())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("the broker process did not stop within 30 s of its input closing")
		}
	})
	var addrs string
	select {
	case addrs = <-out.found:
	case err := <-exited:
		exited <- err
		t.Fatalf("the broker process ended before it served: %v\n%s", err, out.String())
	case <-time.After(time.Minute):
		t.Fatalf("the broker process did not start within a minute:\n%s", out.String())
	}
	// Without compression: under the race detector, lz4's 4 MiB block
	// buffers (which sync.Pool drops at random under -race, so that every
	// write allocates and clears a fresh one for the detector to track)
	// take most of the CPU, and the roles sustain a fraction of their rate.
	kc := kafkaio.Config{Partitions: outagePartitions, Brokers: strings.Split(addrs, ","), Compression: "none"}
	kc.SetDefaults()
	return kc
}

// outageLineWriter keeps what a child process writes and hands the rest of
// the first line starting with prefix to found.
type outageLineWriter struct {
	prefix string
	found  chan string
	mu     sync.Mutex
	buf    bytes.Buffer
	seen   bool
}

func (w *outageLineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	if !w.seen {
		for line := range strings.Lines(w.buf.String()) {
			if rest, ok := strings.CutPrefix(line, w.prefix); ok && strings.HasSuffix(rest, "\n") {
				w.seen = true
				w.found <- strings.TrimSpace(rest)
				break
			}
		}
	}
	return len(b), nil
}

func (w *outageLineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// outageLoad offers the city mix at a steady rate from a goroutine of its
// own, every message a new event with an id of the load's run.
type outageLoad struct {
	run      string
	produced atomic.Int64
	quit     chan struct{}
	done     chan struct{}
	err      error
	stopped  bool
}

// outageStartLoad starts offering rate events/s to the broker of kc until
// stop or until ctx is done, in writes of at most batch messages a
// partition (0: kc's batch size). kafka-go gives every partition's batch
// room for that many messages up front: at a low rate, a tick's few
// messages over twenty partitions would cost the test process more
// garbage than the roles make.
func outageStartLoad(ctx context.Context, kc kafkaio.Config, run string, rate, batch int) *outageLoad {
	l := &outageLoad{run: run, quit: make(chan struct{}), done: make(chan struct{})}
	w := kc.NewWriter()
	if batch > 0 {
		w.BatchSize = batch
	}
	go func() {
		defer close(l.done)
		defer w.Close()
		src := simulators.NewLoad(7, kc.TopicPrefix, run)
		var msgs []kafka.Message
		var arena []byte
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		for {
			select {
			case <-l.quit:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			k := min(int(float64(rate)*time.Since(start).Seconds())-int(l.produced.Load()), 5000)
			if k <= 0 {
				continue
			}
			// A write is never cut short by stop, so that every message
			// handed to the writer is counted.
			msgs, arena = src.Append(msgs[:0], arena[:0], time.Now(), k)
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				l.err = fmt.Errorf("cannot produce the load: %w", err)
				return
			}
			l.produced.Add(int64(k))
		}
	}()
	return l
}

// stop stops the load and waits for its goroutine; a write that failed
// is its error. It may be called again.
func (l *outageLoad) stop() error {
	if !l.stopped {
		l.stopped = true
		close(l.quit)
		<-l.done
	}
	return l.err
}

// expect adds the ids of the events the load offered to ids.
func (l *outageLoad) expect(ids map[string]bool) {
	for n := range uint64(l.produced.Load()) {
		ids[l.run+"-"+strconv.FormatUint(n+1, 36)] = true
	}
}

// outageProbes plants probes and follows citywatch.alerts for their
// alerts. A probe is a fight seen by a camera of its own, which the
// default pack's camera.violence raises at once: the time from handing it
// to the producer to reading its alert is the chain's alerting latency.
type outageProbes struct {
	kc     kafkaio.Config
	prefix string
	w      *kafka.Writer
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	n        int
	probes   map[string]*outageProbe // by event id
	other    map[event.AlertStatus]int
	phase    string // of the probes sent now; none when empty
	sendErr  error
	quit     chan struct{}
	sendDone chan struct{}
}

type outageProbe struct {
	phase   string
	sent    time.Time
	firing  int           // firing camera.violence messages naming it
	latency time.Duration // to the first of them
}

// outageFollowProbes starts reading citywatch.alerts from its start for
// the alerts of probes whose ids start with prefix.
func outageFollowProbes(ctx context.Context, t *testing.T, kc kafkaio.Config, prefix string) *outageProbes {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	pr := &outageProbes{kc: kc, prefix: prefix, w: kc.NewWriter(), cancel: cancel,
		probes: map[string]*outageProbe{}, other: map[event.AlertStatus]int{}}
	pr.w.BatchSize = 1
	for part := range kc.Partitions {
		pr.wg.Go(func() {
			rd := kc.NewPartitionReader(kc.Topic(kafkaio.TopicAlerts), part)
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
				if err != nil || a.Rule != "camera.violence" {
					continue
				}
				pr.note(&a, at)
			}
		})
	}
	return pr
}

func (pr *outageProbes) note(a *event.Alert, at time.Time) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for _, id := range a.Evidence {
		x, ok := pr.probes[id]
		if !ok {
			continue
		}
		if a.Status != event.AlertFiring {
			pr.other[a.Status]++
			continue
		}
		x.firing++
		if x.firing == 1 {
			x.latency = at.Sub(x.sent)
		}
	}
}

// startSending plants a probe every interval from a goroutine of its
// own, of the phase setPhase names, until stopSending.
func (pr *outageProbes) startSending(ctx context.Context, every time.Duration) {
	pr.quit, pr.sendDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(pr.sendDone)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-pr.quit:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pr.mu.Lock()
			phase := pr.phase
			pr.mu.Unlock()
			if phase == "" {
				continue
			}
			if err := pr.send(ctx, phase); err != nil {
				pr.mu.Lock()
				pr.sendErr = err
				pr.mu.Unlock()
				return
			}
		}
	}()
}

// setPhase names the phase of the probes sent from now on; "" pauses.
func (pr *outageProbes) setPhase(phase string) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.phase = phase
}

// err returns the error that stopped the sending, if any.
func (pr *outageProbes) err() error {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.sendErr
}

// stopSending stops planting probes and waits for the goroutine; it may
// be called again.
func (pr *outageProbes) stopSending() error {
	if pr.quit != nil {
		close(pr.quit)
		<-pr.sendDone
		pr.quit = nil
	}
	return pr.err()
}

// summary says how many probes of each phase were alerted on.
func (pr *outageProbes) summary() string {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	sent, alerted := map[string]int{}, map[string]int{}
	var phases []string
	for _, x := range pr.probes {
		if sent[x.phase] == 0 {
			phases = append(phases, x.phase)
		}
		sent[x.phase]++
		if x.firing > 0 {
			alerted[x.phase]++
		}
	}
	slices.Sort(phases)
	var parts []string
	for _, ph := range phases {
		parts = append(parts, fmt.Sprintf("%s %d of %d", ph, alerted[ph], sent[ph]))
	}
	return "probes alerted on: " + strings.Join(parts, ", ")
}

// send plants one probe of phase.
func (pr *outageProbes) send(ctx context.Context, phase string) error {
	pr.mu.Lock()
	pr.n++
	id := pr.prefix + strconv.Itoa(pr.n)
	dev := pr.prefix + "cam-" + strconv.Itoa(pr.n)
	now := time.Now()
	pr.probes[id] = &outageProbe{phase: phase, sent: now}
	pr.mu.Unlock()
	v := fmt.Appendf(nil, `{"id":%q,"type":"camera.detection","device_id":%q,"time":%q,"lat":32.0421,"lon":112.1442,"camera_class":"A","object":"person","behavior":"fight","confidence":0.95}`,
		id, dev, now.Format(time.RFC3339Nano))
	if err := pr.w.WriteMessages(ctx, kafka.Message{Topic: pr.kc.Topic(kafkaio.TopicCamera), Key: []byte(dev), Value: v}); err != nil {
		return fmt.Errorf("cannot produce a probe: %w", err)
	}
	return nil
}

// sent and alerted count the probes of phase planted and alerted on.
func (pr *outageProbes) sent(phase string) int {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	n := 0
	for _, x := range pr.probes {
		if x.phase == phase {
			n++
		}
	}
	return n
}

func (pr *outageProbes) alerted(phase string) int {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	n := 0
	for _, x := range pr.probes {
		if x.phase == phase && x.firing > 0 {
			n++
		}
	}
	return n
}

// waitAll waits until every probe has its alert, or fails after within.
func (pr *outageProbes) waitAll(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		pr.mu.Lock()
		missing := 0
		for _, x := range pr.probes {
			if x.firing == 0 {
				missing++
			}
		}
		total := len(pr.probes)
		pr.mu.Unlock()
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d probes raised no alert within %v", missing, total, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// check fails the test for every probe not raised exactly once.
func (pr *outageProbes) check(t *testing.T) {
	t.Helper()
	pr.mu.Lock()
	defer pr.mu.Unlock()
	var bad []string
	for id, x := range pr.probes {
		if x.firing != 1 {
			bad = append(bad, fmt.Sprintf("%s raised %d times", id, x.firing))
		}
	}
	slices.Sort(bad)
	if len(bad) > 0 {
		t.Errorf("%d of %d probes not raised exactly once: %.5q", len(bad), len(pr.probes), bad)
	}
	if len(pr.other) > 0 {
		t.Logf("other messages of the probes' alerts: %v", pr.other)
	}
}

// expect adds the probes' event ids to ids.
func (pr *outageProbes) expect(ids map[string]bool) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for id := range pr.probes {
		ids[id] = true
	}
}

// report logs the alerting latency of the probes of each phase.
func (pr *outageProbes) report(t *testing.T, phases ...string) {
	t.Helper()
	pr.mu.Lock()
	defer pr.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "probe produced → alert readable on citywatch.alerts:")
	for _, ph := range phases {
		var lat []time.Duration
		for _, x := range pr.probes {
			if x.phase == ph && x.firing > 0 {
				lat = append(lat, x.latency)
			}
		}
		fmt.Fprintf(&b, "\n  %-18s %s", ph, outagePercentiles(lat))
	}
	t.Log(b.String())
}

// close stops the readers and waits for them.
func (pr *outageProbes) close() {
	pr.cancel()
	pr.wg.Wait()
	pr.w.Close()
}

// outagePercentiles formats n, p50, p90, p99 and max of lat.
func outagePercentiles(lat []time.Duration) string {
	if len(lat) == 0 {
		return "n=0"
	}
	slices.Sort(lat)
	q := func(f float64) time.Duration {
		return lat[min(int(f*float64(len(lat))), len(lat)-1)].Round(100 * time.Microsecond)
	}
	return fmt.Sprintf("n=%-5d p50 %-9v p90 %-9v p99 %-9v max %v", len(lat), q(0.5), q(0.9), q(0.99), lat[len(lat)-1].Round(100*time.Microsecond))
}
