package simulators

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

// CheckpointConfig sets the road traffic.
type CheckpointConfig struct {
	// TripsPerHour is the city-wide daily mean of vehicle trips started
	// per hour at scale 1; each trip passes every checkpoint on its route.
	TripsPerHour float64 `yaml:"trips_per_hour"`
	// Vehicles is the fleet at scale 1.
	Vehicles int `yaml:"vehicles"`
	// UnreadShare is the share of passes whose plate is not readable.
	UnreadShare float64 `yaml:"unread_share"`
}

// SetDefaults fills zero fields.
func (c *CheckpointConfig) SetDefaults() {
	if c.TripsPerHour == 0 {
		c.TripsPerHour = 36000
	}
	if c.Vehicles == 0 {
		c.Vehicles = 150000
	}
	if c.UnreadShare == 0 {
		c.UnreadShare = 0.01
	}
}

// Validate reports the first field out of range.
func (c CheckpointConfig) Validate() error {
	switch {
	case c.TripsPerHour < 0:
		return fmt.Errorf("checkpoint.trips_per_hour: must not be negative")
	case c.Vehicles < 1:
		return fmt.Errorf("checkpoint.vehicles: must be ≥ 1")
	case c.UnreadShare < 0 || c.UnreadShare > 1:
		return fmt.Errorf("checkpoint.unread_share: must be 0–1")
	}
	return nil
}

// Roads is the road network the simulated traffic drives on: one node per
// checkpoint, each joined to its nearest neighbours and along a minimum
// spanning tree so that every node is reachable, with shortest routes
// precomputed. Road distance is the great-circle distance × RoadFactor;
// urban roads are driven at 40 km/h, others at 80 km/h.
type Roads struct {
	Nodes []*city.Device
	urban []bool
	dist  [][]float64 // road metres along the shortest route
	next  [][]int16   // next hop on the shortest route
	edge  [][]float64 // road metres of a direct edge, 0 when none
	near  [][]int     // nodes within 15 km, for local trips
	// weight is how many trips start or end at a node.
	weight []float64
}

// RoadFactor is how much longer roads are than the straight line.
const RoadFactor = 1.3

// Road speeds in km/h.
const (
	urbanKmh   = 40.0
	highwayKmh = 80.0
)

const coreLat, coreLon = 32.035, 112.145

// NewRoads builds the road network over the city's checkpoints.
func NewRoads(c *city.City) *Roads {
	r := &Roads{Nodes: c.DevicesOf(city.KindCheckpoint)}
	n := len(r.Nodes)
	gc := func(i, j int) float64 {
		return city.DistanceM(r.Nodes[i].Lat, r.Nodes[i].Lon, r.Nodes[j].Lat, r.Nodes[j].Lon)
	}
	r.edge = make([][]float64, n)
	for i := range r.edge {
		r.edge[i] = make([]float64, n)
	}
	link := func(i, j int) {
		d := gc(i, j) * RoadFactor
		r.edge[i][j], r.edge[j][i] = d, d
	}
	for i, d := range r.Nodes {
		urban := city.DistanceM(d.Lat, d.Lon, coreLat, coreLon) < 12000 && d.Class == city.ClassElectronic
		r.urban = append(r.urban, urban)
		w := 1.0
		switch {
		case urban:
			w = 3
		case d.Class != city.ClassElectronic:
			w = 0.6
		}
		r.weight = append(r.weight, w)
		// The three nearest neighbours.
		best := []int{}
		for j := range n {
			if j == i {
				continue
			}
			best = append(best, j)
			for k := len(best) - 1; k > 0 && gc(i, best[k]) < gc(i, best[k-1]); k-- {
				best[k], best[k-1] = best[k-1], best[k]
			}
			if len(best) > 3 {
				best = best[:3]
			}
		}
		for _, j := range best {
			link(i, j)
		}
	}
	// Prim's minimum spanning tree joins the county towns to the core.
	in := make([]bool, n)
	if n > 0 {
		in[0] = true
	}
	for range n - 1 {
		bi, bj, bd := -1, -1, math.Inf(1)
		for i := range n {
			if !in[i] {
				continue
			}
			for j := range n {
				if !in[j] {
					if d := gc(i, j); d < bd {
						bi, bj, bd = i, j, d
					}
				}
			}
		}
		in[bj] = true
		link(bi, bj)
	}
	// Floyd–Warshall by travel distance.
	r.dist = make([][]float64, n)
	r.next = make([][]int16, n)
	for i := range n {
		r.dist[i] = make([]float64, n)
		r.next[i] = make([]int16, n)
		for j := range n {
			r.next[i][j] = -1
			switch {
			case i == j:
				r.next[i][j] = int16(j)
			case r.edge[i][j] > 0:
				r.dist[i][j] = r.edge[i][j]
				r.next[i][j] = int16(j)
			default:
				r.dist[i][j] = math.Inf(1)
			}
		}
	}
	for k := range n {
		for i := range n {
			for j := range n {
				if d := r.dist[i][k] + r.dist[k][j]; d < r.dist[i][j] {
					r.dist[i][j] = d
					r.next[i][j] = r.next[i][k]
				}
			}
		}
	}
	r.near = make([][]int, n)
	for i := range n {
		for j := range n {
			if i != j && gc(i, j) < 15000 {
				r.near[i] = append(r.near[i], j)
			}
		}
	}
	return r
}

