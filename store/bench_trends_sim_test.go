package store_test

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/simulators"
	"citywatch/store"
)

// trendSimDay shortens the simulated day, to try -trend.sim quickly.
var trendSimDay = flag.Duration("trend.simday", 24*time.Hour, "simulated time of -trend.sim's day (shorter only to try it)")

// simulateDay runs the simulators over the first day of the benchmark's
// range, the whole city at its normal rates and as fast as they go, and
// stores what ingest would make of their messages (decoded, buyers
// pseudonymised) through the sink's Insert in its batches of 10,000 rows.
// It returns the number of events stored.
func simulateDay(ctx context.Context, db *store.DB) (uint64, error) {
	c, err := city.Default()
	if err != nil {
		return 0, err
	}
	sim, err := simulators.New(c, simulators.Config{Seed: 1, Scale: 1, Rate: 1, Start: trendStart, Duration: 24 * time.Hour}, nil)
	if err != nil {
		return 0, err
	}
	pseud, err := event.NewPseudonymizer([]byte("citywatch bench trends pseudonym key"))
	if err != nil {
		return 0, err
	}
	var now time.Time
	dec := event.Decoder{Now: func() time.Time { return now }}

	// One goroutine simulates and decodes, the other inserts.
	full := make(chan *store.Batch, 1)
	free := make(chan *store.Batch, 2)
	free <- store.NewBatch()
	free <- store.NewBatch()
	inserted := make(chan error, 1)
	go func() {
		var err error
		for b := range full {
			if err == nil {
				err = db.Insert(ctx, b)
			}
			b.Reset()
			free <- b
		}
		inserted <- err
	}()

	var (
		n, rejected uint64
		e           event.Event
	)
	cur := <-free
	emit := func(m *simulators.Message) {
		if m.Want != simulators.WantEvent {
			return
		}
		if err := dec.Decode(m.Value, &e); err != nil {
			rejected++
			return
		}
		pseud.Apply(&e)
		cur.AddEvent(&e, e.Time.Add(2*time.Second))
		n++
		if cur.Len() >= 10_000 {
			full <- cur
			cur = <-free
		}
	}
	end := trendStart.Add(*trendSimDay)
	for t := trendStart; t.Before(end); {
		t = t.Add(time.Second)
		now = t
		sim.Step(t.Add(-time.Nanosecond), emit) // the day's events, none of the next
	}
	full <- cur
	close(full)
	if err := <-inserted; err != nil {
		return n, err
	}
	if rejected > 0 {
		return n, fmt.Errorf("%d of the simulators' messages did not decode", rejected)
	}
	return n, nil
}

// repeatDay returns the statements that make the simulated first day
// thirty: its rows copied as the last day, an hour at a time, and its
// hourly rollups copied for each day between, as the materialized views
// would have written them from the same rows a day later each.
//
// They may run again after a failure half-way: they begin by dropping
// the daily partitions of rows (and minutely rollups) after the first
// day's, and a rollup state copied twice is the same set.
func repeatDay(ctx context.Context, db *store.DB) ([]string, error) {
	const day = 86400
	from := trendStart.Unix()
	var stmts []string
	lastOfDay1 := trendStart.Add(24*time.Hour - time.Second).UTC().Format("20060102")
	for _, table := range []string{"events", "fuel_purchases", "device_health", "events_minutely", "health_minutely"} {
		rows, err := db.Conn().Query(ctx, "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active", db.Database(), table)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				rows.Close()
				return nil, err
			}
			if p > lastOfDay1 {
				if err := db.Conn().Exec(ctx, fmt.Sprintf("ALTER TABLE `%s`.%s DROP PARTITION %s", db.Database(), table, p)); err != nil {
					rows.Close()
					return nil, err
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	shift := (trendDays - 1) * day
	for _, table := range []string{"events", "fuel_purchases", "device_health"} {
		// In table order: 18.16's system.columns has no position.
		rows, err := db.Conn().Query(ctx, "SELECT name FROM system.columns WHERE database = ? AND table = ?", db.Database(), table)
		if err != nil {
			return nil, err
		}
		var cols, sel []string
		for rows.Next() {
			var c string
			if err := rows.Scan(&c); err != nil {
				rows.Close()
				return nil, err
			}
			cols = append(cols, c)
			if c == "time" || c == "ingested_at" {
				c = fmt.Sprintf("%s + %d", c, shift) // no alias: WHERE reads the column
			}
			sel = append(sel, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		// An hour at a time: an INSERT ... SELECT of the whole day would
		// outlast the client's read timeout.
		for h := int64(0); h < 24; h++ {
			stmts = append(stmts, fmt.Sprintf("INSERT INTO {db}.%s (%s) SELECT %s FROM {db}.%s WHERE time >= toDateTime(%d) AND time < toDateTime(%d)",
				table, strings.Join(cols, ", "), strings.Join(sel, ", "), table, from+h*3600, from+(h+1)*3600))
		}
	}
	for k := 1; k < trendDays-1; k++ {
		stmts = append(stmts,
			fmt.Sprintf("INSERT INTO {db}.events_hourly (hour, type, ids) SELECT hour + %d, type, ids FROM {db}.events_hourly WHERE hour >= toDateTime(%d) AND hour < toDateTime(%d)",
				k*day, from, from+day),
			fmt.Sprintf("INSERT INTO {db}.health_hourly (hour, type, status, ids, devices) SELECT hour + %d, type, status, ids, devices FROM {db}.health_hourly WHERE hour >= toDateTime(%d) AND hour < toDateTime(%d)",
				k*day, from, from+day))
	}
	return stmts, nil
}
