package store_test

import (
	"context"
	"flag"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"citywatch/internal/chtest"
	"citywatch/store"
)

// BenchmarkTrends30Days needs tens of millions of rows, so it runs only when
// asked: go test -run '^$' -bench Trends30Days -benchtime 5x ./store/ -args -trend.sim
// (the full city, as make bench runs it) or -trend.rows 100000000.
var (
	trendRows  = flag.Int64("trend.rows", 0, "events that BenchmarkTrends30Days stores over 30 days (0: skip it)")
	trendKeep  = flag.Bool("trend.keep", false, "keep BenchmarkTrends30Days's database for the next run")
	trendEdges = flag.Bool("trend.edges", false, "store only the first and last of BenchmarkTrends30Days's days as rows, the days between as rollups")
	trendSim   = flag.Bool("trend.sim", false, "generate BenchmarkTrends30Days's events with the simulators: one day of the full city, its rows stored as the first and last day and its rollups repeated for the days between")
)

// trendStart is the first instant of the benchmark's 30 days: midnight of
// 2026-10-02 in Asia/Shanghai.
var trendStart = time.Date(2026, 10, 1, 16, 0, 0, 0, time.UTC)

const trendDays = 30

// BenchmarkTrends30Days times each trend query over 30 days of a city's
// data.
//
// With -trend.sim the events come from the simulators: one day of the
// whole city at its normal rates, simulated as fast as it goes and stored
// through the sink's Insert (simulateDay), then repeated: its rows copied
// as the last day and its hourly rollups as each day between (repeatDay),
// so that the queries read rows and minutely rollups only at a range's
// ends, as they would in a month of real data, and the month fits the
// disk. Alerts, dispatches and closes are generated as below.
//
// Otherwise everything is generated inside ClickHouse: *trendRows events (80 % in the events
// table in the city's mix of types, 18 % heartbeats and health reports, 2 %
// fuel purchases) with 1 % of them stored twice as a replay, 3,000 alerts
// a day with three messages each (the firing one twice), a dispatch of 5
// messages for 90 % of them (the rest escalated), and one close in the
// audit log per alert. The database is made once per row count and, with
// -trend.keep, kept for the next run. With -trend.edges only the first
// and the last day are rows and the days between are rollups (see
// trendData), so that a city's full rate fits the disk; the queries read
// rows only for the parts of a range that are not whole hours.
//
// The base/ sub-benchmarks time the queries the rollups replaced (the base
// tables with FINAL) and report the largest relative difference of the
// rollup's counts from theirs as rel_err.
func BenchmarkTrends30Days(b *testing.B) {
	if *trendRows <= 0 && !*trendSim {
		b.Skip("needs -trend.rows N (events over 30 days) or -trend.sim")
	}
	db := trendDB(b, *trendRows)
	ctx := context.Background()
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		b.Fatal(err)
	}
	month := store.TrendQuery{From: trendStart, To: trendStart.AddDate(0, 0, trendDays), Location: shanghai}
	with := func(bucket, by string) store.TrendQuery {
		q := month
		q.Bucket, q.By = bucket, by
		return q
	}
	// A range that starts and ends within an hour, as an API caller's may
	// (the web role's default ranges end on the hour).
	// Its ends lie in the busy hours of the first and the last day (08:17
	// and 17:37 local), where a part-hour holds the most events.
	unaligned := with("day", "")
	unaligned.From, unaligned.To = unaligned.From.Add(8*time.Hour+17*time.Minute), unaligned.To.Add(-6*time.Hour-23*time.Minute)
	unalignedHealth := unaligned
	unalignedHealth.Bucket = "hour"
	// The same with seconds, which the web role's API never asks (it
	// takes ranges to the minute): its part-minutes are read from the
	// base tables.
	seconds := unaligned
	seconds.From, seconds.To = seconds.From.Add(3*time.Second), seconds.To.Add(-5*time.Second)

	counts := func(f func(context.Context, store.TrendQuery) ([]store.BucketCount, error), q store.TrendQuery) func(*testing.B) {
		return func(b *testing.B) {
			var n int
			for b.Loop() {
				cs, err := f(ctx, q)
				if err != nil {
					b.Fatal(err)
				}
				n = len(cs)
			}
			b.ReportMetric(float64(n), "rows")
		}
	}
	b.Run("alerts/hour/rule", counts(db.AlertsTrend, with("hour", "rule")))
	b.Run("alerts/day/district", counts(db.AlertsTrend, with("day", "district")))
	b.Run("alerts/day/circle", counts(db.AlertsTrend, with("day", "circle")))
	b.Run("events/hour", counts(db.EventsTrend, with("hour", "")))
	b.Run("events/day", counts(db.EventsTrend, with("day", "")))
	b.Run("events/day/unaligned", counts(db.EventsTrend, unaligned))
	b.Run("events/day/seconds", counts(db.EventsTrend, seconds))
	b.Run("health/hour", counts(db.HealthTrend, with("hour", "")))
	b.Run("health/day", counts(db.HealthTrend, with("day", "")))
	b.Run("health/hour/unaligned", counts(db.HealthTrend, unalignedHealth))
	b.Run("response/tier", func(b *testing.B) {
		var n int
		for b.Loop() {
			rs, err := db.ResponseTimes(ctx, with("", "tier"))
			if err != nil {
				b.Fatal(err)
			}
			n = len(rs)
		}
		b.ReportMetric(float64(n), "rows")
	})
	b.Run("outcomes", func(b *testing.B) {
		var n int
		for b.Loop() {
			rs, err := db.OutcomeRates(ctx, month)
			if err != nil {
				b.Fatal(err)
			}
			n = len(rs)
		}
		b.ReportMetric(float64(n), "rows")
	})

	base := func(f func(testing.TB, *store.DB, store.TrendQuery) []store.BucketCount, rollup func(context.Context, store.TrendQuery) ([]store.BucketCount, error), q store.TrendQuery) func(*testing.B) {
		return func(b *testing.B) {
			var want []store.BucketCount
			for b.Loop() {
				want = f(b, db, q)
			}
			got, err := rollup(ctx, q)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(relErr(want, got), "rel_err")
		}
	}
	if *trendEdges || *trendSim {
		return // the base tables hold two of the days
	}
	b.Run("base/alerts/day/district", base(baseAlertsTrend, db.AlertsTrend, with("day", "district")))
	b.Run("base/events/hour", base(baseEventsTrend, db.EventsTrend, with("hour", "")))
	b.Run("base/events/day", base(baseEventsTrend, db.EventsTrend, with("day", "")))
	b.Run("base/health/day", base(baseHealthTrend, db.HealthTrend, with("day", "")))
}

