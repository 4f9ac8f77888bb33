package simulators

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"citywatch/event"
	"citywatch/internal/city"
)

// Config sets a simulation of the city.
type Config struct {
	// Seed makes the run: the same city, seed, config and scenario give the
	// same messages.
	Seed uint64 `yaml:"seed"`
	// Scale is the share of the city's cameras and fuel terminals
	// simulated, (0, 1]; it also scales the fleet, the buyers and the
	// trips. Checkpoints, drones and patrol units are always all there.
	Scale float64 `yaml:"scale"`
	// Rate multiplies the rates of detections, trips and purchases;
	// heartbeats, telemetry and positions keep their protocol periods.
	Rate float64 `yaml:"rate"`
	// Start is the simulated time of the first event.
	Start time.Time `yaml:"start"`
	// Duration bounds the planted incidents of a repeating scenario; 0
	// plants a week of them.
	Duration time.Duration `yaml:"duration"`

	Camera     CameraConfig     `yaml:"camera"`
	Checkpoint CheckpointConfig `yaml:"checkpoint"`
	Fuel       FuelConfig       `yaml:"fuel"`
	Faults     Faults           `yaml:"faults"`
}

// Faults sets the imperfections of the field: each share is per message.
type Faults struct {
	// DupShare is the share of messages sent twice (same id).
	DupShare float64 `yaml:"dup_share"`
	// BadShare is the share of extra malformed messages.
	BadShare float64 `yaml:"bad_share"`
	// LateShare is the share of messages delivered late, up to LateMax
	// after their turn, out of order.
	LateShare float64       `yaml:"late_share"`
	LateMax   time.Duration `yaml:"late_max"`
	// SkewShare is the share of devices whose clock is off by up to
	// ±SkewMax.
	SkewShare float64       `yaml:"skew_share"`
	SkewMax   time.Duration `yaml:"skew_max"`
	// DriftShare is the share of devices whose clock runs fast or slow by
	// up to DriftMaxPPM parts per million from the start of the run (a
	// cheap oscillator without NTP: 100 ppm is 8.6 s a day).
	DriftShare  float64 `yaml:"drift_share"`
	DriftMaxPPM float64 `yaml:"drift_max_ppm"`
	// JumpShare is the share of devices whose clock jumps once, at a time
	// within the run's first day, by up to ±JumpMax (a reset to a wrong
	// time, a bad NTP answer); it stays off from then on.
	JumpShare float64       `yaml:"jump_share"`
	JumpMax   time.Duration `yaml:"jump_max"`
}

// clockFault is how one device's clock is off: a fixed skew, a drift
// rate, a jump from a moment on.
type clockFault struct {
	skew   time.Duration
	drift  float64 // seconds per second, signed
	jumpAt time.Time
	jumpBy time.Duration
}

// offset returns how far the device's clock is off at real time t of a
// run that began at start.
func (c *clockFault) offset(start, t time.Time) time.Duration {
	d := c.skew + time.Duration(c.drift*float64(t.Sub(start)))
	if !c.jumpAt.IsZero() && !t.Before(c.jumpAt) {
		d += c.jumpBy
	}
	return d
}

// DefaultStart is the simulated start of a run when none is given: a
// Thursday midnight in Xiangyang.
var DefaultStart = time.Date(2026, 11, 26, 0, 0, 0, 0, city.Location)

// SetDefaults fills zero fields.
func (c *Config) SetDefaults() {
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Scale == 0 {
		c.Scale = 1
	}
	if c.Rate == 0 {
		c.Rate = 1
	}
	if c.Start.IsZero() {
		c.Start = DefaultStart
	}
	if c.Faults.LateMax == 0 {
		c.Faults.LateMax = 2 * time.Minute
	}
	if c.Faults.SkewMax == 0 {
		c.Faults.SkewMax = 90 * time.Second
	}
	if c.Faults.DriftMaxPPM == 0 {
		c.Faults.DriftMaxPPM = 200
	}
	if c.Faults.JumpMax == 0 {
		c.Faults.JumpMax = 10 * time.Minute
	}
	c.Camera.SetDefaults()
	c.Checkpoint.SetDefaults()
	c.Fuel.SetDefaults()
}

