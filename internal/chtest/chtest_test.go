package chtest_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"go.uber.org/goleak"

	"citywatch/internal/chtest"
	"citywatch/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestConfigDropsDatabase uses a database in a subtest and checks that it
// is gone once the subtest has ended.
func TestConfigDropsDatabase(t *testing.T) {
	var cfg store.Config
	t.Run("use", func(t *testing.T) {
		cfg = chtest.Config(t)
		if !strings.HasPrefix(cfg.Database, "citywatch_test_TestConfigDropsDatabase_use_") {
			t.Errorf("database %q does not name the test", cfg.Database)
		}
		if err := cfg.Validate(); err != nil {
			t.Error(err)
		}
		db := openMigrated(t, cfg)
		defer db.Close()
		if !databases(t, cfg)[cfg.Database] {
			t.Errorf("database %s was not created", cfg.Database)
		}
	})
	if cfg.Database == "" {
		t.Skip("no server")
	}
	other := chtest.Config(t)
	if other.Database == cfg.Database {
		t.Fatalf("two calls gave the same database %s", cfg.Database)
	}
	if databases(t, other)[cfg.Database] {
		t.Errorf("database %s still exists after its test ended", cfg.Database)
	}
}

func openMigrated(t *testing.T, cfg store.Config) *store.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	db, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx); err != nil {
		db.Close()
		t.Fatal(err)
	}
	return db
}

// databases lists the databases of the server of cfg.
func databases(t *testing.T, cfg store.Config) map[string]bool {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: cfg.Addr,
		Auth: clickhouse.Auth{Username: cfg.User, Password: cfg.Password},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.Query(t.Context(), "SELECT name FROM system.databases")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := make(map[string]bool)
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		out[name] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// fakeTB records how Config gives up, in place of a real test.
type fakeTB struct {
	testing.TB
	how string // "fatal" or "skip"
	msg string
}

type stop struct{}

func (f *fakeTB) Helper()      {}
func (f *fakeTB) Name() string { return "TestFake" }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.how, f.msg = "fatal", fmt.Sprintf(format, args...)
	panic(stop{})
}
func (f *fakeTB) Skip(args ...any) {
	f.how, f.msg = "skip", fmt.Sprint(args...)
	panic(stop{})
}
func (f *fakeTB) Cleanup(func()) { panic("Cleanup registered for a server that does not answer") }

func TestConfigWithoutServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	tests := []struct {
		require string
		how     string
	}{
		{"", "skip"},
		{"0", "skip"},
		{"1", "fatal"},
	}
	for _, tt := range tests {
		t.Run("require="+tt.require, func(t *testing.T) {
			t.Setenv(chtest.EnvAddr, addr)
			t.Setenv(chtest.EnvRequire, tt.require)
			f := &fakeTB{}
			func() {
				defer func() {
					if r := recover(); r != nil {
						if _, ok := r.(stop); !ok {
							panic(r)
						}
					}
				}()
				chtest.Config(f)
			}()
			if f.how != tt.how {
				t.Fatalf("Config gave up with %q (%s), want %q", f.how, f.msg, tt.how)
			}
			for _, want := range []string{addr, "deploy/clickhouse.sh start", "make test"} {
				if !strings.Contains(f.msg, want) {
					t.Errorf("message %q does not mention %q", f.msg, want)
				}
			}
		})
	}
}
