package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"citywatch/internal/kafkaio"
	"citywatch/simulators"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rate := fs.Int("rate", 3000, "simulated device messages per second")
	seed := fs.Uint64("seed", 1, "seed of the simulated stream")
	noSink := fs.Bool("no-sink", false, "run without ClickHouse (no storage)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		return err
	}
	if len(cfg.PseudonymKey) == 0 {
		cfg.PseudonymKey = randomKey()
	}
	roles := map[string]bool{"ingest": true, "sink": !*noSink, "web": true}
	if err := cfg.validate(roles, false); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	log := newLogger(stderr, cfg.LogLevel)

	if len(cfg.Kafka.Brokers) == 0 {
		broker, err := kafkaio.StartEmbedded(cfg.Kafka)
		if err != nil {
			return err
		}
		defer broker.Close()
		cfg.Kafka.Brokers = broker.Brokers()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan struct{})
	var wg sync.WaitGroup
	var runErr, pubErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		runErr = runRoles(ctx, cfg, roles, log, ready)
		cancel()
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		wg.Wait()
		return runErr
	}

	w := cfg.Kafka.NewWriter()
	gen := simulators.NewGenerator(simulators.GeneratorConfig{Seed: *seed, BadShare: 0.01, DupShare: 0.01, LateShare: 0.02})
	wg.Add(1)
	go func() {
		defer wg.Done()
		pubErr = simulators.Publish(ctx, gen, w, cfg.Kafka.TopicPrefix, *rate)
		if pubErr != nil {
			cancel()
		}
	}()

	host := cfg.HTTP.Addr
	if strings.HasPrefix(host, ":") {
		host = "localhost" + host
	}
	fmt.Fprintf(stdout, `
citywatch demo is running.
  web UI:      http://%s/
  metrics:     http://%s/metrics
  Kafka:       %s (embedded broker; topics %s*)
  simulated:   %d messages/s of every event type, with 1%% bad input and 1%% resends
`, host, host, strings.Join(cfg.Kafka.Brokers, ","), cfg.Kafka.TopicPrefix, *rate)
	if roles["sink"] {
		fmt.Fprintf(stdout, `  ClickHouse:  %s, database %s; for example
    clickhouse-client --query "SELECT type, count() FROM %s.events FINAL GROUP BY type"
    clickhouse-client --query "SELECT code, count() FROM %s.rejected FINAL GROUP BY code"
`, strings.Join(cfg.ClickHouse.Addr, ","), cfg.ClickHouse.Database, cfg.ClickHouse.Database, cfg.ClickHouse.Database)
	}
	fmt.Fprintln(stdout, "Stop with Ctrl-C.")

	wg.Wait()
	if err := w.Close(); err != nil {
		log.Warn("cannot close simulator writer", "err", err)
	}
	return errors.Join(runErr, pubErr)
}
