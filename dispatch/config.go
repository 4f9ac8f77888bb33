package dispatch

import (
	"errors"
	"fmt"
	"time"
)

// Config is the dispatcher's configuration (the dispatch section of the
// configuration file).
type Config struct {
	// Group is the consumer group of the alerts topic. Every dispatcher
	// process needs its own group (it reads every alert and keeps those
	// of its Districts); see the package doc.
	Group string `yaml:"group"`
	// Districts are the district codes whose alerts this process
	// dispatches; empty means every alert (one dispatcher for the city).
	Districts []string `yaml:"districts"`
	// ShareDistricts makes the processes of Group share the city's
	// districts through the consumer group instead of a fixed Districts
	// list: a process that joins or leaves moves districts, and each
	// process rebuilds the state of the districts it gets (see the
	// package doc, "Scale-out"). Districts must then be empty.
	ShareDistricts bool `yaml:"share_districts"`

	// StaleAfter is the age (by device time) after which a unit's last
	// position is not used for ranking or coverage.
	StaleAfter time.Duration `yaml:"stale_after"`
	// FutureTolerance is how far ahead of the dispatcher's clock a
	// position may be before the report is flagged and not trusted.
	FutureTolerance time.Duration `yaml:"future_tolerance"`
	// MaxSpeedKmh is the highest speed implied by two consecutive
	// positions of a unit that is believed; a faster jump is flagged.
	MaxSpeedKmh float64 `yaml:"max_speed_kmh"`
	// JumpMinM is the least jump that can be flagged, so that GPS jitter
	// between reports close in time is not taken for teleporting.
	JumpMinM float64 `yaml:"jump_min_m"`

	// AcceptTimeout is how long an assigned unit has to accept before the
	// dispatch is reassigned to the next unit.
	AcceptTimeout time.Duration `yaml:"accept_timeout"`
	// Units is how many units an alert gets, by severity.
	Units UnitsBySeverity `yaml:"units"`
	// SkipRules are rules whose alerts get no patrol unit: equipment
	// faults call for a technician, and companion vehicles are a lead for
	// analysts (at the contract's defaults rush-hour traffic raises them
	// by the dozen; a unit sent to each would empty the circles).
	// dispatch.* alerts are never dispatched, listed or not.
	SkipRules []string `yaml:"skip_rules"`
	// MaxAlertAge is the oldest alert (by event time, when it reaches the
	// dispatcher) that still gets units: an older one is a replay or a
	// backlog, not a situation to drive to.
	MaxAlertAge time.Duration `yaml:"max_alert_age"`
	// CoverageGapAfter is how long a tier-1 circle may lack coverage
	// before dispatch.coverage_gap is raised.
	CoverageGapAfter time.Duration `yaml:"coverage_gap_after"`
	// CoverageTiers are the tiers (in minutes) whose circles raise
	// dispatch.coverage_gap; every circle's coverage is measured anyway.
	CoverageTiers []int `yaml:"coverage_tiers"`

	// Model is the travel-time model.
	Model Model `yaml:"model"`
	// CellM is the side of a cell of the units' spatial index, in metres.
	CellM float64 `yaml:"cell_m"`

	// Lookback is how far back the dispatches and alerts topics are read
	// on a start to rebuild the open dispatches and their timers.
	Lookback time.Duration `yaml:"lookback"`
	// PositionsReplay is how much of the internal events topic (by
	// device time) is read on a start to learn the units' positions.
	PositionsReplay time.Duration `yaml:"positions_replay"`
	// Tick is how often the clock advances the timers and coverage.
	Tick time.Duration `yaml:"tick"`
	// MaxWait is the longest an alert waits in a consumer batch.
	MaxWait time.Duration `yaml:"max_wait"`
	// MaxPending bounds the messages waiting to be written; while it is
	// reached the clock does not advance the timers (they fire late, not
	// never) and the consumer flushes before taking more alerts.
	MaxPending int `yaml:"max_pending"`
}

// UnitsBySeverity is how many units an alert of each severity gets.
type UnitsBySeverity struct {
	Critical int `yaml:"critical"`
	High     int `yaml:"high"`
	Medium   int `yaml:"medium"`
	Low      int `yaml:"low"`
}