// Route returns the nodes from a to b, both included.
func (r *Roads) Route(a, b int) []int {
	p := []int{a}
	for a != b {
		a = int(r.next[a][b])
		if a < 0 {
			return nil
		}
		p = append(p, a)
	}
	return p
}

// speed returns the road speed of the edge from a to b in km/h.
func (r *Roads) speed(a, b int) float64 {
	if r.urban[a] && r.urban[b] {
		return urbanKmh
	}
	return highwayKmh
}

// Nearest returns the node nearest a point and its distance in metres.
func (r *Roads) Nearest(lat, lon float64) (int, float64) {
	best, bd := -1, math.Inf(1)
	for i, n := range r.Nodes {
		if d := city.DistanceM(lat, lon, n.Lat, n.Lon); d < bd {
			best, bd = i, d
		}
	}
	return best, bd
}

// Traffic is the simulated fleet on the roads. Vehicles park at nodes and
// drive trips along shortest routes; a vehicle is in one place at a time,
// so its sightings never imply an impossible speed, and plates are unique.
type Traffic struct {
	Roads  *Roads
	Fleet  []Vehicle
	parked [][]int
	plates map[string]bool // plate keys (look-alikes folded) in use
	rng    *rand.Rand
}

// NewTraffic parks a fleet of n vehicles at the road nodes, by node weight.
// Plates in reserved (compared with look-alikes folded) are never issued.
func NewTraffic(roads *Roads, n int, rng *rand.Rand, reserved map[string]bool) *Traffic {
	t := &Traffic{Roads: roads, parked: make([][]int, len(roads.Nodes)), plates: map[string]bool{}, rng: rng}
	for k := range reserved {
		t.plates[k] = true
	}
	total := 0.0
	for _, w := range roads.weight {
		total += w
	}
	for len(t.Fleet) < n {
		v := NewVehicle(rng)
		k := plateKey(v.Plate)
		if t.plates[k] {
			continue
		}
		t.plates[k] = true
		x := rng.Float64() * total
		node := 0
		for i, w := range roads.weight {
			if x < w {
				node = i
				break
			}
			x -= w
		}
		t.Fleet = append(t.Fleet, v)
		t.park(len(t.Fleet)-1, node)
	}
	return t
}

// Reserve records a plate issued outside the fleet (planted incidents)
// and reports false if a fleet plate could be confused with it.
func (t *Traffic) Reserve(plate string) bool {
	k := plateKey(plate)
	if t.plates[k] {
		return false
	}
	t.plates[k] = true
	return true
}

