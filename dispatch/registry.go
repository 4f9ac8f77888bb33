package dispatch

import (
	"math"
	"time"

	"citywatch/internal/city"
)

// Unit is what the dispatcher knows of one patrol unit.
type Unit struct {
	ID string
	// Lat, Lon and PosTime are the last trusted position and its device
	// time; HasPos is false until one arrives.
	Lat, Lon   float64
	PosTime    time.Time
	HasPos     bool
	SpeedKmh   float64
	HeadingDeg float64
	// Status is the unit's own status from its last position report:
	// available, busy or off_duty.
	Status string
	// Dispatch is the id of the dispatch the unit is on (assigned,
	// accepted, en route or on scene), or "".
	Dispatch string
	// Area is the area of the position.
	Area Area
	// Flagged counts the reports of the unit that were not trusted.
	Flagged int

	cell    int32 // index cell, -1 when not indexed
	cellPos int32 // position in the cell's slice
}

// Available reports whether u may be ranked at now: a fresh trusted
// position (no older than staleAfter), status available, on no dispatch.
func (u *Unit) Available(now time.Time, staleAfter time.Duration) bool {
	return u.HasPos && u.Dispatch == "" && u.Status == "available" && now.Sub(u.PosTime) <= staleAfter
}

// Candidate is one ranked unit.
type Candidate struct {
	Unit  *Unit
	ETA   float64 // seconds
	DistM float64 // great-circle metres
}

// Registry is the live set of patrol units with a grid index of their
// positions. It is not safe for concurrent use; the Engine (and a web
// process building its own view from the topics) owns one.
type Registry struct {
	units  []*Unit
	byID   map[string]*Unit
	pace   pace
	stale  time.Duration
	places *Circles

	// The grid covers the city's bounding box (plus a margin) with cells
	// of about cellM metres; units outside it are kept in outside and
	// always examined.
	minLat, minLon   float64
	cellLat, cellLon float64 // cell size in degrees
	cols, rows       int
	cells            [][]*Unit
	outside          []*Unit
	// mLat and mLon are metres per degree; mLon is taken at the latitude
	// of the grid farthest from the equator, so that distances derived
	// from cell counts are never overestimated.
	mLat, mLon float64
}

// NewRegistry returns an empty registry for the city of circles with the
// travel model m; positions older than staleAfter are not ranked.
func NewRegistry(circles *Circles, m Model, staleAfter time.Duration, cellM float64) *Registry {
	r := &Registry{byID: map[string]*Unit{}, pace: m.pace(), stale: staleAfter, places: circles}
	minLat, minLon, maxLat, maxLon := 31.0, 110.5, 33.0, 113.5 // Xiangyang, when the city has no districts
	if circles != nil && circles.c != nil && len(circles.c.Districts) > 0 {
		minLat, minLon, maxLat, maxLon = 90.0, 180.0, -90.0, -180.0
		for _, d := range circles.c.Districts {
			for _, p := range d.Polygons {
				for _, ring := range p {
					for _, pt := range ring {
						minLon, maxLon = min(minLon, pt[0]), max(maxLon, pt[0])
						minLat, maxLat = min(minLat, pt[1]), max(maxLat, pt[1])
					}
				}
			}
		}
	}
	const margin = 0.2 // degrees: units just beyond the border stay in the grid
	minLat, minLon, maxLat, maxLon = minLat-margin, minLon-margin, maxLat+margin, maxLon+margin
	r.mLat = metresPerDegLat
	r.mLon = metresPerDegLat * math.Cos(max(math.Abs(minLat), math.Abs(maxLat))*math.Pi/180)
	r.minLat, r.minLon = minLat, minLon
	r.cellLat = cellM / r.mLat
	r.cellLon = cellM / r.mLon
	r.cols = max(1, int(math.Ceil((maxLon-minLon)/r.cellLon)))
	r.rows = max(1, int(math.Ceil((maxLat-minLat)/r.cellLat)))
	r.cells = make([][]*Unit, r.cols*r.rows)
	return r
}

// Unit returns the unit with id, or nil.
func (r *Registry) Unit(id string) *Unit { return r.byID[id] }

// Len returns the number of units known.
func (r *Registry) Len() int { return len(r.units) }

// Each calls f with every unit, in the order they became known.
func (r *Registry) Each(f func(u *Unit)) {
	for _, u := range r.units {
		f(u)
	}
}

// Ensure returns the unit with id, adding it without a position when it is
// new.
func (r *Registry) Ensure(id string) *Unit {
	if u := r.byID[id]; u != nil {
		return u
	}
	u := &Unit{ID: id, cell: -1}
	r.units = append(r.units, u)
	r.byID[id] = u
	return u
}

// Move sets u's trusted position and re-indexes it.
func (r *Registry) Move(u *Unit, lat, lon float64, t time.Time) {
	u.Lat, u.Lon, u.PosTime, u.HasPos = lat, lon, t, true
	if r.places != nil {
		_, _, u.Area = r.places.Place(lat, lon)
	} else {
		u.Area = AreaUrban
	}
	cell := r.cellOf(lat, lon)
	if cell == u.cell && u.cell >= 0 {
		return
	}
	r.unindex(u)
	if cell < 0 {
		u.cell, u.cellPos = -2, int32(len(r.outside))
		r.outside = append(r.outside, u)
		return
	}
	u.cell, u.cellPos = cell, int32(len(r.cells[cell]))
	r.cells[cell] = append(r.cells[cell], u)
}

func (r *Registry) unindex(u *Unit) {
	var list *[]*Unit
	switch {
	case u.cell >= 0:
		list = &r.cells[u.cell]
	case u.cell == -2:
		list = &r.outside
	default:
		return
	}
	s := *list
	last := len(s) - 1
	s[u.cellPos] = s[last]
	s[u.cellPos].cellPos = u.cellPos
	s[last] = nil
	*list = s[:last]
	u.cell = -1
}

// cellOf returns the grid cell of a point, or -1 outside the grid.
func (r *Registry) cellOf(lat, lon float64) int32 {
	col := int(math.Floor((lon - r.minLon) / r.cellLon))
	row := int(math.Floor((lat - r.minLat) / r.cellLat))
	if col < 0 || row < 0 || col >= r.cols || row >= r.rows {
		return -1
	}
	return int32(row*r.cols + col)
}

// Rank appends to dst[:0] the k available units (see Unit.Available) with
// the shortest ETA to the point in area, fastest first (ties by unit id),
// and returns it. Units for which skip returns true are left out; with
// maxETA > 0, units slower than maxETA seconds are too. It searches the
// grid ring by ring around the point and stops as soon as no unit in an
// unsearched cell can beat the k-th found, so it reads only the
// neighbourhood in a dense city. It does not allocate when dst has room
// for k.
func (r *Registry) Rank(dst []Candidate, lat, lon float64, area Area, now time.Time, k int, maxETA float64, skip func(*Unit) bool) []Candidate {
	dst = dst[:0]
	if k <= 0 {
		return dst
	}
	q := query{lat: lat, lon: lon, area: area, now: now, k: k, maxETA: maxETA, skip: skip}
	for _, u := range r.outside {
		dst = r.consider(dst, u, &q)
	}
	fc := (lon - r.minLon) / r.cellLon
	fr := (lat - r.minLat) / r.cellLat
	c0, r0 := int(math.Floor(fc)), int(math.Floor(fr))
	if c0 < 0 || r0 < 0 || c0 >= r.cols || r0 >= r.rows {
		// A point beyond the city: rare enough to read every cell.
		for _, cell := range r.cells {
			for _, u := range cell {
				dst = r.consider(dst, u, &q)
			}
		}
		return dst
	}
	for ring := 0; ; ring++ {
		if ring == 0 {
			dst = r.scan(dst, c0, r0, &q)
		} else {
			for c := c0 - ring; c <= c0+ring; c++ {
				dst = r.scan(dst, c, r0-ring, &q)
				dst = r.scan(dst, c, r0+ring, &q)
			}
			for rw := r0 - ring + 1; rw <= r0+ring-1; rw++ {
				dst = r.scan(dst, c0-ring, rw, &q)
				dst = r.scan(dst, c0+ring, rw, &q)
			}
		}
		if c0-ring <= 0 && c0+ring >= r.cols-1 && r0-ring <= 0 && r0+ring >= r.rows-1 {
			break // the whole grid is searched
		}
		// Every unit not yet seen lies outside the square of rings
		// 0..ring: at least as far as the nearest side of that square.
		lb := math.Min(
			math.Min(fc-float64(c0-ring), float64(c0+ring+1)-fc)*r.cellLon*r.mLon,
			math.Min(fr-float64(r0-ring), float64(r0+ring+1)-fr)*r.cellLat*r.mLat,
		)
		bound := r.pace.lowerBound(math.Max(lb, 0), area)
		if len(dst) == k && dst[k-1].ETA <= bound {
			break
		}
		if maxETA > 0 && bound > maxETA {
			break
		}
	}
	return dst
}

