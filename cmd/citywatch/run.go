package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"citywatch/dispatch"
	"citywatch/event"
	"citywatch/ingest"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/rules"
	"citywatch/store"
	"citywatch/web"
)

var knownRoles = []string{"ingest", "rules", "dispatch", "sink", "web"}
var builtRoles = []string{"ingest", "rules", "dispatch", "sink", "web"}

func parseRoles(s string) (map[string]bool, error) {
	roles := map[string]bool{}
	for _, r := range splitList(s) {
		if !slices.Contains(knownRoles, r) {
			return nil, fmt.Errorf("--roles: unknown role %q (roles: %s)", r, strings.Join(knownRoles, ","))
		}
		if !slices.Contains(builtRoles, r) {
			return nil, fmt.Errorf("--roles: role %q is not built yet in this release", r)
		}
		roles[r] = true
	}
	if len(roles) == 0 {
		return nil, errors.New("--roles: name at least one role")
	}
	return roles, nil
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rolesFlag := fs.String("roles", "ingest,rules,dispatch,sink,web", "comma-separated roles to run")
	check := fs.Bool("check-config", false, "validate the configuration and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	roles, err := parseRoles(*rolesFlag)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		return err
	}
	if err := cfg.validate(roles, true); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	if *check {
		fmt.Fprintln(stdout, "configuration ok")
		return nil
	}
	log := newLogger(stderr, cfg.LogLevel)
	if _, err := applyRuntime(cfg, log); err != nil {
		return err
	}
	return runRoles(ctx, cfg, roles, log, nil)
}