// relErr returns the largest relative difference of got's counts from
// want's, 1 for a bucket and key only one of them has.
func relErr(want, got []store.BucketCount) float64 {
	type key struct {
		t time.Time
		k string
	}
	w := make(map[key]uint64)
	for _, c := range want {
		w[key{c.Bucket, c.Key}] = c.Count
	}
	worst := 0.0
	for _, c := range got {
		n, ok := w[key{c.Bucket, c.Key}]
		delete(w, key{c.Bucket, c.Key})
		if !ok {
			return 1
		}
		worst = math.Max(worst, math.Abs(float64(c.Count)-float64(n))/float64(n))
	}
	if len(w) > 0 {
		return 1
	}
	return worst
}

// trendDB returns the benchmark's database, generating its data unless a
// kept one is complete.
func trendDB(b *testing.B, rows int64) *store.DB {
	b.Helper()
	cfg := chtest.Config(b) // the server, and the skip or failure without it
	cfg.Database = fmt.Sprintf("citywatch_bench_trends_%d", rows)
	marker := fmt.Sprint(rows)
	switch {
	case *trendSim:
		cfg.Database, marker = "citywatch_bench_trends_sim", "sim"
	case *trendEdges:
		cfg.Database += "_edges"
	}
	ctx := context.Background()
	db, err := store.Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if !*trendKeep {
			if err := db.DropDatabase(context.Background()); err != nil {
				b.Error(err)
			}
		}
		db.Close()
	})
	if err := db.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	done, err := db.AuditSince(ctx, time.Unix(0, 0), 1, "bench.generated")
	if err != nil {
		b.Fatal(err)
	}
	if len(done) == 1 && done[0].Object == marker {
		return db
	}
	// The simulated day takes half an hour; a run that failed after it
	// goes on from it (see repeatDay).
	simulated, err := db.AuditSince(ctx, time.Unix(0, 0), 1, "bench.simulated")
	if err != nil {
		b.Fatal(err)
	}
	resume := *trendSim && len(simulated) == 1
	if !resume {
		if err := db.DropDatabase(ctx); err != nil { // a part generated before
			b.Fatal(err)
		}
		if err := db.Migrate(ctx); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	// The server runs an INSERT ... SELECT from numbers() on one core:
	// two at a time use both. The merges come last.
	var stmts []string
	if *trendSim {
		if resume {
			b.Logf("the day was simulated before (%s events); repeating it", simulated[0].Object)
		} else {
			n, err := simulateDay(ctx, db)
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("%v: simulated a day of the city, %d events stored", time.Since(start).Round(time.Second), n)
			if err := db.InsertAudit(ctx, store.AuditEntry{Time: time.Now(), Who: "bench", Action: "bench.simulated", Object: fmt.Sprint(n), Details: "{}"}); err != nil {
				b.Fatal(err)
			}
		}
		stmts, err = repeatDay(ctx, db)
		if err != nil {
			b.Fatal(err)
		}
		stmts = append(stmts, trendAlerts()...)
	} else {
		stmts = append(trendData(rows, *trendEdges), trendAlerts()...)
	}
	stmts = append(stmts, trendMerges...)
	merges := slices.IndexFunc(stmts, func(s string) bool { return strings.HasPrefix(s, "OPTIMIZE") })
	run := func(s string) error {
		t0 := time.Now()
		if err := db.Conn().Exec(ctx, strings.ReplaceAll(s, "{db}", "`"+cfg.Database+"`")); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		b.Logf("%.1fs: %.120s", time.Since(t0).Seconds(), strings.Join(strings.Fields(s), " "))
		return nil
	}
	next := make(chan string)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			var err error
			for s := range next {
				if err == nil {
					err = run(s)
				}
			}
			errs <- err
		}()
	}
	for _, s := range stmts[:merges] {
		next <- s
	}
	close(next)
	for range 2 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	for _, s := range stmts[merges:] {
		if err := run(s); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.InsertAudit(ctx, store.AuditEntry{Time: time.Now(), Who: "bench", Action: "bench.generated", Object: marker, Details: "{}"}); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated in %v", time.Since(start).Round(time.Second))
	return db
}

