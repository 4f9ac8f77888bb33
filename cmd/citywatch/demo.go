package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
	"citywatch/web"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scale := fs.Float64("scale", 1, "share of the city's devices to simulate (1: the real city, a few thousand events/s)")
	speedup := fs.Float64("speedup", 1, "simulated seconds per wall-clock second")
	seed := fs.Uint64("seed", 1, "seed of the simulated city's traffic")
	scenario := fs.String("scenario", "default", "scenario of planted incidents (a name or a file; empty: background only)")
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
	roles := map[string]bool{"ingest": true, "rules": true, "dispatch": true, "sink": !*noSink, "web": true}
	if err := cfg.validate(roles, false); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	log := newLogger(stderr, cfg.LogLevel)
	if _, err := applyRuntime(cfg, log); err != nil {
		return err
	}

	// The simulated city, with a scenario that keeps planting incidents so
	// that the operator always has something real to look at; its hotlist
	// and watchlist become the rules role's lists unless others are set.
	sc := simulators.Config{Seed: *seed, Scale: *scale, Start: time.Now().Truncate(time.Second).In(city.Location)}
	c, scen, sim, err := newSim("", *scenario, sc)
	if err != nil {
		return err
	}
	if scen != nil && cfg.Hotlist == "" && cfg.Watchlist == "" {
		dir, err := os.MkdirTemp("", "citywatch-demo-")
		if err != nil {
			return fmt.Errorf("cannot make a folder for the scenario's lists: %w", err)
		}
		defer os.RemoveAll(dir)
		if err := writeScenarioFiles(sim, scen, "", dir); err != nil {
			return err
		}
		cfg.Hotlist, cfg.Watchlist = filepath.Join(dir, "hotlist.csv"), filepath.Join(dir, "watchlist.csv")
	}

	if len(cfg.Kafka.Brokers) == 0 {
		broker, err := kafkaio.StartEmbedded(cfg.Kafka)
		if err != nil {
			return err
		}
		defer broker.Close()
		broker.Use(&cfg.Kafka)
	}

	// Demo users, one per role, with fresh passwords printed below.
	var logins []web.DemoLogin
	if cfg.HTTP.UsersFile == "" {
		udir, err := os.MkdirTemp("", "citywatch-users-")
		if err != nil {
			return fmt.Errorf("cannot make a folder for the demo users: %w", err)
		}
		defer os.RemoveAll(udir)
		cfg.HTTP.UsersFile = filepath.Join(udir, "users.yaml")
		if logins, err = web.DemoUsers(cfg.HTTP.UsersFile, "unit-001"); err != nil {
			return err
		}
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

	// The simulated units answer the dispatcher's orders.
	inbox := make(chan simInput, responderInbox)
	wg.Add(1)
	go func() {
		defer wg.Done()
		readForResponders(ctx, cfg.Kafka, inbox, stderr)
	}()
	w := cfg.Kafka.NewWriter()
	// A share of the cameras and checkpoints talk to the gateway (RTP,
	// GA/T 1400), the rest to Kafka.
	greg := prometheus.NewRegistry()
	sw, stopGateway, err := startGatewayShare(ctx, cfg, c, w, greg, kafkaio.NewMetrics(greg), *seed, log, stdout)
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	defer stopGateway()
	wg.Add(1)
	go func() {
		defer wg.Done()
		pubErr = runSim(ctx, sim, sw, cfg.Kafka.TopicPrefix, sc.Start, 0, *speedup, time.Hour, io.Discard, inbox)
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
  simulated:   Xiangyang at scale %g (%d devices), %gx real time, scenario %q
`, host, host, strings.Join(cfg.Kafka.Brokers, ","), cfg.Kafka.TopicPrefix, *scale, len(c.Devices), *speedup, *scenario)
	if roles["sink"] {
		fmt.Fprintf(stdout, `  ClickHouse:  %s, database %s; for example
    clickhouse-client --query "SELECT type, count() FROM %s.events FINAL GROUP BY type"
    clickhouse-client --query "SELECT code, count() FROM %s.rejected FINAL GROUP BY code"
    clickhouse-client --query "SELECT rule, status, count() FROM %s.alerts FINAL GROUP BY rule, status"
    clickhouse-client --query "SELECT status, count() FROM %s.dispatches FINAL GROUP BY status"
`, strings.Join(cfg.ClickHouse.Addr, ","), cfg.ClickHouse.Database, cfg.ClickHouse.Database, cfg.ClickHouse.Database, cfg.ClickHouse.Database, cfg.ClickHouse.Database)
	}
	if len(logins) > 0 {
		fmt.Fprintf(stdout, "  log in at http://%s/login as (name / password, role):\n", host)
		for _, l := range logins {
			fmt.Fprintf(stdout, "    %-15s %s  %s %s\n", l.Name, l.Password, l.Role, l.Unit)
		}
	}
	fmt.Fprintln(stdout, "Stop with Ctrl-C.")

	wg.Wait()
	if err := w.Close(); err != nil {
		log.Warn("cannot close simulator writer", "err", err)
	}
	return errors.Join(runErr, pubErr)
}
