package store

import (
	"context"
	"fmt"
	"time"
)

// The schema runs unchanged on the ClickHouse that Debian ships (18.16) and
// on current releases, so it avoids LowCardinality, TTL, DateTime64, CODEC,
// Map and Nullable. Instants are a DateTime('UTC') column of seconds plus a
// UInt16 column of milliseconds within that second ("time" and "time_ms").
//
// Partitioning. Every data table is partitioned by the UTC day of the
// event's (or message's) own time, toYYYYMMDD(...), so partition ids read
// like 20261126 and ApplyRetention drops whole days per data class, which
// costs nothing compared with deleting rows.
//
// Deduplication. Every data table is a ReplacingMergeTree: rows whose
// sorting key (ORDER BY) is equal collapse into one, within one partition,
// when ClickHouse merges parts, and at once for queries that read with
// FINAL. The sink consumes Kafka at least once, so after a crash the same
// events are inserted again; the sorting key of each table is therefore
// chosen so that two copies of one event (or message) have equal keys and
// two different ones never do:
//
//   - events and device_health: ORDER BY (type, toStartOfHour(time),
//     device_id, id). The id alone decides identity (CONTRACT.md: two
//     messages with the same id are one event); type, hour and device are
//     the same for every copy of one event, and putting them first serves
//     the trend queries (one type over a time range), lets the primary key
//     skip by time (toStartOfHour is monotonic, so conditions on time use
//     the key) and keeps each device's rows together, which compresses its
//     fixed position and attributes to almost nothing. The exact time is
//     left out of the key on purpose: a resend whose clock moved by some
//     milliseconds still collapses as long as it stays in the same hour.
//   - fuel_purchases: ORDER BY (toStartOfHour(time), station_id, id), for
//     the same reasons; it has only one type.
//   - rejected: ORDER BY (topic, partition, offset): a Kafka position is
//     rejected once, whatever the time it was received.
//   - alerts: ORDER BY (rule, id, raised_at, raised_at_ms, status): every
//     lifecycle message of an alert is a row; one message is the alert id,
//     its status and the instant it was emitted (to the millisecond, so that
//     two updates within a second stay two rows). The rule comes first
//     because analysts group by rule, and it is fixed for an id.
//   - dispatches: ORDER BY (alert_id, id, time, time_ms, status): every state
//     change of a dispatch, grouped by alert for response-time reports.
//   - audit: ORDER BY (time, time_ms, who, action, object): an audit entry
//     has no id; the same person doing the same thing to the same object in
//     the same millisecond is one entry submitted twice.
//
// The version column of ReplacingMergeTree is ingested_at (received_at for
// rejected input): among copies the most recently stored one is kept, and
// copies differ in nothing else that a query reads.
//
// Columns of types an event does not have hold zero values (empty strings,
// zeros); attrs holds the unknown fields of the message as a JSON object, or
// is empty.

// Table names, in the database of Config.
const (
	tableMigrations = "schema_migrations"
	tableEvents     = "events"
	tableFuel       = "fuel_purchases"
	tableHealth     = "device_health"
	tableRejected   = "rejected"
	tableAlerts     = "alerts"
	tableDispatches = "dispatches"
	tableAudit      = "audit"

	tableAlertsHourly = "alerts_hourly"
	tableEventsHourly = "events_hourly"
	tableHealthHourly = "health_hourly"

	tableEventsMinutely = "events_minutely"
	tableHealthMinutely = "health_minutely"
)

// migration is one numbered step of the schema. Its statements are run in
// order with {db} replaced by the quoted database name; every statement must
// be harmless when run again (CREATE ... IF NOT EXISTS), because a migration
// that failed half-way is run again from its first statement, and two
// processes may migrate at the same time. A migration, once released, is
// never edited: changes are new migrations.
type migration struct {
	version int
	name    string
	stmts   []string
	// backfill, when set, runs after the statements, with the same
	// promise: harmless when run again.
	backfill func(ctx context.Context, db *DB) error
}

// migrations is the schema history, in version order.
var migrations = []migration{
	{
		version: 1,
		name:    "initial schema",
		stmts: []string{
			`CREATE TABLE IF NOT EXISTS {db}.events (
				id            String,
				type          String,
				device_id     String,
				time          DateTime('UTC'),
				time_ms       UInt16,
				lat           Float64,
				lon           Float64,
				camera_class  String,
				object        String,
				behavior      String,
				count         UInt32,
				track_id      String,
				alt_m         Float64,
				plate         String,
				plate_valid   UInt8,
				plate_color   String,
				confidence    Float64,
				status        String,
				lane          UInt16,
				vehicle_type  String,
				vehicle_color String,
				speed_kmh     Float64,
				heading_deg   Float64,
				has_heading   UInt8,
				mission_id    String,
				speed_ms      Float64,
				battery_pct   Float64,
				dispatch_id   String,
				attrs         String,
				ingested_at   DateTime('UTC')
			) ENGINE = ReplacingMergeTree(ingested_at)
			PARTITION BY toYYYYMMDD(time)
			ORDER BY (type, toStartOfHour(time), device_id, id)`,

			`CREATE TABLE IF NOT EXISTS {db}.fuel_purchases (
				id                String,
				device_id         String,
				time              DateTime('UTC'),
				time_ms           UInt16,
				lat               Float64,
				lon               Float64,
				station_id        String,
				buyer_pseudonym   String,
				buyer_id_masked   String,
				buyer_name_masked String,
				plate             String,
				plate_valid       UInt8,
				plate_color       String,
				fuel              String,
				container         String,
				volume_l          Float64,
				permit_no         String,
				attrs             String,
				ingested_at       DateTime('UTC')
			) ENGINE = ReplacingMergeTree(ingested_at)
			PARTITION BY toYYYYMMDD(time)
			ORDER BY (toStartOfHour(time), station_id, id)`,

			`CREATE TABLE IF NOT EXISTS {db}.device_health (
				id          String,
				type        String,
				device_id   String,
				time        DateTime('UTC'),
				time_ms     UInt16,
				lat         Float64,
				lon         Float64,
				status      String,
				detail      String,
				attrs       String,
				ingested_at DateTime('UTC')
			) ENGINE = ReplacingMergeTree(ingested_at)
			PARTITION BY toYYYYMMDD(time)
			ORDER BY (type, toStartOfHour(time), device_id, id)`,

			"CREATE TABLE IF NOT EXISTS {db}.rejected (" + `
				topic       String,
				` + "`partition`" + ` Int32,
				` + "`offset`" + `    Int64,
				key         String,
				error       String,
				code        String,
				received_at DateTime('UTC'),
				payload     String
			) ENGINE = ReplacingMergeTree(received_at)
			PARTITION BY toYYYYMMDD(received_at)
			ORDER BY (topic, ` + "`partition`, `offset`)",

			`CREATE TABLE IF NOT EXISTS {db}.alerts (
				id            String,
				rule          String,
				severity      String,
				status        String,
				subject_kind  String,
				subject_id    String,
				event_time    DateTime('UTC'),
				event_time_ms UInt16,
				raised_at     DateTime('UTC'),
				raised_at_ms  UInt16,
				lat           Float64,
				lon           Float64,
				district      String,
				circle_id     String,
				tier_minutes  UInt8,
				evidence      Array(String),
				summary       String,
				details       String,
				ingested_at   DateTime('UTC')
			) ENGINE = ReplacingMergeTree(ingested_at)
			PARTITION BY toYYYYMMDD(raised_at)
			ORDER BY (rule, id, raised_at, raised_at_ms, status)`,

			`CREATE TABLE IF NOT EXISTS {db}.dispatches (
				id           String,
				alert_id     String,
				unit_id      String,
				status       String,
				time         DateTime('UTC'),
				time_ms      UInt16,
				eta_s        Float64,
				distance_m   Float64,
				circle_id    String,
				tier_minutes UInt8,
				ingested_at  DateTime('UTC')
			) ENGINE = ReplacingMergeTree(ingested_at)
			PARTITION BY toYYYYMMDD(time)
			ORDER BY (alert_id, id, time, time_ms, status)`,

			`CREATE TABLE IF NOT EXISTS {db}.audit (
				time        DateTime('UTC'),
				time_ms     UInt16,
				who         String,
				action      String,
				object      String,
				details     String,
				ingested_at DateTime('UTC')
			) ENGINE = ReplacingMergeTree(ingested_at)
			PARTITION BY toYYYYMMDD(time)
			ORDER BY (time, time_ms, who, action, object)`,
		},
	},
	{
		version: 2,
		name:    "hourly rollups for trends",
		stmts:   rollupStmts,
	},
	{
		version:  3,
		name:     "minutely rollups for the part-hours of trends",
		stmts:    minuteRollupStmts,
		backfill: backfillMinutes,
	},
}

