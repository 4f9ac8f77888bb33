// Package web is citywatch's HTTP face: Prometheus metrics, health and
// readiness probes, and the pages and JSON API that operators, patrol units
// and analysts use: the live alert feed (Server-Sent Events), the map, the
// alert actions, the patrol page, the trends, and the audit of every action.
// It sits on top of every other package and chooses the HTTP status codes.
//
// The live views (alerts, dispatches, units, coverage) are built here from
// the Kafka topics, read without a consumer group from a configured window
// back (Config.Lookback), so that any number of web instances can run and a
// restart shows the last hour again; older alerts and the trends come from
// ClickHouse. Nothing here writes alerts: operators' actions are audit rows,
// and a dispatch by hand or a unit's answer is a message on the topics the
// dispatcher reads.
//
// Access is denied by default: every route is registered with a policy
// (which roles may use it), users see only their districts, personal data
// is shown masked only, and cross-origin writes are refused.
package web

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Config is the web role's configuration (the http: section).
type Config struct {
	// Addr is the listen address (CITYWATCH_HTTP_ADDR).
	Addr string `yaml:"addr"`
	// ShutdownTimeout bounds the wait for open requests when stopping.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// TLSCert and TLSKey are PEM files; when both are set the server
	// speaks HTTPS only and session cookies are Secure.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// SecureCookies marks session cookies Secure also without TLS here,
	// for a server behind a proxy that terminates TLS.
	SecureCookies bool `yaml:"secure_cookies"`
	// UsersFile is the YAML file of users (name, role, bcrypt hash,
	// districts, unit). Empty: nobody can log in, and only the public
	// routes answer.
	UsersFile string `yaml:"users_file"`
	// SessionTTL is how long a login lasts.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// MaxSessions bounds the sessions held; the oldest is dropped first.
	MaxSessions int `yaml:"max_sessions"`
	// Lookback is how far back the alerts and dispatches topics are read
	// on start.
	Lookback time.Duration `yaml:"lookback"`
	// PositionLookback is how far back the events topic is read for
	// patrol positions on start (it carries every event, so it is short).
	PositionLookback time.Duration `yaml:"position_lookback"`
	// LiveAlerts is the number of situations (alert ids) the live view
	// holds; the least recently updated is dropped first and then read
	// from ClickHouse.
	LiveAlerts int `yaml:"live_alerts"`
	// FeedBuffer is the number of feed messages kept for clients that
	// reconnect with Last-Event-ID.
	FeedBuffer int `yaml:"feed_buffer"`
	// ClientBuffer is the number of feed messages queued per connected
	// client; when it is full the oldest is dropped and the client is told
	// to resync.
	ClientBuffer int `yaml:"client_buffer"`
	// MaxFeedClients bounds the connected feed clients.
	MaxFeedClients int `yaml:"max_feed_clients"`
}

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 5 * time.Second
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 12 * time.Hour
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = 10000
	}
	if c.Lookback == 0 {
		c.Lookback = time.Hour
	}
	if c.PositionLookback == 0 {
		c.PositionLookback = 10 * time.Minute
	}
	if c.LiveAlerts == 0 {
		c.LiveAlerts = 10000
	}
	if c.FeedBuffer == 0 {
		c.FeedBuffer = 10000
	}
	if c.ClientBuffer == 0 {
		c.ClientBuffer = 256
	}
	if c.MaxFeedClients == 0 {
		c.MaxFeedClients = 500
	}
}

// Validate names the first field that is not usable.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("http.addr: %q is not host:port: %w", c.Addr, err)
	}
	switch {
	case c.ShutdownTimeout <= 0:
		return errors.New("http.shutdown_timeout: must be positive")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("http.tls_cert: tls_cert and tls_key go together")
	case c.SessionTTL <= 0:
		return errors.New("http.session_ttl: must be positive")
	case c.MaxSessions < 1:
		return errors.New("http.max_sessions: must be ≥ 1")
	case c.Lookback < 0:
		return errors.New("http.lookback: must not be negative")
	case c.PositionLookback < 0:
		return errors.New("http.position_lookback: must not be negative")
	case c.LiveAlerts < 1:
		return errors.New("http.live_alerts: must be ≥ 1")
	case c.FeedBuffer < 1:
		return errors.New("http.feed_buffer: must be ≥ 1")
	case c.ClientBuffer < 1:
		return errors.New("http.client_buffer: must be ≥ 1")
	case c.MaxFeedClients < 1:
		return errors.New("http.max_feed_clients: must be ≥ 1")
	}
	return nil
}

// Check is a readiness check: nil when the dependency answers.
type Check func(ctx context.Context) error