// query is one Rank call's parameters, passed down by pointer so that the
// search does not allocate.
type query struct {
	lat, lon float64
	area     Area
	now      time.Time
	k        int
	maxETA   float64
	skip     func(*Unit) bool
}

// scan considers the units of cell (c, rw), which may lie outside the grid.
func (r *Registry) scan(dst []Candidate, c, rw int, q *query) []Candidate {
	if c < 0 || rw < 0 || c >= r.cols || rw >= r.rows {
		return dst
	}
	for _, u := range r.cells[rw*r.cols+c] {
		dst = r.consider(dst, u, q)
	}
	return dst
}

// consider inserts u into the sorted candidates dst (at most q.k) when it
// qualifies.
func (r *Registry) consider(dst []Candidate, u *Unit, q *query) []Candidate {
	if !u.Available(q.now, r.stale) || q.skip != nil && q.skip(u) {
		return dst
	}
	d := city.DistanceM(q.lat, q.lon, u.Lat, u.Lon)
	eta := r.pace.eta(d, u.Area, q.area)
	if q.maxETA > 0 && eta > q.maxETA {
		return dst
	}
	n := len(dst)
	if n == q.k && !better(eta, u.ID, dst[n-1].ETA, dst[n-1].Unit.ID) {
		return dst
	}
	if n < q.k {
		dst = append(dst, Candidate{})
	} else {
		n-- // the last one falls out
	}
	i := n
	for i > 0 && better(eta, u.ID, dst[i-1].ETA, dst[i-1].Unit.ID) {
		dst[i] = dst[i-1]
		i--
	}
	dst[i] = Candidate{Unit: u, ETA: eta, DistM: d}
	return dst
}

func better(eta float64, id string, eta2 float64, id2 string) bool {
	return eta < eta2 || eta == eta2 && id < id2
}

// CircleCoverage is whether a circle is covered: an available unit with a
// fresh position can reach its centre within its tier.
type CircleCoverage struct {
	Circle  *Circle
	Covered bool
	// Best is the fastest available unit ("" when none can make the tier)
	// and ETA its estimate in seconds.
	Best string
	ETA  float64
	// Units is how many available units can make the tier, counted up to
	// CoverageCountMax.
	Units int
}

// CoverageCountMax bounds the units counted per circle by Coverage: a
// command centre needs "none, one, a few, many", and the count costs a
// ranking per circle.
const CoverageCountMax = 8

// Coverage appends to dst[:0] the coverage of every circle at now and
// returns it. It is a pure function of the registry and the clock, so a
// web process that builds a Registry from the topics computes the same.
func (r *Registry) Coverage(dst []CircleCoverage, circles *Circles, now time.Time) []CircleCoverage {
	dst = dst[:0]
	var buf [CoverageCountMax]Candidate
	for i := range circles.list {
		c := &circles.list[i]
		best := r.Rank(buf[:0], c.Lat, c.Lon, c.Area, now, CoverageCountMax, float64(c.TierMinutes*60), nil)
		cov := CircleCoverage{Circle: c, Units: len(best)}
		if len(best) > 0 {
			cov.Covered, cov.Best, cov.ETA = true, best[0].Unit.ID, best[0].ETA
		}
		dst = append(dst, cov)
	}
	return dst
}
