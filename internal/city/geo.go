package city

import (
	"math"
	"slices"
	"sort"
)

// EarthRadiusM is the mean Earth radius used for distances.
const EarthRadiusM = 6371008.8

// DistanceM returns the great-circle distance in metres between two points.
func DistanceM(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLon := (lon2 - lon1) * rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * EarthRadiusM * math.Asin(math.Min(1, math.Sqrt(a)))
}

// Offset returns the point dx metres east and dy metres north of lat, lon
// (a local flat approximation, good to a few tens of kilometres).
func Offset(lat, lon, dx, dy float64) (float64, float64) {
	const rad = math.Pi / 180
	return lat + dy/(EarthRadiusM*rad), lon + dx/(EarthRadiusM*rad*math.Cos(lat*rad))
}

// InRing reports whether the point lies inside ring (even-odd rule).
func InRing(ring [][2]float64, lat, lon float64) bool {
	in := false
	for i, j := 0, len(ring)-1; i < len(ring); j, i = i, i+1 {
		xi, yi := ring[i][0], ring[i][1]
		xj, yj := ring[j][0], ring[j][1]
		if (yi > lat) != (yj > lat) && lon < (xj-xi)*(lat-yi)/(yj-yi)+xi {
			in = !in
		}
	}
	return in
}

// inMulti reports whether the point lies inside a multipolygon; holes and
// separate parts both follow from the even-odd rule over every ring.
func inMulti(polys [][][][2]float64, lat, lon float64) bool {
	in := false
	for _, p := range polys {
		for _, r := range p {
			if InRing(r, lat, lon) {
				in = !in
			}
		}
	}
	return in
}

type bbox struct{ minLon, minLat, maxLon, maxLat float64 }

func (b bbox) contains(lat, lon float64) bool {
	return lon >= b.minLon && lon <= b.maxLon && lat >= b.minLat && lat <= b.maxLat
}

func (b *bbox) add(lon, lat float64) {
	b.minLon, b.maxLon = min(b.minLon, lon), max(b.maxLon, lon)
	b.minLat, b.maxLat = min(b.minLat, lat), max(b.maxLat, lat)
}

func emptyBox() bbox { return bbox{math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)} }

func ringBox(r [][2]float64) bbox {
	b := emptyBox()
	for _, p := range r {
		b.add(p[0], p[1])
	}
	return b
}

// gridSize is the number of cells per side of the district grid. With
// Xiangyang's extent a cell is about 450 m by 300 m; about one cell in
// twenty is crossed by a border.
const gridSize = 512

// index answers point queries. The district grid holds, per cell, the one
// district covering the whole cell (≥ 0), none (-1), or, for cells a border
// crosses, -2-k where k is an entry of mixed: the districts to test with a
// full point-in-polygon.
type index struct {
	box          bbox
	cellW, cellH float64
	cells        []int32
	mixed        [][]int32
	distBox      []bbox

	zoneBox   []bbox
	circleBox []bbox         // holds each circle, with a margin
	byID      map[string]int // device index
	circles   map[string]int
	zones     map[string]int
	stations  map[string]int
	districts map[string]int
}

// Index builds the lookup index of c. Load, Parse, Default and Generate
// call it; call it again after changing a City by hand.
func (c *City) Index() {
	x := &index{
		box:       emptyBox(),
		byID:      make(map[string]int, len(c.Devices)),
		circles:   map[string]int{},
		zones:     map[string]int{},
		stations:  map[string]int{},
		districts: map[string]int{},
	}
	for i, d := range c.Districts {
		b := emptyBox()
		for _, p := range d.Polygons {
			for _, r := range p {
				rb := ringBox(r)
				b.add(rb.minLon, rb.minLat)
				b.add(rb.maxLon, rb.maxLat)
			}
		}
		x.distBox = append(x.distBox, b)
		x.box.add(b.minLon, b.minLat)
		x.box.add(b.maxLon, b.maxLat)
		x.districts[d.Code] = i
	}
	x.buildGrid(c.Districts)
	for i := range c.Zones {
		x.zoneBox = append(x.zoneBox, ringBox(c.Zones[i].Ring))
		x.zones[c.Zones[i].ID] = i
	}
	for i := range c.Devices {
		x.byID[c.Devices[i].ID] = i
	}
	for i := range c.Circles {
		x.circles[c.Circles[i].ID] = i
		x.circleBox = append(x.circleBox, circleBox(&c.Circles[i]))
	}
	for i := range c.Stations {
		x.stations[c.Stations[i].ID] = i
	}
	c.idx = x
}

