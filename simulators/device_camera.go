package simulators

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

// CameraConfig sets what the cameras report.
type CameraConfig struct {
	// DetectionsPerHour is the daily mean of detections per camera.
	DetectionsPerHour float64 `yaml:"detections_per_hour"`
	// PlateShare is the share of vehicle detections by Class-A road and
	// street cameras that read a plate.
	PlateShare float64 `yaml:"plate_share"`
	// BlurPerDay is how often a camera's picture degrades (blur, then ok
	// again), per camera per day.
	BlurPerDay float64 `yaml:"blur_per_day"`
}

// SetDefaults fills zero fields.
func (c *CameraConfig) SetDefaults() {
	if c.DetectionsPerHour == 0 {
		c.DetectionsPerHour = 200
	}
	if c.PlateShare == 0 {
		c.PlateShare = 0.5
	}
	if c.BlurPerDay == 0 {
		c.BlurPerDay = 0.1
	}
}

// Validate reports the first field out of range.
func (c CameraConfig) Validate() error {
	switch {
	case c.DetectionsPerHour < 0:
		return fmt.Errorf("camera.detections_per_hour: must not be negative")
	case c.PlateShare < 0 || c.PlateShare > 1:
		return fmt.Errorf("camera.plate_share: must be 0–1")
	case c.BlurPerDay < 0:
		return fmt.Errorf("camera.blur_per_day: must not be negative")
	}
	return nil
}

// Background limits: the background stream never meets a rule's condition
// on its own, so that every alert of a run is one a scenario planted.
const (
	maxBackgroundCount = 45   // persons in view; crowd.gathering needs 50
	maxBackgroundFight = 0.78 // camera.violence needs 0.8
)

type camGroup struct {
	rhythm *Rhythm
	cams   []*city.Device
	node   []int // nearest road node within 2 km, or -1
	// zones are the protected zones each camera stands in, by their
	// polygons: a street camera may stand inside a school's grounds
	// without being one of the school's own cameras.
	zones [][]*city.Zone
	arr   *poisson
}

type recovery struct {
	at  time.Time
	cam *city.Device
}

type recoveries []recovery

func (h recoveries) Len() int { return len(h) }
func (h recoveries) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].cam.ID < h[j].cam.ID
}
func (h recoveries) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *recoveries) Push(x any)   { *h = append(*h, x.(recovery)) }
func (h *recoveries) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Cameras simulates the Class-A and Class-B cameras: detections of people
// and vehicles with the daily rhythm of the place each camera watches
// (quiet at night, commuting peaks, evening crowds at markets and
// stations), track ids, rare behaviours, plates read from vehicles parked
// nearby, picture faults that come and go, and a heartbeat each minute.
type Cameras struct {
	cfg      CameraConfig
	c        *city.City
	traffic  *Traffic
	groups   []*camGroup
	all      []*city.Device
	hb       *ticker
	blur     *poisson
	blurred  map[string]bool
	recover  recoveries // bounded by the number of cameras
	rng      *rand.Rand
	ids      ids
	track    uint64
	trackBuf []byte
	e        event.Event
	// Detections counts detections emitted.
	Detections uint64
}

// NewCameras returns the simulator of the cameras cams of c (the scaled
// share of the registry); traffic lends plates to vehicle detections.
func NewCameras(cfg CameraConfig, c *city.City, cams []*city.Device, traffic *Traffic, rate float64, seed uint64, start time.Time) *Cameras {
	rng := rand.New(rand.NewPCG(seed, 0xca3e))
	k := &Cameras{cfg: cfg, c: c, traffic: traffic, all: cams, rng: rng, ids: newIDs("cam", seed), blurred: map[string]bool{}}
	byPlace := map[string]*camGroup{}
	order := []string{city.PlaceRoad, city.PlaceStreet, city.PlaceResidential, city.PlaceMarket, city.PlaceStation, city.PlaceZone}
	rhythms := map[string]*Rhythm{
		city.PlaceRoad: &rhythmTraffic, city.PlaceStreet: &rhythmStreet, city.PlaceResidential: &rhythmResidential,
		city.PlaceMarket: &rhythmMarket, city.PlaceStation: &rhythmStation, city.PlaceZone: &rhythmZone,
	}
	for _, p := range order {
		byPlace[p] = &camGroup{rhythm: rhythms[p]}
	}
	phases := make([]time.Duration, len(cams))
	for i, d := range cams {
		g := byPlace[d.Place]
		if g == nil {
			g = byPlace[city.PlaceStreet]
		}
		g.cams = append(g.cams, d)
		node := -1
		if traffic != nil && d.Class == city.ClassA && (d.Place == city.PlaceRoad || d.Place == city.PlaceStreet) {
			if n, dist := traffic.Roads.Nearest(d.Lat, d.Lon); dist < 2000 {
				node = n
			}
		}
		g.node = append(g.node, node)
		zs := c.ZonesAt(d.Lat, d.Lon)
		if z := c.Zone(d.Zone); z != nil && !slices.Contains(zs, z) {
			zs = append(zs, z)
		}
		g.zones = append(g.zones, zs)
		phases[i] = time.Duration(hash64(d.ID, seed) % uint64(time.Minute))
	}
	for _, p := range order {
		g := byPlace[p]
		if len(g.cams) == 0 {
			continue
		}
		g.arr = newPoisson(float64(len(g.cams))*cfg.DetectionsPerHour*rate/3600, g.rhythm, rand.New(rand.NewPCG(seed, hash64(p, seed))), start)
		k.groups = append(k.groups, g)
	}
	k.hb = newTicker(time.Minute, phases, start)
	k.blur = newPoisson(float64(len(cams))*cfg.BlurPerDay/86400, &flat, rng, start)
	return k
}

