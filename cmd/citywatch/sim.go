package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/ingest/rtp"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
)

// cmdSim runs the simulated city against the Kafka cluster of
// CITYWATCH_KAFKA_BROKERS, optionally with a scenario whose truth (the
// alerts it must and must not raise) and hotlist and watchlist it writes.
// `citywatch sim verify` checks the alerts of such a run against its truth.
func cmdSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "verify" {
		return cmdSimVerify(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sc simulators.Config
	fs.Uint64Var(&sc.Seed, "seed", 1, "seed: the same seed, start and options give the same events")
	fs.Float64Var(&sc.Scale, "scale", 1, "share of the cameras and fuel terminals simulated, (0, 1]")
	fs.Float64Var(&sc.Rate, "rate", 1, "multiplier of detection, trip and purchase rates")
	fs.Float64Var(&sc.Faults.DupShare, "dup", 0, "share of messages resent (same id)")
	fs.Float64Var(&sc.Faults.BadShare, "bad", 0, "share of extra malformed messages")
	fs.Float64Var(&sc.Faults.LateShare, "late", 0, "share of messages delivered up to 2 minutes late")
	fs.Float64Var(&sc.Faults.SkewShare, "skew", 0, "share of devices whose clock is off by up to 90 s")
	fs.Float64Var(&sc.Faults.DriftShare, "drift", 0, "share of devices whose clock drifts by up to 200 ppm")
	fs.Float64Var(&sc.Faults.JumpShare, "jump", 0, "share of devices whose clock jumps once by up to ±10 min within the first day")
	duration := fs.Duration("duration", 0, "simulated time to run (0: until interrupted)")
	speedup := fs.Float64("speedup", 1, "simulated seconds per wall-clock second (0: as fast as possible)")
	start := fs.String("start", "", "simulated start, RFC 3339 (default: now, to the second)")
	scenario := fs.String("scenario", "", `scenario file, or "default" for the built-in one (empty: none)`)
	cityFile := fs.String("city", "", "city file (default: the built-in Xiangyang)")
	truthFile := fs.String("truth", "", "write the scenario's expected alerts (JSON) here")
	listsDir := fs.String("lists", "", "write the scenario's hotlist.csv and watchlist.csv into this directory")
	progress := fs.Duration("progress", 5*time.Second, "how often to print progress")
	dryRun := fs.Bool("dry-run", false, "generate without Kafka and print the figures")
	respond := fs.Bool("respond", true, "simulated units answer the dispatches of citywatch.dispatches")
	gwRTP := fs.String("gateway-rtp", "", "the gateway's RTP address (host:port): a share of the cameras stream over RTP to it")
	gwVIID := fs.String("gateway-viid", "", "the gateway's GA/T 1400 base URL (http://host:port): a share of the checkpoints push to it")
	rtpShare := fs.Uint("rtp-share", rtpSharePct, "per cent of the cameras sending over RTP (with --gateway-rtp)")
	viidShare := fs.Uint("viid-share", viidSharePct, "per cent of the checkpoints pushing GA/T 1400 (with --gateway-viid)")
	rtpLoss := fs.Float64("rtp-loss", 0, "share of RTP packets lost on the way")
	rtpReorder := fs.Float64("rtp-reorder", 0, "share of RTP packets delivered after the next one")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: citywatch sim [flags]\n       citywatch sim verify --truth FILE [--alerts FILE] [flags] (see citywatch sim verify -h)\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *speedup < 0 {
		return errors.New("--speedup: must not be negative")
	}
	if *speedup == 0 && *duration == 0 {
		return errors.New("--speedup 0 needs a --duration")
	}
	sc.Duration = *duration
	if *start == "" {
		sc.Start = time.Now().Truncate(time.Second).In(city.Location)
	} else {
		t, err := time.Parse(time.RFC3339, *start)
		if err != nil {
			return fmt.Errorf("--start: %w", err)
		}
		sc.Start = t
	}

	_, scen, sim, err := newSim(*cityFile, *scenario, sc)
	if err != nil {
		return err
	}
	if scen != nil {
		if err := writeScenarioFiles(sim, scen, *truthFile, *listsDir); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "scenario %s: %d expectations\n", scen.Name, len(sim.Truth.Expect))
	}

	var w simulators.Writer = discard{}
	prefix := "citywatch."
	var inbox chan simInput
	if !*dryRun {
		cfg, err := loadConfig(os.Getenv)
		if err != nil {
			return err
		}
		if len(cfg.Kafka.Brokers) == 0 {
			return errors.New("CITYWATCH_KAFKA_BROKERS is not set (or use --dry-run)")
		}
		if err := kafkaio.EnsureTopics(ctx, cfg.Kafka, kafkaio.RawTopics...); err != nil {
			return err
		}
		kw := cfg.Kafka.NewWriter()
		defer kw.Close()
		w, prefix = kw, cfg.Kafka.TopicPrefix
		if *respond {
			inbox = make(chan simInput, responderInbox)
			rctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				readForResponders(rctx, cfg.Kafka, inbox, stderr)
			}()
			defer func() { stop(); <-done }()
		}
	}
	if (*gwRTP == "") != (*gwVIID == "") {
		return errors.New("--gateway-rtp and --gateway-viid go together")
	}
	if *gwRTP != "" && !*dryRun {
		share, err := simulators.NewGatewayShare(w, prefix, *gwRTP, *gwVIID, uint32(*rtpShare), uint32(*viidShare), sc.Seed, newLogger(stderr, "warn"))
		if err != nil {
			return err
		}
		defer share.Close()
		share.SetRTPFaults(*rtpLoss, *rtpReorder)
		share.SetSSRCs(rtp.SSRCs(sim.City))
		sctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = share.Run(sctx)
		}()
		defer func() { stop(); <-done }()
		w = share
	}
	return runSim(ctx, sim, w, prefix, sc.Start, *duration, *speedup, *progress, stdout, inbox)
}

