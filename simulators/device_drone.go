package simulators

import (
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

// Drone missions: each drone flies a loop of its patrol area for
// missionFlight, lands and charges on its dock for the rest of the cycle,
// at a phase of its own.
const (
	missionCycle  = 50 * time.Minute
	missionFlight = 35 * time.Minute
	// dockReport is how often a docked drone reports its state.
	dockReport = 10 * time.Second
)

// DroneMission returns whether the drone id of a simulation seeded by seed
// is flying at t, the start of its current (or last) mission and the
// mission's number. Missions start on whole seconds.
func DroneMission(id string, seed uint64, t time.Time) (flying bool, start time.Time, n int64) {
	phase := time.Duration(hash64(id, seed)%uint64(missionCycle/time.Second)) * time.Second
	since := t.Sub(time.Unix(0, 0).Add(phase))
	n = int64(since / missionCycle)
	start = time.Unix(0, 0).Add(phase + time.Duration(n)*missionCycle)
	return t.Sub(start) < missionFlight, start, n
}

// Drones simulates the patrol drones: telemetry at 1 Hz while on a
// mission (a loop around the dock at 80–120 m, battery draining), a last
// report on landing with alt_m 0 and speed 0, a docked report every 10 s
// with mission_id "dock", and occasional detections. A rule tells a drone
// on a mission by its mission_id not being "dock".
type Drones struct {
	c      *city.City
	drones []*city.Device
	seed   uint64
	last   time.Time
	det    *poisson
	rng    *rand.Rand
	ids    ids
	mbuf   []byte
	e      event.Event
	// Telemetry and Detections count what was emitted.
	Telemetry, Detections uint64
}

// NewDrones returns the simulator of drones.
func NewDrones(c *city.City, drones []*city.Device, rate float64, seed uint64, start time.Time) *Drones {
	rng := rand.New(rand.NewPCG(seed, 0xd0e5))
	d := &Drones{c: c, drones: drones, seed: seed, last: start.Add(-time.Second).Truncate(time.Second), rng: rng, ids: newIDs("uav", seed)}
	// One detection per flying drone every 5 minutes on average: the
	// process runs for all drones and hits a docked one as a no-op.
	d.det = newPoisson(float64(len(drones))*rate/300, &flat, rng, start)
	return d
}

// Step emits every report after the previous Step and at or before now.
// Reports fall on whole seconds.
func (d *Drones) Step(now time.Time, emit Emit) {
	for t := d.last.Add(time.Second); !t.After(now); t = t.Add(time.Second) {
		for _, dr := range d.drones {
			d.report(dr, t, emit)
		}
		d.last = t
	}
	if len(d.drones) == 0 {
		return
	}
	d.det.until(now, func(t time.Time) {
		dr := d.drones[d.rng.IntN(len(d.drones))]
		if flying, start, n := DroneMission(dr.ID, d.seed, t); flying {
			d.detect(dr, t, start, n, emit)
		}
	})
}

// Position returns where a drone is at t of the mission that started at
// start: a circle of 1.5–3 km around the dock, flown at about 10 m/s.
func (d *Drones) Position(dr *city.Device, start, t time.Time) (lat, lon, alt, heading, speed float64) {
	h := hash64(dr.ID, d.seed)
	r := 1500 + 1500*unit(h)
	el := t.Sub(start).Seconds()
	climb := 60.0 // seconds to climb out and to return
	flight := missionFlight.Seconds()
	alt = 80 + 40*unit(h>>7)
	speed = 10
	if el < climb || el > flight-climb {
		// Climbing out to the loop or coming home.
		f := math.Min(el, flight-el) / climb
		lat, lon = city.Offset(dr.Lat, dr.Lon, r*f, 0)
		return lat, lon, alt * f, 90, speed
	}
	omega := 10 / r // rad/s
	a := (el - climb) * omega
	lat, lon = city.Offset(dr.Lat, dr.Lon, r*math.Cos(a), r*math.Sin(a))
	heading = math.Mod(360-a*180/math.Pi, 360) // counter-clockwise in x/y: east then north
	if heading < 0 {
		heading += 360
	}
	return lat, lon, alt, math.Round(heading), speed
}

func (d *Drones) report(dr *city.Device, t time.Time, emit Emit) {
	flying, start, n := DroneMission(dr.ID, d.seed, t)
	landedAt := start.Add(missionFlight)
	docked := !flying
	if docked && t.Sub(landedAt)%dockReport != 0 {
		return
	}
	e := &d.e
	e.Reset()
	e.ID, e.Type, e.DeviceID, e.Time = d.ids.next(), event.TypeDroneTelemetry, dr.ID, t
	if docked {
		e.Lat, e.Lon, e.MissionID = dr.Lat, dr.Lon, "dock"
		charged := t.Sub(landedAt).Seconds() / (missionCycle - missionFlight).Seconds()
		e.BatteryPct = math.Round(40 + 60*math.Min(1, charged))
	} else {
		e.Lat, e.Lon, e.AltM, e.HeadingDeg, e.SpeedMs = d.Position(dr, start, t)
		d.mbuf = append(d.mbuf[:0], dr.ID...)
		d.mbuf = append(d.mbuf, "-m"...)
		d.mbuf = strconv.AppendInt(d.mbuf, n, 10)
		e.MissionID = string(d.mbuf)
		e.BatteryPct = math.Round(100 - 60*t.Sub(start).Seconds()/missionFlight.Seconds())
	}
	d.Telemetry++
	emit(e)
}

func (d *Drones) detect(dr *city.Device, t, start time.Time, n int64, emit Emit) {
	e := &d.e
	e.Reset()
	lat, lon, alt, _, _ := d.Position(dr, start, t)
	e.ID, e.Type, e.DeviceID, e.Time, e.Lat, e.Lon, e.AltM = d.ids.next(), event.TypeDroneDetection, dr.ID, t, lat, lon, alt
	e.Confidence = math.Round((0.6+0.35*d.rng.Float64())*100) / 100
	e.Object = "vehicle"
	e.Count = 1 + d.rng.IntN(8)
	// People only outside protected zones, so that the background never
	// looks like an intrusion.
	if d.rng.Float64() < 0.5 && len(d.c.ZonesAt(lat, lon)) == 0 {
		e.Object = "person"
		e.Count = 1 + d.rng.IntN(15)
		if d.rng.Float64() < 0.05 {
			e.Behavior = "loitering"
		}
	}
	d.Detections++
	emit(e)
}
