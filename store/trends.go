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
// view, an alert's history, and the analysts' trends. An alert's history,
// response times and outcomes read the raw tables with FINAL (the tables
// are partitioned by day and ordered so that one alert, or a day's
// dispatches, is a short range). The counting trends (AlertsTrend,
// EventsTrend, HealthTrend) read the hourly rollups of schema.go for the
// whole UTC hours of their range and the base tables only for the parts
// of an hour at its ends, and merge the two as sets of ids, so a month
// costs some thousand rollup rows rather than millions of events. Times
// are bucketed on the server in the time zone asked for, by its IANA name;
// in a zone whose offset is not a whole number of hours (Asia/Kolkata) a
// bucket is no union of UTC hours, and those queries read the base tables
// for all of the range.

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
	// From and To are the range [From, To). Whole hours are read from the
	// hourly rollups and whole minutes at the ends from the minutely ones;
	// only a part-minute at either end is read from the base tables, which
	// costs a whole hour of rows (they are ordered by the hour), so callers
	// that answer people take their ranges to the minute.
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

// bucketer cuts time into the buckets of a TrendQuery, on the server.
type bucketer struct {
	fn string // toStartOfHour or toStartOfDay
	tz string // IANA name
	// unit is the largest of an hour and a minute of which every bucket
	// is a union of whole UTC units over the range: 3600 when the zone's
	// offset is a whole number of hours throughout it, 60 when it is a
	// whole number of minutes (Asia/Kolkata), 0 when neither.
	unit int64
}

// sql returns the start of col's bucket, in Unix seconds.
func (b bucketer) sql(col string) string {
	return "toUInt32(" + b.fn + "(" + col + ", '" + b.tz + "'))"
}

func (q TrendQuery) bucketer() (bucketer, error) {
	loc := q.Location
	if loc == nil {
		loc = time.UTC
	}
	tz, err := zoneName(loc, q.From, q.To)
	if err != nil {
		return bucketer{}, err
	}
	b := bucketer{tz: tz}
	switch {
	case wholeUnits(loc, q.From, q.To, 3600):
		b.unit = 3600
	case wholeUnits(loc, q.From, q.To, 60):
		b.unit = 60
	}
	switch q.Bucket {
	case "", "hour":
		b.fn = "toStartOfHour"
	case "day":
		b.fn = "toStartOfDay"
	default:
		return bucketer{}, fmt.Errorf("bucket %q: %w", q.Bucket, ErrTrend)
	}
	return b, nil
}

// wholeUnits reports whether loc's offset from UTC is a whole number of
// units (seconds) at every instant of [from, to] (Asia/Kolkata's is a
// whole number of minutes, not of hours).
func wholeUnits(loc *time.Location, from, to time.Time, unit int) bool {
	for t := from; ; {
		_, off := t.In(loc).Zone()
		if off%unit != 0 {
			return false
		}
		_, end := t.In(loc).ZoneBounds()
		if end.IsZero() || end.After(to) {
			return true
		}
		t = end
	}
}

// secRange is the range [from, to) of Unix seconds.
type secRange struct{ from, to int64 }

// align splits r into the whole units it holds and the parts before and
// after them; when it holds no whole unit, all of r is head.
func (r secRange) align(unit int64) (head, whole, tail secRange) {
	first, last := (r.from+unit-1)/unit*unit, r.to/unit*unit
	if first >= last {
		return r, secRange{}, secRange{}
	}
	return secRange{r.from, first}, secRange{first, last}, secRange{last, r.to}
}

// source is where a part of a trend's range is read from.
type source int

const (
	fromRows    source = iota // the base tables
	fromMinutes               // the minutely rollups
	fromHours                 // the hourly rollups
)

// rollupOf names the events and health rollups of src (fromMinutes or
// fromHours) and their time column.
func rollupOf(src source) (events, health, col string) {
	if src == fromMinutes {
		return tableEventsMinutely, tableHealthMinutely, "minute"
	}
	return tableEventsHourly, tableHealthHourly, "hour"
}

// span is a part of a trend's range and where it is read from.
type span struct {
	src source
	secRange
}