// circleBox returns a box around ci, 1 % and a metre wider than its
// radius each way, so that a point outside it is outside the circle
// without a great-circle distance.
func circleBox(ci *Circle) bbox {
	const rad = math.Pi / 180
	r := ci.RadiusM*1.01 + 1
	dLat := r / (EarthRadiusM * rad)
	cos := math.Cos(min(math.Abs(ci.Lat)+dLat, 89.9) * rad)
	dLon := min(r/(EarthRadiusM*rad*cos), 180)
	return bbox{minLon: ci.Lon - dLon, minLat: ci.Lat - dLat, maxLon: ci.Lon + dLon, maxLat: ci.Lat + dLat}
}

func (x *index) buildGrid(ds []District) {
	x.cells = make([]int32, gridSize*gridSize)
	if len(ds) == 0 {
		for i := range x.cells {
			x.cells[i] = -1
		}
		return
	}
	x.cellW = (x.box.maxLon - x.box.minLon) / gridSize
	x.cellH = (x.box.maxLat - x.box.minLat) / gridSize
	// Interior: a scanline through each row's centre fills the cells whose
	// centres lie inside a district.
	for i := range x.cells {
		x.cells[i] = -1
	}
	var xs []float64
	for di, d := range ds {
		for row := range gridSize {
			y := x.box.minLat + (float64(row)+0.5)*x.cellH
			xs = xs[:0]
			for _, p := range d.Polygons {
				for _, r := range p {
					for i, j := 0, len(r)-1; i < len(r); j, i = i, i+1 {
						yi, yj := r[i][1], r[j][1]
						if (yi > y) != (yj > y) {
							xs = append(xs, (r[j][0]-r[i][0])*(y-yi)/(yj-yi)+r[i][0])
						}
					}
				}
			}
			sort.Float64s(xs)
			for k := 0; k+1 < len(xs); k += 2 {
				c0 := int(math.Ceil((xs[k]-x.box.minLon)/x.cellW - 0.5))
				c1 := int(math.Floor((xs[k+1]-x.box.minLon)/x.cellW - 0.5))
				for col := max(c0, 0); col <= min(c1, gridSize-1); col++ {
					x.cells[row*gridSize+col] = int32(di)
				}
			}
		}
	}
	// Borders: every cell an edge's box touches needs a full test against
	// the districts whose edges touch it.
	touch := make(map[int][]int32)
	for di, d := range ds {
		for _, p := range d.Polygons {
			for _, r := range p {
				for i := 1; i < len(r); i++ {
					c0, r0 := x.cell(r[i-1][1], r[i-1][0])
					c1, r1 := x.cell(r[i][1], r[i][0])
					for row := min(r0, r1); row <= max(r0, r1); row++ {
						for col := min(c0, c1); col <= max(c0, c1); col++ {
							k := row*gridSize + col
							if l := touch[k]; len(l) == 0 || l[len(l)-1] != int32(di) {
								touch[k] = append(l, int32(di))
							}
						}
					}
				}
			}
		}
	}
	keys := make([]int, 0, len(touch))
	for k := range touch {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		cand := touch[k]
		if c := x.cells[k]; c >= 0 && !slices.Contains(cand, c) {
			cand = append(cand, c)
		}
		x.mixed = append(x.mixed, cand)
		x.cells[k] = -2 - int32(len(x.mixed)-1)
	}
}

// cell returns the grid column and row of a point, clamped to the grid.
func (x *index) cell(lat, lon float64) (col, row int) {
	col = int((lon - x.box.minLon) / x.cellW)
	row = int((lat - x.box.minLat) / x.cellH)
	return min(max(col, 0), gridSize-1), min(max(row, 0), gridSize-1)
}

