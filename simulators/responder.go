package simulators

import (
	"math/rand/v2"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

// How simulated patrol units answer dispatches, like people: after a
// moment's reading, most accept, a few decline, a very few never answer;
// an accepting unit sets off a second or two later with lights and siren,
// reports on scene on arrival and clears after dealing with it.
const (
	// DeclineShare is the share of dispatches a unit declines.
	DeclineShare = 0.05
	// SilentShare is the share of dispatches a unit never answers.
	SilentShare = 0.02
	answerMin   = 3 * time.Second
	answerMax   = 15 * time.Second
	// Response speeds on the road, km/h (the route is RoadFactor × the
	// straight line).
	responseKmhMin = 40.0
	responseKmhMax = 60.0
	onSceneMin     = 5 * time.Minute
	onSceneMax     = 15 * time.Minute
	// maxAlertPlaces bounds the alert locations remembered; the oldest
	// is forgotten first.
	maxAlertPlaces = 10_000
)

// Response phases of a unit answering a dispatch.
const (
	phaseReading = iota // assigned, not answered yet
	phaseAccepted
	phaseDriving
	phaseOnScene
)

// response is a unit's handling of one dispatch.
type response struct {
	dispatchID, alertID string
	phase               int
	next                time.Time // when the next step happens
	silent, decline     bool
	kmh                 float64
	onScene             time.Duration
	lat, lon            float64 // the scene
}

// alertPlaces remembers where alerts are, by id, for the units sent to
// them: a dispatch message carries no position.
type alertPlaces struct {
	pos   map[string][2]float64
	order []string
	head  int
}

func (a *alertPlaces) note(id string, lat, lon float64) {
	if a.pos == nil {
		a.pos = map[string][2]float64{}
	}
	if _, ok := a.pos[id]; ok {
		return
	}
	if len(a.order) < maxAlertPlaces {
		a.order = append(a.order, id)
	} else {
		delete(a.pos, a.order[a.head])
		a.order[a.head] = id
		a.head = (a.head + 1) % maxAlertPlaces
	}
	a.pos[id] = [2]float64{lat, lon}
}

// NoteAlert remembers where an alert of citywatch.alerts is, so that units
// dispatched to it know where to drive.
func (s *Sim) NoteAlert(a *event.Alert) {
	if a.Status == event.AlertFiring {
		s.places.note(a.ID, a.Lat, a.Lon)
	}
}

// Dispatch gives the simulated units a message of citywatch.dispatches at
// simulated time now: an assignment makes its unit answer in the coming
// seconds (Patrol); a reassignment or the end of a dispatch stops the
// unit's response to it. The simulation stays deterministic given the
// seed and the order of the messages and their times.
func (s *Sim) Dispatch(d *event.Dispatch, now time.Time) {
	i, ok := s.Patrol.byID[d.UnitID]
	if !ok {
		return
	}
	u := &s.Patrol.units[i]
	switch d.Status {
	case event.DispatchAssigned:
		if u.resp != nil {
			return // busy with another: it does not answer, and times out
		}
		p := s.Patrol
		r := &response{dispatchID: d.ID, alertID: d.AlertID, phase: phaseReading,
			next:    now.Add(answerMin + durationOf(p.ans.Float64()*(answerMax-answerMin).Seconds())),
			kmh:     responseKmhMin + p.ans.Float64()*(responseKmhMax-responseKmhMin),
			onScene: onSceneMin + durationOf(p.ans.Float64()*(onSceneMax-onSceneMin).Seconds())}
		x := p.ans.Float64()
		r.silent = x < SilentShare
		r.decline = !r.silent && x < SilentShare+DeclineShare
		u.resp = r
		p.responding = append(p.responding, i)
	case event.DispatchReassigned, event.DispatchCleared, event.DispatchDeclined:
		if u.resp != nil && u.resp.dispatchID == d.ID {
			s.Patrol.stand(u, now)
		}
	}
}

// stand ends u's response at t: it resumes patrolling from where it is.
func (p *Patrol) stand(u *unitState, t time.Time) {
	lat, lon, _, _ := u.at(t)
	u.fromLat, u.fromLon, u.toLat, u.toLon = lat, lon, lat, lon
	u.leave, u.arrive, u.next = t, t, t
	u.resp = nil
}

// respond emits the answers of the responding units due at or before now,
// in each unit's order.
func (p *Patrol) respond(now time.Time, places *alertPlaces, emit Emit) {
	keep := p.responding[:0]
	for _, i := range p.responding {
		u := &p.units[i]
		for u.resp != nil && !u.resp.next.After(now) {
			p.step(u, places, emit)
		}
		if u.resp != nil {
			keep = append(keep, i)
		}
	}
	p.responding = keep
}

// step takes u's response one step, at its time.
func (p *Patrol) step(u *unitState, places *alertPlaces, emit Emit) {
	r := u.resp
	t := r.next
	switch r.phase {
	case phaseReading:
		if r.silent {
			u.resp = nil
			return
		}
		place, ok := places.pos[r.alertID]
		if r.decline || !ok {
			p.answer(u, r, t, "declined", emit)
			u.resp = nil
			return
		}
		p.answer(u, r, t, "accepted", emit)
		r.phase, r.next = phaseAccepted, t.Add(time.Second+durationOf(2*p.ans.Float64()))
		r.lat, r.lon = place[0], place[1]
	case phaseAccepted:
		p.answer(u, r, t, "en_route", emit)
		// From where the unit is now (on its patrol leg), to the scene.
		u.fromLat, u.fromLon, _, _ = u.at(t)
		toLat, toLon := r.lat, r.lon
		u.toLat, u.toLon, u.kmh, u.leave = toLat, toLon, r.kmh, t
		dist := city.DistanceM(u.fromLat, u.fromLon, toLat, toLon) * RoadFactor
		u.arrive = t.Add(durationOf(dist / (r.kmh / 3.6)))
		u.next = u.arrive.Add(100 * 365 * 24 * time.Hour) // no patrolling while responding
		r.phase, r.next = phaseDriving, u.arrive
	case phaseDriving:
		p.answer(u, r, t, "on_scene", emit)
		r.phase, r.next = phaseOnScene, t.Add(r.onScene)
	case phaseOnScene:
		p.answer(u, r, t, "cleared", emit)
		p.stand(u, t)
	}
}

func (p *Patrol) answer(u *unitState, r *response, t time.Time, status string, emit Emit) {
	lat, lon, _, _ := u.at(t)
	e := &p.e
	e.Reset()
	e.ID, e.Type, e.DeviceID, e.Time, e.Lat, e.Lon = p.ids.next(), event.TypePatrolStatus, u.dev.ID, t, lat, lon
	e.DispatchID, e.Status = r.dispatchID, status
	p.Answers++
	emit(e)
}

// newResponderRand is the source of the units' answers, apart from the
// patrol movements so that answering does not change them before the
// first dispatch.
func newResponderRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x7e5b)) }
