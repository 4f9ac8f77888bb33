package store

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"citywatch/internal/tlsconf"
)

// Config is the configuration of the ClickHouse store: where the server is,
// which database holds citywatch's tables, and how long each class of data is
// kept.
type Config struct {
	// Addr lists ClickHouse native-protocol addresses (host:port); the
	// client picks one and fails over to the others. Default
	// ["127.0.0.1:9000"].
	Addr []string `yaml:"addr"`
	// Database holds every table of citywatch; it is created by Migrate.
	// Letters, digits and underscores only, not starting with a digit.
	// Default "citywatch".
	Database string `yaml:"database"`
	// User and Password are the ClickHouse credentials; default "default"
	// with an empty password.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// DialTimeout bounds opening one connection; default 5s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// TLS secures the connections (CITYWATCH_CLICKHOUSE_TLS,
	// CITYWATCH_CLICKHOUSE_TLS_CA); the server's secure native port is
	// usually 9440, not 9000.
	TLS TLS `yaml:"tls"`
	// Retention is how many days each class of data is kept.
	Retention Retention `yaml:"retention"`
}

// TLS is how the store encrypts its connections and checks the server.
type TLS struct {
	// Enable turns TLS on. The other fields need it.
	Enable bool `yaml:"enable"`
	// CAFile is a PEM file of the certificates that sign the server's;
	// empty means the system's roots.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name checked in the server's certificate; empty
	// means the host of the address connected to.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any server certificate. Tests only: it
	// cannot be set from YAML or the environment.
	InsecureSkipVerify bool `yaml:"-"`
}

// TLSConfig returns the client TLS configuration of c, nil when TLS is
// off; it reads the CA file.
func (c Config) TLSConfig() (*tls.Config, error) {
	t := c.TLS
	if !t.Enable {
		if t.CAFile != "" || t.ServerName != "" {
			return nil, errors.New("invalid store config: tls.enable: the CA file and server name need TLS enabled (CITYWATCH_CLICKHOUSE_TLS=true)")
		}
		return nil, nil
	}
	tc, err := tlsconf.Client(tlsconf.Files{CAFile: t.CAFile, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify})
	if err != nil {
		return nil, fmt.Errorf("invalid store config: tls.%w", err)
	}
	return tc, nil
}

// Retention is how many days each class of data is kept before
// ApplyRetention drops its daily partitions. Every value must be at least 1:
// there is no "keep forever", because unbounded storage of personal and
// location data is not something to get by leaving a field out.
type Retention struct {
	// Events is for the events table (detections, checkpoint passes, drone
	// and patrol reports) and the minutely rollups of events (fuel
	// purchases' included); default 90.
	Events int `yaml:"events"`
	// Fuel is for real-name fuel purchases, personal data kept shortest;
	// default 7.
	Fuel int `yaml:"fuel"`
	// Rejected is for rejected input (the DLQ); default 14.
	Rejected int `yaml:"rejected"`
	// Health is for camera health reports and device heartbeats, and their
	// minutely rollups; default 30.
	Health int `yaml:"health"`
	// Alerts is for alert lifecycle messages; default 365.
	Alerts int `yaml:"alerts"`
	// Dispatches is for dispatch state changes; default 365.
	Dispatches int `yaml:"dispatches"`
	// Audit is for the audit log; default 365.
	Audit int `yaml:"audit"`
	// Trends is for the hourly rollups the trend queries read (counts and
	// hashed ids, no personal field), which outlive the rows they count so
	// that analysts see years beside 90 days of raw events; default 730.
	Trends int `yaml:"trends"`
}

// The defaults of Config.
const (
	DefaultAddr        = "127.0.0.1:9000"
	DefaultDatabase    = "citywatch"
	DefaultUser        = "default"
	DefaultDialTimeout = 5 * time.Second
)

// DefaultRetention is the retention SetDefaults fills in, in days.
var DefaultRetention = Retention{
	Events:     90,
	Fuel:       7,
	Rejected:   14,
	Health:     30,
	Alerts:     365,
	Dispatches: 365,
	Audit:      365,
	Trends:     730,
}

// SetDefaults fills every unset (zero) field with its default.
func (c *Config) SetDefaults() {
	if len(c.Addr) == 0 {
		c.Addr = []string{DefaultAddr}
	}
	if c.Database == "" {
		c.Database = DefaultDatabase
	}
	if c.User == "" {
		c.User = DefaultUser
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	r, d := &c.Retention, DefaultRetention
	for _, f := range []struct {
		v   *int
		def int
	}{
		{&r.Events, d.Events},
		{&r.Fuel, d.Fuel},
		{&r.Rejected, d.Rejected},
		{&r.Health, d.Health},
		{&r.Trends, d.Trends},
		{&r.Alerts, d.Alerts},
		{&r.Dispatches, d.Dispatches},
		{&r.Audit, d.Audit},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
}

// Validate reports the first invalid field of c, named as in the YAML
// configuration. It expects SetDefaults to have run.
func (c Config) Validate() error {
	if len(c.Addr) == 0 {
		return fmt.Errorf("invalid store config: addr: at least one address is needed")
	}
	for i, a := range c.Addr {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("invalid store config: addr[%d] %q: want host:port: %w", i, a, err)
		}
	}
	if !validIdent(c.Database) {
		return fmt.Errorf("invalid store config: database %q: want letters, digits and underscores, not starting with a digit", c.Database)
	}
	if c.User == "" {
		return fmt.Errorf("invalid store config: user: must not be empty")
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("invalid store config: dial_timeout %v: must be positive", c.DialTimeout)
	}
	for _, tr := range c.Retention.tables() {
		if tr.days < 1 {
			return fmt.Errorf("invalid store config: retention.%s %d: must be at least 1 day", tr.field, tr.days)
		}
	}
	if _, err := c.TLSConfig(); err != nil {
		return err
	}
	return nil
}

// tableRetention ties a table to its retention field.
type tableRetention struct {
	table string
	field string // YAML name of the Retention field
	days  int
}

// tables lists the retention of every partitioned table.
func (r Retention) tables() []tableRetention {
	return []tableRetention{
		{tableEvents, "events", r.Events},
		{tableFuel, "fuel", r.Fuel},
		{tableRejected, "rejected", r.Rejected},
		{tableHealth, "health", r.Health},
		{tableAlerts, "alerts", r.Alerts},
		{tableDispatches, "dispatches", r.Dispatches},
		{tableAudit, "audit", r.Audit},
		{tableAlertsHourly, "trends", r.Trends},
		{tableEventsHourly, "trends", r.Trends},
		{tableHealthHourly, "trends", r.Trends},
		{tableEventsMinutely, "events", r.Events},
		{tableHealthMinutely, "health", r.Health},
	}
}

// validIdent reports whether s is a plain SQL identifier, which is safe to
// put between back quotes in a statement.
func validIdent(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
