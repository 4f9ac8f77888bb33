package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"citywatch/event"
)

// The queries of this file read with FINAL, which merges the copies of a
// replayed event (rows with equal sorting keys) at read time, before any
// background merge has done so; it works on 18.16 and current releases.
// uniqExact(id) would count distinct ids too, but only for counts: FINAL
// gives every query the same deduplicated rows, the ones a later merge
// keeps.

// HourCount is the number of events of one type whose time falls in one
// hour.
type HourCount struct {
	// Hour is the start of the hour, in the location the counts were
	// asked for.
	Hour  time.Time
	Type  event.Type
	Count uint64
}

// ErrLocation is returned by EventsPerHour for a location without an IANA
// name (time.Local, or a zone made with time.FixedZone), which the server
// cannot resolve.
var ErrLocation = errors.New("location has no IANA time zone name")

// eventTables lists the tables of events with the SQL expression of their
// type.
var eventTables = []struct {
	table   string
	typeSQL string
}{
	{tableEvents, "type"},
	{tableFuel, "'" + event.TypeFuelPurchase.String() + "'"},
	{tableHealth, "type"},
}

// CountEvents returns the number of stored events by type, over every
// table of events, each replayed event counted once.
func (db *DB) CountEvents(ctx context.Context) (map[event.Type]uint64, error) {
	counts := make(map[event.Type]uint64)
	for _, t := range eventTables {
		query := "SELECT " + t.typeSQL + " AS t, count() FROM " + db.table(t.table) + " FINAL GROUP BY t"
		err := db.scanCounts(ctx, query, func(k string, n uint64) {
			counts[event.ParseType(k)] += n
		})
		if err != nil {
			return nil, fmt.Errorf("cannot count events in %s: %w", t.table, err)
		}
	}
	return counts, nil
}

// CountEventsLike returns the number of events of the wide events table
// (detections, passes, drone and patrol events) whose id matches the LIKE
// pattern, each id counted once: for checks of where events came from
// (the gateways' ids start with rtp- and viid-).
func (db *DB) CountEventsLike(ctx context.Context, pattern string) (uint64, error) {
	rows, err := db.conn.Query(ctx, "SELECT count() FROM "+db.table(tableEvents)+" FINAL WHERE id LIKE ?", pattern)
	if err != nil {
		return 0, fmt.Errorf("cannot count events like %q: %w", pattern, err)
	}
	defer rows.Close()
	var n uint64
	for rows.Next() {
		if err := rows.Scan(&n); err != nil {
			return 0, fmt.Errorf("cannot count events like %q: %w", pattern, err)
		}
	}
	return n, rows.Err()
}

// CountRejected returns the number of rejected input records by reason,
// each Kafka position (topic, partition, offset) counted once.
func (db *DB) CountRejected(ctx context.Context) (map[event.Code]uint64, error) {
	counts := make(map[event.Code]uint64)
	query := "SELECT code, count() FROM " + db.table(tableRejected) + " FINAL GROUP BY code"
	err := db.scanCounts(ctx, query, func(k string, n uint64) {
		counts[event.Code(k)] += n
	})
	if err != nil {
		return nil, fmt.Errorf("cannot count rejected input: %w", err)
	}
	return counts, nil
}

// EventIDs returns, for every stored event id, the number of rows with that
// id that the queries of this package see. Each should be 1; more means
// that copies of one event failed to collapse. It reads every id and is
// meant for tests and checks, not for production-sized tables.
func (db *DB) EventIDs(ctx context.Context) (map[string]int, error) {
	ids := make(map[string]int)
	for _, t := range eventTables {
		query := "SELECT id, count() FROM " + db.table(t.table) + " FINAL GROUP BY id"
		err := db.scanCounts(ctx, query, func(k string, n uint64) {
			ids[k] += int(n)
		})
		if err != nil {
			return nil, fmt.Errorf("cannot read event ids in %s: %w", t.table, err)
		}
	}
	return ids, nil
}