// Validate reports the first field out of range.
func (c Config) Validate() error {
	share := func(name string, v float64) error {
		if v < 0 || v > 1 {
			return fmt.Errorf("faults.%s: must be 0–1, got %v", name, v)
		}
		return nil
	}
	switch {
	case c.Scale <= 0 || c.Scale > 1:
		return fmt.Errorf("scale: must be in (0, 1], got %v", c.Scale)
	case c.Rate <= 0:
		return fmt.Errorf("rate: must be positive, got %v", c.Rate)
	case c.Duration < 0:
		return errors.New("duration: must not be negative")
	}
	for _, err := range []error{
		share("dup_share", c.Faults.DupShare), share("bad_share", c.Faults.BadShare),
		share("late_share", c.Faults.LateShare), share("skew_share", c.Faults.SkewShare),
		share("drift_share", c.Faults.DriftShare), share("jump_share", c.Faults.JumpShare),
		c.Camera.Validate(), c.Checkpoint.Validate(), c.Fuel.Validate(),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// Stats counts what a Sim has emitted.
type Stats struct {
	ByType    map[string]uint64 // valid events by type
	Planted   uint64            // planted events emitted
	Silenced  uint64            // events dropped by a scenario's silences
	Dups      uint64
	Bad       uint64
	Late      uint64
	LateFlush uint64 // late messages sent early because the holding queue was full
}

// Total returns the number of valid events.
func (s *Stats) Total() uint64 {
	n := uint64(0)
	for _, v := range s.ByType {
		n += v
	}
	return n
}

// Sim is the simulated city: every device of the registry (the scaled
// share), the traffic on its roads, and a scenario's planted incidents,
// stepped by simulated time. It is not safe for concurrent use.
type Sim struct {
	cfg   Config
	City  *city.City
	Truth Truth

	traffic     *Traffic
	Cameras     *Cameras
	Checkpoints *Checkpoints
	Fuel        *Fuel
	Drones      *Drones
	Patrol      *Patrol

	all         map[city.Kind][]*city.Device
	active      map[string]bool
	reservedIDs map[string]bool
	usedDevices map[string]bool

	planted []planted
	nextP   int
	silence map[string][]window
	busy    map[string][]window
	clocks  map[string]*clockFault

	faults *rand.Rand
	recent [][]byte // ring of recent messages for resends
	recKey []string
	recTop []string
	recN   int
	late   []lateMsg // held back, bounded by maxLate
	now    time.Time
	buf    []byte
	msg    Message
	Stats  Stats
	// places are the alert locations for the responding units.
	places alertPlaces
}

type lateMsg struct {
	due   time.Time
	topic string
	key   string
	value []byte
	id    string
	typ   string
}

// maxLate bounds the messages held back for late delivery; when it is
// full the oldest goes out at once (counted in Stats.LateFlush).
const maxLate = 4096

// New returns a simulation of c with cfg (defaults applied) and scenario sc
// (nil for none).
func New(c *city.City, cfg Config, sc *Scenario) (*Sim, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cannot start simulation: %w", err)
	}
	s := &Sim{
		cfg: cfg, City: c,
		all: map[city.Kind][]*city.Device{}, active: map[string]bool{},
		reservedIDs: map[string]bool{}, usedDevices: map[string]bool{},
		silence: map[string][]window{}, busy: map[string][]window{}, clocks: map[string]*clockFault{},
		faults: rand.New(rand.NewPCG(cfg.Seed, 0xfa17)),
		now:    cfg.Start.Add(-time.Nanosecond),
		Stats:  Stats{ByType: map[string]uint64{}},
	}
	for i := range c.Devices {
		d := &c.Devices[i]
		// Scale thins the many (cameras, fuel terminals) by site, so that
		// the devices that fail together stay together; checkpoints,
		// drones and patrol units are few and always all there.
		thin := d.Kind == city.KindCamera || d.Kind == city.KindFuelTerminal
		if thin && cfg.Scale < 1 && unit(hash64(cmp.Or(d.Site, d.ID), cfg.Seed^0x5ca1e)) >= cfg.Scale {
			continue
		}
		s.all[d.Kind] = append(s.all[d.Kind], d)
		s.active[d.ID] = true
		if cf := newClockFault(cfg, d.ID); cf != nil {
			s.clocks[d.ID] = cf
		}
	}
	reservedPlates := map[string]bool{}
	if sc != nil {
		for _, h := range sc.Hotlist {
			reservedPlates[plateKey(h.Plate)] = true
		}
		for _, w := range sc.Watchlist {
			s.reservedIDs[w.BuyerID] = true
		}
	}
	roads := NewRoads(c)
	nodeActive := make([]bool, len(roads.Nodes))
	for i, d := range roads.Nodes {
		nodeActive[i] = s.active[d.ID]
	}
	scaled := func(n int) int { return max(1000, int(float64(n)*cfg.Scale)) }
	s.traffic = NewTraffic(roads, scaled(cfg.Checkpoint.Vehicles), rand.New(rand.NewPCG(cfg.Seed, 0x7aff)), reservedPlates)
	s.Checkpoints = NewCheckpoints(cfg.Checkpoint, s.traffic, nodeActive, cfg.Rate*cfg.Scale, cfg.Seed, cfg.Start)
	s.Cameras = NewCameras(cfg.Camera, c, s.all[city.KindCamera], s.traffic, cfg.Rate, cfg.Seed, cfg.Start)
	s.Fuel = NewFuel(cfg.Fuel, s.all[city.KindFuelTerminal], s.traffic, scaled(cfg.Fuel.Buyers), s.reservedIDs, cfg.Rate, cfg.Seed, cfg.Start)
	s.Drones = NewDrones(c, s.all[city.KindDrone], cfg.Rate, cfg.Seed, cfg.Start)
	s.Patrol = NewPatrol(c, s.all[city.KindUnit], cfg.Seed, cfg.Start)
	s.Truth = Truth{Seed: cfg.Seed, Start: cfg.Start, Expect: []Expectation{}}
	if sc != nil {
		if err := s.plant(sc); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// allActive reports whether every device of ids is simulated.
func (s *Sim) allActive(ids []string) bool {
	for _, id := range ids {
		if !s.active[id] {
			return false
		}
	}
	return true
}

func (s *Sim) plant(sc *Scenario) error {
	p := &planter{c: s.City, sim: s, rng: rand.New(rand.NewPCG(s.cfg.Seed, 0x91a7)), silence: s.silence, busy: s.busy,
		ids: newIDs("plant", s.cfg.Seed), hot: map[string]HotlistEntry{}, watch: map[string]WatchlistEntry{},
		lastWatch: map[string]time.Time{}, once: map[string]bool{}}
	for _, h := range sc.Hotlist {
		p.hot[h.Plate] = h
	}
	for _, w := range sc.Watchlist {
		p.watch[w.BuyerID] = w
	}
	end := s.cfg.Start.Add(s.cfg.Duration)
	if s.cfg.Duration == 0 {
		end = s.cfg.Start.Add(7 * 24 * time.Hour)
	}
	s.Truth.Scenario, s.Truth.End = sc.Name, end
	for k := 0; ; k++ {
		base := s.cfg.Start.Add(time.Duration(k) * sc.Repeat)
		if k > 0 && (sc.Repeat == 0 || !base.Before(end)) {
			break
		}
		// Subjects may come again in the next round, not within one.
		clear(s.usedDevices)
		for i, in := range sc.Incidents {
			t := base.Add(in.At)
			if !t.Before(end) {
				continue
			}
			before := len(p.truth)
			if err := planters[in.Rule](p, in, t); errors.Is(err, errNoSubject) {
				s.Truth.Skipped = append(s.Truth.Skipped, fmt.Sprintf("incidents[%d] %s at %s: %v", i, in.Rule, t.Format(time.RFC3339), err))
				p.truth = p.truth[:before]
				continue
			} else if err != nil {
				return fmt.Errorf("cannot plant incidents[%d] %s: %w", i, in.Rule, err)
			}
			// An incident whose situation completes after the end is not
			// part of the run's truth; its events still go out.
			for _, x := range p.truth[before:] {
				if !x.From.After(end) {
					s.Truth.Expect = append(s.Truth.Expect, x)
				}
			}
			p.truth = p.truth[:before]
		}
	}
	slices.SortStableFunc(p.events, func(a, b planted) int { return a.e.Time.Compare(b.e.Time) })
	s.planted = p.events
	return nil
}

// Step emits every message with a simulated time after the previous Step
// and at or before now. The Message and its Value are reused after emit
// returns; copy what you keep.
func (s *Sim) Step(now time.Time, emit func(m *Message)) {
	if !now.After(s.now) {
		return
	}
	s.now = now
	wrap := func(kind city.Kind) Emit {
		return func(e *event.Event) { s.out(kind, e, emit) }
	}
	s.Cameras.Step(now, wrap(city.KindCamera))
	s.Checkpoints.Step(now, wrap(city.KindCheckpoint))
	s.Fuel.Step(now, wrap(city.KindFuelTerminal))
	s.Drones.Step(now, wrap(city.KindDrone))
	s.Patrol.Step(now, wrap(city.KindUnit))
	s.Patrol.respond(now, &s.places, wrap(city.KindUnit))
	for s.nextP < len(s.planted) && !s.planted[s.nextP].e.Time.After(now) {
		pl := &s.planted[s.nextP]
		s.nextP++
		s.Stats.Planted++
		s.out(pl.kind, &pl.e, emit)
	}
	for len(s.late) > 0 && !s.late[0].due.After(now) {
		s.sendLate(s.late[0], emit)
		s.late = s.late[1:]
	}
}

// Planted returns how many planted events have gone out.
func (s *Sim) Planted() uint64 { return s.Stats.Planted }

func (s *Sim) out(kind city.Kind, e *event.Event, emit func(m *Message)) {
	if ws, ok := s.silence[e.DeviceID]; ok && inWindows(ws, e.Time) {
		s.Stats.Silenced++
		return
	}
	if ws, ok := s.busy[e.DeviceID]; ok && e.Type == event.TypePatrolPosition && inWindows(ws, e.Time) {
		e.Status = "busy"
	}
	real := e.Time
	if cf, ok := s.clocks[e.DeviceID]; ok {
		e.Time = e.Time.Add(cf.offset(s.cfg.Start, real))
	}
	s.buf = AppendWire(s.buf[:0], e)
	e.Time = real
	topic := TopicOf(e.Type, kind)
	typ := e.Type.String()
	s.Stats.ByType[typ]++
	m := &s.msg
	*m = Message{Topic: topic, Key: []byte(e.DeviceID), Value: s.buf, Want: WantEvent, ID: e.ID, Type: typ,
		BuyerID: e.BuyerID, BuyerName: e.BuyerName}
	f := s.cfg.Faults
	if f.LateShare > 0 && s.faults.Float64() < f.LateShare {
		s.Stats.Late++
		s.hold(lateMsg{due: real.Add(durationOf(s.faults.Float64() * f.LateMax.Seconds())), topic: topic, key: e.DeviceID,
			value: slices.Clone(s.buf), id: e.ID, typ: typ}, emit)
	} else {
		emit(m)
	}
	if f.DupShare > 0 {
		s.remember(e.DeviceID, topic)
		if s.faults.Float64() < f.DupShare && s.recN > 0 {
			k := s.faults.IntN(min(s.recN, len(s.recent)))
			s.Stats.Dups++
			*m = Message{Topic: s.recTop[k], Key: []byte(s.recKey[k]), Value: s.recent[k], Want: WantDuplicate}
			emit(m)
		}
	}
	if f.BadShare > 0 && s.faults.Float64() < f.BadShare {
		s.Stats.Bad++
		*m = Message{Topic: topic, Key: []byte(e.DeviceID), Value: s.malformed(s.buf), Want: WantReject}
		emit(m)
	}
}

func (s *Sim) remember(key, topic string) {
	const ring = 256
	if len(s.recent) < ring {
		s.recent = append(s.recent, slices.Clone(s.buf))
		s.recKey = append(s.recKey, key)
		s.recTop = append(s.recTop, topic)
	} else {
		k := s.recN % ring
		s.recent[k] = append(s.recent[k][:0], s.buf...)
		s.recKey[k], s.recTop[k] = key, topic
	}
	s.recN++
}

func (s *Sim) hold(l lateMsg, emit func(m *Message)) {
	if len(s.late) >= maxLate {
		s.Stats.LateFlush++
		s.sendLate(s.late[0], emit)
		s.late = s.late[1:]
	}
	i, _ := slices.BinarySearchFunc(s.late, l.due, func(a lateMsg, t time.Time) int { return a.due.Compare(t) })
	s.late = slices.Insert(s.late, i, l)
}

func (s *Sim) sendLate(l lateMsg, emit func(m *Message)) {
	m := &s.msg
	*m = Message{Topic: l.topic, Key: []byte(l.key), Value: l.value, Want: WantEvent, ID: l.id, Type: l.typ}
	emit(m)
}

// malformed returns a broken copy of a valid message: cut short, not JSON,
// an impossible coordinate, a missing field or a wrong type.
func (s *Sim) malformed(v []byte) []byte {
	str := string(v)
	switch s.faults.IntN(5) {
	case 0:
		cut := len(str) / 2
		for cut > 0 && !utf8.RuneStart(str[cut]) {
			cut--
		}
		return []byte(str[:cut])
	case 1:
		return []byte("garbled frame " + fmt.Sprint(s.faults.IntN(1e6)))
	case 2:
		return []byte(strings.Replace(str, `"lat":`, `"lat":123.4,"lat_was":`, 1))
	case 3:
		return []byte(strings.Replace(str, `"device_id":`, `"device":`, 1))
	default:
		return []byte(strings.Replace(str, `"lat":`, `"lat":"north","lat_was":`, 1))
	}
}

// newClockFault returns the clock faults of device id under cfg, or nil
// for a device whose clock is right. Each fault is drawn from the device id
// and the seed, so a run is repeatable.
func newClockFault(cfg Config, id string) *clockFault {
	f := cfg.Faults
	var c clockFault
	faulty := false
	if f.SkewShare > 0 && unit(hash64(id, cfg.Seed^0x5e3)) < f.SkewShare {
		c.skew = time.Duration((2*unit(hash64(id, cfg.Seed^0x5e4)) - 1) * float64(f.SkewMax))
		faulty = true
	}
	if f.DriftShare > 0 && unit(hash64(id, cfg.Seed^0xd71f)) < f.DriftShare {
		c.drift = (2*unit(hash64(id, cfg.Seed^0xd720)) - 1) * f.DriftMaxPPM / 1e6
		faulty = true
	}
	if f.JumpShare > 0 && unit(hash64(id, cfg.Seed^0x1a3b)) < f.JumpShare {
		c.jumpAt = cfg.Start.Add(time.Duration(unit(hash64(id, cfg.Seed^0x1a3c)) * float64(24*time.Hour)))
		c.jumpBy = time.Duration((2*unit(hash64(id, cfg.Seed^0x1a3d)) - 1) * float64(f.JumpMax))
		faulty = true
	}
	if !faulty {
		return nil
	}
	return &c
}
