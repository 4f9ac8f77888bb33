package simulators

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"citywatch/event"
	"citywatch/internal/city"
)

// Rule ids of the default rule pack (CONTRACT.md section 6) that scenarios
// plant.
const (
	RuleHotlist      = "vehicle.hotlist"
	RuleCloned       = "vehicle.cloned_plate"
	RuleCompanion    = "vehicle.companion"
	RuleWatchlist    = "person.watchlist"
	RuleBulkRepeat   = "fuel.bulk_repeat"
	RuleBulkNoPermit = "fuel.bulk_no_permit"
	RuleCrowd        = "crowd.gathering"
	RuleViolence     = "camera.violence"
	RuleNightZone    = "zone.night_intrusion"
	RuleOffline      = "device.offline"
	RuleVideoFault   = "camera.video_fault"
	RuleDroneDetect  = "drone.detection"
	RuleLinkLost     = "drone.link_lost"
	RuleCoverageGap  = "dispatch.coverage_gap"
	RuleSLABreach    = "dispatch.sla_breach"
)

// Scenario is a plan of incidents to plant in the simulated city, read from
// YAML (unknown fields rejected). Offsets are from the start of the run;
// with Repeat the whole plan comes again every Repeat, with fresh subjects
// (hotlist and watchlist entries stay the same).
type Scenario struct {
	Name      string           `yaml:"name"`
	Repeat    time.Duration    `yaml:"repeat"`
	Hotlist   []HotlistEntry   `yaml:"hotlist"`
	Watchlist []WatchlistEntry `yaml:"watchlist"`
	Incidents []Incident       `yaml:"incidents"`
}

// HotlistEntry is a row of the vehicle hotlist CSV (CONTRACT.md section 6).
type HotlistEntry struct {
	Plate     string `yaml:"plate"`
	Severity  string `yaml:"severity"`
	Reason    string `yaml:"reason"`
	Tolerance int    `yaml:"tolerance"`
	Covert    bool   `yaml:"covert"`
}

// WatchlistEntry is a row of the person watchlist CSV.
type WatchlistEntry struct {
	BuyerID  string `yaml:"buyer_id"`
	Name     string `yaml:"name"`
	Severity string `yaml:"severity"`
	Reason   string `yaml:"reason"`
}

// Incident is one planted situation: an instance of Rule at At, or with
// NearMiss a situation close to it that must not raise it. Variant picks
// a form where a rule has several; Plate and Read name the hotlist entry
// and the plate as the checkpoint reads it (vehicle.hotlist); BuyerID names
// a watchlist entry (person.watchlist).
type Incident struct {
	Rule     string        `yaml:"rule"`
	At       time.Duration `yaml:"at"`
	NearMiss bool          `yaml:"near_miss"`
	Variant  string        `yaml:"variant"`
	Plate    string        `yaml:"plate"`
	Read     string        `yaml:"read"`
	BuyerID  string        `yaml:"buyer_id"`
}

//go:embed scenarios/*.yaml
var scenarioFiles embed.FS

// DefaultScenario is the name of the built-in scenario that plants every
// rule of the default pack and a near miss of each.
const DefaultScenario = "default"

// LoadScenario reads a scenario file, or the built-in scenario of that name
// ("default") when no such file exists.
func LoadScenario(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var ferr error
		b, ferr = scenarioFiles.ReadFile("scenarios/" + path + ".yaml")
		if ferr != nil {
			return nil, fmt.Errorf("cannot load scenario: %w", err)
		}
	}
	return ParseScenario(b)
}

// ParseScenario decodes and validates a scenario.
func ParseScenario(b []byte) (*Scenario, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var s Scenario
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("cannot decode scenario: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("invalid scenario: %w", err)
	}
	return &s, nil
}

var planters = map[string]func(p *planter, in Incident, t time.Time) error{
	RuleHotlist: plantHotlist, RuleCloned: plantCloned, RuleCompanion: plantCompanion, RuleWatchlist: plantWatchlist,
	RuleBulkRepeat: plantBulkRepeat, RuleBulkNoPermit: plantBulkNoPermit, RuleCrowd: plantCrowd, RuleViolence: plantViolence,
	RuleNightZone: plantNightZone, RuleOffline: plantOffline, RuleVideoFault: plantVideoFault, RuleDroneDetect: plantDroneDetection,
	RuleLinkLost: plantLinkLost, RuleCoverageGap: plantCoverageGap, RuleSLABreach: plantSLABreach,
}

