package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
)

// cmdSim runs the simulated city against the Kafka cluster of
// CITYWATCH_KAFKA_BROKERS, optionally with a scenario whose truth (the
// alerts it must and must not raise) and hotlist and watchlist it writes.
func cmdSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
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
	duration := fs.Duration("duration", 0, "simulated time to run (0: until interrupted)")
	speedup := fs.Float64("speedup", 1, "simulated seconds per wall-clock second (0: as fast as possible)")
	start := fs.String("start", "", "simulated start, RFC 3339 (default: now, to the second)")
	scenario := fs.String("scenario", "", `scenario file, or "default" for the built-in one (empty: none)`)
	cityFile := fs.String("city", "", "city file (default: the built-in Xiangyang)")
	truthFile := fs.String("truth", "", "write the scenario's expected alerts (JSON) here")
	listsDir := fs.String("lists", "", "write the scenario's hotlist.csv and watchlist.csv into this directory")
	progress := fs.Duration("progress", 5*time.Second, "how often to print progress")
	dryRun := fs.Bool("dry-run", false, "generate without Kafka and print the figures")
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

	var c *city.City
	var err error
	if *cityFile != "" {
		c, err = city.Load(*cityFile)
	} else {
		c, err = city.Default()
	}
	if err != nil {
		return err
	}
	var scen *simulators.Scenario
	if *scenario != "" {
		if scen, err = simulators.LoadScenario(*scenario); err != nil {
			return err
		}
	}
	sim, err := simulators.New(c, sc, scen)
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
	}
	return runSim(ctx, sim, w, prefix, sc.Start, *duration, *speedup, *progress, stdout)
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
func runSim(ctx context.Context, sim *simulators.Sim, w simulators.Writer, prefix string, start time.Time, duration time.Duration, speedup float64, every time.Duration, out io.Writer) error {
	const slice = 100 * time.Millisecond
	var batch []kafka.Message
	var arena []byte
	wallStart := time.Now()
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