func (t *Traffic) park(v, node int) {
	t.Fleet[v].node = node
	t.Fleet[v].slot = len(t.parked[node])
	t.parked[node] = append(t.parked[node], v)
}

func (t *Traffic) unpark(v int) {
	node, slot := t.Fleet[v].node, t.Fleet[v].slot
	l := t.parked[node]
	last := l[len(l)-1]
	l[slot] = last
	t.Fleet[last].slot = slot
	t.parked[node] = l[:len(l)-1]
	t.Fleet[v].node = -1
}

// SightAt returns a vehicle parked at node and free at tm, or nil, and
// keeps it there for the next three minutes, so that a camera's sighting
// and the vehicle's next checkpoint pass are physically consistent.
func (t *Traffic) SightAt(node int, tm time.Time) *Vehicle {
	l := t.parked[node]
	if len(l) == 0 {
		return nil
	}
	v := &t.Fleet[l[t.rng.IntN(len(l))]]
	if v.free.After(tm) {
		return nil
	}
	v.free = tm.Add(3 * time.Minute)
	return v
}

// trip is a vehicle on its way: it passes path[i] at at.
type trip struct {
	v     int
	path  []int
	i     int
	at    time.Time
	pace  float64 // the driver's pace: > 1 is faster than the road speed
	speed float64 // km/h on the edge just driven
	from  int     // previous node, -1 at the start
}

type tripHeap []*trip

