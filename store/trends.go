package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"citywatch/event"
)

// The queries of this file serve the web role: alerts older than its live
// view, an alert's history, and the analysts' trends. They read the raw
// tables with FINAL (no materialized views: the tables are partitioned by
// day and ordered so that a day's alerts or dispatches are a short range),
// which keeps the schema as it is on 18.16 and current releases alike.
// Times are bucketed on the server in the time zone asked for, by its IANA
// name.

// AlertRow is one stored alert message. Details is the JSON object the
// alert carried.
type AlertRow struct {
	ID          string
	Rule        string
	Severity    string
	Status      string
	SubjectKind string
	SubjectID   string
	EventTime   time.Time
	RaisedAt    time.Time
	Lat, Lon    float64
	District    string
	CircleID    string
	TierMinutes int
	Evidence    []string
	Summary     string
	Details     string
}

// AlertFilter chooses alerts. Empty fields match everything; Districts,
// when not empty, restricts to those districts (an operator's area).
type AlertFilter struct {
	Since, Until time.Time
	Severity     string
	Rule         string
	District     string
	Circle       string
	Districts    []string
	Limit        int
}

func (f AlertFilter) where() (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, a ...any) { conds = append(conds, cond); args = append(args, a...) }
	if !f.Since.IsZero() {
		add("raised_at >= toDateTime(?)", clampUnix(f.Since))
	}
	if !f.Until.IsZero() {
		add("raised_at < toDateTime(?)", ceilUnix(f.Until))
	}
	if f.Severity != "" {
		add("severity = ?", f.Severity)
	}
	if f.Rule != "" {
		add("rule = ?", f.Rule)
	}
	if f.District != "" {
		add("district = ?", f.District)
	}
	if f.Circle != "" {
		add("circle_id = ?", f.Circle)
	}
	if len(f.Districts) > 0 {
		cond, a := inList("district", f.Districts)
		add(cond, a...)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// inList returns "col IN (?, …)" with its arguments.
func inList(col string, vals []string) (string, []any) {
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = v
	}
	return col + " IN (" + strings.TrimSuffix(strings.Repeat("?,", len(vals)), ",") + ")", args
}

const alertColumns = "id, rule, severity, status, subject_kind, subject_id, toUInt32(event_time), event_time_ms, " +
	"toUInt32(raised_at), raised_at_ms, lat, lon, district, circle_id, tier_minutes, evidence, summary, details"

// LatestAlerts returns the newest message of each alert that f chooses,
// newest first, at most f.Limit (default 200) alerts.
func (db *DB) LatestAlerts(ctx context.Context, f AlertFilter) ([]AlertRow, error) {
	where, args := f.where()
	limit := f.Limit
	if limit <= 0 {
		limit = 200
	}
	query := "SELECT " + alertColumns + " FROM " + db.table(tableAlerts) + " FINAL" + where +
		" ORDER BY raised_at DESC, raised_at_ms DESC LIMIT 1 BY id LIMIT " + fmt.Sprint(limit)
	out, err := db.queryAlerts(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("cannot read alerts: %w", err)
	}
	return out, nil
}

// AlertMessages returns every stored message of the alert id, oldest first.
func (db *DB) AlertMessages(ctx context.Context, id string) ([]AlertRow, error) {
	query := "SELECT " + alertColumns + " FROM " + db.table(tableAlerts) + " FINAL WHERE id = ? ORDER BY raised_at, raised_at_ms"
	out, err := db.queryAlerts(ctx, query, id)
	if err != nil {
		return nil, fmt.Errorf("cannot read alert %s: %w", id, err)
	}
	return out, nil
}

func (db *DB) queryAlerts(ctx context.Context, query string, args ...any) ([]AlertRow, error) {
	rows, err := db.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AlertRow
	for rows.Next() {
		var (
			a          AlertRow
			et, ra     uint32
			etMs, raMs uint16
			tier       uint8
		)
		if err := rows.Scan(&a.ID, &a.Rule, &a.Severity, &a.Status, &a.SubjectKind, &a.SubjectID, &et, &etMs,
			&ra, &raMs, &a.Lat, &a.Lon, &a.District, &a.CircleID, &tier, &a.Evidence, &a.Summary, &a.Details); err != nil {
			return nil, err
		}
		a.EventTime = joinTime(et, etMs)
		a.RaisedAt = joinTime(ra, raMs)
		a.TierMinutes = int(tier)
		out = append(out, a)
	}
	return out, rows.Err()
}

