// Package chtest gives tests a database of their own on the test ClickHouse
// server: the real server that deploy/clickhouse.sh starts and `make test`
// requires, never a fake.
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"citywatch/store"
)

// The environment that chooses and requires the server.
const (
	// EnvAddr is the native-protocol address of the test server.
	EnvAddr = "CITYWATCH_CLICKHOUSE_ADDR"
	// EnvUser and EnvPassword are its credentials (default "default", "").
	EnvUser     = "CITYWATCH_CLICKHOUSE_USER"
	EnvPassword = "CITYWATCH_CLICKHOUSE_PASSWORD"
	// EnvRequire, set to 1 by `make test`, turns a missing server into a
	// failure instead of a skip.
	EnvRequire = "CITYWATCH_REQUIRE_CLICKHOUSE"
)

// DefaultAddr is the test server's address when EnvAddr is unset.
const DefaultAddr = "127.0.0.1:9000"

// timeout bounds each call to the server made by this package.
const timeout = 10 * time.Second

// Config returns a store.Config for a fresh, uniquely named database on the
// test ClickHouse server and drops the database when t ends. The server
// address comes from CITYWATCH_CLICKHOUSE_ADDR (default 127.0.0.1:9000). When
// the server does not answer: if CITYWATCH_REQUIRE_CLICKHOUSE=1 (set by
// `make test`) the test fails, otherwise it is skipped with a message saying
// to run `deploy/clickhouse.sh start` or `make test`.
//
// The database does not exist yet when Config returns: store.DB.Migrate
// creates it.
func Config(t testing.TB) store.Config {
	t.Helper()
	cfg := store.Config{
		Addr:     []string{envOr(EnvAddr, DefaultAddr)},
		Database: "citywatch_test_" + safeName(t.Name()) + "_" + randomSuffix(),
		User:     envOr(EnvUser, store.DefaultUser),
		Password: os.Getenv(EnvPassword),
	}
	cfg.SetDefaults()
	cfg.DialTimeout = 2 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatalf("chtest: %v", err)
	}

	if err := exec(cfg, "SELECT 1"); err != nil {
		msg := fmt.Sprintf("ClickHouse does not answer on %s (%v): run `deploy/clickhouse.sh start` or `make test`", cfg.Addr[0], err)
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s; %s=1 requires it", msg, EnvRequire)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		// 18.16 drops a table only once its running merges stop, which
		// after a test that inserted many parts takes longer than a query.
		if err := execWithin(cfg, "DROP DATABASE IF EXISTS `"+cfg.Database+"`", dropTimeout); err != nil {
			t.Errorf("chtest: cannot drop database %s: %v", cfg.Database, err)
		}
	})
	return cfg
}

// dropTimeout bounds the drop of a test's database.
const dropTimeout = 2 * time.Minute

// exec runs one statement on a connection of its own, closed before it
// returns so that tests checking for goroutine leaks see none.
func exec(cfg store.Config, stmt string) error { return execWithin(cfg, stmt, timeout) }

// execWithin is exec bounded by d.
func execWithin(cfg store.Config, stmt string, d time.Duration) error {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        cfg.Addr,
		Auth:        clickhouse.Auth{Username: cfg.User, Password: cfg.Password},
		DialTimeout: cfg.DialTimeout,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return conn.Exec(ctx, stmt)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// safeName turns a test name into letters, digits and underscores, short
// enough to keep database names readable.
func safeName(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 40 {
			break
		}
	}
	return b.String()
}

func randomSuffix() string {
	var p [6]byte
	rand.Read(p[:]) // never fails
	return hex.EncodeToString(p[:])
}
