package store

import (
	"context"
	"fmt"
	"math"
	"time"

	"citywatch/event"
)

// AlertRows holds alert messages (every lifecycle message is a row of the
// alerts table) until they are inserted; not safe for concurrent use. It
// is kept apart from Batch, whose tables are filled from events without
// allocation: an alert row is decoded with encoding/json.
type AlertRows struct {
	n           int
	id          []string
	rule        []string
	severity    []string
	status      []string
	subjectKind []string
	subjectID   []string
	eventTime   []int64
	eventTimeMs []uint16
	raisedAt    []int64
	raisedAtMs  []uint16
	lat         []float64
	lon         []float64
	district    []string
	circleID    []string
	tierMinutes []uint8
	evidence    [][]string
	summary     []string
	details     []string
	ingestedAt  []int64
}

// AddAlert decodes one alert message (its JSON value on citywatch.alerts)
// and adds it as a row; ingestedAt is when the sink stored it. A message
// without id, rule or status is an error and adds nothing.
func (r *AlertRows) AddAlert(data []byte, ingestedAt time.Time) error {
	a, err := event.DecodeAlert(data)
	if err != nil {
		return err
	}
	if a.Status == "" {
		return fmt.Errorf("cannot decode alert %s: status is required", a.ID)
	}
	details := string(a.AppendDetailsJSON(nil))
	et, etMs := splitTime(a.EventTime)
	ra, raMs := splitTime(a.RaisedAt)
	ing, _ := splitTime(ingestedAt)
	r.id = append(r.id, a.ID)
	r.rule = append(r.rule, a.Rule)
	r.severity = append(r.severity, string(a.Severity))
	r.status = append(r.status, string(a.Status))
	r.subjectKind = append(r.subjectKind, a.Subject.Kind)
	r.subjectID = append(r.subjectID, a.Subject.ID)
	r.eventTime = append(r.eventTime, et)
	r.eventTimeMs = append(r.eventTimeMs, etMs)
	r.raisedAt = append(r.raisedAt, ra)
	r.raisedAtMs = append(r.raisedAtMs, raMs)
	r.lat = append(r.lat, a.Lat)
	r.lon = append(r.lon, a.Lon)
	r.district = append(r.district, a.District)
	r.circleID = append(r.circleID, a.CircleID)
	r.tierMinutes = append(r.tierMinutes, uint8(clamp(int64(a.TierMinutes), math.MaxUint8)))
	r.evidence = append(r.evidence, append([]string{}, a.Evidence...))
	r.summary = append(r.summary, a.Summary)
	r.details = append(r.details, details)
	r.ingestedAt = append(r.ingestedAt, ing)
	r.n++
	return nil
}

// Len returns the number of rows.
func (r *AlertRows) Len() int { return r.n }

// Reset empties the rows, keeping their capacity.
func (r *AlertRows) Reset() { resetColumns(r); r.n = 0 }

func (r *AlertRows) name() string { return tableAlerts }
func (r *AlertRows) len() int     { return r.n }
func (r *AlertRows) reset()       { r.Reset() }

func (r *AlertRows) columns() []column {
	return []column{
		{"id", &r.id},
		{"rule", &r.rule},
		{"severity", &r.severity},
		{"status", &r.status},
		{"subject_kind", &r.subjectKind},
		{"subject_id", &r.subjectID},
		{"event_time", &r.eventTime},
		{"event_time_ms", &r.eventTimeMs},
		{"raised_at", &r.raisedAt},
		{"raised_at_ms", &r.raisedAtMs},
		{"lat", &r.lat},
		{"lon", &r.lon},
		{"district", &r.district},
		{"circle_id", &r.circleID},
		{"tier_minutes", &r.tierMinutes},
		{"evidence", &r.evidence},
		{"summary", &r.summary},
		{"details", &r.details},
		{"ingested_at", &r.ingestedAt},
	}
}

// InsertAlerts inserts the rows as one INSERT into the alerts table and
// leaves them as they were. Inserting the same rows again is safe: every
// lifecycle message is one row of the table's sorting key (rule, id,
// raised_at, raised_at_ms, status), so copies collapse.
func (db *DB) InsertAlerts(ctx context.Context, r *AlertRows) error {
	return db.insertRows(ctx, r)
}

// CountAlerts returns the number of alerts raised, by rule: firing
// messages, each replayed copy counted once.
func (db *DB) CountAlerts(ctx context.Context) (map[string]uint64, error) {
	counts := make(map[string]uint64)
	query := "SELECT rule, count() FROM " + db.table(tableAlerts) + " FINAL WHERE status = 'firing' GROUP BY rule"
	if err := db.scanCounts(ctx, query, func(k string, n uint64) { counts[k] += n }); err != nil {
		return nil, fmt.Errorf("cannot count alerts: %w", err)
	}
	return counts, nil
}

// CountAlertMessages returns the number of alert messages by rule and
// status, keyed "rule status" ("camera.violence firing"), each replayed
// copy counted once.
func (db *DB) CountAlertMessages(ctx context.Context) (map[string]uint64, error) {
	counts := make(map[string]uint64)
	query := "SELECT concat(rule, ' ', status) AS k, count() FROM " + db.table(tableAlerts) + " FINAL GROUP BY k"
	if err := db.scanCounts(ctx, query, func(k string, n uint64) { counts[k] += n }); err != nil {
		return nil, fmt.Errorf("cannot count alert messages: %w", err)
	}
	return counts, nil
}