// Validate reports the first bad field.
func (s *Scenario) Validate() error {
	if s.Repeat < 0 {
		return fmt.Errorf("repeat: must not be negative")
	}
	hot := map[string]bool{}
	for i, h := range s.Hotlist {
		p, ok := event.NormalizePlate(h.Plate)
		if !ok || p != h.Plate {
			return fmt.Errorf("hotlist[%d]: %q is not a plate in normal form", i, h.Plate)
		}
		if h.Tolerance < 0 || h.Tolerance > 2 {
			return fmt.Errorf("hotlist[%d]: tolerance must be 0–2", i)
		}
		hot[h.Plate] = true
	}
	watch := map[string]bool{}
	for i, w := range s.Watchlist {
		if !event.ValidIDNumber(w.BuyerID) {
			return fmt.Errorf("watchlist[%d]: %q is not a valid identity number", i, w.BuyerID)
		}
		watch[w.BuyerID] = true
	}
	for i, in := range s.Incidents {
		if planters[in.Rule] == nil {
			return fmt.Errorf("incidents[%d]: rule %q cannot be planted", i, in.Rule)
		}
		if in.At < 0 || s.Repeat > 0 && in.At >= s.Repeat {
			return fmt.Errorf("incidents[%d]: at must be in [0, repeat)", i)
		}
		switch in.Rule {
		case RuleHotlist:
			if !hot[in.Plate] {
				return fmt.Errorf("incidents[%d]: plate %q is not on the scenario's hotlist", i, in.Plate)
			}
			if in.Read != "" {
				if _, ok := event.NormalizePlate(in.Read); !ok {
					return fmt.Errorf("incidents[%d]: read %q is not a valid plate", i, in.Read)
				}
			}
		case RuleWatchlist:
			if !in.NearMiss && !watch[in.BuyerID] {
				return fmt.Errorf("incidents[%d]: buyer_id is not on the scenario's watchlist", i)
			}
		}
	}
	return nil
}

// HotlistCSV returns the scenario's hotlist in the CSV form of CONTRACT.md
// section 6.
func (s *Scenario) HotlistCSV() []byte {
	var b bytes.Buffer
	b.WriteString("plate,severity,reason,tolerance,covert\n")
	for _, h := range s.Hotlist {
		fmt.Fprintf(&b, "%s,%s,%s,%d,%t\n", h.Plate, h.Severity, h.Reason, h.Tolerance, h.Covert)
	}
	return b.Bytes()
}

// WatchlistCSV returns the scenario's person watchlist as CSV.
func (s *Scenario) WatchlistCSV() []byte {
	var b bytes.Buffer
	b.WriteString("buyer_id,severity,reason\n")
	for _, w := range s.Watchlist {
		fmt.Fprintf(&b, "%s,%s,%s\n", w.BuyerID, w.Severity, w.Reason)
	}
	return b.Bytes()
}

// Truth is what a run of a scenario must and must not raise.
type Truth struct {
	Scenario string        `json:"scenario"`
	Seed     uint64        `json:"seed"`
	Start    time.Time     `json:"start"`
	End      time.Time     `json:"end"`
	Expect   []Expectation `json:"expect"`
	// Skipped lists incidents that could not be planted in the simulated
	// share of the city (a small --scale), with the reason.
	Skipped []string `json:"skipped,omitempty"`
}

// Expectation is one alert a run must raise (Raise) or must not raise (a
// near miss). The alert's event_time falls in [From, To].
type Expectation struct {
	Rule    string    `json:"rule"`
	Raise   bool      `json:"raise"`
	Subject Subject   `json:"subject"`
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	// Note says what was planted.
	Note string `json:"note"`
	// Evidence are the ids of the planted events.
	Evidence []string `json:"evidence,omitempty"`
}

// Subject is an alert's subject (CONTRACT.md section 3). A pair's id is
// its two plates in normal form, sorted, joined by "|", as the rule engine
// names pairs. A person's id is the buyer's pseudonym once Pseudonymize has
// run; BuyerID keeps the simulated identity number so that it can.
type Subject struct {
	Kind    string `json:"kind"`
	ID      string `json:"id"`
	BuyerID string `json:"buyer_id,omitempty"`
}