// EventsPerHour returns the number of events of each type per hour of loc
// (nil means UTC), for events whose time is in [from, to), to the second.
// The result is ordered by hour, then type; hours without events are left
// out.
func (db *DB) EventsPerHour(ctx context.Context, from, to time.Time, loc *time.Location) ([]HourCount, error) {
	if loc == nil {
		loc = time.UTC
	}
	tz, err := zoneName(loc, from, to)
	if err != nil {
		return nil, fmt.Errorf("cannot count events per hour: %w", err)
	}
	type key struct {
		hour int64
		typ  event.Type
	}
	sums := make(map[key]uint64)
	for _, t := range eventTables {
		query := "SELECT toUInt32(toStartOfHour(time, '" + tz + "')) AS h, " + t.typeSQL + " AS t, count()" +
			" FROM " + db.table(t.table) + " FINAL" +
			" WHERE time >= toDateTime(?) AND time < toDateTime(?)" +
			" GROUP BY h, t"
		rows, err := db.conn.Query(ctx, query, clampUnix(from), clampUnix(to))
		if err != nil {
			return nil, fmt.Errorf("cannot count events per hour in %s: %w", t.table, err)
		}
		for rows.Next() {
			var (
				h  uint32
				ts string
				n  uint64
			)
			if err := rows.Scan(&h, &ts, &n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("cannot count events per hour in %s: %w", t.table, err)
			}
			sums[key{int64(h), event.ParseType(ts)}] += n
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("cannot count events per hour in %s: %w", t.table, err)
		}
	}
	out := make([]HourCount, 0, len(sums))
	for k, n := range sums {
		out = append(out, HourCount{Hour: time.Unix(k.hour, 0).In(loc), Type: k.typ, Count: n})
	}
	slices.SortFunc(out, func(a, b HourCount) int {
		return cmp.Or(a.Hour.Compare(b.Hour), cmp.Compare(a.Type, b.Type))
	})
	return out, nil
}

// scanCounts runs a query of (String, UInt64) rows and calls add for each
// row with a count above zero. (18.16 answers a GROUP BY on a constant over
// an empty table with one row counting 0; current releases with none.)
func (db *DB) scanCounts(ctx context.Context, query string, add func(string, uint64)) error {
	rows, err := db.conn.Query(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			k string
			n uint64
		)
		if err := rows.Scan(&k, &n); err != nil {
			return err
		}
		if n > 0 {
			add(k, n)
		}
	}
	return rows.Err()
}

// clampUnix returns t in Unix seconds within the range of DateTime.
func clampUnix(t time.Time) int64 {
	sec, _ := splitTime(t)
	return sec
}

// zoneName returns the IANA name of loc, which the server resolves in its
// own time zone database. A location whose name is not an IANA zone with
// the same offsets over [from, to] (time.Local, time.FixedZone("CST", ...))
// gives ErrLocation rather than counts by some other zone that happens to
// have that name.
func zoneName(loc *time.Location, from, to time.Time) (string, error) {
	name := loc.String()
	if name == "UTC" {
		return name, nil
	}
	if name == "" || name == "Local" || !validZoneName(name) {
		return "", fmt.Errorf("%q: %w", name, ErrLocation)
	}
	named, err := time.LoadLocation(name)
	if err != nil {
		return "", fmt.Errorf("%q: %w", name, ErrLocation)
	}
	for _, t := range []time.Time{from, to} {
		_, a := t.In(loc).Zone()
		_, b := t.In(named).Zone()
		if a != b {
			return "", fmt.Errorf("%q: %w", name, ErrLocation)
		}
	}
	return name, nil
}

// validZoneName reports whether s looks like an IANA zone name
// ("Asia/Shanghai", "UTC", "Etc/GMT-8"), so that it is safe inside a quoted
// SQL string.
func validZoneName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '/', c == '_', c == '-', c == '+':
		default:
			return false
		}
	}
	return true
}
