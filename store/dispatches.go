package store

import (
	"context"
	"fmt"
	"math"
	"time"

	"citywatch/event"
)

// DispatchRows holds dispatch messages (every state change is a row of the
// dispatches table) until they are inserted; not safe for concurrent use.
type DispatchRows struct {
	n           int
	id          []string
	alertID     []string
	unitID      []string
	status      []string
	time        []int64
	timeMs      []uint16
	etaS        []float64
	distanceM   []float64
	circleID    []string
	tierMinutes []uint8
	ingestedAt  []int64
}

// AddDispatch decodes one dispatch message (its JSON value on
// citywatch.dispatches) and adds it as a row; ingestedAt is when the sink
// stored it. A message event.DecodeDispatch rejects adds nothing.
func (r *DispatchRows) AddDispatch(data []byte, ingestedAt time.Time) error {
	d, err := event.DecodeDispatch(data)
	if err != nil {
		return err
	}
	t, tMs := splitTime(d.Time)
	ing, _ := splitTime(ingestedAt)
	r.id = append(r.id, d.ID)
	r.alertID = append(r.alertID, d.AlertID)
	r.unitID = append(r.unitID, d.UnitID)
	r.status = append(r.status, string(d.Status))
	r.time = append(r.time, t)
	r.timeMs = append(r.timeMs, tMs)
	r.etaS = append(r.etaS, finite(d.ETASeconds))
	r.distanceM = append(r.distanceM, finite(d.DistanceM))
	r.circleID = append(r.circleID, d.CircleID)
	r.tierMinutes = append(r.tierMinutes, uint8(clamp(int64(d.TierMinutes), math.MaxUint8)))
	r.ingestedAt = append(r.ingestedAt, ing)
	r.n++
	return nil
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// Len returns the number of rows.
func (r *DispatchRows) Len() int { return r.n }

// Reset empties the rows, keeping their capacity.
func (r *DispatchRows) Reset() { resetColumns(r); r.n = 0 }

func (r *DispatchRows) name() string { return tableDispatches }
func (r *DispatchRows) len() int     { return r.n }
func (r *DispatchRows) reset()       { r.Reset() }

func (r *DispatchRows) columns() []column {
	return []column{
		{"id", &r.id}, {"alert_id", &r.alertID}, {"unit_id", &r.unitID}, {"status", &r.status},
		{"time", &r.time}, {"time_ms", &r.timeMs}, {"eta_s", &r.etaS}, {"distance_m", &r.distanceM},
		{"circle_id", &r.circleID}, {"tier_minutes", &r.tierMinutes}, {"ingested_at", &r.ingestedAt},
	}
}

// InsertDispatches inserts the rows as one INSERT into the dispatches
// table and leaves them as they were. Inserting the same rows again is
// safe: a message is one row of the table's sorting key (alert_id, id,
// time, time_ms, status), so copies collapse.
func (db *DB) InsertDispatches(ctx context.Context, r *DispatchRows) error {
	return db.insertRows(ctx, r)
}

// CountDispatchMessages returns the number of dispatch messages by
// status, each replayed copy counted once.
func (db *DB) CountDispatchMessages(ctx context.Context) (map[string]uint64, error) {
	counts := make(map[string]uint64)
	query := "SELECT status, count() FROM " + db.table(tableDispatches) + " FINAL GROUP BY status"
	if err := db.scanCounts(ctx, query, func(k string, n uint64) { counts[k] += n }); err != nil {
		return nil, fmt.Errorf("cannot count dispatch messages: %w", err)
	}
	return counts, nil
}

// ResponseGroup is what response statistics are grouped by.
type ResponseGroup string

// The groupings of ResponseStats.
const (
	ByTier     ResponseGroup = "tier"
	ByCircle   ResponseGroup = "circle"
	ByDistrict ResponseGroup = "district"
)

// ResponseStat is the response of the dispatched alerts of one group.
// Times are seconds from the sensor's event time (the alert's event_time)
// to the first unit assigned, accepting and on scene; a quantile over no
// alert is 0.
type ResponseStat struct {
	// Key is the tier ("1", "3", "5"), circle id ("" outside every
	// circle) or district name of the group.
	Key string
	// Alerts is the number of alerts with at least one dispatch message;
	// Reached of those with a unit on scene; WithinTier of those reached
	// within their tier; Escalated and Breached are counted likewise.
	Alerts, Reached, WithinTier, Escalated, Breached uint64
	// Within1Min, Within3Min and Within5Min are the number of alerts
	// reached within 1, 3 and 5 minutes, whatever their tier.
	Within1Min, Within3Min, Within5Min uint64
	AssignP50, AssignP90               float64
	AcceptP50, AcceptP90               float64
	OnSceneP50, OnSceneP90             float64
}

// WithinTierShare returns WithinTier/Alerts, 0 without alerts: the share
// of dispatched alerts that a unit reached within their tier.
func (s ResponseStat) WithinTierShare() float64 {
	if s.Alerts == 0 {
		return 0
	}
	return float64(s.WithinTier) / float64(s.Alerts)
}

// ResponseStats returns the response times of the alerts first dispatched
// in [from, to), grouped by tier, circle or district, ordered by key. It
// joins each alert's dispatch messages to its firing message for the
// sensor time and district; alerts whose firing message is not stored are
// left out. ResponseTimes, the analysts' table, is a part of it.
func (db *DB) ResponseStats(ctx context.Context, by ResponseGroup, from, to time.Time) ([]ResponseStat, error) {
	return db.responseStats(ctx, by, from, to, nil)
}

// responseSlack bounds how long before the first dispatch message of an
// alert its firing message was raised, and how long after it the last
// one came: the query reads the days of its range widened by as much.
const responseSlack = 24 * time.Hour

// responseStats is ResponseStats restricted to alerts in districts (all,
// when empty).
func (db *DB) responseStats(ctx context.Context, by ResponseGroup, from, to time.Time, districts []string) ([]ResponseStat, error) {
	var key string
	switch by {
	case ByTier:
		key = "toString(tier_minutes)"
	case ByCircle:
		key = "circle_id"
	case ByDistrict:
		key = "district"
	default:
		return nil, fmt.Errorf("cannot compute response stats: unknown grouping %q: %w", by, ErrTrend)
	}
	alertsWhere := "status = 'firing' AND raised_at >= toDateTime(?) AND raised_at < toDateTime(?)"
	var dargs []any
	if len(districts) > 0 {
		cond, a := inList("district", districts)
		alertsWhere += " AND " + cond
		dargs = a
	}
	const ms = "(toUInt64(time) * 1000 + time_ms)"
	// Differences are signed: a unit's clock may be behind the sensor's.
	const since = "(toInt64(%s) - toInt64(event_ms)) / 1000"
	onScene := fmt.Sprintf(since, "on_scene_ms")
	within := func(min int) string {
		return fmt.Sprintf("countIf(on_scene_ms > 0 AND %s <= %d)", onScene, min*60)
	}
	q := `SELECT ` + key + ` AS k, count() AS alerts,
		countIf(on_scene_ms > 0) AS reached,
		countIf(on_scene_ms > 0 AND ` + onScene + ` <= tier_minutes * 60) AS within,
		countIf(escalated > 0) AS esc, countIf(breached > 0) AS br,
		` + within(1) + `, ` + within(3) + `, ` + within(5) + `,
		quantileIf(0.5)(` + fmt.Sprintf(since, "assigned_ms") + `, assigned_ms > 0) AS a50,
		quantileIf(0.9)(` + fmt.Sprintf(since, "assigned_ms") + `, assigned_ms > 0) AS a90,
		quantileIf(0.5)(` + fmt.Sprintf(since, "accepted_ms") + `, accepted_ms > 0) AS c50,
		quantileIf(0.9)(` + fmt.Sprintf(since, "accepted_ms") + `, accepted_ms > 0) AS c90,
		quantileIf(0.5)(` + onScene + `, on_scene_ms > 0) AS o50,
		quantileIf(0.9)(` + onScene + `, on_scene_ms > 0) AS o90
	FROM (
		SELECT alert_id, any(tier_minutes) AS tier_minutes, any(circle_id) AS circle_id,
			minIf(` + ms + `, status = 'assigned') AS assigned_ms,
			minIf(` + ms + `, status IN ('accepted', 'en_route', 'on_scene')) AS accepted_ms,
			minIf(` + ms + `, status = 'on_scene') AS on_scene_ms,
			countIf(status = 'escalated') AS escalated,
			countIf(status = 'breached') AS breached,
			min(` + ms + `) AS first_ms
		FROM ` + db.table(tableDispatches) + ` FINAL
		WHERE time >= toDateTime(?) AND time < toDateTime(?)
		GROUP BY alert_id
		HAVING first_ms >= ? AND first_ms < ?
	) ANY INNER JOIN (
		SELECT id AS alert_id, min(toUInt64(event_time) * 1000 + event_time_ms) AS event_ms, any(district) AS district
		FROM ` + db.table(tableAlerts) + ` FINAL
		WHERE ` + alertsWhere + `
		GROUP BY alert_id
	) USING alert_id
	GROUP BY k
	ORDER BY k`
	// ANY INNER JOIN ... USING: the join form that 18.16 and current
	// releases both read the same way; each side has one row per alert.
	lo, hi := clampUnix(from.Add(-responseSlack)), clampUnix(to.Add(responseSlack))
	args := append([]any{lo, hi, uint64(max(from.UnixMilli(), 0)), uint64(max(to.UnixMilli(), 0)), lo, hi}, dargs...)
	rows, err := db.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("cannot compute response stats: %w", err)
	}
	defer rows.Close()
	var out []ResponseStat
	for rows.Next() {
		var s ResponseStat
		if err := rows.Scan(&s.Key, &s.Alerts, &s.Reached, &s.WithinTier, &s.Escalated, &s.Breached,
			&s.Within1Min, &s.Within3Min, &s.Within5Min,
			&s.AssignP50, &s.AssignP90, &s.AcceptP50, &s.AcceptP90, &s.OnSceneP50, &s.OnSceneP90); err != nil {
			return nil, fmt.Errorf("cannot compute response stats: %w", err)
		}
		if s.Alerts == 0 {
			continue // 18.16 answers an empty GROUP BY with a zero row
		}
		for _, p := range []*float64{&s.AssignP50, &s.AssignP90, &s.AcceptP50, &s.AcceptP90, &s.OnSceneP50, &s.OnSceneP90} {
			if math.IsNaN(*p) {
				*p = 0
			}
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot compute response stats: %w", err)
	}
	return out, nil
}