// Pseudonymize fills the ids of person subjects with their pseudonyms under
// p and drops the identity numbers.
func (t *Truth) Pseudonymize(p *event.Pseudonymizer) {
	for i := range t.Expect {
		s := &t.Expect[i].Subject
		if s.Kind == "person" && s.BuyerID != "" {
			s.ID = p.Pseudonym(s.BuyerID)
			s.BuyerID = ""
		}
	}
}

// JSON returns the truth as indented JSON.
func (t *Truth) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot encode truth: %w", err)
	}
	return append(b, '\n'), nil
}

// planted is an event a scenario adds to the stream.
type planted struct {
	e    event.Event
	kind city.Kind
}

// window is a stretch of simulated time, [from, to).
type window struct{ from, to time.Time }

func inWindows(ws []window, t time.Time) bool {
	for _, w := range ws {
		if !t.Before(w.from) && t.Before(w.to) {
			return true
		}
	}
	return false
}

// planter turns a scenario's incidents into events, silences and busy
// units, and writes down what they must raise.
type planter struct {
	c       *city.City
	sim     *Sim
	rng     *rand.Rand
	events  []planted
	silence map[string][]window
	busy    map[string][]window
	truth   []Expectation
	ids     ids
	hot     map[string]HotlistEntry
	watch   map[string]WatchlistEntry
	// lastWatch is the time of the last purchase planted for each
	// watched identity number.
	lastWatch map[string]time.Time
	once      map[string]bool
}

func (p *planter) expect(rule string, raise bool, kind, id string, from, to time.Time, note string, evidence []string) {
	p.truth = append(p.truth, Expectation{Rule: rule, Raise: raise, Subject: Subject{Kind: kind, ID: id}, From: from, To: to, Note: note, Evidence: evidence})
}

func (p *planter) add(e event.Event, k city.Kind) string {
	e.ID = p.ids.next()
	p.events = append(p.events, planted{e: e, kind: k})
	return e.ID
}

// freshPlate returns a plate no vehicle of the fleet, hotlist or earlier
// incident uses, even with look-alike characters folded.
func (p *planter) freshPlate() Vehicle {
	for {
		v := NewVehicle(p.rng)
		if v.Type == "motorcycle" || v.Color == "white" {
			continue
		}
		if p.sim.traffic.Reserve(v.Plate) {
			return v
		}
	}
}

func (p *planter) freshPerson() Person {
	for {
		q := NewPerson(p.rng)
		if !p.sim.reservedIDs[q.ID] {
			p.sim.reservedIDs[q.ID] = true
			return q
		}
	}
}

// urbanNode returns a random road node of the urban core.
func (p *planter) urbanNode() int {
	r := p.sim.traffic.Roads
	for {
		i := p.rng.IntN(len(r.Nodes))
		if r.urban[i] {
			return i
		}
	}
}

// drive plants the passes of vehicle v along route from t at the roads'
// speeds, with offset added to every time, and returns their ids and times.
func (p *planter) drive(v Vehicle, read string, route []int, t time.Time, offset time.Duration) ([]string, []time.Time) {
	r := p.sim.traffic.Roads
	var ids []string
	var times []time.Time
	for i, node := range route {
		if i > 0 {
			sp := r.speed(route[i-1], node)
			t = t.Add(durationOf(r.edge[route[i-1]][node] / (sp / 3.6)))
		}
		d := r.Nodes[node]
		e := event.Event{Type: event.TypeCheckpointPass, DeviceID: d.ID, Time: t.Add(offset), Lat: d.Lat, Lon: d.Lon,
			Lane: 1 + p.rng.IntN(3), Plate: read, PlateColor: v.Color, VehicleType: v.Type, VehicleColor: v.Paint,
			SpeedKmh: math.Round(30 + 30*p.rng.Float64()), Confidence: 0.95}
		if i > 0 {
			f := r.Nodes[route[i-1]]
			e.HeadingDeg, e.HasHeading = bearing(f.Lat, f.Lon, d.Lat, d.Lon), true
		}
		ids = append(ids, p.add(e, city.KindCheckpoint))
		times = append(times, t.Add(offset))
	}
	return ids, times
}

