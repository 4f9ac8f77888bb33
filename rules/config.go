package rules

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Config is the rule engine's configuration. The zero value, after
// SetDefaults, is ready to use; the city hooks (Zones, Locate, Site) are
// optional and filled from the city model by the caller.
type Config struct {
	Limits `yaml:",inline"`
	// TimeZone names the zone of schedules (CITYWATCH_TZ). Default
	// Asia/Shanghai.
	TimeZone string `yaml:"time_zone"`

	// Location is TimeZone loaded; SetDefaults fills it when nil.
	Location *time.Location `yaml:"-"`
	// Zones gives the protected zones containing a point, for geofence
	// rules; nil means no zones (geofence rules raise nothing).
	Zones ZoneFunc `yaml:"-"`
	// Locate places an alert in a district and rapid-response circle; nil
	// leaves those fields empty.
	Locate LocateFunc `yaml:"-"`
	// Site names the site a device belongs to, for grouped absence alerts;
	// nil groups devices by a grid cell of their reported position
	// (GridSite).
	Site SiteFunc `yaml:"-"`
}

// ZoneFunc appends to dst the zones that contain the point (WGS-84) and
// returns the extended slice. It is called once per event that reaches a
// geofence rule, so it must not allocate when dst has room; the city model
// answers it from a spatial index of its protected-zone polygons.
type ZoneFunc func(dst []Zone, lat, lon float64) []Zone

// Zone is a protected zone (a school, depot or government site) as the city
// model describes it.
type Zone struct {
	ID   string
	Name string
	Kind string // school, depot, government, …
	// Active reports whether the zone's own schedule covers the instant;
	// nil means always. The rule's schedule applies as well.
	Active func(t time.Time) bool
}

// LocateFunc returns the county-level district and the rapid-response
// circle (with its tier in minutes: 1, 3 or 5) of a point; empty strings
// and 0 when unknown. It is called once per alert message.
type LocateFunc func(lat, lon float64) (district, circleID string, tierMinutes int)

// SiteFunc returns the site (or district) a fixed device belongs to, for
// grouping the silence of many devices into one alert; "" means the device
// is not grouped. lat and lon are the position the device last reported.
type SiteFunc func(deviceID string, lat, lon float64) string

// GridSite groups devices by a cell of 0.01° (about 1 km) of their
// position: the site used when no city model names sites.
func GridSite(_ string, lat, lon float64) string {
	la := int64(lat * 100)
	lo := int64(lon * 100)
	if lat < 0 {
		la--
	}
	if lon < 0 {
		lo--
	}
	// As fmt's "grid:%.2f,%.2f", with one allocation: routing a scaled-out
	// role's events asks for the site of every event of a device.
	var b [40]byte
	s := strconv.AppendFloat(append(b[:0], "grid:"...), float64(la)/100, 'f', 2, 64)
	s = strconv.AppendFloat(append(s, ','), float64(lo)/100, 'f', 2, 64)
	return string(s)
}

// Defaults of Config.
const (
	DefaultLateness        = 5 * time.Second
	DefaultMaxKeys         = 1_000_000
	DefaultMaxOpenAlerts   = 100_000
	DefaultMaxWindowEvents = 256
	DefaultTimeZone        = "Asia/Shanghai"
)

// SetDefaults fills zero fields with their defaults. It loads Location
// from TimeZone; a zone that cannot be loaded is reported by Validate.
func (c *Config) SetDefaults() {
	c.Limits.SetDefaults()
	if c.TimeZone == "" {
		c.TimeZone = DefaultTimeZone
	}
	if c.Location == nil {
		if loc, err := time.LoadLocation(c.TimeZone); err == nil {
			c.Location = loc
		}
	}
	if c.Site == nil {
		c.Site = GridSite
	}
}

// Validate reports the first field that is not usable, by its YAML name.
func (c *Config) Validate() error {
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	switch {
	case c.Location == nil:
		if _, err := time.LoadLocation(c.TimeZone); err != nil {
			return fmt.Errorf("rules.time_zone: %w", err)
		}
		return errors.New("rules.time_zone: not loaded (call SetDefaults)")
	}
	return nil
}

// Limits are the engine's bounds and its allowed lateness. They are part
// of both Config and RoleConfig (inline in YAML), with defaults and checks
// in one place.
type Limits struct {
	// Lateness is how far behind the highest event time seen an event may
	// be and still be evaluated; the watermark is stream time minus it.
	// Default 5s.
	Lateness time.Duration `yaml:"lateness"`
	// MaxKeys bounds every per-key table of one rule (plates, buyers,
	// devices, pairs); the least recently updated key is evicted first.
	// Default 1,000,000.
	MaxKeys int `yaml:"max_keys"`
	// MaxOpenAlerts bounds the open situations of one rule; the oldest is
	// resolved to make room. Default 100,000.
	MaxOpenAlerts int `yaml:"max_open_alerts"`
	// MaxWindowEvents bounds the events one key keeps in a sliding window
	// (threshold) or history (co-occurrence); the oldest go first. A rule
	// that needs more than this many events in a window is rejected.
	// Default 256.
	MaxWindowEvents int `yaml:"max_window_events"`
}

// SetDefaults fills zero limits with their defaults.
func (l *Limits) SetDefaults() {
	if l.Lateness == 0 {
		l.Lateness = DefaultLateness
	}
	if l.MaxKeys == 0 {
		l.MaxKeys = DefaultMaxKeys
	}
	if l.MaxOpenAlerts == 0 {
		l.MaxOpenAlerts = DefaultMaxOpenAlerts
	}
	if l.MaxWindowEvents == 0 {
		l.MaxWindowEvents = DefaultMaxWindowEvents
	}
}

// Validate reports the first limit that is not usable, by its YAML name.
func (l Limits) Validate() error {
	switch {
	case l.Lateness < 0:
		return fmt.Errorf("rules.lateness: must not be negative, got %s", l.Lateness)
	case l.MaxKeys < 1:
		return fmt.Errorf("rules.max_keys: must be ≥ 1, got %d", l.MaxKeys)
	case l.MaxOpenAlerts < 1:
		return fmt.Errorf("rules.max_open_alerts: must be ≥ 1, got %d", l.MaxOpenAlerts)
	case l.MaxWindowEvents < 2 || l.MaxWindowEvents > 1<<16:
		return fmt.Errorf("rules.max_window_events: must be 2–65536, got %d", l.MaxWindowEvents)
	}
	return nil
}