// runRoles builds the chosen roles and runs them until ctx is done or one
// of them fails; then it stops them all and waits. ready, if not nil, is
// closed once every role has started.
func runRoles(ctx context.Context, cfg Config, roles map[string]bool, log *slog.Logger, ready chan<- struct{}) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(goCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	km := kafkaio.NewMetrics(reg)

	setupCtx, cancelSetup := context.WithTimeout(ctx, time.Minute)
	defer cancelSetup()
	if err := kafkaio.EnsureTopics(setupCtx, cfg.Kafka, kafkaio.AllTopics...); err != nil {
		return err
	}

	type role struct {
		name string
		run  func(context.Context) error
	}
	var rs []role
	checks := map[string]web.Check{
		"kafka": cfg.Kafka.Ping,
	}
	lagGroups := map[string][]string{}
	var closers []func() error
	defer func() {
		for _, c := range slices.Backward(closers) {
			if err := c(); err != nil {
				log.Warn("cannot close", "err", err)
			}
		}
	}()

	if roles["ingest"] {
		in, err := ingest.New(cfg.Ingest, cfg.Kafka, cfg.PseudonymKey, nil, reg, km, log)
		if err != nil {
			return err
		}
		lagGroups[in.Group()] = in.Topics()
		rs = append(rs, role{"ingest", in.Run})
	}
	if roles["rules"] {
		p, err := event.NewPseudonymizer(cfg.PseudonymKey)
		if err != nil {
			return fmt.Errorf("cannot use pseudonym key: %w", err)
		}
		rc := cfg.Rules
		rc.Hotlist, rc.Watchlist = cfg.Hotlist, cfg.Watchlist
		c, err := city.Default()
		if err != nil {
			return fmt.Errorf("cannot load the city model: %w", err)
		}
		ecfg := rules.CityConfig(c)
		ecfg.TimeZone = cfg.Timezone
		r, err := rules.NewRole(rc, ecfg, cfg.Kafka, p, nil, reg, km, log)
		if err != nil {
			return err
		}
		if ts := r.Topics(); len(ts) > 0 {
			lagGroups[r.Group()] = ts
		}
		checks["rules"] = r.Ready // not ready while it rebuilds its state
		rs = append(rs, role{"rules", r.Run})
	}
	var dispatcher *dispatch.Role // the web role shows its coverage when both run here
	if roles["dispatch"] {
		c, err := city.Default()
		if err != nil {
			return fmt.Errorf("cannot load the city model: %w", err)
		}
		d, err := dispatch.NewRole(cfg.Dispatch, c, cfg.Kafka, nil, reg, km, log)
		if err != nil {
			return err
		}
		dispatcher = d
		if ts := d.Topics(); len(ts) > 0 {
			lagGroups[d.Group()] = ts
		}
		rs = append(rs, role{"dispatch", d.Run})
	}
	if roles["sink"] {
		db, err := store.Open(setupCtx, cfg.ClickHouse)
		if err != nil {
			return fmt.Errorf("cannot reach ClickHouse at %s: %w", strings.Join(cfg.ClickHouse.Addr, ","), err)
		}
		closers = append(closers, db.Close)
		if err := db.Migrate(setupCtx); err != nil {
			return err
		}
		s, err := store.NewSink(cfg.Sink, cfg.Kafka, db, reg, km, log)
		if err != nil {
			return err
		}
		lagGroups[s.Group()] = s.Topics()
		checks["clickhouse"] = db.Ping
		rs = append(rs, role{"sink", s.Run})
	}
	rs = append(rs, role{"lag", kafkaio.NewLagMonitor(cfg.Kafka, lagGroups, 5*time.Second, km, log).Run})
	if roles["web"] {
		// The web role has its own ClickHouse pool for history, trends and
		// the audit log; without ClickHouse it still shows the live feed.
		var wstore web.Store
		if db, err := store.Open(setupCtx, cfg.ClickHouse); err != nil {
			log.Warn("web runs without ClickHouse: no history, trends or audited actions", "err", err)
		} else if err := db.Migrate(setupCtx); err != nil {
			db.Close()
			return err
		} else {
			closers = append(closers, db.Close)
			wstore = db
		}
		loc, err := time.LoadLocation(cfg.Timezone)
		if err != nil {
			return fmt.Errorf("timezone: %w", err)
		}
		kc := cfg.Kafka
		deps := web.Deps{
			Gatherer: reg, Registerer: reg, Checks: checks, Roles: names(roles), Log: log,
			Kafka: &kc, Store: wstore, Location: loc, HotlistPath: cfg.Hotlist,
		}
		if dispatcher != nil {
			deps.Coverage = dispatcherCoverage{dispatcher}
		}
		srv, err := web.NewApp(cfg.HTTP, deps)
		if err != nil {
			return err
		}
		rs = append(rs, role{"web", srv.Run})
	} else {
		// Without the web role the process still serves /metrics, /healthz
		// and /readyz on CITYWATCH_HTTP_ADDR, for Prometheus and the
		// orchestrator's probes; no live views, no users.
		pcfg := cfg.HTTP
		pcfg.UsersFile = ""
		srv, err := web.NewApp(pcfg, web.Deps{Gatherer: reg, Checks: checks, Roles: names(roles), Log: log})
		if err != nil {
			return err
		}
		rs = append(rs, role{"probes", srv.Run})
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(rs))
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.run(ctx); err != nil {
				errs[i] = fmt.Errorf("%s: %w", r.name, err)
				log.Error("role stopped", "role", r.name, "err", err)
				cancel() // one role down stops the process; the orchestrator restarts it
			}
		}()
	}
	log.Info("citywatch running", "roles", strings.Join(names(roles), ","))
	if ready != nil {
		close(ready)
	}
	wg.Wait()
	return errors.Join(errs...)
}

func names(roles map[string]bool) []string {
	var out []string
	for _, r := range knownRoles {
		if roles[r] {
			out = append(out, r)
		}
	}
	return out
}

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	check := fs.Bool("check-config", false, "validate the configuration and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		return err
	}
	if err := cfg.validate(map[string]bool{"migrate": true}, false); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	if *check {
		fmt.Fprintln(stdout, "configuration ok")
		return nil
	}
	db, err := store.Open(ctx, cfg.ClickHouse)
	if err != nil {
		return fmt.Errorf("cannot reach ClickHouse at %s: %w", strings.Join(cfg.ClickHouse.Addr, ","), err)
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema of database %s is up to date\n", cfg.ClickHouse.Database)
	return nil
}

// dispatcherCoverage is the coverage of the circles as the dispatcher in
// the same process computes it, with its ETA model, for the web role.
type dispatcherCoverage struct{ d *dispatch.Role }

func (c dispatcherCoverage) Coverage(now time.Time) []web.CircleCoverage {
	snap := c.d.Snapshot()
	out := make([]web.CircleCoverage, 0, len(snap.Coverage))
	for _, cv := range snap.Coverage {
		cc := web.CircleCoverage{CircleID: cv.CircleID, Covered: cv.Covered, AvailableUnits: cv.Units, BestETASeconds: -1}
		if cv.Covered {
			cc.BestETASeconds = math.Round(cv.ETASeconds)
		}
		out = append(out, cc)
	}
	return out
}