// simInput is a message for the simulated units: a dispatch or an alert
// (whose place the units dispatched to it drive to).
type simInput struct {
	dispatch *event.Dispatch
	alert    *event.Alert
}

// responderInbox bounds the messages waiting for the simulation loop;
// beyond it the newest are dropped and counted (a unit that misses its
// dispatch just does not answer, and the dispatcher reassigns).
const responderInbox = 4096

// readForResponders reads citywatch.dispatches and citywatch.alerts from
// their ends, without a consumer group (every simulator sees every
// message), into inbox until ctx is done; it returns once its readers
// have stopped.
func readForResponders(ctx context.Context, kc kafkaio.Config, inbox chan<- simInput, stderr io.Writer) {
	var wg sync.WaitGroup
	var dropped atomic.Uint64
	for _, name := range []string{kafkaio.TopicDispatches, kafkaio.TopicAlerts} {
		topic := kc.Topic(name)
		meta, err := kc.Client().Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			fmt.Fprintf(stderr, "warning: units will not answer dispatches: cannot read metadata of %s: %v\n", topic, err)
			return
		}
		for _, t := range meta.Topics {
			for _, p := range t.Partitions {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := kafka.NewReader(kafka.ReaderConfig{Brokers: kc.Brokers, Dialer: kc.Dialer(), Topic: topic, Partition: p.ID,
						MinBytes: 1, MaxBytes: kc.MaxBytes, MaxWait: kc.MaxWait, StartOffset: kafka.LastOffset, ReadLagInterval: -1})
					defer r.Close()
					for {
						m, err := r.FetchMessage(ctx)
						if err != nil {
							if ctx.Err() != nil {
								return
							}
							continue
						}
						var in simInput
						if name == kafkaio.TopicDispatches {
							d, err := event.DecodeDispatch(m.Value)
							if err != nil {
								continue
							}
							in.dispatch = &d
						} else {
							a, err := event.DecodeAlert(m.Value)
							if err != nil || a.Status != event.AlertFiring {
								continue
							}
							in.alert = &a
						}
						select {
						case inbox <- in:
						default:
							dropped.Add(1)
						}
					}
				}()
			}
		}
	}
	wg.Wait()
	if n := dropped.Load(); n > 0 {
		fmt.Fprintf(stderr, "warning: %d dispatch and alert messages for the simulated units were dropped (inbox full)\n", n)
	}
}

// newSim loads the city (the embedded one when cityFile is empty) and the
// scenario (none when empty) and builds the simulation.
func newSim(cityFile, scenario string, sc simulators.Config) (*city.City, *simulators.Scenario, *simulators.Sim, error) {
	var c *city.City
	var err error
	if cityFile != "" {
		c, err = city.Load(cityFile)
	} else {
		c, err = city.Default()
	}
	if err != nil {
		return nil, nil, nil, err
	}
	var scen *simulators.Scenario
	if scenario != "" {
		if scen, err = simulators.LoadScenario(scenario); err != nil {
			return nil, nil, nil, err
		}
	}
	sim, err := simulators.New(c, sc, scen)
	if err != nil {
		return nil, nil, nil, err
	}
	return c, scen, sim, nil
}

type discard struct{}

func (discard) WriteMessages(context.Context, ...kafka.Message) error { return nil }