// split splits q's range into the whole UTC hours that the hourly rollups
// answer, the whole minutes around them that the minutely rollups answer
// (only when minutes is set: alerts have no minutely rollup, and their
// rows are few) and the part-minutes at the ends, which only the base
// tables can. Buckets that are not unions of UTC hours (or of minutes)
// leave more, or all, of the range to the finer sources.
func (q TrendQuery) split(b bucketer, minutes bool) []span {
	from, to := clampUnix(q.From), ceilUnix(q.To)
	if from >= to {
		return nil
	}
	var out []span
	add := func(src source, r secRange) {
		if r.from < r.to {
			out = append(out, span{src, r})
		}
	}
	r := secRange{from, to}
	switch {
	case b.unit == 0, b.unit == 60 && !minutes:
		add(fromRows, r)
	case !minutes:
		head, hours, tail := r.align(3600)
		add(fromRows, head)
		add(fromHours, hours)
		add(fromRows, tail)
	default:
		head, mins, tail := r.align(60)
		add(fromRows, head)
		add(fromRows, tail)
		if b.unit == 60 {
			add(fromMinutes, mins)
			break
		}
		mhead, hours, mtail := mins.align(3600)
		add(fromMinutes, mhead)
		add(fromHours, hours)
		add(fromMinutes, mtail)
	}
	return out
}

// trendParts is a UNION ALL of SELECTs that each return a bucket b, a key
// k and an aggregate state s, with their arguments.
type trendParts struct {
	sql  []string
	args []any
}

func (p *trendParts) add(sql string, args ...any) {
	p.sql = append(p.sql, sql)
	p.args = append(p.args, args...)
}

// query merges the states of the parts per bucket and key (and extra
// grouping columns the parts return).
func (p *trendParts) query(merge, extraGroup string) string {
	return "SELECT b, k, " + merge + "(s) FROM (" + strings.Join(p.sql, " UNION ALL ") + ") GROUP BY b, k" + extraGroup + " ORDER BY b, k"
}

// BucketCount is one count of a trend: a key (rule, district, type,
// status) in one bucket starting at Bucket.
type BucketCount struct {
	Bucket time.Time
	Key    string
	Count  uint64
}

// AlertsTrend counts the alerts raised (distinct alert ids with a firing
// message) per bucket of raised_at, keyed by q.By: "rule" (default),
// "district", "circle" or "severity". Counts are exact.
func (db *DB) AlertsTrend(ctx context.Context, q TrendQuery) ([]BucketCount, error) {
	b, err := q.bucketer()
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
	var filter string
	var fargs []any
	if len(q.Districts) > 0 {
		cond, a := inList("district", q.Districts)
		filter, fargs = " AND "+cond, a
	}
	var p trendParts
	for _, r := range q.split(b, false) {
		if r.src == fromHours {
			p.add("SELECT "+b.sql("hour")+" AS b, "+key+" AS k, ids AS s FROM "+db.table(tableAlertsHourly)+
				" WHERE hour >= toDateTime(?) AND hour < toDateTime(?)"+filter,
				append([]any{r.from, r.to}, fargs...)...)
			continue
		}
		// No FINAL: a replayed copy adds an id already in the set.
		p.add("SELECT "+b.sql("raised_at")+" AS b, "+key+" AS k, uniqExactState(id) AS s FROM "+db.table(tableAlerts)+
			" WHERE status = 'firing' AND raised_at >= toDateTime(?) AND raised_at < toDateTime(?)"+filter+" GROUP BY b, k",
			append([]any{r.from, r.to}, fargs...)...)
	}
	if len(p.sql) == 0 {
		return nil, nil
	}
	out, err := db.bucketCounts(ctx, p.query("uniqExactMerge", ""), p.args...)
	if err != nil {
		return nil, fmt.Errorf("cannot count alerts: %w", err)
	}
	return out, nil
}

