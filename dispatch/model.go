package dispatch

import (
	"fmt"
	"math"

	"citywatch/internal/city"
)

// Area is the kind of place a road trip starts or ends in; it decides the
// road factor and the speed of the ETA model.
type Area uint8

// The areas of the ETA model. A point inside an urban-core or key-site
// circle is urban, inside a county circle (a town) it is town, elsewhere
// rural.
const (
	AreaUrban Area = iota
	AreaTown
	AreaRural
	numAreas
)

// String returns the area's name.
func (a Area) String() string {
	switch a {
	case AreaUrban:
		return "urban"
	case AreaTown:
		return "town"
	case AreaRural:
		return "rural"
	}
	return fmt.Sprintf("area(%d)", uint8(a))
}

// Road is how driving goes in one area: the road distance is the
// great-circle distance times RoadFactor, driven at SpeedKmh.
type Road struct {
	RoadFactor float64 `yaml:"road_factor"`
	SpeedKmh   float64 `yaml:"speed_kmh"`
}

// secondsPerMetre is the driving time of one metre of great-circle
// distance.
func (r Road) secondsPerMetre() float64 { return r.RoadFactor / (r.SpeedKmh / 3.6) }

// Model is the travel-time model: great-circle distance × road factor ÷
// speed, with factor and speed by area. A trip is taken as half in the area
// it starts in and half in the area it ends in: a car leaving a town for a
// village drives town streets first and country roads last.
type Model struct {
	Urban Road `yaml:"urban"`
	Town  Road `yaml:"town"`
	Rural Road `yaml:"rural"`
}

// SetDefaults fills zero fields: urban streets 1.4 × at 30 km/h (traffic,
// lights), towns 1.3 × at 40 km/h, country roads 1.25 × at 60 km/h, all
// with lights and siren.
func (m *Model) SetDefaults() {
	def := func(r *Road, f, v float64) {
		if r.RoadFactor == 0 {
			r.RoadFactor = f
		}
		if r.SpeedKmh == 0 {
			r.SpeedKmh = v
		}
	}
	def(&m.Urban, 1.4, 30)
	def(&m.Town, 1.3, 40)
	def(&m.Rural, 1.25, 60)
}

// Validate reports the first unusable field.
func (m Model) Validate() error {
	for _, r := range []struct {
		name string
		r    Road
	}{{"urban", m.Urban}, {"town", m.Town}, {"rural", m.Rural}} {
		if r.r.RoadFactor < 1 || r.r.RoadFactor > 5 {
			return fmt.Errorf("dispatch.model.%s.road_factor: must be 1–5, got %v", r.name, r.r.RoadFactor)
		}
		if r.r.SpeedKmh <= 0 || r.r.SpeedKmh > 200 {
			return fmt.Errorf("dispatch.model.%s.speed_kmh: must be in (0, 200], got %v", r.name, r.r.SpeedKmh)
		}
	}
	return nil
}

// pace is a Model ready for the hot path: seconds per great-circle metre
// by area.
type pace struct {
	spm [numAreas]float64
	min float64 // the smallest of spm
}

func (m Model) pace() pace {
	p := pace{spm: [numAreas]float64{m.Urban.secondsPerMetre(), m.Town.secondsPerMetre(), m.Rural.secondsPerMetre()}}
	p.min = min(p.spm[0], p.spm[1], p.spm[2])
	return p
}

// ETA returns the estimated driving time in seconds over a great-circle
// distance of distM metres from a point in area from to a point in area to.
func (m Model) ETA(distM float64, from, to Area) float64 {
	p := m.pace()
	return p.eta(distM, from, to)
}

func (p *pace) eta(distM float64, from, to Area) float64 {
	return distM * (p.spm[from] + p.spm[to]) / 2
}

// lowerBound is the least ETA to a point in area to from anywhere at least
// distM away.
func (p *pace) lowerBound(distM float64, to Area) float64 {
	return distM * (p.min + p.spm[to]) / 2
}

// Circle is a rapid-response circle as the dispatcher uses it.
type Circle struct {
	ID          string
	Name        string
	Kind        string // key_site, urban_core, county
	Lat, Lon    float64
	RadiusM     float64
	TierMinutes int
	// District is the name of the district of the centre.
	District string
	// Area is the area of the centre.
	Area Area
}

// Circles are the city's rapid-response circles with what the dispatcher
// asks of them: the governing circle and tier of a point, and its area.
// It is read-only and safe for concurrent use.
type Circles struct {
	list []Circle
	c    *city.City
	// lat and lon tables avoid trigonometry for the containment test.
	cosLat []float64
}

// NewCircles returns the circles of c.
func NewCircles(c *city.City) *Circles {
	cs := &Circles{c: c}
	for _, ci := range c.Circles {
		d := ci.District
		if dd := c.District(ci.District); dd != nil {
			d = dd.Name
		}
		cs.list = append(cs.list, Circle{ID: ci.ID, Name: ci.Name, Kind: ci.Kind, Lat: ci.Lat, Lon: ci.Lon,
			RadiusM: ci.RadiusM, TierMinutes: ci.TierMinutes, District: d})
		cs.cosLat = append(cs.cosLat, math.Cos(ci.Lat*math.Pi/180))
	}
	for i := range cs.list {
		_, _, cs.list[i].Area = cs.Place(cs.list[i].Lat, cs.list[i].Lon)
	}
	return cs
}

// List returns the circles in the city file's order; the slice is shared,
// not to be changed.
func (cs *Circles) List() []Circle { return cs.list }

// Place returns the circle governing the response at a point (the
// smallest tier, then the nearest centre; -1 outside every circle), its
// tier in minutes (5 outside every circle) and the point's area. It does
// not allocate.
func (cs *Circles) Place(lat, lon float64) (circle int, tier int, area Area) {
	circle, tier, area = -1, 5, AreaRural
	bestD := 0.0
	for i := range cs.list {
		ci := &cs.list[i]
		// A cheap flat distance first: circles are a few km wide.
		dy := (lat - ci.Lat) * metresPerDegLat
		dx := (lon - ci.Lon) * metresPerDegLat * cs.cosLat[i]
		if dx*dx+dy*dy > ci.RadiusM*ci.RadiusM*1.01 {
			continue
		}
		d := city.DistanceM(lat, lon, ci.Lat, ci.Lon)
		if d > ci.RadiusM {
			continue
		}
		switch ci.Kind {
		case city.CircleCounty:
			area = min(area, AreaTown)
		default:
			area = AreaUrban
		}
		if circle < 0 || ci.TierMinutes < tier || ci.TierMinutes == tier && d < bestD {
			circle, tier, bestD = i, ci.TierMinutes, d
		}
	}
	return circle, tier, area
}

// knownDistrict reports whether name is a district of the city.
func (cs *Circles) knownDistrict(name string) bool {
	if cs.c == nil || name == "" {
		return false
	}
	for _, d := range cs.c.Districts {
		if d.Name == name {
			return true
		}
	}
	return false
}

// DistrictName returns the name of the district containing the point, or
// "" outside the city.
func (cs *Circles) DistrictName(lat, lon float64) string {
	if cs.c == nil {
		return ""
	}
	if d := cs.c.DistrictOf(lat, lon); d != nil {
		return d.Name
	}
	return ""
}

// metresPerDegLat is the length of one degree of latitude.
const metresPerDegLat = city.EarthRadiusM * math.Pi / 180
