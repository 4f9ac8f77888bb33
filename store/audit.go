package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// AuditEntry is one row of the audit table: who did what to which object
// and when. Details is a JSON object with the action's arguments (an
// outcome and note, a reason, a mute's scope); it never holds raw personal
// data, because nothing upstream of it has any.
type AuditEntry struct {
	Time    time.Time
	Who     string
	Action  string
	Object  string
	Details string
}

// InsertAudit inserts entries as one INSERT into the audit table. An entry
// submitted twice (same time to the millisecond, who, action and object)
// is one row for every query of this package.
func (db *DB) InsertAudit(ctx context.Context, entries ...AuditEntry) (err error) {
	if len(entries) == 0 {
		return nil
	}
	if len(db.insertSettings) > 0 {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(db.insertSettings))
	}
	batch, err := db.conn.PrepareBatch(ctx, "INSERT INTO "+db.table(tableAudit)+" (time, time_ms, who, action, object, details, ingested_at)")
	if err != nil {
		return fmt.Errorf("cannot insert into %s: %w", tableAudit, err)
	}
	defer func() {
		if err != nil {
			_ = batch.Abort()
		}
	}()
	for _, e := range entries {
		// The version column is the entry's own time: copies of one entry
		// are equal in every column, so any of them may be kept.
		sec, ms := splitTime(e.Time)
		at := time.Unix(sec, 0).UTC()
		if err := batch.Append(at, ms, e.Who, e.Action, e.Object, e.Details, at); err != nil {
			return fmt.Errorf("cannot insert into %s: %w", tableAudit, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("cannot insert into %s: %w", tableAudit, err)
	}
	return nil
}

// AuditSince returns the audit entries at or after since whose action is
// one of actions (every action when none is given), oldest first, at most
// limit of them (the newest limit when there are more).
func (db *DB) AuditSince(ctx context.Context, since time.Time, limit int, actions ...string) ([]AuditEntry, error) {
	query := "SELECT toUInt32(time), time_ms, who, action, object, details FROM " + db.table(tableAudit) + " FINAL WHERE time >= toDateTime(?)"
	args := []any{clampUnix(since)}
	if len(actions) > 0 {
		query += " AND action IN (" + strings.TrimSuffix(strings.Repeat("?,", len(actions)), ",") + ")"
		for _, a := range actions {
			args = append(args, a)
		}
	}
	query += " ORDER BY time DESC, time_ms DESC LIMIT " + fmt.Sprint(max(limit, 1))
	rows, err := db.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("cannot read audit log: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var (
			sec uint32
			ms  uint16
			e   AuditEntry
		)
		if err := rows.Scan(&sec, &ms, &e.Who, &e.Action, &e.Object, &e.Details); err != nil {
			return nil, fmt.Errorf("cannot read audit log: %w", err)
		}
		e.Time = time.Unix(int64(sec), int64(ms)*int64(time.Millisecond)).UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read audit log: %w", err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}