func writeScenarioFiles(sim *simulators.Sim, scen *simulators.Scenario, truthFile, listsDir string) error {
	if truthFile != "" {
		if key := os.Getenv("CITYWATCH_PSEUDONYM_KEY"); key != "" {
			p, err := event.NewPseudonymizer([]byte(key))
			if err != nil {
				return err
			}
			sim.Truth.Pseudonymize(p)
		}
		b, err := sim.Truth.JSON()
		if err != nil {
			return err
		}
		if err := os.WriteFile(truthFile, b, 0o600); err != nil {
			return fmt.Errorf("cannot write truth: %w", err)
		}
	}
	if listsDir != "" {
		if err := os.WriteFile(filepath.Join(listsDir, "hotlist.csv"), scen.HotlistCSV(), 0o644); err != nil {
			return fmt.Errorf("cannot write hotlist: %w", err)
		}
		if err := os.WriteFile(filepath.Join(listsDir, "watchlist.csv"), scen.WatchlistCSV(), 0o600); err != nil {
			return fmt.Errorf("cannot write watchlist: %w", err)
		}
	}
	return nil
}

// runSim steps the simulation in slices of simulated time, writes each
// slice's messages as one batch, and paces the slices to speedup (0: no
// pacing). The batch is reused once written, so at most one slice of
// messages is held.
//
// inbox, when not nil, holds dispatches and alerts for the simulated
// units; they are handed to the simulation at the start of each slice.
func runSim(ctx context.Context, sim *simulators.Sim, w simulators.Writer, prefix string, start time.Time, duration time.Duration, speedup float64, every time.Duration, out io.Writer, inbox <-chan simInput) error {
	const slice = 100 * time.Millisecond
	var batch []kafka.Message
	var arena []byte
	wallStart := time.Now()
	if speedup == 1 && start.Before(wallStart) && wallStart.Sub(start) < time.Minute {
		// A live run whose city was made before the roles were up catches
		// up at once on the start-up time and then keeps to the wall
		// clock: events that trail it by more than the rules' allowed
		// lateness would all be late.
		wallStart = start
	}
	lastPrint, lastTotal := wallStart, uint64(0)
	lastByType := map[string]uint64{}
	now := start
	var total uint64
	for {
		if ctx.Err() != nil {
			break
		}
		if duration > 0 && now.Sub(start) >= duration {
			break
		}
		for drained := false; !drained; {
			select {
			case in := <-inbox:
				if in.alert != nil {
					sim.NoteAlert(in.alert)
				} else {
					sim.Dispatch(in.dispatch, now)
				}
			default:
				drained = true
			}
		}
		now = now.Add(slice)
		batch, arena = batch[:0], arena[:0]
		sim.Step(now, func(m *simulators.Message) {
			at := len(arena)
			arena = append(arena, m.Value...)
			batch = append(batch, kafka.Message{Topic: prefix + m.Topic, Key: []byte(string(m.Key)), Value: arena[at:len(arena):len(arena)]})
		})
		// The arena may have moved while growing: point the values again.
		off := 0
		for i := range batch {
			n := len(batch[i].Value)
			batch[i].Value = arena[off : off+n : off+n]
			off += n
		}
		if t, ok := w.(interface{ Tick(time.Time) }); ok {
			t.Tick(now) // the gateway share's streams keep their frame rate
		}
		if len(batch) > 0 {
			if err := w.WriteMessages(ctx, batch...); err != nil {
				if ctx.Err() != nil {
					break
				}
				return fmt.Errorf("cannot write simulated events: %w", err)
			}
			total += uint64(len(batch))
		}
		if speedup > 0 {
			due := wallStart.Add(time.Duration(float64(now.Sub(start)) / speedup))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			}
		}
		if t := time.Now(); t.Sub(lastPrint) >= every {
			printProgress(out, sim, now.Sub(start), t.Sub(lastPrint), total-lastTotal, lastByType)
			lastPrint, lastTotal = t, total
		}
	}
	wall := time.Since(wallStart)
	fmt.Fprintf(out, "done: %d messages, %s simulated in %s (%.0f msg/s), %d planted events\n",
		total, now.Sub(start).Truncate(time.Second), wall.Truncate(time.Millisecond), float64(total)/wall.Seconds(), sim.Planted())
	return nil
}

func printProgress(out io.Writer, sim *simulators.Sim, simulated, wall time.Duration, n uint64, last map[string]uint64) {
	types := make([]string, 0, len(sim.Stats.ByType))
	for k := range sim.Stats.ByType {
		types = append(types, k)
	}
	slices.Sort(types)
	var parts []string
	for _, k := range types {
		v := sim.Stats.ByType[k]
		parts = append(parts, fmt.Sprintf("%s %.0f/s", k, float64(v-last[k])/wall.Seconds()))
		last[k] = v
	}
	fmt.Fprintf(out, "sim %s: %.0f msg/s | %s | planted %d\n", simulated.Truncate(time.Second), float64(n)/wall.Seconds(),
		strings.Join(parts, ", "), sim.Planted())
}

