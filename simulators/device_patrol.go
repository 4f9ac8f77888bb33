package simulators

import (
	"math"
	"math/rand/v2"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

// PositionEvery is how often a patrol unit reports its position.
const PositionEvery = 5 * time.Second

// unitState is where a unit is going: it drives from (fromLat, fromLon) at
// leave to (toLat, toLon), arriving at arrive, and waits there until next.
type unitState struct {
	dev              *city.Device
	circle           *city.Circle
	fromLat, fromLon float64
	toLat, toLon     float64
	leave, arrive    time.Time
	next             time.Time
	kmh              float64
	// resp is the dispatch the unit is answering, or nil (responder.go).
	resp *response
}

// Patrol simulates the patrol units: each reports its position every 5 s
// and moves about its home circle from point to point at road speed,
// waiting a few minutes at each; mobile police platforms mostly stand.
// Status is "available" in the background; a scenario may make units busy.
// A unit answers the dispatches Sim.Dispatch hands it (responder.go): it
// reports "busy" from acceptance until it clears.
type Patrol struct {
	c     *city.City
	units []unitState
	byID  map[string]int
	tick  *ticker
	rng   *rand.Rand
	ans   *rand.Rand // the answers to dispatches, apart so that they do not shift the patrols
	ids   ids
	e     event.Event
	// responding are the indexes of the units answering a dispatch.
	responding []int
	// Positions counts the reports emitted, Answers the patrol.status
	// answers.
	Positions, Answers uint64
}

// NewPatrol returns the simulator of units.
func NewPatrol(c *city.City, units []*city.Device, seed uint64, start time.Time) *Patrol {
	rng := rand.New(rand.NewPCG(seed, 0x9a7e))
	p := &Patrol{c: c, rng: rng, ids: newIDs("unit", seed), byID: map[string]int{}, ans: newResponderRand(seed)}
	phases := make([]time.Duration, len(units))
	for i, d := range units {
		u := unitState{dev: d, circle: c.Circle(d.Circle), fromLat: d.Lat, fromLon: d.Lon, toLat: d.Lat, toLon: d.Lon,
			leave: start, arrive: start}
		u.next = start.Add(durationOf(rng.Float64() * 600))
		if u.circle.TierMinutes == 1 {
			u.next = start
		}
		p.byID[d.ID] = len(p.units)
		p.units = append(p.units, u)
		phases[i] = time.Duration(hash64(d.ID, seed)%uint64(PositionEvery/time.Millisecond)) * time.Millisecond
	}
	p.tick = newTicker(PositionEvery, phases, start)
	return p
}

// Step emits every position report after the previous Step and at or
// before now, in time order.
func (p *Patrol) Step(now time.Time, emit Emit) {
	p.tick.until(now, func(i int, at time.Time) {
		u := &p.units[i]
		if !at.Before(u.next) {
			p.move(u, at)
		}
		lat, lon, kmh, heading := u.at(at)
		e := &p.e
		e.Reset()
		e.ID, e.Type, e.DeviceID, e.Time, e.Lat, e.Lon = p.ids.next(), event.TypePatrolPosition, u.dev.ID, at, lat, lon
		e.SpeedKmh, e.HeadingDeg, e.Status = kmh, heading, "available"
		if u.resp != nil && u.resp.phase != phaseReading {
			e.Status = "busy"
		}
		p.Positions++
		emit(e)
	})
}

// move picks the unit's next destination inside its home circle.
func (p *Patrol) move(u *unitState, t time.Time) {
	u.fromLat, u.fromLon, _, _ = u.at(t)
	// Units of a 1-minute circle keep close to its centre, so that one of
	// them can always reach it within the minute.
	spread := 0.8
	if u.circle.TierMinutes == 1 {
		spread = 0.3
	}
	r := u.circle.RadiusM * spread * math.Sqrt(p.rng.Float64())
	if u.dev.Class == city.ClassPlatform {
		r *= 0.2
	}
	a := p.rng.Float64() * 2 * math.Pi
	u.toLat, u.toLon = city.Offset(u.circle.Lat, u.circle.Lon, r*math.Cos(a), r*math.Sin(a))
	u.kmh = 25 + 20*p.rng.Float64()
	dist := city.DistanceM(u.fromLat, u.fromLon, u.toLat, u.toLon) * RoadFactor
	u.leave = t
	u.arrive = t.Add(durationOf(dist / (u.kmh / 3.6)))
	wait := 120 + 600*p.rng.Float64()
	if u.dev.Class == city.ClassPlatform {
		wait *= 4
	}
	u.next = u.arrive.Add(durationOf(wait))
}

// at returns the unit's position, speed and heading at t.
func (u *unitState) at(t time.Time) (lat, lon, kmh, heading float64) {
	if !t.Before(u.arrive) || !u.arrive.After(u.leave) {
		return round6(u.toLat), round6(u.toLon), 0, 0
	}
	f := t.Sub(u.leave).Seconds() / u.arrive.Sub(u.leave).Seconds()
	lat = u.fromLat + (u.toLat-u.fromLat)*f
	lon = u.fromLon + (u.toLon-u.fromLon)*f
	return round6(lat), round6(lon), math.Round(u.kmh*10) / 10, bearing(u.fromLat, u.fromLon, u.toLat, u.toLon)
}

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }
