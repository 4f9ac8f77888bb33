package store

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// ApplyRetention drops the daily partitions that are past their table's
// retention at now and returns them as "table/partition"
// ("fuel_purchases/20261118"), in the order they were dropped. A partition
// is dropped only when all of its day is older than the retention: with 7
// days at 2026-11-26 12:00 UTC, the day 2026-11-18 goes and 2026-11-19
// stays, since its last hours are younger than 7 days. Tables without
// daily partitions (schema_migrations) and partitions whose id is not a day
// are left alone.
//
// It is meant to run from a scheduling loop, about once an hour; on error
// it returns what it dropped so far.
func (db *DB) ApplyRetention(ctx context.Context, now time.Time) ([]string, error) {
	days := make(map[string]int)
	for _, tr := range db.cfg.Retention.tables() {
		days[tr.table] = tr.days
	}
	rows, err := db.conn.Query(ctx,
		"SELECT DISTINCT table, partition FROM system.parts WHERE database = ? AND active ORDER BY table, partition",
		db.cfg.Database)
	if err != nil {
		return nil, fmt.Errorf("cannot list partitions: %w", err)
	}
	type part struct {
		table string
		day   int
	}
	var old []part
	for rows.Next() {
		var table, partition string
		if err := rows.Scan(&table, &partition); err != nil {
			rows.Close()
			return nil, fmt.Errorf("cannot list partitions: %w", err)
		}
		keep, ok := days[table]
		if !ok {
			continue
		}
		day, ok := partitionDay(partition)
		if !ok {
			continue
		}
		if expired(day, keep, now) {
			old = append(old, part{table, day})
		}
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return nil, fmt.Errorf("cannot list partitions: %w", err)
	}

	var dropped []string
	for _, p := range old {
		id := strconv.Itoa(p.day)
		// The partition key is the UInt32 toYYYYMMDD(...), so its value
		// is the literal number; "DROP PARTITION ID" is not in 18.16.
		if err := db.conn.Exec(ctx, "ALTER TABLE "+db.table(p.table)+" DROP PARTITION "+id); err != nil {
			return dropped, fmt.Errorf("cannot drop partition %s of %s: %w", id, p.table, err)
		}
		dropped = append(dropped, p.table+"/"+id)
	}
	return dropped, nil
}

// partitionDay parses a partition id of the form YYYYMMDD.
func partitionDay(s string) (int, bool) {
	if len(s) != 8 {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, false
	}
	if _, err := time.Parse("20060102", s); err != nil {
		return 0, false
	}
	return n, true
}

// expired reports whether all of the UTC day yyyymmdd is more than keep days
// before now.
func expired(yyyymmdd, keep int, now time.Time) bool {
	day := time.Date(yyyymmdd/10000, time.Month(yyyymmdd/100%100), yyyymmdd%100, 0, 0, 0, 0, time.UTC)
	end := day.AddDate(0, 0, 1)
	return !end.After(now.AddDate(0, 0, -keep))
}