// trendData returns the statements that generate the benchmark's data.
// With edges, only the first and the last day are stored as rows; the
// days between go straight into the hourly rollups, as the materialized
// views would have written them from the same rows.
func trendData(rows int64, edges bool) []string {
	const secs = trendDays * 86400
	start := fmt.Sprint(trendStart.Unix())
	var stmts []string
	// parts returns the ranges of row numbers of a table of n rows stored
	// as rows, and the range that goes straight into its rollup.
	parts := func(n int64) (raw [][2]int64, rolled [2]int64) {
		if !edges {
			return [][2]int64{{0, n}}, [2]int64{}
		}
		day := n / trendDays
		return [][2]int64{{0, day}, {n - day, n}}, [2]int64{day, n - day}
	}
	// chunks returns INSERTs of the rows numbered lo to hi of sel, a few
	// million at a time; an INSERT of a rollup takes more at a time.
	chunks := func(insert, sel string, lo, hi, chunk int64) {
		for off := lo; off < hi; off += chunk {
			stmts = append(stmts, fmt.Sprintf(insert, fmt.Sprintf("SELECT %s FROM (SELECT number + %d AS n FROM numbers(%d))", sel, off, min(chunk, hi-off))))
		}
	}
	at := func(n int64) string { // the time of the n-th of n rows
		return fmt.Sprintf("toDateTime(%s + intDiv(n * %d, %d), 'UTC')", start, secs, n)
	}
	const rowChunk, rollupChunk = 10_000_000, 50_000_000

	nEvents, nHealth := rows*80/100, rows*18/100
	nFuel := rows - nEvents - nHealth
	eventKey := `concat('ev-', toString(n)) AS id,
			multiIf(n % 80 < 35, 'checkpoint.pass', n % 80 < 65, 'camera.detection', n % 80 < 71, 'patrol.position',
				n % 80 < 75, 'drone.telemetry', n % 80 < 78, 'drone.detection', 'patrol.status') AS type, ` + at(nEvents) + ` AS time`
	events := func(ingest string) string {
		return eventKey + `, concat('dev-', toString(cityHash64(n) % 28200)) AS device_id, toUInt16(n % 1000) AS time_ms,
			32.0 + (cityHash64(n) % 10000) / 20000 AS lat, 111.9 + (cityHash64(n, 1) % 10000) / 20000 AS lon,
			if(n % 80 < 65, concat('鄂F', toString(n % 100000)), '') AS plate, 0.9 AS confidence, time + ` + ingest + ` AS ingested_at`
	}
	const eventsInsert = "INSERT INTO {db}.events (id, type, time, device_id, time_ms, lat, lon, plate, confidence, ingested_at) %s"
	raw, rolled := parts(nEvents)
	for _, r := range raw {
		chunks(eventsInsert, events("2"), r[0], r[1], rowChunk)
	}
	chunks("INSERT INTO {db}.events_hourly (hour, type, ids) SELECT toStartOfHour(time) AS hour, type, uniqCombinedState(15)(id) AS ids FROM (%s) GROUP BY hour, type",
		eventKey, rolled[0], rolled[1], rollupChunk)
	// The sink replays the first 1 % after a crash, an hour later.
	stmts = append(stmts, fmt.Sprintf(eventsInsert, fmt.Sprintf("SELECT %s FROM (SELECT number AS n FROM numbers(%d))", events("3600"), nEvents/100)))

	health := `concat('h-', toString(n)) AS id,
		if(n % 6 = 0, 'camera.health', 'device.heartbeat') AS type, concat('dev-', toString(n % 28200)) AS device_id,
		` + at(nHealth) + ` AS time, if(n % 6 = 0, ['ok', 'video_loss', 'tampering', 'offline'][intDiv(n, 6) % 4 + 1], '') AS status`
	raw, rolled = parts(nHealth)
	for _, r := range raw {
		chunks("INSERT INTO {db}.device_health (id, type, device_id, time, status, time_ms, ingested_at) %s",
			health+`, toUInt16(n % 1000) AS time_ms, time + 2 AS ingested_at`, r[0], r[1], rowChunk)
	}
	chunks(`INSERT INTO {db}.health_hourly (hour, type, status, ids, devices) SELECT toStartOfHour(time) AS hour, type, status,
		uniqCombinedState(15)(id) AS ids, uniqCombinedState(15)(device_id) AS devices FROM (%s) GROUP BY hour, type, status`,
		health, rolled[0], rolled[1], rollupChunk)

	fuel := `concat('f-', toString(n)) AS id, ` + at(nFuel) + ` AS time`
	raw, rolled = parts(nFuel)
	for _, r := range raw {
		chunks("INSERT INTO {db}.fuel_purchases (id, time, device_id, time_ms, station_id, fuel, volume_l, ingested_at) %s",
			fuel+`, concat('fuel-', toString(n % 1500)) AS device_id, toUInt16(n % 1000) AS time_ms,
		concat('st-', toString(n % 1500)) AS station_id, '92' AS fuel, 25.0 AS volume_l, time + 2 AS ingested_at`, r[0], r[1], rowChunk)
	}
	chunks(`INSERT INTO {db}.events_hourly (hour, type, ids) SELECT toStartOfHour(time) AS hour, 'fuel.purchase' AS type,
		uniqCombinedState(15)(id) AS ids FROM (%s) GROUP BY hour, type`, fuel, rolled[0], rolled[1], rollupChunk)

	return stmts
}