// Rollups. The trend queries read hourly pre-aggregates, kept on insert by
// materialized views (MV ... TO a table of our own, so the table has a
// name, a partitioning and a key we chose):
//
//   - alerts_hourly: per UTC hour of raised_at, rule, district, circle and
//     severity, the set of alert ids with a firing message.
//   - events_hourly: per UTC hour of the event time and type, the set of
//     event ids, fed by the events and fuel_purchases tables.
//   - health_hourly: per UTC hour, type and status of device_health, the
//     set of event ids and the set of device ids.
//
// The sets are aggregate states, never counts. An MV sees every INSERT
// block as it arrives, before and independently of the ReplacingMergeTree
// merges that collapse a replayed copy in the base table: when the sink
// inserts a batch twice after a crash (it consumes Kafka at least once,
// and after a restart the replayed batch need not have the same
// boundaries, so no block checksum can tell), a count() would count the
// copies twice, for ever. A set of ids is the same after the second copy
// as after the first, so a replay, a backfill run twice, or a backfill
// that overlaps with live inserts adds nothing.
//
// Which set: alerts are a few thousand a day, so alerts_hourly keeps the
// exact set (uniqExact, 16 bytes an id) and alert counts stay exact. Events
// come at thousands a second: an exact set would be as large as the ids
// themselves, and so would uniq's (up to 65,536 hashes, 256 KiB, a state),
// which a month's trend must all read: 5 s for 80 million events on the
// test machine. events_hourly and health_hourly therefore keep
// uniqCombined(15): exact up to about 2,000 ids (a list, then a hash
// table), then a HyperLogLog of 2^15 cells, so a state never exceeds
// about 20 KiB whatever the rate, and the relative error is about 0.5 %
// (BenchmarkTrends30Days reports the largest). That holds for a
// heartbeat's devices too (the city has about 28,000): device counts per
// hour are estimates within a percent or so, not the exact uniqExact of
// the base table. Both aggregate functions, uniqCombined's parameter and
// their states exist from 18.16 to current releases.
//
// Hours are UTC. A local hour or day is a union of whole UTC hours in any
// zone whose offset is a whole number of hours (Asia/Shanghai, UTC+8, has
// no DST), so the queries cut buckets in the zone asked for by merging the
// hourly states; see trends.go for zones that are not, and for the parts
// of a range that are not whole hours.
//
// An MV only sees rows inserted after it exists, so the migration backfills
// each rollup from its base table after creating the MV. The backfill needs
// no guard against running twice (after a failure half-way, or from two
// processes at once) and none against the sink inserting meanwhile: the
// states are sets, see above, so an id stored twice is counted once. It is
// one INSERT ... SELECT per table, which on a large existing table reads
// the whole table once. Rollups are small and are left out of retention:
// they keep the trends of days whose raw rows are gone.
var rollupStmts = []string{
	`CREATE TABLE IF NOT EXISTS {db}.alerts_hourly (
		hour      DateTime('UTC'),
		rule      String,
		district  String,
		circle_id String,
		severity  String,
		ids       AggregateFunction(uniqExact, String)
	) ENGINE = AggregatingMergeTree()
	PARTITION BY toYYYYMMDD(hour)
	ORDER BY (hour, rule, district, circle_id, severity)`,

	`CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.alerts_hourly_mv TO {db}.alerts_hourly AS
	SELECT toStartOfHour(raised_at) AS hour, rule, district, circle_id, severity, uniqExactState(id) AS ids
	FROM {db}.alerts
	WHERE status = 'firing'
	GROUP BY hour, rule, district, circle_id, severity`,

	`INSERT INTO {db}.alerts_hourly (hour, rule, district, circle_id, severity, ids)
	SELECT toStartOfHour(raised_at) AS hour, rule, district, circle_id, severity, uniqExactState(id) AS ids
	FROM {db}.alerts
	WHERE status = 'firing'
	GROUP BY hour, rule, district, circle_id, severity`,

	`CREATE TABLE IF NOT EXISTS {db}.events_hourly (
		hour DateTime('UTC'),
		type String,
		ids  AggregateFunction(uniqCombined(15), String)
	) ENGINE = AggregatingMergeTree()
	PARTITION BY toYYYYMMDD(hour)
	ORDER BY (hour, type)`,

	`CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_hourly_mv TO {db}.events_hourly AS
	SELECT toStartOfHour(time) AS hour, type, uniqCombinedState(15)(id) AS ids
	FROM {db}.events
	GROUP BY hour, type`,

	`CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.fuel_hourly_mv TO {db}.events_hourly AS
	SELECT toStartOfHour(time) AS hour, 'fuel.purchase' AS type, uniqCombinedState(15)(id) AS ids
	FROM {db}.fuel_purchases
	GROUP BY hour, type`,

	`INSERT INTO {db}.events_hourly (hour, type, ids)
	SELECT toStartOfHour(time) AS hour, type, uniqCombinedState(15)(id) AS ids
	FROM {db}.events
	GROUP BY hour, type`,

	`INSERT INTO {db}.events_hourly (hour, type, ids)
	SELECT toStartOfHour(time) AS hour, 'fuel.purchase' AS type, uniqCombinedState(15)(id) AS ids
	FROM {db}.fuel_purchases
	GROUP BY hour, type`,

	`CREATE TABLE IF NOT EXISTS {db}.health_hourly (
		hour    DateTime('UTC'),
		type    String,
		status  String,
		ids     AggregateFunction(uniqCombined(15), String),
		devices AggregateFunction(uniqCombined(15), String)
	) ENGINE = AggregatingMergeTree()
	PARTITION BY toYYYYMMDD(hour)
	ORDER BY (hour, type, status)`,

	`CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.health_hourly_mv TO {db}.health_hourly AS
	SELECT toStartOfHour(time) AS hour, type, status, uniqCombinedState(15)(id) AS ids, uniqCombinedState(15)(device_id) AS devices
	FROM {db}.device_health
	GROUP BY hour, type, status`,

	`INSERT INTO {db}.health_hourly (hour, type, status, ids, devices)
	SELECT toStartOfHour(time) AS hour, type, status, uniqCombinedState(15)(id) AS ids, uniqCombinedState(15)(device_id) AS devices
	FROM {db}.device_health
	GROUP BY hour, type, status`,
}