// Defaults of Config.
const (
	DefaultGroup = "citywatch-dispatch"
)

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = 2 * time.Minute
	}
	if c.FutureTolerance == 0 {
		c.FutureTolerance = 30 * time.Second
	}
	if c.MaxSpeedKmh == 0 {
		c.MaxSpeedKmh = 200
	}
	if c.JumpMinM == 0 {
		c.JumpMinM = 300
	}
	if c.AcceptTimeout == 0 {
		c.AcceptTimeout = 30 * time.Second
	}
	if c.Units == (UnitsBySeverity{}) {
		c.Units = UnitsBySeverity{Critical: 3, High: 2, Medium: 1, Low: 1}
	}
	if c.SkipRules == nil {
		c.SkipRules = []string{"device.offline", "camera.video_fault", "drone.link_lost", "vehicle.companion"}
	}
	if c.MaxAlertAge == 0 {
		c.MaxAlertAge = 10 * time.Minute
	}
	if c.CoverageGapAfter == 0 {
		c.CoverageGapAfter = 2 * time.Minute
	}
	if c.CoverageTiers == nil {
		c.CoverageTiers = []int{1}
	}
	c.Model.SetDefaults()
	if c.CellM == 0 {
		c.CellM = 2000
	}
	if c.Lookback == 0 {
		c.Lookback = time.Hour
	}
	if c.PositionsReplay == 0 {
		c.PositionsReplay = c.StaleAfter
	}
	if c.Tick == 0 {
		c.Tick = time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = 5 * time.Millisecond
	}
	if c.MaxPending == 0 {
		c.MaxPending = 10_000
	}
}

// Validate reports the first field that is not usable, by its YAML name.
func (c Config) Validate() error {
	positive := func(name string, d time.Duration) error {
		if d <= 0 {
			return fmt.Errorf("dispatch.%s: must be positive, got %s", name, d)
		}
		return nil
	}
	if c.ShareDistricts && len(c.Districts) > 0 {
		return errors.New("dispatch.districts: must be empty with share_districts (the group assigns the districts)")
	}
	if c.Group == "" {
		return errors.New("dispatch.group: must not be empty")
	}
	for _, e := range []error{
		positive("stale_after", c.StaleAfter), positive("future_tolerance", c.FutureTolerance),
		positive("accept_timeout", c.AcceptTimeout), positive("max_alert_age", c.MaxAlertAge),
		positive("coverage_gap_after", c.CoverageGapAfter), positive("lookback", c.Lookback),
		positive("positions_replay", c.PositionsReplay), positive("tick", c.Tick), positive("max_wait", c.MaxWait),
	} {
		if e != nil {
			return e
		}
	}
	switch {
	case c.MaxSpeedKmh <= 0:
		return fmt.Errorf("dispatch.max_speed_kmh: must be positive, got %v", c.MaxSpeedKmh)
	case c.JumpMinM < 0:
		return fmt.Errorf("dispatch.jump_min_m: must not be negative, got %v", c.JumpMinM)
	case c.Units.Critical < 1 || c.Units.High < 1 || c.Units.Medium < 1 || c.Units.Low < 1:
		return fmt.Errorf("dispatch.units: every severity needs at least 1 unit, got %+v", c.Units)
	case c.Units.Critical > 10 || c.Units.High > 10 || c.Units.Medium > 10 || c.Units.Low > 10:
		return fmt.Errorf("dispatch.units: at most 10 units per alert, got %+v", c.Units)
	case c.CellM < 100:
		return fmt.Errorf("dispatch.cell_m: must be ≥ 100, got %v", c.CellM)
	case c.MaxPending < 1:
		return fmt.Errorf("dispatch.max_pending: must be ≥ 1, got %d", c.MaxPending)
	}
	for _, t := range c.CoverageTiers {
		if t != 1 && t != 3 && t != 5 {
			return fmt.Errorf("dispatch.coverage_tiers: %d is not 1, 3 or 5", t)
		}
	}
	return c.Model.Validate()
}

// unitsFor returns how many units an alert of severity s gets.
func (u UnitsBySeverity) unitsFor(s string) int {
	switch s {
	case "critical":
		return u.Critical
	case "high":
		return u.High
	case "medium":
		return u.Medium
	}
	return u.Low
}