func (h tripHeap) Len() int { return len(h) }
func (h tripHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].v < h[j].v
}
func (h tripHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *tripHeap) Push(x any)   { *h = append(*h, x.(*trip)) }
func (h *tripHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Checkpoints simulates the electronic checkpoints: a pass for every
// vehicle that drives through, and a heartbeat each minute. Trips start as
// a Poisson process with the traffic rhythm; at most one trip per vehicle
// is under way, so the queue of trips is bounded by the fleet.
type Checkpoints struct {
	cfg     CheckpointConfig
	traffic *Traffic
	active  []bool // whether a node's device is simulated (scale)
	starts  *poisson
	trips   tripHeap
	hb      *ticker
	rng     *rand.Rand
	ids     ids
	e       event.Event
	// Trips counts trips started; Passes counts passes emitted.
	Trips, Passes, Skipped uint64
}

// NewCheckpoints returns the checkpoint simulator over traffic; active
// says which nodes' devices are simulated. Rates are multiplied by rate.
func NewCheckpoints(cfg CheckpointConfig, traffic *Traffic, active []bool, rate float64, seed uint64, start time.Time) *Checkpoints {
	rng := rand.New(rand.NewPCG(seed, 0xc4ec))
	k := &Checkpoints{cfg: cfg, traffic: traffic, active: active, rng: rng, ids: newIDs("kk", seed)}
	k.starts = newPoisson(cfg.TripsPerHour*rate/3600, &rhythmTraffic, rng, start)
	var phases []time.Duration
	var who []int
	for i, d := range traffic.Roads.Nodes {
		if active[i] {
			phases = append(phases, time.Duration(hash64(d.ID, seed)%uint64(time.Minute)))
			who = append(who, i)
		}
	}
	hb := newTicker(time.Minute, phases, start)
	for i := range hb.who {
		hb.who[i] = who[hb.who[i]]
	}
	k.hb = hb
	return k
}

// Step emits every pass and heartbeat with a time after the previous Step
// and at or before now, passes in time order.
func (k *Checkpoints) Step(now time.Time, emit Emit) {
	roads := k.traffic.Roads
	k.starts.until(now, func(t time.Time) {
		k.startTrip(t)
	})
	for len(k.trips) > 0 && !k.trips[0].at.After(now) {
		tr := k.trips[0]
		node := tr.path[tr.i]
		if k.active[node] {
			k.pass(tr, emit)
		}
		if tr.i == len(tr.path)-1 {
			heap.Pop(&k.trips)
			v := &k.traffic.Fleet[tr.v]
			k.traffic.park(tr.v, node)
			v.free = tr.at
			continue
		}
		nxt := tr.path[tr.i+1]
		sp := roads.speed(node, nxt) * tr.pace * (0.9 + 0.2*k.rng.Float64())
		secs := roads.edge[node][nxt] / (sp / 3.6)
		tr.from, tr.i, tr.speed = node, tr.i+1, sp
		tr.at = tr.at.Add(durationOf(secs))
		heap.Fix(&k.trips, 0)
	}
	k.hb.until(now, func(i int, at time.Time) {
		d := roads.Nodes[i]
		e := &k.e
		e.Reset()
		e.ID, e.Type, e.DeviceID, e.Time, e.Lat, e.Lon = k.ids.next(), event.TypeDeviceHeartbeat, d.ID, at, d.Lat, d.Lon
		emit(e)
	})
}

func (k *Checkpoints) startTrip(t time.Time) {
	tr := k.traffic
	k.Trips++
	for range 8 {
		vi := k.rng.IntN(len(tr.Fleet))
		v := &tr.Fleet[vi]
		if v.node < 0 || v.free.After(t) {
			continue
		}
		from := v.node
		var to int
		if near := tr.Roads.near[from]; len(near) > 0 && k.rng.Float64() < 0.7 {
			to = near[k.rng.IntN(len(near))]
		} else {
			to = k.rng.IntN(len(tr.Roads.Nodes))
		}
		if to == from {
			continue
		}
		path := tr.Roads.Route(from, to)
		if path == nil {
			continue
		}
		tr.unpark(vi)
		heap.Push(&k.trips, &trip{v: vi, path: path, at: t, pace: 0.8 + 0.45*k.rng.Float64(), from: -1, speed: 20 + 20*k.rng.Float64()})
		return
	}
	k.Skipped++
}

func (k *Checkpoints) pass(tr *trip, emit Emit) {
	roads := k.traffic.Roads
	node := tr.path[tr.i]
	d := roads.Nodes[node]
	v := &k.traffic.Fleet[tr.v]
	e := &k.e
	e.Reset()
	e.ID, e.Type, e.DeviceID, e.Time, e.Lat, e.Lon = k.ids.next(), event.TypeCheckpointPass, d.ID, tr.at, d.Lat, d.Lon
	lanes := 4
	if d.Class == city.ClassInterProvincial {
		lanes = 6
	}
	e.Lane = 1 + k.rng.IntN(lanes)
	if k.rng.Float64() < k.cfg.UnreadShare {
		e.Plate, e.PlateColor = "", ""
	} else {
		e.Plate, e.PlateColor = v.Plate, v.Color
	}
	e.VehicleType, e.VehicleColor = v.Type, v.Paint
	e.SpeedKmh = math.Round(tr.speed*(0.75+0.3*k.rng.Float64())*10) / 10
	if tr.from >= 0 {
		f := roads.Nodes[tr.from]
		e.HeadingDeg, e.HasHeading = bearing(f.Lat, f.Lon, d.Lat, d.Lon), true
	}
	e.Confidence = 0.85 + 0.14*k.rng.Float64()
	k.Passes++
	emit(e)
}

// bearing returns the initial bearing from one point to another, 0–360.
func bearing(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	y := math.Sin((lon2-lon1)*rad) * math.Cos(lat2*rad)
	x := math.Cos(lat1*rad)*math.Sin(lat2*rad) - math.Sin(lat1*rad)*math.Cos(lat2*rad)*math.Cos((lon2-lon1)*rad)
	b := math.Round(math.Atan2(y, x)/rad*10) / 10
	if b < 0 {
		b += 360
	}
	if b >= 360 {
		b -= 360
	}
	return b
}