// Minutely rollups. A trend range that starts or ends inside an hour
// cannot read that part-hour from the hourly rollups, and the events
// table is ordered by the hour (type, toStartOfHour(time), device_id, id),
// so reading a part-hour from it reads the whole hour: about 9 million
// rows at the city's rate, 1.5 s for a range's two ends. events_minutely
// and health_minutely are the hourly rollups again per UTC minute, with
// the same states (uniqCombined(15), see above), so that the states of
// minutes and hours merge in one query. Only the part-hours at a range's
// ends read them; whole hours still read the hourly rollups, which are 60
// times fewer states to merge.
//
// A day of minutes is about 10,000 rows of states of up to 20 KiB: with
// the default index granularity of 8,192 rows, reading the 40 minutes at
// a range's end read (and merged) the states of most of the day, 0.2 s.
// Granules of 64 rows read about as many states as the range holds.
//
// A minute's state is small while it holds under about 2,000 ids and
// about 20 KiB beyond, so at the city's rate the minutely rollups take a
// few GB a month: they follow the retention of the rows they count
// (Retention.Events and Retention.Health), not that of the hourly
// rollups.
//
// The backfill reads the base tables an hour of each daily partition at
// a time (backfillMinutes): a month of minutes in one GROUP BY would hold
// hundreds of thousands of states in memory, and a day of rows may
// outlast the connection's read timeout.
var minuteRollupStmts = []string{
	`CREATE TABLE IF NOT EXISTS {db}.events_minutely (
		minute DateTime('UTC'),
		type   String,
		ids    AggregateFunction(uniqCombined(15), String)
	) ENGINE = AggregatingMergeTree()
	PARTITION BY toYYYYMMDD(minute)
	ORDER BY (minute, type)
	SETTINGS index_granularity = 64`,

	`CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_minutely_mv TO {db}.events_minutely AS
	SELECT toStartOfMinute(time) AS minute, type, uniqCombinedState(15)(id) AS ids
	FROM {db}.events
	GROUP BY minute, type`,

	`CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.fuel_minutely_mv TO {db}.events_minutely AS
	SELECT toStartOfMinute(time) AS minute, 'fuel.purchase' AS type, uniqCombinedState(15)(id) AS ids
	FROM {db}.fuel_purchases
	GROUP BY minute, type`,

	`CREATE TABLE IF NOT EXISTS {db}.health_minutely (
		minute  DateTime('UTC'),
		type    String,
		status  String,
		ids     AggregateFunction(uniqCombined(15), String),
		devices AggregateFunction(uniqCombined(15), String)
	) ENGINE = AggregatingMergeTree()
	PARTITION BY toYYYYMMDD(minute)
	ORDER BY (minute, type, status)
	SETTINGS index_granularity = 64`,

	`CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.health_minutely_mv TO {db}.health_minutely AS
	SELECT toStartOfMinute(time) AS minute, type, status, uniqCombinedState(15)(id) AS ids, uniqCombinedState(15)(device_id) AS devices
	FROM {db}.device_health
	GROUP BY minute, type, status`,
}

