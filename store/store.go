// Package store is citywatch's ClickHouse storage: the schema and its
// migrations, the columnar batches the sink fills from Kafka and inserts,
// the queries behind counts and trends, and retention by daily partition.
//
// It sits at the end of the data flow: the sink consumes the normalised
// events and rejected input from Kafka, adds them to a Batch and inserts it
// with DB.Insert; web and the tests read through the query methods. Alerting
// never waits on it.
//
// The store promises that replay is harmless: inserting the same events
// again (the sink consumes at least once) stores nothing new as far as every
// query of this package can see, because each table is a ReplacingMergeTree
// whose sorting key identifies an event, and the queries read with FINAL.
// Raw personal data has no column: fuel purchases are stored with the buyer's
// pseudonym and masked forms only.
package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// DB is a connection pool to ClickHouse holding citywatch's database. It is
// safe for concurrent use.
type DB struct {
	conn driver.Conn
	cfg  Config
	// db is the quoted database name, ready to prefix table names.
	db string
	// insertSettings are the settings every INSERT runs with.
	insertSettings clickhouse.Settings
}

// Open connects to the ClickHouse server of cfg over the native protocol and
// pings it. Unset fields of cfg take their defaults. The database need not
// exist yet: Migrate creates it.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	cfg.SetDefaults()
	cfg.Addr = append([]string(nil), cfg.Addr...)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cannot open store: %w", err)
	}
	tc, err := cfg.TLSConfig()
	if err != nil {
		return nil, fmt.Errorf("cannot open store: %w", err)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: cfg.Addr,
		// The default database of the session is left to the server:
		// naming one that does not exist yet would fail the handshake
		// before Migrate could create it. Every statement names its
		// database instead.
		Auth: clickhouse.Auth{
			Username: cfg.User,
			Password: cfg.Password,
		},
		DialTimeout: cfg.DialTimeout,
		TLS:         tc, // nil: plaintext
	})
	if err != nil {
		return nil, fmt.Errorf("cannot open clickhouse connection to %s: %w", strings.Join(cfg.Addr, ","), err)
	}
	db := &DB{conn: conn, cfg: cfg, db: quoteIdent(cfg.Database)}
	if err := db.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot open store: %w", err)
	}
	if err := db.detectSettings(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot open store: %w", err)
	}
	return db, nil
}

// detectSettings chooses the settings inserts run with, by asking the
// server which ones it knows. Current releases refuse an INSERT block that
// touches more than 100 partitions (days); a batch holding events with
// broken device clocks, or a replay of old data, would then fail on every
// retry and stop the sink, so the limit is lifted where it exists. 18.16
// has no such limit and rejects the unknown setting.
func (db *DB) detectSettings(ctx context.Context) error {
	var n uint64
	row := db.conn.QueryRow(ctx, "SELECT count() FROM system.settings WHERE name = 'max_partitions_per_insert_block'")
	if err := row.Scan(&n); err != nil {
		return fmt.Errorf("cannot read server settings: %w", err)
	}
	if n > 0 {
		db.insertSettings = clickhouse.Settings{"max_partitions_per_insert_block": 0}
	}
	return nil
}

// Ping checks that the server answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.conn.Ping(ctx); err != nil {
		return fmt.Errorf("cannot ping clickhouse at %s: %w", strings.Join(db.cfg.Addr, ","), err)
	}
	return nil
}

// Close closes every connection of the pool. Calls on db after Close fail.
func (db *DB) Close() error {
	if err := db.conn.Close(); err != nil {
		return fmt.Errorf("cannot close clickhouse connection: %w", err)
	}
	return nil
}

// Database returns the name of the database that holds the tables.
func (db *DB) Database() string { return db.cfg.Database }

// Conn returns clickhouse-go's connection under db, for tests and for
// measurements that compare the sink with the client's own API.
func (db *DB) Conn() driver.Conn { return db.conn }

// table returns the qualified, quoted name of a table of the database.
func (db *DB) table(name string) string {
	return db.db + "." + quoteIdent(name)
}

// quoteIdent quotes an identifier that validIdent accepted.
func quoteIdent(s string) string { return "`" + s + "`" }