// EventsTrend counts stored events (distinct ids) per bucket of event
// time, keyed by type (the source), over every table of events. Counts
// are estimates (uniqCombined, see the rollups in schema.go): exact up to
// about 2,000 events of a type in a bucket, within about 0.5 % beyond.
func (db *DB) EventsTrend(ctx context.Context, q TrendQuery) ([]BucketCount, error) {
	b, err := q.bucketer()
	if err != nil {
		return nil, fmt.Errorf("cannot count events: %w", err)
	}
	var p trendParts
	for _, r := range q.split(b, true) {
		switch r.src {
		case fromRows:
			for _, t := range eventTables {
				p.add("SELECT "+b.sql("time")+" AS b, "+t.typeSQL+" AS k, uniqCombinedState(15)(id) AS s FROM "+db.table(t.table)+
					" WHERE time >= toDateTime(?) AND time < toDateTime(?) GROUP BY b, k", r.from, r.to)
			}
		default:
			events, health, col := rollupOf(r.src)
			for _, t := range []string{events, health} {
				p.add("SELECT "+b.sql(col)+" AS b, type AS k, ids AS s FROM "+db.table(t)+
					" WHERE "+col+" >= toDateTime(?) AND "+col+" < toDateTime(?)", r.from, r.to)
			}
		}
	}
	if len(p.sql) == 0 {
		return nil, nil
	}
	out, err := db.bucketCounts(ctx, p.query("uniqCombinedMerge(15)", ""), p.args...)
	if err != nil {
		return nil, fmt.Errorf("cannot count events: %w", err)
	}
	return out, nil
}

// HealthTrend counts camera.health reports per bucket keyed by status, and
// the devices that sent a heartbeat, keyed "heartbeat_devices". Counts are
// estimates like those of EventsTrend.
func (db *DB) HealthTrend(ctx context.Context, q TrendQuery) ([]BucketCount, error) {
	b, err := q.bucketer()
	if err != nil {
		return nil, fmt.Errorf("cannot count device health: %w", err)
	}
	// A heartbeat counts its device, a health report itself. (18.16's
	// if() takes no aggregate states, hence a part for each.)
	const key = "if(type = 'device.heartbeat', 'heartbeat_devices', status) AS k, type AS t"
	var p trendParts
	for _, r := range q.split(b, true) {
		if r.src == fromRows {
			p.add("SELECT "+b.sql("time")+" AS b, "+key+", uniqCombinedState(15)(if(type = 'device.heartbeat', device_id, id)) AS s FROM "+db.table(tableHealth)+
				" WHERE time >= toDateTime(?) AND time < toDateTime(?) GROUP BY b, k, t", r.from, r.to)
			continue
		}
		_, table, col := rollupOf(r.src)
		for _, part := range []struct{ state, cond string }{{"devices", "="}, {"ids", "!="}} {
			p.add("SELECT "+b.sql(col)+" AS b, "+key+", "+part.state+" AS s FROM "+db.table(table)+
				" WHERE "+col+" >= toDateTime(?) AND "+col+" < toDateTime(?) AND type "+part.cond+" 'device.heartbeat'", r.from, r.to)
		}
	}
	if len(p.sql) == 0 {
		return nil, nil
	}
	out, err := db.bucketCounts(ctx, p.query("uniqCombinedMerge(15)", ", t"), p.args...)
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
// alerts: from the sensor's event time of an alert to the first on_scene
// of any of its dispatches.
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

// ResponseTimes reports the response times of the alerts first dispatched
// in [q.From, q.To) that a unit reached, keyed by q.By: "tier" (default:
// the tier minutes of the alert's circle, "1", "3", "5"), "circle" or
// "district", and restricted to q.Districts. It is the on-scene part of
// ResponseStats, for the analysts' table.
func (db *DB) ResponseTimes(ctx context.Context, q TrendQuery) ([]ResponseTime, error) {
	by := ResponseGroup(q.By)
	switch by {
	case "":
		by = ByTier
	case ByTier, ByCircle, ByDistrict:
	default:
		return nil, fmt.Errorf("cannot report response times: by %q: %w", q.By, ErrTrend)
	}
	stats, err := db.responseStats(ctx, by, q.From, q.To, q.Districts)
	if err != nil {
		return nil, err
	}
	var out []ResponseTime
	for _, s := range stats {
		if s.Reached == 0 {
			continue
		}
		n := float64(s.Reached)
		out = append(out, ResponseTime{Key: s.Key, N: s.Reached, P50: s.OnSceneP50, P90: s.OnSceneP90,
			Within1: float64(s.Within1Min) / n, Within3: float64(s.Within3Min) / n, Within5: float64(s.Within5Min) / n})
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