// AlertDispatches returns every stored state change of the dispatches of
// the alert id, oldest first.
func (db *DB) AlertDispatches(ctx context.Context, alertID string) ([]event.Dispatch, error) {
	query := "SELECT id, alert_id, unit_id, status, toUInt32(time), time_ms, eta_s, distance_m, circle_id, tier_minutes FROM " +
		db.table(tableDispatches) + " FINAL WHERE alert_id = ? ORDER BY time, time_ms"
	rows, err := db.conn.Query(ctx, query, alertID)
	if err != nil {
		return nil, fmt.Errorf("cannot read dispatches of %s: %w", alertID, err)
	}
	defer rows.Close()
	var out []event.Dispatch
	for rows.Next() {
		var (
			d      event.Dispatch
			status string
			sec    uint32
			ms     uint16
			tier   uint8
		)
		if err := rows.Scan(&d.ID, &d.AlertID, &d.UnitID, &status, &sec, &ms, &d.ETASeconds, &d.DistanceM, &d.CircleID, &tier); err != nil {
			return nil, fmt.Errorf("cannot read dispatches of %s: %w", alertID, err)
		}
		d.Status = event.DispatchStatus(status)
		d.Time = joinTime(sec, ms)
		d.TierMinutes = int(tier)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read dispatches of %s: %w", alertID, err)
	}
	return out, nil
}

func joinTime(sec uint32, ms uint16) time.Time {
	return time.Unix(int64(sec), int64(ms)*int64(time.Millisecond)).UTC()
}

// TrendQuery is the range and grouping of a trend.
type TrendQuery struct {
	From, To time.Time
	// Location is the zone buckets are cut in; it must have an IANA name
	// (Asia/Shanghai). Nil means UTC.
	Location *time.Location
	// Bucket is "hour" or "day" (default hour).
	Bucket string
	// By is what rows are keyed by; each query names the values it takes.
	By string
	// Districts, when not empty, restricts alerts and dispatches to these
	// districts.
	Districts []string
}

// ErrTrend is returned for a TrendQuery a query cannot answer (an unknown
// By or Bucket).
var ErrTrend = errors.New("unsupported trend")

func (q TrendQuery) bucketSQL(col string) (string, error) {
	loc := q.Location
	if loc == nil {
		loc = time.UTC
	}
	tz, err := zoneName(loc, q.From, q.To)
	if err != nil {
		return "", err
	}
	switch q.Bucket {
	case "", "hour":
		return "toUInt32(toStartOfHour(" + col + ", '" + tz + "'))", nil
	case "day":
		return "toUInt32(toStartOfDay(" + col + ", '" + tz + "'))", nil
	}
	return "", fmt.Errorf("bucket %q: %w", q.Bucket, ErrTrend)
}

// BucketCount is one count of a trend: a key (rule, district, type,
// status) in one bucket starting at Bucket.
type BucketCount struct {
	Bucket time.Time
	Key    string
	Count  uint64
}

// AlertsTrend counts the alerts raised (firing messages) per bucket of
// raised_at, keyed by q.By: "rule" (default), "district", "circle" or
// "severity".
func (db *DB) AlertsTrend(ctx context.Context, q TrendQuery) ([]BucketCount, error) {
	b, err := q.bucketSQL("raised_at")
	if err != nil {
		return nil, fmt.Errorf("cannot count alerts: %w", err)
	}
	var key string
	switch q.By {
	case "", "rule":
		key = "rule"
	case "district":
		key = "district"
	case "circle":
		key = "circle_id"
	case "severity":
		key = "severity"
	default:
		return nil, fmt.Errorf("cannot count alerts: by %q: %w", q.By, ErrTrend)
	}
	query := "SELECT " + b + " AS b, " + key + " AS k, count() FROM " + db.table(tableAlerts) + " FINAL" +
		" WHERE status = 'firing' AND raised_at >= toDateTime(?) AND raised_at < toDateTime(?)"
	args := []any{clampUnix(q.From), ceilUnix(q.To)}
	if len(q.Districts) > 0 {
		cond, a := inList("district", q.Districts)
		query += " AND " + cond
		args = append(args, a...)
	}
	query += " GROUP BY b, k ORDER BY b, k"
	out, err := db.bucketCounts(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("cannot count alerts: %w", err)
	}
	return out, nil
}