// routeFrom returns a route of at least n nodes from an urban node.
func (p *planter) routeFrom(n int) []int {
	r := p.sim.traffic.Roads
	for {
		a := p.urbanNode()
		b := p.rng.IntN(len(r.Nodes))
		if route := r.Route(a, b); len(route) >= n {
			return route[:n]
		}
	}
}

func plantHotlist(p *planter, in Incident, t time.Time) error {
	h := p.hot[in.Plate]
	v := p.freshPlate()
	v.Plate = h.Plate
	read := in.Read
	if read == "" {
		read = h.Plate
	}
	ids, times := p.drive(v, read, p.routeFrom(3), t, 0)
	note := fmt.Sprintf("hotlisted %s (tolerance %d) read as %s at 3 checkpoints", h.Plate, h.Tolerance, read)
	p.expect(RuleHotlist, !in.NearMiss, "plate", h.Plate, times[0], times[len(times)-1], note, ids)
	return nil
}

func plantCloned(p *planter, in Incident, t time.Time) error {
	r := p.sim.traffic.Roads
	v := p.freshPlate()
	kmh := 320.0
	if in.NearMiss {
		kmh = 180
	}
	a := p.urbanNode()
	var b int
	for {
		b = p.rng.IntN(len(r.Nodes))
		if d := city.DistanceM(r.Nodes[a].Lat, r.Nodes[a].Lon, r.Nodes[b].Lat, r.Nodes[b].Lon); d > 25000 {
			break
		}
	}
	d := city.DistanceM(r.Nodes[a].Lat, r.Nodes[a].Lon, r.Nodes[b].Lat, r.Nodes[b].Lon)
	id1, t1 := p.drive(v, v.Plate, []int{a}, t, 0)
	t2 := t.Add(durationOf(d / (kmh / 3.6)))
	id2, _ := p.drive(v, v.Plate, []int{b}, t2, 0)
	note := fmt.Sprintf("%s at %s then %s, %.1f km apart, %.0f km/h apart", v.Plate, r.Nodes[a].ID, r.Nodes[b].ID, d/1000, kmh)
	p.expect(RuleCloned, !in.NearMiss, "plate", v.Plate, t1[0], t2, note, append(id1, id2...))
	return nil
}

func plantCompanion(p *planter, in Incident, t time.Time) error {
	a, b := p.freshPlate(), p.freshPlate()
	route := p.routeFrom(4)
	together := 4
	if in.NearMiss {
		together = 2
	}
	ida, ta := p.drive(a, a.Plate, route, t, 0)
	gap := time.Duration(8+p.rng.IntN(15)) * time.Second
	idb, tb := p.drive(b, b.Plate, route[:together], t, gap)
	pair := []string{a.Plate, b.Plate}
	slices.Sort(pair)
	note := fmt.Sprintf("%s and %s %s apart at %d common checkpoints", a.Plate, b.Plate, gap, together)
	p.expect(RuleCompanion, !in.NearMiss, "pair", strings.Join(pair, "|"), ta[min(2, together-1)], tb[len(tb)-1], note, append(ida, idb...))
	return nil
}

// purchase plants one fuel purchase.
func (p *planter) purchase(who Person, st *city.Device, t time.Time, container string, litres float64, permit string) string {
	e := event.Event{Type: event.TypeFuelPurchase, DeviceID: st.ID, Time: t, Lat: st.Lat, Lon: st.Lon, StationID: st.Station,
		BuyerID: who.ID, BuyerName: who.Name, Fuel: "92", Container: container, VolumeL: litres, PermitNo: permit}
	if container == "vehicle" {
		e.Plate = who.Plate
	}
	return p.add(e, city.KindFuelTerminal)
}

// station returns a simulated fuel terminal.
func (p *planter) station() *city.Device {
	ts := p.sim.all[city.KindFuelTerminal]
	return ts[p.rng.IntN(len(ts))]
}

// watchlistSuppress is the suppress of person.watchlist in the default
// rule pack: a watched buyer's purchases less than this apart are one
// situation, the later ones updating the alert of the first.
const watchlistSuppress = 24 * time.Hour

