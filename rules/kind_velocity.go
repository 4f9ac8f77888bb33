package rules

import (
	"math"
	"time"

	"citywatch/event"
)

// VelocitySpec is a velocity rule: two sightings of one key imply a speed
// no vehicle makes (a cloned plate). The newest sighting of each key is
// kept; each new one is compared with it.
//
//	velocity: {key: plate, max_kmh: 200, min_distance_km: 2, within: 6h}
type VelocitySpec struct {
	// Key is plate (default) or device. Plates that are not valid are
	// ignored.
	Key string `yaml:"key"`
	// MaxKmh is the speed above which two sightings raise an alert.
	MaxKmh float64 `yaml:"max_kmh"`
	// MinDistanceKm is the least distance between the sightings, so that
	// two checkpoints at one junction do not count.
	MinDistanceKm float64 `yaml:"min_distance_km"`
	// Within is the longest time between the sightings.
	Within time.Duration `yaml:"within"`
}

type velocityRule struct {
	key     keyField
	maxKmh  float64
	minDist float64 // km
	within  int64   // ms
}

func (s *VelocitySpec) compile() (kindSpec, error) {
	k, err := compileKey(s.Key, "plate")
	if err != nil {
		return nil, err
	}
	if !(s.MaxKmh > 0) {
		return nil, &fieldError{field: "max_kmh", msg: "must be positive"}
	}
	if s.MinDistanceKm < 0 {
		return nil, &fieldError{field: "min_distance_km", msg: "must not be negative"}
	}
	if err := durationField("within", s.Within); err != nil {
		return nil, err
	}
	return &velocityRule{key: k, maxKmh: s.MaxKmh, minDist: s.MinDistanceKm, within: s.Within.Milliseconds()}, nil
}

func (r *velocityRule) window() time.Duration { return time.Duration(r.within) * time.Millisecond }

func (r *velocityRule) newState(cfg *Config) kindState {
	return &velocityState{r: r, keys: newTable[sighting](cfg.MaxKeys)}
}

// sighting is the newest sighting of a key: about 100 bytes with its
// buffers, 200 with the table's entry and key.
type sighting struct {
	t        int64
	lat, lon float32 // 1 m resolution is plenty for kilometres
	id       []byte
	device   []byte
}

type velocityState struct {
	r    *velocityRule
	keys *table[sighting]
	heap int
}

func (s *velocityState) size() (int, int, uint64) {
	return s.keys.len(), s.keys.bytes() + s.heap, s.keys.evicted
}

func (s *velocityState) tick(x *evalCtx) {
	s.keys.expire(x.wm()-s.r.within, func(_ string, _ int64, v *sighting) bool {
		s.heap -= cap(v.id) + cap(v.device)
		return false
	})
}

func (s *velocityState) process(x *evalCtx, e *event.Event) {
	r := s.r
	key := r.key.get(e)
	if key == "" || r.key.name == "plate" && !e.PlateValid {
		return
	}
	t := e.Time.UnixMilli()
	v, added := s.keys.touch(key, t)
	if added {
		s.store(v, e, t)
		return
	}
	dt := t - v.t
	if dt < 0 {
		dt = -dt
	}
	if dt <= r.within && string(v.id) != e.ID && string(v.device) != e.DeviceID {
		km := haversineKm(float64(v.lat), float64(v.lon), e.Lat, e.Lon)
		if km >= r.minDist && km > 0 {
			speed := math.Inf(1)
			if dt > 0 {
				speed = km / (float64(dt) / 3.6e6)
			}
			if speed > r.maxKmh {
				s.raise(x, e, key, v, km, dt, speed)
			}
		}
	}
	if t >= v.t {
		s.store(v, e, t)
	}
}

func (s *velocityState) store(v *sighting, e *event.Event, t int64) {
	before := cap(v.id) + cap(v.device)
	v.t = t
	v.lat, v.lon = float32(e.Lat), float32(e.Lon)
	v.id = append(v.id[:0], e.ID...)
	v.device = append(v.device[:0], e.DeviceID...)
	s.heap += cap(v.id) + cap(v.device) - before
}

func (s *velocityState) raise(x *evalCtx, e *event.Event, key string, prev *sighting, km float64, dt int64, speed float64) {
	first, second := string(prev.id), e.ID
	from, to := string(prev.device), e.DeviceID
	if prev.t > e.Time.UnixMilli() {
		first, second, from, to = second, first, to, from
	}
	speedOut := roundTo(speed, 1)
	if math.IsInf(speed, 1) {
		speedOut = -1 // the same instant at two places
	}
	x.raise(&hit{
		subject:  event.Subject{Kind: s.r.key.subject, ID: key},
		e:        e,
		evidence: []string{first, second},
		details: []event.Detail{
			{Name: "speed_kmh", Value: speedOut},
			{Name: "distance_km", Value: roundTo(km, 2)},
			{Name: "seconds", Value: roundTo(float64(dt)/1000, 1)},
			{Name: "from_device", Value: from},
			{Name: "to_device", Value: to},
		},
	})
}

const earthRadiusKm = 6371.0088

// haversineKm is the great-circle distance between two WGS-84 points.
func haversineKm(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLon := (lon2 - lon1) * rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) +
		math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusKm * math.Asin(math.Min(1, math.Sqrt(a)))
}