func anyActive(zs []*city.Zone, t time.Time) bool {
	for _, z := range zs {
		if z.Active(t) {
			return true
		}
	}
	return false
}

// flat is a constant rhythm.
var flat = Rhythm{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}

// Step emits every detection, health report and heartbeat after the
// previous Step and at or before now; each kind in time order.
func (k *Cameras) Step(now time.Time, emit Emit) {
	for _, g := range k.groups {
		g.arr.until(now, func(t time.Time) {
			i := k.rng.IntN(len(g.cams))
			k.detect(g, i, t, emit)
		})
	}
	if len(k.all) > 0 {
		k.blur.until(now, func(t time.Time) {
			d := k.all[k.rng.IntN(len(k.all))]
			if k.blurred[d.ID] {
				return
			}
			k.blurred[d.ID] = true
			k.health(d, t, "blur", "图像模糊", emit)
			heap.Push(&k.recover, recovery{at: t.Add(durationOf(600 + 5400*k.rng.Float64())), cam: d})
		})
	}
	for len(k.recover) > 0 && !k.recover[0].at.After(now) {
		r := heap.Pop(&k.recover).(recovery)
		delete(k.blurred, r.cam.ID)
		k.health(r.cam, r.at, "ok", "", emit)
	}
	k.hb.until(now, func(i int, at time.Time) {
		d := k.all[i]
		e := &k.e
		e.Reset()
		e.ID, e.Type, e.DeviceID, e.Time, e.Lat, e.Lon = k.ids.next(), event.TypeDeviceHeartbeat, d.ID, at, d.Lat, d.Lon
		emit(e)
	})
}

func (k *Cameras) health(d *city.Device, t time.Time, status, detail string, emit Emit) {
	e := &k.e
	e.Reset()
	e.ID, e.Type, e.DeviceID, e.Time, e.Lat, e.Lon = k.ids.next(), event.TypeCameraHealth, d.ID, t, d.Lat, d.Lon
	e.Status, e.Detail = status, detail
	emit(e)
}

func (k *Cameras) detect(g *camGroup, i int, t time.Time, emit Emit) {
	d := g.cams[i]
	rng := k.rng
	e := &k.e
	e.Reset()
	e.ID, e.Type, e.DeviceID, e.Time, e.Lat, e.Lon = k.ids.next(), event.TypeCameraDetection, d.ID, t, d.Lat, d.Lon
	e.CameraClass = d.Class
	e.Confidence = math.Round((0.6+0.39*rng.Float64())*100) / 100
	e.Count = 1
	hour := t.In(city.Location).Hour()
	night := hour >= 22 || hour < 6
	x := rng.Float64()
	switch d.Place {
	case city.PlaceRoad:
		switch {
		case x < 0.65:
			e.Object = "vehicle"
		case x < 0.85:
			e.Object = "non_motor"
		default:
			e.Object = "person"
		}
	default:
		switch {
		case x < 0.5:
			e.Object = "person"
		case x < 0.75:
			e.Object = "vehicle"
		case x < 0.92:
			e.Object = "non_motor"
		default:
			e.Object = "face"
			if d.Class == city.ClassB {
				e.Object = "person"
			}
		}
	}
	// Inside a protected zone nobody walks at night or in its guarded
	// hours in the background: zone.night_intrusion sees a person at the
	// camera's position, whatever the camera was put up for.
	if zs := g.zones[i]; len(zs) > 0 && (e.Object == "person" || e.Object == "face") && (night || anyActive(zs, t)) {
		e.Object = "vehicle"
	}
	switch e.Object {
	case "person":
		switch d.Place {
		case city.PlaceMarket, city.PlaceStation:
			e.Count = 1 + int(rng.ExpFloat64()*6*g.rhythm.At(t))
		default:
			e.Count = 1 + int(rng.ExpFloat64()*1.5)
		}
		e.Count = min(e.Count, maxBackgroundCount)
		switch y := rng.Float64(); {
		case y < 0.003:
			e.Behavior = "loitering"
		case y < 0.0035:
			e.Behavior = "fall"
		case y < 0.0037:
			e.Behavior = "fight"
			e.Confidence = math.Round((0.5+(maxBackgroundFight-0.5)*rng.Float64())*100) / 100
		case y < 0.006 && e.Count >= 20:
			e.Behavior = "crowd"
		}
	case "vehicle":
		if rng.Float64() < 0.002 {
			e.Behavior = "wrong_way"
		}
		if n := g.node[i]; n >= 0 && rng.Float64() < k.cfg.PlateShare {
			if v := k.traffic.SightAt(n, t); v != nil {
				e.Plate, e.PlateColor = v.Plate, v.Color
			}
		}
	}
	k.track++
	k.trackBuf = append(k.trackBuf[:0], 't')
	k.trackBuf = strconv.AppendUint(k.trackBuf, k.track, 36)
	e.TrackID = string(k.trackBuf)
	k.Detections++
	emit(e)
}