func plantWatchlist(p *planter, in Incident, t time.Time) error {
	who := p.freshPerson()
	if !in.NearMiss {
		w := p.watch[in.BuyerID]
		who.ID, who.Name = w.BuyerID, w.Name
	} else if w, ok := p.watch[in.BuyerID]; ok {
		// Same name as a watched person, another identity number.
		who.Name = w.Name
	}
	who.Plate = p.freshPlate().Plate
	st := p.station()
	id := p.purchase(who, st, t, "vehicle", 45, "")
	note := fmt.Sprintf("%s buys 45 L at %s", who.Name, st.Station)
	raise := !in.NearMiss
	if last, ok := p.lastWatch[who.ID]; ok && raise && t.Sub(last) <= watchlistSuppress {
		// The same watched person again within a day: the purchase
		// updates the open alert and must not raise a new one.
		raise = false
		note += fmt.Sprintf(", %s after the last: an update of the open alert, not a new one", t.Sub(last))
	}
	if !in.NearMiss {
		p.lastWatch[who.ID] = t
	}
	p.expect(RuleWatchlist, raise, "person", "", t, t, note, []string{id})
	p.truth[len(p.truth)-1].Subject.BuyerID = who.ID
	return nil
}

func plantBulkRepeat(p *planter, in Incident, t time.Time) error {
	who := p.freshPerson()
	permit := fmt.Sprintf("襄公油%08d", p.rng.IntN(1e8))
	s1, s2 := p.station(), p.station()
	for s2 == s1 {
		s2 = p.station()
	}
	var ids []string
	var note string
	last := t.Add(40 * time.Minute)
	switch {
	case in.NearMiss:
		ids = append(ids, p.purchase(who, s1, t, "bulk", 30, permit), p.purchase(who, s1, last, "bulk", 30, permit))
		note = "2 bulk purchases of 30 L with a permit at one station, 40 min apart"
	case in.Variant == "volume":
		last = t
		ids = append(ids, p.purchase(who, s1, t, "bulk", 110, permit))
		note = "one bulk purchase of 110 L with a permit"
	default:
		ids = append(ids, p.purchase(who, s1, t, "bulk", 25, permit), p.purchase(who, s2, last, "bulk", 25, permit))
		note = fmt.Sprintf("bulk purchases of 25 L with a permit at %s and %s, 40 min apart", s1.Station, s2.Station)
	}
	p.expect(RuleBulkRepeat, !in.NearMiss, "person", "", last, last, note, ids)
	p.truth[len(p.truth)-1].Subject.BuyerID = who.ID
	return nil
}

func plantBulkNoPermit(p *planter, in Incident, t time.Time) error {
	who := p.freshPerson()
	st := p.station()
	litres, permit := 30.0, ""
	note := "bulk purchase of 30 L without a permit"
	switch {
	case in.NearMiss && in.Variant == "small":
		litres, note = 15, "bulk purchase of 15 L without a permit"
	case in.NearMiss:
		permit, note = fmt.Sprintf("襄公油%08d", p.rng.IntN(1e8)), "bulk purchase of 30 L with a permit"
	}
	id := p.purchase(who, st, t, "bulk", litres, permit)
	p.expect(RuleBulkNoPermit, !in.NearMiss, "person", "", t, t, note, []string{id})
	p.truth[len(p.truth)-1].Subject.BuyerID = who.ID
	return nil
}

// errNoSubject says that the simulated share of the city holds no device
// fit for an incident; the incident is skipped and listed in the truth.
var errNoSubject = errors.New("no fitting device among the simulated ones")

// camera returns a random simulated camera watching one of places (any
// place when none is given), or nil when none is found.
func (p *planter) camera(places ...string) *city.Device {
	cs := p.sim.all[city.KindCamera]
	for range 20000 {
		if len(cs) == 0 {
			break
		}
		d := cs[p.rng.IntN(len(cs))]
		if (len(places) == 0 && d.Place != city.PlaceZone) || slices.Contains(places, d.Place) {
			if !p.used(d.ID) {
				return d
			}
		}
	}
	return nil
}

// usedOnce is used for subjects that must not come again in a later
// round either.
func (p *planter) usedOnce(id string) bool {
	if p.once[id] {
		return true
	}
	p.once[id] = true
	return false
}

// used reports whether a device already carries an incident, so that two
// incidents never share a subject.
func (p *planter) used(id string) bool {
	if p.sim.usedDevices[id] {
		return true
	}
	p.sim.usedDevices[id] = true
	return false
}

