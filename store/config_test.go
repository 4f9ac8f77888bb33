package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"citywatch/store"
)

func TestConfigDefaults(t *testing.T) {
	var cfg store.Config
	cfg.SetDefaults()
	want := store.Config{
		Addr:        []string{"127.0.0.1:9000"},
		Database:    "citywatch",
		User:        "default",
		DialTimeout: 5 * time.Second,
		Retention:   store.Retention{Events: 90, Fuel: 7, Rejected: 14, Health: 30, Alerts: 365, Dispatches: 365, Audit: 365, Trends: 730},
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*store.Config)
		field string // in the error, or "" when valid
	}{
		{"defaults", func(*store.Config) {}, ""},
		{"no address", func(c *store.Config) { c.Addr = []string{} }, "addr"},
		{"address without port", func(c *store.Config) { c.Addr = []string{"localhost"} }, "addr[0]"},
		{"second address bad", func(c *store.Config) { c.Addr = []string{"a:1", "b"} }, "addr[1]"},
		{"database with quote", func(c *store.Config) { c.Database = "x`; DROP" }, "database"},
		{"database with dash", func(c *store.Config) { c.Database = "city-watch" }, "database"},
		{"database leading digit", func(c *store.Config) { c.Database = "1city" }, "database"},
		{"database underscore", func(c *store.Config) { c.Database = "_city_watch2" }, ""},
		{"negative dial timeout", func(c *store.Config) { c.DialTimeout = -time.Second }, "dial_timeout"},
		{"negative fuel retention", func(c *store.Config) { c.Retention.Fuel = -1 }, "retention.fuel"},
		{"negative audit retention", func(c *store.Config) { c.Retention.Audit = -3 }, "retention.audit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg store.Config
			cfg.SetDefaults()
			tt.edit(&cfg)
			err := cfg.Validate()
			switch {
			case tt.field == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.field != "" && err == nil:
				t.Errorf("Validate() = nil, want an error naming %s", tt.field)
			case tt.field != "" && !strings.Contains(err.Error(), "config: "+tt.field+" ") && !strings.Contains(err.Error(), "config: "+tt.field+":"):
				t.Errorf("Validate() = %v, want it to name %s", err, tt.field)
			}
		})
	}
}

// TestConfigZeroRetentionTakesDefault documents that 0 means "the default",
// not "keep forever": SetDefaults fills it, so a missing YAML key cannot
// turn retention off.
func TestConfigZeroRetentionTakesDefault(t *testing.T) {
	cfg := store.Config{Retention: store.Retention{Fuel: 3}}
	cfg.SetDefaults()
	if cfg.Retention.Fuel != 3 || cfg.Retention.Events != 90 {
		t.Errorf("retention after SetDefaults = %+v", cfg.Retention)
	}
}