// minuteBackfills are the backfill of each minutely rollup from one base
// table, for the rows of [?, ?) in Unix seconds.
var minuteBackfills = []struct{ base, insert string }{
	{tableEvents, `INSERT INTO {db}.events_minutely (minute, type, ids)
	SELECT toStartOfMinute(time) AS minute, type, uniqCombinedState(15)(id) AS ids
	FROM {db}.events WHERE time >= toDateTime(?) AND time < toDateTime(?)
	GROUP BY minute, type`},
	{tableFuel, `INSERT INTO {db}.events_minutely (minute, type, ids)
	SELECT toStartOfMinute(time) AS minute, 'fuel.purchase' AS type, uniqCombinedState(15)(id) AS ids
	FROM {db}.fuel_purchases WHERE time >= toDateTime(?) AND time < toDateTime(?)
	GROUP BY minute, type`},
	{tableHealth, `INSERT INTO {db}.health_minutely (minute, type, status, ids, devices)
	SELECT toStartOfMinute(time) AS minute, type, status, uniqCombinedState(15)(id) AS ids, uniqCombinedState(15)(device_id) AS devices
	FROM {db}.device_health WHERE time >= toDateTime(?) AND time < toDateTime(?)
	GROUP BY minute, type, status`},
}

// backfillMinutes fills the minutely rollups from the rows stored before
// their views existed, one hour of each daily partition of a base table
// at a time. Like
// the hourly backfill it may run twice or beside the sink: the states are
// sets.
func backfillMinutes(ctx context.Context, db *DB) error {
	for _, bf := range minuteBackfills {
		rows, err := db.conn.Query(ctx,
			"SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active ORDER BY partition",
			db.cfg.Database, bf.base)
		if err != nil {
			return fmt.Errorf("cannot list partitions of %s: %w", bf.base, err)
		}
		var days []int
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				rows.Close()
				return fmt.Errorf("cannot list partitions of %s: %w", bf.base, err)
			}
			if d, ok := partitionDay(p); ok {
				days = append(days, d)
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("cannot list partitions of %s: %w", bf.base, err)
		}
		for _, d := range days {
			// An hour at a time: a day of the city's events is about 200
			// million rows, which one INSERT ... SELECT may not read within
			// the connection's read timeout.
			day := time.Date(d/10000, time.Month(d/100%100), d%100, 0, 0, 0, 0, time.UTC).Unix()
			for from := day; from < day+86400; from += 3600 {
				if err := db.conn.Exec(ctx, db.expand(bf.insert), from, from+3600); err != nil {
					return fmt.Errorf("cannot backfill the minutes of %s from %s: %w", bf.base, time.Unix(from, 0).UTC().Format(time.DateTime), err)
				}
			}
		}
	}
	return nil
}

// migrationsTable is created before any migration runs, so it is not a
// migration itself. It is a ReplacingMergeTree on the version so that two
// processes recording the same migration leave one row.
const migrationsTable = `CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
	version    UInt32,
	name       String,
	applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version`