// DistrictOf returns the district that contains the point, or nil outside
// the city. A point on a shared border belongs to one of the two. It does
// not allocate; most points cost one grid lookup.
func (c *City) DistrictOf(lat, lon float64) *District {
	x := c.idx
	if !x.box.contains(lat, lon) {
		return nil
	}
	col, row := x.cell(lat, lon)
	v := x.cells[row*gridSize+col]
	switch {
	case v >= 0:
		return &c.Districts[v]
	case v == -1:
		return nil
	}
	for _, di := range x.mixed[-2-v] {
		if x.distBox[di].contains(lat, lon) && inMulti(c.Districts[di].Polygons, lat, lon) {
			return &c.Districts[di]
		}
	}
	return nil
}

// CirclesAt returns the circles that contain the point, smallest tier
// first, then nearest centre first.
func (c *City) CirclesAt(lat, lon float64) []*Circle {
	var out []*Circle
	var dist []float64
	for i := range c.Circles {
		ci := &c.Circles[i]
		if d := DistanceM(lat, lon, ci.Lat, ci.Lon); d <= ci.RadiusM {
			out = append(out, ci)
			dist = append(dist, d)
		}
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		ca, cb := out[idx[a]], out[idx[b]]
		if ca.TierMinutes != cb.TierMinutes {
			return ca.TierMinutes < cb.TierMinutes
		}
		return dist[idx[a]] < dist[idx[b]]
	})
	res := make([]*Circle, len(out))
	for i, k := range idx {
		res[i] = out[k]
	}
	return res
}

// CircleFor returns the circle that governs the response at a point (the
// one with the smallest tier, then the nearest centre) and its tier in
// minutes; outside every circle it returns nil and 5.
func (c *City) CircleFor(lat, lon float64) (*Circle, int) {
	var best *Circle
	bestD := 0.0
	var boxes []bbox
	if c.idx != nil {
		boxes = c.idx.circleBox
	}
	for i := range c.Circles {
		ci := &c.Circles[i]
		if i < len(boxes) && !boxes[i].contains(lat, lon) {
			continue
		}
		d := DistanceM(lat, lon, ci.Lat, ci.Lon)
		if d > ci.RadiusM {
			continue
		}
		if best == nil || ci.TierMinutes < best.TierMinutes || (ci.TierMinutes == best.TierMinutes && d < bestD) {
			best, bestD = ci, d
		}
	}
	if best == nil {
		return nil, 5
	}
	return best, best.TierMinutes
}

// ZonesAt returns the protected zones whose polygon contains the point,
// whatever their schedule; ask Zone.Active for the time.
func (c *City) ZonesAt(lat, lon float64) []*Zone {
	var out []*Zone
	for i := range c.Zones {
		if c.idx.zoneBox[i].contains(lat, lon) && InRing(c.Zones[i].Ring, lat, lon) {
			out = append(out, &c.Zones[i])
		}
	}
	return out
}

// Device returns the device with id, or nil.
func (c *City) Device(id string) *Device {
	if i, ok := c.idx.byID[id]; ok {
		return &c.Devices[i]
	}
	return nil
}

// Circle returns the circle with id, or nil.
func (c *City) Circle(id string) *Circle {
	if i, ok := c.idx.circles[id]; ok {
		return &c.Circles[i]
	}
	return nil
}

// Zone returns the zone with id, or nil.
func (c *City) Zone(id string) *Zone {
	if i, ok := c.idx.zones[id]; ok {
		return &c.Zones[i]
	}
	return nil
}

// Station returns the fuel station with id, or nil.
func (c *City) Station(id string) *Station {
	if i, ok := c.idx.stations[id]; ok {
		return &c.Stations[i]
	}
	return nil
}

// District returns the district with code, or nil.
func (c *City) District(code string) *District {
	if i, ok := c.idx.districts[code]; ok {
		return &c.Districts[i]
	}
	return nil
}

// DevicesOf returns the devices of kind k, in registry order.
func (c *City) DevicesOf(k Kind) []*Device {
	var out []*Device
	for i := range c.Devices {
		if c.Devices[i].Kind == k {
			out = append(out, &c.Devices[i])
		}
	}
	return out
}

// SiteDevices returns the ids of the devices of each site.
func (c *City) SiteDevices() map[string][]string {
	out := map[string][]string{}
	for _, d := range c.Devices {
		out[d.Site] = append(out[d.Site], d.ID)
	}
	return out
}