// errVerifyFailed is returned by `citywatch sim verify` when a planted
// incident was missed or a near miss raised an alert; the report says
// which.
var errVerifyFailed = errors.New("the alerts do not match the truth")

// cmdSimVerify reads the truth file of a scenario run and the alerts
// citywatch produced (a file of alert JSON lines, or the alerts topic from
// its start to its end at the time of the call) and prints recall, near
// misses that fired, false alarms and detection latency per rule.
func cmdSimVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sim verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	truthFile := fs.String("truth", "", "truth file written by `citywatch sim --truth` (required)")
	alertsFile := fs.String("alerts", "", `file of alert messages, one JSON object a line ("-": standard input; default: the alerts topic of CITYWATCH_KAFKA_BROKERS)`)
	ruleList := fs.String("rules", "", "check only these rule ids, comma-separated (default: every rule)")
	slack := fs.Duration("slack", 0, "widen every expected window by this much on both sides (runs with --skew)")
	strict := fs.Bool("strict", true, "exit non-zero when an incident was missed or a near miss raised an alert")
	maxLines := fs.Int("max-lines", 20, "list at most this many misses, near misses, duplicates and false alarms of each kind (0: all)")
	timeout := fs.Duration("timeout", time.Minute, "give up reading the alerts topic after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *truthFile == "" {
		return errors.New("--truth is required")
	}
	b, err := os.ReadFile(*truthFile)
	if err != nil {
		return fmt.Errorf("cannot read truth: %w", err)
	}
	var truth simulators.Truth
	if err := json.Unmarshal(b, &truth); err != nil {
		return fmt.Errorf("cannot decode truth %s: %w", *truthFile, err)
	}
	if err := pseudonymizeTruth(&truth, stderr); err != nil {
		return err
	}

	var alerts []simulators.Alert
	switch *alertsFile {
	case "":
		cfg, err := loadConfig(os.Getenv)
		if err != nil {
			return err
		}
		if len(cfg.Kafka.Brokers) == 0 {
			return errors.New("CITYWATCH_KAFKA_BROKERS is not set (or use --alerts FILE)")
		}
		rctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		var bad int
		if alerts, bad, err = simulators.ReadAlertsTopic(rctx, cfg.Kafka, cfg.Kafka.Topic(kafkaio.TopicAlerts)); err != nil {
			return err
		}
		if bad > 0 {
			fmt.Fprintf(stderr, "warning: %d messages of the alerts topic are not alerts; skipped\n", bad)
		}
	case "-":
		if alerts, err = simulators.ReadAlerts(os.Stdin); err != nil {
			return err
		}
	default:
		f, err := os.Open(*alertsFile)
		if err != nil {
			return fmt.Errorf("cannot read alerts: %w", err)
		}
		alerts, err = simulators.ReadAlerts(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", *alertsFile, err)
		}
	}

	var opt simulators.VerifyOptions
	opt.Slack = *slack
	if *ruleList != "" {
		for r := range strings.SplitSeq(*ruleList, ",") {
			if r = strings.TrimSpace(r); r != "" {
				opt.Rules = append(opt.Rules, r)
			}
		}
	}
	rep := simulators.Verify(&truth, alerts, opt)
	fmt.Fprintf(stdout, "scenario %s, seed %d, %s – %s: %d expectations, %d alert messages\n", truth.Scenario, truth.Seed,
		truth.Start.Format(time.RFC3339), truth.End.Format(time.RFC3339), len(truth.Expect), len(alerts))
	if err := rep.Write(stdout, *maxLines); err != nil {
		return err
	}
	if len(truth.Skipped) > 0 {
		fmt.Fprintf(stdout, "not planted (%d): %s\n", len(truth.Skipped), strings.Join(truth.Skipped, "; "))
	}
	if *strict && !rep.OK() {
		return errVerifyFailed
	}
	return nil
}

// pseudonymizeTruth turns the identity numbers of a truth written without
// CITYWATCH_PSEUDONYM_KEY into the pseudonyms that alerts carry, when the
// key is set now; without it those expectations cannot match.
func pseudonymizeTruth(t *simulators.Truth, stderr io.Writer) error {
	n := 0
	for _, x := range t.Expect {
		if x.Subject.Kind == "person" && x.Subject.BuyerID != "" {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	key := os.Getenv("CITYWATCH_PSEUDONYM_KEY")
	if key == "" {
		fmt.Fprintf(stderr, "warning: %d person expectations hold identity numbers and CITYWATCH_PSEUDONYM_KEY is not set: they cannot match\n", n)
		return nil
	}
	p, err := event.NewPseudonymizer([]byte(key))
	if err != nil {
		return err
	}
	t.Pseudonymize(p)
	return nil
}