// EventsTrend counts stored events per bucket of event time, keyed by
// type (the source), over every table of events.
func (db *DB) EventsTrend(ctx context.Context, q TrendQuery) ([]BucketCount, error) {
	b, err := q.bucketSQL("time")
	if err != nil {
		return nil, fmt.Errorf("cannot count events: %w", err)
	}
	var out []BucketCount
	for _, t := range eventTables {
		query := "SELECT " + b + " AS b, " + t.typeSQL + " AS k, count() FROM " + db.table(t.table) + " FINAL" +
			" WHERE time >= toDateTime(?) AND time < toDateTime(?) GROUP BY b, k"
		rows, err := db.bucketCounts(ctx, query, clampUnix(q.From), ceilUnix(q.To))
		if err != nil {
			return nil, fmt.Errorf("cannot count events in %s: %w", t.table, err)
		}
		out = append(out, rows...)
	}
	sortCounts(out)
	return out, nil
}

// HealthTrend counts camera.health reports per bucket keyed by status, and
// the devices that sent a heartbeat, keyed "heartbeat_devices".
func (db *DB) HealthTrend(ctx context.Context, q TrendQuery) ([]BucketCount, error) {
	b, err := q.bucketSQL("time")
	if err != nil {
		return nil, fmt.Errorf("cannot count device health: %w", err)
	}
	query := "SELECT " + b + " AS b, if(type = 'device.heartbeat', 'heartbeat_devices', status) AS k," +
		" if(type = 'device.heartbeat', uniqExact(device_id), count()) FROM " + db.table(tableHealth) + " FINAL" +
		" WHERE time >= toDateTime(?) AND time < toDateTime(?) GROUP BY b, k, type"
	out, err := db.bucketCounts(ctx, query, clampUnix(q.From), ceilUnix(q.To))
	if err != nil {
		return nil, fmt.Errorf("cannot count device health: %w", err)
	}
	sortCounts(out)
	return out, nil
}