func (p *planter) detection(d *city.Device, t time.Time, object, behavior string, count int, conf float64) string {
	e := event.Event{Type: event.TypeCameraDetection, DeviceID: d.ID, Time: t, Lat: d.Lat, Lon: d.Lon, CameraClass: d.Class,
		Object: object, Behavior: behavior, Count: count, Confidence: conf}
	e.TrackID = fmt.Sprintf("p%d", p.rng.IntN(1e9))
	return p.add(e, city.KindCamera)
}

func plantCrowd(p *planter, in Incident, t time.Time) error {
	d := p.camera(city.PlaceMarket, city.PlaceStation)
	if d == nil {
		return errNoSubject
	}
	offsets := []time.Duration{0, 80 * time.Second, 160 * time.Second, 240 * time.Second}
	note := "persons ≥ 50 in view 4 times within 4 minutes"
	if in.NearMiss {
		offsets = []time.Duration{0, 4 * time.Minute, 8 * time.Minute}
		note = "persons ≥ 50 in view 3 times, never 3 within 5 minutes"
	}
	var ids []string
	for _, o := range offsets {
		ids = append(ids, p.detection(d, t.Add(o), "person", "crowd", 55+p.rng.IntN(40), 0.9))
	}
	p.expect(RuleCrowd, !in.NearMiss, "device", d.ID, t.Add(offsets[2]), t.Add(offsets[len(offsets)-1]), note, ids)
	return nil
}

func plantViolence(p *planter, in Incident, t time.Time) error {
	d := p.camera(city.PlaceStreet, city.PlaceMarket)
	if d == nil {
		return errNoSubject
	}
	conf, note := 0.92, "fight detected with confidence 0.92"
	if in.NearMiss {
		conf, note = 0.7, "fight detected with confidence 0.70"
	}
	id := p.detection(d, t, "person", "fight", 2+p.rng.IntN(3), conf)
	p.expect(RuleViolence, !in.NearMiss, "device", d.ID, t, t, note, []string{id})
	return nil
}

// nextLocal returns the first time at or after t that is hh:mm local time
// on one of days (any day when days is empty).
func nextLocal(t time.Time, hh, mm int, days ...time.Weekday) time.Time {
	l := t.In(city.Location)
	c := time.Date(l.Year(), l.Month(), l.Day(), hh, mm, 0, 0, city.Location)
	for c.Before(t) || len(days) > 0 && !slices.Contains(days, c.Weekday()) {
		c = c.AddDate(0, 0, 1)
	}
	return c
}

func plantNightZone(p *planter, in Incident, t time.Time) error {
	at := nextLocal(t, 2, 10+p.rng.IntN(30))
	if in.NearMiss {
		at = nextLocal(t, 14, 10+p.rng.IntN(30), time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday)
	}
	// Several rounds of a day land in the same night: a zone carries one
	// planted intrusion a night, or the rule would see one situation.
	night := at.In(city.Location).Format(time.DateOnly)
	var d *city.Device
	for range 1000 {
		d = p.camera(city.PlaceZone)
		if d == nil {
			return errNoSubject
		}
		if p.c.Zone(d.Zone).Kind == city.ZoneSchool && !p.usedOnce(d.Zone+"@"+night) {
			break
		}
		d = nil
	}
	if d == nil {
		return errNoSubject
	}
	z := p.c.Zone(d.Zone)
	note := fmt.Sprintf("a person inside %s at %s", z.Name, at.In(city.Location).Format("15:04 Mon"))
	if in.NearMiss {
		note = fmt.Sprintf("a person inside %s at %s, outside its guarded hours", z.Name, at.In(city.Location).Format("15:04 Mon"))
	}
	id := p.detection(d, at, "person", "", 1, 0.9)
	p.expect(RuleNightZone, !in.NearMiss, "zone", z.ID, at, at, note, []string{id})
	return nil
}