// trendAlerts returns the statements that generate the benchmark's
// alerts, dispatches and closes.
func trendAlerts() []string {
	const secs = trendDays * 86400
	start := fmt.Sprint(trendStart.Unix())
	var stmts []string
	// Alerts: the i-th of nAlerts, its rule, district, circle and tier as
	// SQL of i, shared by the alerts, dispatches and audit tables.
	const nAlerts = 3000 * trendDays
	const (
		rule     = "['vehicle.hotlist', 'camera.violence', 'crowd.gathering', 'device.offline', 'vehicle.velocity', 'zone.intrusion', 'fuel.bulk', 'vehicle.companion', 'drone.link_lost', 'person.loitering', 'vehicle.sequence', 'crowd.density'][cityHash64(i, 2) % 12 + 1]"
		district = "['襄城区', '樊城区', '襄州区', '南漳县', '谷城县', '保康县', '老河口市', '枣阳市', '宜城市'][cityHash64(i, 3) % 9 + 1]"
		circle   = "if(cityHash64(i, 4) % 40 = 39, '', concat('C', toString(cityHash64(i, 4) % 40)))"
		tier     = "toUInt8([1, 3, 5][cityHash64(i, 4) % 3 + 1])"
	)
	raised := fmt.Sprintf("(%s + intDiv(i * %d, %d))", start, secs, nAlerts)
	// Messages: firing (twice: a replay), updated after a minute, resolved
	// after ten.
	stmts = append(stmts, fmt.Sprintf(`INSERT INTO {db}.alerts (id, rule, severity, status, subject_kind, subject_id, event_time, event_time_ms,
		raised_at, raised_at_ms, lat, lon, district, circle_id, tier_minutes, summary, details, ingested_at)
		SELECT concat('a-', toString(i)) AS id, %s AS rule, ['critical', 'high', 'medium', 'low'][cityHash64(i, 5) %% 4 + 1] AS severity,
			['firing', 'firing', 'updated', 'resolved'][m + 1] AS status, 'device' AS subject_kind, concat('dev-', toString(i %% 28200)) AS subject_id,
			toDateTime(%s - 2, 'UTC') AS event_time, toUInt16(0) AS event_time_ms,
			toDateTime(%s + [0, 0, 60, 600][m + 1], 'UTC') AS raised_at, toUInt16(0) AS raised_at_ms, 32.0 AS lat, 112.1 AS lon,
			%s AS district, %s AS circle_id, %s AS tier_minutes, 'bench' AS summary, '{}' AS details, raised_at AS ingested_at
		FROM (SELECT intDiv(number, 4) AS i, number %% 4 AS m FROM numbers(%d))`, rule, raised, raised, district, circle, tier, 4*nAlerts))

	// Dispatches: assigned, accepted, en_route, on_scene (30 s to 7 min
	// after the sensor) and cleared; every tenth alert escalated instead.
	stmts = append(stmts, fmt.Sprintf(`INSERT INTO {db}.dispatches (id, alert_id, unit_id, status, time, time_ms, eta_s, distance_m, circle_id, tier_minutes, ingested_at)
		SELECT concat('d-', toString(i)) AS id, concat('a-', toString(i)) AS alert_id, if(i %% 10 = 0, '', concat('u-', toString(i %% 300))) AS unit_id,
			if(i %% 10 = 0, 'escalated', ['assigned', 'accepted', 'en_route', 'on_scene', 'cleared'][m + 1]) AS status,
			toDateTime(%s + [1, 15, 20, 30 + cityHash64(i, 6) %% 390, 1800][m + 1], 'UTC') AS time, toUInt16(cityHash64(i, m) %% 1000) AS time_ms,
			120.0 AS eta_s, 1500.0 AS distance_m, %s AS circle_id, %s AS tier_minutes, time AS ingested_at
		FROM (SELECT intDiv(number, 5) AS i, number %% 5 AS m FROM numbers(%d)) WHERE i %% 10 != 0 OR m = 0`, raised, circle, tier, 5*nAlerts))

	// One close per alert, a quarter of them false alarms.
	stmts = append(stmts, fmt.Sprintf(`INSERT INTO {db}.audit (time, time_ms, who, action, object, details, ingested_at)
		SELECT toDateTime(%s + 900, 'UTC') AS time, toUInt16(0) AS time_ms, concat('op-', toString(i %% 20)) AS who, 'alert.close' AS action,
			concat('a-', toString(i)) AS object,
			concat('{"rule":"', %s, '","outcome":"', ['confirmed', 'confirmed', 'false_alarm', 'duplicate'][cityHash64(i, 7) %% 4 + 1], '","district":"', %s, '"}') AS details,
			time AS ingested_at
		FROM (SELECT number AS i FROM numbers(%d))`, raised, rule, district, nAlerts))

	return stmts
}

// trendMerges are thirty days of background merges, which a freshly
// filled table has not had: the rollups' parts merged into one a day.
var trendMerges = []string{
	"OPTIMIZE TABLE {db}.alerts_hourly FINAL",
	"OPTIMIZE TABLE {db}.events_hourly FINAL",
	"OPTIMIZE TABLE {db}.health_hourly FINAL",
	"OPTIMIZE TABLE {db}.events_minutely FINAL",
	"OPTIMIZE TABLE {db}.health_minutely FINAL",
}