func (db *DB) bucketCounts(ctx context.Context, query string, args ...any) ([]BucketCount, error) {
	rows, err := db.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BucketCount
	for rows.Next() {
		var (
			b uint32
			c BucketCount
		)
		if err := rows.Scan(&b, &c.Key, &c.Count); err != nil {
			return nil, err
		}
		if c.Count == 0 {
			continue // 18.16 answers an empty GROUP BY with a zero row
		}
		c.Bucket = time.Unix(int64(b), 0).UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}

func sortCounts(out []BucketCount) {
	slices.SortFunc(out, func(a, b BucketCount) int {
		return cmp.Or(a.Bucket.Compare(b.Bucket), cmp.Compare(a.Key, b.Key))
	})
}

// ResponseTime is the response from sensor to scene of one group of
// alerts: from the event time of an alert's first message to the first
// on_scene of any of its dispatches.
type ResponseTime struct {
	Key string
	// N is the number of alerts with a unit on scene.
	N uint64
	// P50 and P90 are quantiles of the response time in seconds.
	P50, P90 float64
	// Within1, Within3 and Within5 are the shares (0–1) of those alerts
	// reached within 1, 3 and 5 minutes.
	Within1, Within3, Within5 float64
}

// ResponseTimes reports response times of alerts raised in [q.From,
// q.To), keyed by q.By: "tier" (default: the tier minutes of the alert's
// circle, "1", "3", "5"), "circle" or "district".
func (db *DB) ResponseTimes(ctx context.Context, q TrendQuery) ([]ResponseTime, error) {
	var key string
	switch q.By {
	case "", "tier":
		key = "toString(tier)"
	case "circle":
		key = "circle"
	case "district":
		key = "district"
	default:
		return nil, fmt.Errorf("cannot report response times: by %q: %w", q.By, ErrTrend)
	}
	// ANY INNER JOIN ... USING: the join form that 18.16 and current
	// releases both read the same way; each side has one row per alert.
	alertsWhere := "raised_at >= toDateTime(?) AND raised_at < toDateTime(?)"
	args := []any{clampUnix(q.From.Add(-24 * time.Hour)), clampUnix(q.To.Add(24 * time.Hour)), clampUnix(q.From), ceilUnix(q.To)}
	if len(q.Districts) > 0 {
		cond, a := inList("district", q.Districts)
		alertsWhere += " AND " + cond
		args = append(args, a...)
	}
	query := "SELECT " + key + " AS k, count() AS n, quantile(0.5)(rt), quantile(0.9)(rt)," +
		" countIf(rt <= 60) / n, countIf(rt <= 180) / n, countIf(rt <= 300) / n FROM (" +
		" SELECT alert_id, tier, circle, district, (toInt64(on_scene_ms) - toInt64(first_ms)) / 1000 AS rt FROM (" +
		"  SELECT alert_id, min(toUInt64(time) * 1000 + time_ms) AS on_scene_ms, any(tier_minutes) AS tier, any(circle_id) AS circle" +
		"  FROM " + db.table(tableDispatches) + " FINAL WHERE status = 'on_scene' AND time >= toDateTime(?) AND time < toDateTime(?)" +
		"  GROUP BY alert_id" +
		" ) ANY INNER JOIN (" +
		"  SELECT id AS alert_id, min(toUInt64(event_time) * 1000 + event_time_ms) AS first_ms, any(district) AS district" +
		"  FROM " + db.table(tableAlerts) + " FINAL WHERE " + alertsWhere +
		"  GROUP BY alert_id" +
		" ) USING alert_id" +
		") WHERE rt >= 0 GROUP BY k ORDER BY k"
	rows, err := db.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("cannot report response times: %w", err)
	}
	defer rows.Close()
	var out []ResponseTime
	for rows.Next() {
		var r ResponseTime
		if err := rows.Scan(&r.Key, &r.N, &r.P50, &r.P90, &r.Within1, &r.Within3, &r.Within5); err != nil {
			return nil, fmt.Errorf("cannot report response times: %w", err)
		}
		if r.N > 0 {
			out = append(out, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot report response times: %w", err)
	}
	return out, nil
}

// Audit actions and the outcomes of a close that OutcomeRates reads. The
// web role writes them: a close's details hold "rule" and "outcome".
const (
	AuditClose           = "alert.close"
	OutcomeConfirmed     = "confirmed"
	OutcomeFalseAlarm    = "false_alarm"
	OutcomeDuplicate     = "duplicate"
	auditDetailsRuleKey  = "rule"
	auditDetailsOutcome  = "outcome"
	auditDetailsDistrict = "district"
)

// OutcomeRate is how operators closed one rule's alerts.
type OutcomeRate struct {
	Rule                              string
	Closed                            uint64
	Confirmed, FalseAlarm, Duplicates uint64
	// FalseAlarmRate is FalseAlarm / Closed.
	FalseAlarmRate float64
}

// OutcomeRates reports, per rule, the outcomes operators gave when they
// closed alerts in [q.From, q.To) (the audit log's alert.close entries;
// an alert closed twice counts twice).
func (db *DB) OutcomeRates(ctx context.Context, q TrendQuery) ([]OutcomeRate, error) {
	where := "action = ? AND time >= toDateTime(?) AND time < toDateTime(?)"
	args := []any{AuditClose, clampUnix(q.From), ceilUnix(q.To)}
	if len(q.Districts) > 0 {
		cond, a := inList("visitParamExtractString(details, '"+auditDetailsDistrict+"')", q.Districts)
		where += " AND " + cond
		args = append(args, a...)
	}
	query := "SELECT r, count() AS n, countIf(o = '" + OutcomeConfirmed + "'), countIf(o = '" + OutcomeFalseAlarm + "'), countIf(o = '" + OutcomeDuplicate + "') FROM (" +
		" SELECT visitParamExtractString(details, '" + auditDetailsRuleKey + "') AS r, visitParamExtractString(details, '" + auditDetailsOutcome + "') AS o" +
		" FROM " + db.table(tableAudit) + " FINAL WHERE " + where + ") GROUP BY r ORDER BY r"
	rows, err := db.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("cannot report outcome rates: %w", err)
	}
	defer rows.Close()
	var out []OutcomeRate
	for rows.Next() {
		var r OutcomeRate
		if err := rows.Scan(&r.Rule, &r.Closed, &r.Confirmed, &r.FalseAlarm, &r.Duplicates); err != nil {
			return nil, fmt.Errorf("cannot report outcome rates: %w", err)
		}
		if r.Closed == 0 {
			continue
		}
		r.FalseAlarmRate = float64(r.FalseAlarm) / float64(r.Closed)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot report outcome rates: %w", err)
	}
	return out, nil
}

// ceilUnix returns t in Unix seconds rounded up, for an exclusive upper
// bound compared with a column of whole seconds: a row stored within the
// second of t is before t's second rounded up.
func ceilUnix(t time.Time) int64 {
	if t.Truncate(time.Second).Equal(t) {
		return clampUnix(t)
	}
	return clampUnix(t.Truncate(time.Second).Add(time.Second))
}