func plantOffline(p *planter, in Incident, t time.Time) error {
	if in.Variant == "site" {
		// A whole site (several cameras on one pole or building) goes dark.
		sites := p.c.SiteDevices()
		for range 1000 {
			d := p.camera(city.PlaceStreet, city.PlaceRoad)
			if d == nil {
				break
			}
			ds := sites[d.Site]
			if len(ds) < 3 || !p.sim.allActive(ds) || p.used(d.Site) {
				continue
			}
			for _, id := range ds {
				p.silence[id] = append(p.silence[id], window{t, t.Add(15 * time.Minute)})
				p.sim.usedDevices[id] = true
				p.expect(RuleOffline, false, "device", id, t, t.Add(15*time.Minute), "one of the devices of a silent site: the site alert stands for it", nil)
			}
			p.expect(RuleOffline, true, "area", d.Site, t.Add(4*time.Minute), t.Add(7*time.Minute), fmt.Sprintf("all %d cameras of site %s silent for 15 min", len(ds), d.Site), nil)
			return nil
		}
		return errNoSubject
	}
	d := p.camera()
	if d == nil {
		return errNoSubject
	}
	span, note := 12*time.Minute, "camera silent for 12 min"
	if in.NearMiss {
		span, note = 3*time.Minute, "camera silent for 3 min"
	}
	p.silence[d.ID] = append(p.silence[d.ID], window{t, t.Add(span)})
	from, to := t.Add(4*time.Minute), t.Add(7*time.Minute)
	if in.NearMiss {
		from, to = t, t.Add(15*time.Minute)
	}
	p.expect(RuleOffline, !in.NearMiss, "device", d.ID, from, to, note, nil)
	return nil
}

func plantVideoFault(p *planter, in Incident, t time.Time) error {
	d := p.camera()
	if d == nil {
		return errNoSubject
	}
	status := "video_loss"
	if in.Variant == "tamper" {
		status = "tamper"
	}
	if in.NearMiss {
		status = "blur"
	}
	e := event.Event{Type: event.TypeCameraHealth, DeviceID: d.ID, Time: t, Lat: d.Lat, Lon: d.Lon, Status: status}
	id := p.add(e, city.KindCamera)
	e.Time, e.Status = t.Add(10*time.Minute), "ok"
	ok := p.add(e, city.KindCamera)
	p.expect(RuleVideoFault, !in.NearMiss, "device", d.ID, t, t, "camera.health "+status+", ok 10 min later", []string{id, ok})
	return nil
}

// flyingDrone returns a simulated drone on a mission from t for at least
// need, and the time to use (t or up to two hours later); nil when there
// is none.
func (p *planter) flyingDrone(t time.Time, need time.Duration) (*city.Device, time.Time, time.Time) {
	ds := p.sim.all[city.KindDrone]
	for tt := t; tt.Before(t.Add(2 * time.Hour)); tt = tt.Add(time.Minute) {
		for _, k := range p.rng.Perm(len(ds)) {
			d := ds[k]
			flying, start, _ := DroneMission(d.ID, p.sim.cfg.Seed, tt)
			if flying && start.Add(missionFlight).Sub(tt) > need+time.Minute && tt.Sub(start) > 2*time.Minute && !p.sim.usedDevices[d.ID] {
				p.sim.usedDevices[d.ID] = true
				return d, tt.Truncate(time.Second), start
			}
		}
	}
	return nil, t, t
}

func plantDroneDetection(p *planter, in Incident, t time.Time) error {
	// Not over a protected zone: a person seen there at night is a
	// zone.night_intrusion as well, which this incident does not plant.
	var d *city.Device
	var at, start time.Time
	var lat, lon, alt float64
	for range 20 {
		if d, at, start = p.flyingDrone(t, time.Minute); d == nil {
			return errNoSubject
		}
		if lat, lon, alt, _, _ = p.sim.Drones.Position(d, start, at); len(p.c.ZonesAt(lat, lon)) == 0 {
			break
		}
		d, t = nil, at.Add(time.Minute)
	}
	if d == nil {
		return errNoSubject
	}
	behavior := "smoke_fire"
	if in.Variant != "" {
		behavior = in.Variant
	}
	if in.NearMiss {
		behavior = "loitering"
	}
	e := event.Event{Type: event.TypeDroneDetection, DeviceID: d.ID, Time: at, Lat: lat, Lon: lon, AltM: alt,
		Object: "person", Behavior: behavior, Count: 3, Confidence: 0.9}
	id := p.add(e, city.KindDrone)
	p.expect(RuleDroneDetect, !in.NearMiss, "device", d.ID, at, at, "drone detection "+behavior, []string{id})
	return nil
}

