package store

import (
	"context"
	"fmt"
	"strings"
)

// Migrate creates the database when it is missing and applies, in order,
// every migration it has not applied yet, recording each in
// schema_migrations. Running it again, or from two processes at once, is
// harmless: every statement is idempotent and a migration is recorded only
// after all its statements succeeded.
func (db *DB) Migrate(ctx context.Context) error {
	if err := db.conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db.db); err != nil {
		return fmt.Errorf("cannot create database %s: %w", db.cfg.Database, err)
	}
	if err := db.conn.Exec(ctx, db.expand(migrationsTable)); err != nil {
		return fmt.Errorf("cannot create table %s: %w", tableMigrations, err)
	}
	applied, err := db.appliedMigrations(ctx)
	if err != nil {
		return err
	}
	for _, m := range migrations {
		if applied[m.version] {
			continue
		}
		for i, stmt := range m.stmts {
			if err := db.conn.Exec(ctx, db.expand(stmt)); err != nil {
				return fmt.Errorf("cannot apply migration %d (%s), statement %d: %w", m.version, m.name, i+1, err)
			}
		}
		if m.backfill != nil {
			if err := m.backfill(ctx, db); err != nil {
				return fmt.Errorf("cannot apply migration %d (%s): %w", m.version, m.name, err)
			}
		}
		err := db.conn.Exec(ctx, "INSERT INTO "+db.table(tableMigrations)+" (version, name, applied_at) SELECT ?, ?, now()",
			uint32(m.version), m.name)
		if err != nil {
			return fmt.Errorf("cannot record migration %d (%s): %w", m.version, m.name, err)
		}
	}
	return nil
}

// appliedMigrations returns the versions recorded in schema_migrations.
func (db *DB) appliedMigrations(ctx context.Context) (map[int]bool, error) {
	rows, err := db.conn.Query(ctx, "SELECT DISTINCT version FROM "+db.table(tableMigrations))
	if err != nil {
		return nil, fmt.Errorf("cannot read applied migrations: %w", err)
	}
	defer rows.Close()
	applied := make(map[int]bool)
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("cannot read applied migrations: %w", err)
		}
		applied[int(v)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read applied migrations: %w", err)
	}
	return applied, nil
}

// expand puts the quoted database name into a schema statement.
func (db *DB) expand(stmt string) string {
	return strings.ReplaceAll(stmt, "{db}", db.db)
}

// DropDatabase drops citywatch's database with every table in it. It is for
// throwaway databases (load runs); nothing in the roles calls it.
func (db *DB) DropDatabase(ctx context.Context) error {
	if err := db.conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db.db); err != nil {
		return fmt.Errorf("cannot drop database %s: %w", db.cfg.Database, err)
	}
	return nil
}