func plantLinkLost(p *planter, in Incident, t time.Time) error {
	span := 90 * time.Second
	if in.NearMiss {
		span = 20 * time.Second
	}
	d, at, _ := p.flyingDrone(t, span)
	if d == nil {
		return errNoSubject
	}
	p.silence[d.ID] = append(p.silence[d.ID], window{at, at.Add(span)})
	from, to := at, at.Add(span)
	if in.NearMiss {
		to = at.Add(5 * time.Minute)
	}
	p.expect(RuleLinkLost, !in.NearMiss, "device", d.ID, from.Add(-time.Second), to, fmt.Sprintf("drone on a mission silent for %s", span), nil)
	return nil
}

func plantCoverageGap(p *planter, in Incident, t time.Time) error {
	// The 1-minute circle farthest from every other circle's units, so
	// that no neighbour covers for it.
	var best *city.Circle
	bestD := math.Inf(-1)
	for i := range p.c.Circles {
		c := &p.c.Circles[i]
		if c.TierMinutes != 1 || p.sim.usedDevices[c.ID] || !p.sim.allActive(c.Units) {
			continue
		}
		near := math.Inf(1)
		for j := range p.c.Circles {
			o := &p.c.Circles[j]
			if o != c {
				near = math.Min(near, city.DistanceM(c.Lat, c.Lon, o.Lat, o.Lon)-o.RadiusM)
			}
		}
		if near > bestD {
			best, bestD = c, near
		}
	}
	if best == nil {
		return errNoSubject
	}
	p.sim.usedDevices[best.ID] = true
	span, note := 6*time.Minute, "every unit of the circle busy for 6 min"
	if in.NearMiss {
		span, note = 90*time.Second, "every unit of the circle busy for 90 s"
	}
	for _, u := range best.Units {
		p.busy[u] = append(p.busy[u], window{t, t.Add(span)})
	}
	from, to := t.Add(2*time.Minute), t.Add(4*time.Minute)
	if in.NearMiss {
		from, to = t, t.Add(10*time.Minute)
	}
	p.expect(RuleCoverageGap, !in.NearMiss, "circle", best.ID, from, to, note, nil)
	return nil
}

// plantSLABreach plants a fight at the camera farthest from every circle
// (where the units patrol), beyond the reach of any unit within its tier:
// the dispatcher sends the nearest units anyway, none is on scene in time,
// and dispatch.sla_breach is raised for the fight's alert at its deadline.
// The near miss is a fight at the centre of a 3- or 5-minute circle, where
// its units patrol, reached in time.
func plantSLABreach(p *planter, in Incident, t time.Time) error {
	var best *city.Device
	bestD := math.Inf(-1)
	if in.NearMiss {
		bestD = math.Inf(1)
	}
	for _, d := range p.sim.all[city.KindCamera] {
		if d.Place == city.PlaceZone || p.sim.usedDevices[d.ID] {
			continue
		}
		near := math.Inf(1) // to the edge of the nearest circle; the near miss: to the centre of a 3- or 5-minute one
		for i := range p.c.Circles {
			c := &p.c.Circles[i]
			switch {
			case !in.NearMiss:
				near = math.Min(near, city.DistanceM(d.Lat, d.Lon, c.Lat, c.Lon)-c.RadiusM)
			case c.TierMinutes >= 3:
				near = math.Min(near, city.DistanceM(d.Lat, d.Lon, c.Lat, c.Lon))
			}
		}
		if in.NearMiss && near < bestD || !in.NearMiss && near > bestD {
			best, bestD = d, near
		}
	}
	if best == nil {
		return errNoSubject
	}
	p.sim.usedDevices[best.ID] = true
	id := p.detection(best, t, "person", "fight", 3, 0.95)
	tier := 5
	if c, _ := p.c.CircleFor(best.Lat, best.Lon); c != nil {
		tier = c.TierMinutes
	}
	deadline := t.Add(time.Duration(tier) * time.Minute)
	note := fmt.Sprintf("fight %.1f km outside the nearest circle, tier %d min", bestD/1000, tier)
	if in.NearMiss {
		note = fmt.Sprintf("fight %.0f m from a circle's centre, tier %d min", bestD, tier)
	}
	p.expect(RuleViolence, true, "device", best.ID, t, t, note, []string{id})
	alertID := event.AlertID(RuleViolence, event.Subject{Kind: "device", ID: best.ID}, t)
	p.expect(RuleSLABreach, !in.NearMiss, "alert", alertID, deadline, deadline.Add(time.Minute), note, nil)
	return nil
}
