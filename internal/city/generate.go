package city

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// GenerateConfig sets the size of a generated city. The zero value with
// SetDefaults is Xiangyang at its real counts.
type GenerateConfig struct {
	Seed            uint64 `yaml:"seed"`
	CamerasA        int    `yaml:"cameras_a"`
	CamerasB        int    `yaml:"cameras_b"`
	InterProvincial int    `yaml:"inter_provincial"` // at most len(provincialRoads)
	InterCounty     int    `yaml:"inter_county"`     // at most 6 + len(prefectureRoads)
	Electronic      int    `yaml:"electronic"`
	Stations        int    `yaml:"stations"`
	Drones          int    `yaml:"drones"`
	Platforms       int    `yaml:"platforms"` // mobile police platforms, among Units
	Units           int    `yaml:"units"`     // patrol units in all
	Schools         int    `yaml:"schools"`
	Depots          int    `yaml:"depots"`
	Government      int    `yaml:"government"`
}

// SetDefaults fills every zero field with Xiangyang's real count.
func (g *GenerateConfig) SetDefaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	if g.Seed == 0 {
		g.Seed = DefaultSeed
	}
	def(&g.CamerasA, 16200)
	def(&g.CamerasB, 12000)
	def(&g.InterProvincial, 3)
	def(&g.InterCounty, 10)
	def(&g.Electronic, 97)
	def(&g.Stations, 450)
	def(&g.Drones, 20)
	def(&g.Platforms, 27)
	def(&g.Units, 300)
	def(&g.Schools, 120)
	def(&g.Depots, 20)
	def(&g.Government, 25)
}

// Validate reports the first field out of range.
func (g GenerateConfig) Validate() error {
	switch {
	case g.CamerasA < 0 || g.CamerasB < 0:
		return errors.New("cameras_a, cameras_b: must not be negative")
	case g.InterProvincial < 0 || g.InterProvincial > len(provincialRoads):
		return fmt.Errorf("inter_provincial: must be 0–%d, got %d", len(provincialRoads), g.InterProvincial)
	case g.InterCounty < 0 || g.InterCounty > len(countySeats)+len(prefectureRoads):
		return fmt.Errorf("inter_county: must be 0–%d, got %d", len(countySeats)+len(prefectureRoads), g.InterCounty)
	case g.Electronic < 0 || g.Stations < 0 || g.Drones < 0:
		return errors.New("electronic, stations, drones: must not be negative")
	case g.Units < len(keySites)+tier3Count+len(countySeats)+len(extraTowns):
		return fmt.Errorf("units: need at least one per circle (%d), got %d", len(keySites)+tier3Count+len(countySeats)+len(extraTowns), g.Units)
	case g.Platforms < 0 || g.Platforms > g.Units:
		return fmt.Errorf("platforms: must be 0–units, got %d", g.Platforms)
	case g.Schools < 0 || g.Depots < 0 || g.Government < 0:
		return errors.New("schools, depots, government: must not be negative")
	}
	return nil
}

type site struct {
	name     string
	lat, lon float64
}

// The centre of the urban core, between 襄城 and 樊城 on the Han river.
const coreLat, coreLon = 32.035, 112.145

// Places the generator anchors on. Positions are approximate, to a
// kilometre or so: the simulation needs plausible geography, not a survey.
var (
	// The seat of 襄州区 (张湾) and the six county-level towns.
	xiangzhouSeat = site{"张湾", 32.087, 112.212}
	countySeats   = []site{
		{"南漳", 31.775, 111.839}, {"谷城", 32.264, 111.653}, {"保康", 31.878, 111.261},
		{"老河口", 32.359, 111.684}, {"枣阳", 32.129, 112.772}, {"宜城", 31.720, 112.258},
	}
	// countyWeights share devices among countySeats, by population.
	countyWeights = []float64{0.035, 0.04, 0.025, 0.05, 0.06, 0.04}
	// extraTowns are large towns with their own 5-minute circle.
	extraTowns = []site{{"双沟", 32.195, 112.330}, {"武安", 31.620, 111.930}}
	// keySites get the 1-minute circles.
	keySites = []site{
		{"襄阳站", 32.063, 112.130}, {"襄阳东站", 32.073, 112.230}, {"刘集机场", 32.150, 112.290},
		{"襄阳古城", 32.015, 112.145}, {"古隆中", 31.998, 112.070}, {"市政府", 32.040, 112.140},
		{"汽车客运中心", 32.048, 112.175}, {"人民广场", 32.035, 112.128}, {"中心医院", 32.028, 112.118},
		{"万达广场", 32.058, 112.160}, {"鱼梁洲", 32.040, 112.190}, {"高新区管委会", 32.085, 112.170},
		{"体育中心", 32.092, 112.125}, {"老河口市政府", 32.385, 111.670}, {"枣阳站", 32.130, 112.750},
	}
	// provincialRoads end at the border with Henan.
	provincialRoads = []site{{"G55 邓州方向", 32.60, 112.10}, {"G207 新野方向", 32.47, 112.25}, {"G316 唐河方向", 32.45, 112.95}}
	// prefectureRoads leave the city for its neighbours in Hubei.
	prefectureRoads = []site{{"十堰方向", 32.30, 110.80}, {"荆门方向", 31.40, 112.40}, {"宜昌方向", 31.25, 111.60}, {"随州方向", 31.95, 113.15}}
)

// tier3Count is the number of 3-minute circles over the urban core.
const tier3Count = 15

// Generate builds a city from districts and cfg (defaults applied): the
// same districts and config always give the same city, byte for byte once
// saved.
func Generate(cfg GenerateConfig, districts []District) (*City, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cannot generate city: %w", err)
	}
	c := &City{Version: Version, Name: "襄阳市", Seed: cfg.Seed, Districts: districts}
	c.Index()
	g := &generator{c: c, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x5ca1ab1e))}
	steps := []func() error{g.circles, g.zones, g.cameras, g.checkpoints, g.stations, g.drones, g.units}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, fmt.Errorf("cannot generate city: %w", err)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("cannot generate city: %w", err)
	}
	c.Index()
	return c, nil
}

type generator struct {
	c   *City
	cfg GenerateConfig
	rng *rand.Rand
}

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }

// near returns a point normally scattered with sigma metres around lat,
// lon that lies inside the city.
func (g *generator) near(lat, lon, sigma float64) (float64, float64, *District) {
	for range 1000 {
		la, lo := Offset(lat, lon, g.rng.NormFloat64()*sigma, g.rng.NormFloat64()*sigma)
		la, lo = round6(la), round6(lo)
		if d := g.c.DistrictOf(la, lo); d != nil {
			return la, lo, d
		}
	}
	// Unreachable for anchors inside the city.
	d := g.c.DistrictOf(lat, lon)
	return round6(lat), round6(lon), d
}

// anywhere returns a point uniformly inside the city.
func (g *generator) anywhere() (float64, float64, *District) {
	b := g.c.idx.box
	for {
		la := round6(b.minLat + g.rng.Float64()*(b.maxLat-b.minLat))
		lo := round6(b.minLon + g.rng.Float64()*(b.maxLon-b.minLon))
		if d := g.c.DistrictOf(la, lo); d != nil {
			return la, lo, d
		}
	}
}

// anchor is where a class of things clusters.
type anchor struct {
	lat, lon, sigma, weight float64
	urban                   bool
	uniform                 bool // anywhere in the city
}

// population is where people are: most in the urban core, then 张湾, the
// county towns and the countryside.
func population(core, counties, sparse float64) []anchor {
	as := []anchor{
		{lat: coreLat, lon: coreLon, sigma: 4000, weight: core, urban: true},
		{lat: xiangzhouSeat.lat, lon: xiangzhouSeat.lon, sigma: 2500, weight: core * 0.12, urban: true},
	}
	for i, s := range countySeats {
		as = append(as, anchor{lat: s.lat, lon: s.lon, sigma: 2000, weight: counties * countyWeights[i] / 0.25})
	}
	return append(as, anchor{weight: sparse, uniform: true})
}

func (g *generator) pickAnchor(as []anchor) anchor {
	total := 0.0
	for _, a := range as {
		total += a.weight
	}
	x := g.rng.Float64() * total
	for _, a := range as {
		if x < a.weight {
			return a
		}
		x -= a.weight
	}
	return as[len(as)-1]
}

func (g *generator) place(a anchor) (float64, float64, *District) {
	if a.uniform {
		return g.anywhere()
	}
	return g.near(a.lat, a.lon, a.sigma)
}

func (g *generator) weighted(names []string, weights []float64) string {
	total := 0.0
	for _, w := range weights {
		total += w
	}
	x := g.rng.Float64() * total
	for i, w := range weights {
		if x < w {
			return names[i]
		}
		x -= w
	}
	return names[len(names)-1]
}

func (g *generator) circles() error {
	add := func(id, name, kind string, s site, radius float64, tier int) error {
		d := g.c.DistrictOf(s.lat, s.lon)
		if d == nil {
			return fmt.Errorf("circle %s (%s) lies outside the city", id, name)
		}
		g.c.Circles = append(g.c.Circles, Circle{ID: id, Name: name, Kind: kind, Lat: round6(s.lat), Lon: round6(s.lon),
			RadiusM: radius, TierMinutes: tier, District: d.Code})
		return nil
	}
	n := 0
	next := func() string { n++; return fmt.Sprintf("circle-%02d", n) }
	for _, s := range keySites {
		if err := add(next(), s.name+"一分钟圈", CircleKeySite, s, 1000, 1); err != nil {
			return err
		}
	}
	core := []site{{"城区中心", coreLat, coreLon}}
	for i := range 8 {
		a := float64(i) * math.Pi / 4
		la, lo := Offset(coreLat, coreLon, 4000*math.Cos(a), 4000*math.Sin(a))
		core = append(core, site{fmt.Sprintf("城区内环%d", i+1), la, lo})
	}
	for i := range tier3Count - 9 {
		a := float64(i)*math.Pi/3 + math.Pi/6
		la, lo := Offset(coreLat, coreLon, 8500*math.Cos(a), 8500*math.Sin(a))
		core = append(core, site{fmt.Sprintf("城区外环%d", i+1), la, lo})
	}
	for _, s := range core {
		if err := add(next(), s.name+"三分钟圈", CircleUrbanCore, s, 3000, 3); err != nil {
			return err
		}
	}
	towns := append([]site{xiangzhouSeat}, countySeats...)
	towns = append(towns, extraTowns...)
	for _, s := range towns {
		if err := add(next(), s.name+"五分钟圈", CircleCounty, s, 6000, 5); err != nil {
			return err
		}
	}
	return nil
}

// rect returns a closed rectangle w by h metres around a point, turned by
// angle radians.
func rect(lat, lon, w, h, angle float64) [][2]float64 {
	corners := [][2]float64{{-w / 2, -h / 2}, {w / 2, -h / 2}, {w / 2, h / 2}, {-w / 2, h / 2}}
	var r [][2]float64
	for _, p := range corners {
		x := p[0]*math.Cos(angle) - p[1]*math.Sin(angle)
		y := p[0]*math.Sin(angle) + p[1]*math.Cos(angle)
		la, lo := Offset(lat, lon, x, y)
		r = append(r, [2]float64{round6(lo), round6(la)})
	}
	return append(r, r[0])
}

var (
	allDays  = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
	weekends = []string{"sat", "sun"}
)

func (g *generator) zones() error {
	type spec struct {
		kind, prefix, label string
		n                   int
		as                  []anchor
		size                [2]float64
		schedules           []Schedule
	}
	specs := []spec{
		{ZoneSchool, "school", "学校", g.cfg.Schools, population(0.55, 0.3, 0.15), [2]float64{150, 300},
			[]Schedule{{Days: allDays, From: "19:00", To: "07:00"}, {Days: weekends, From: "00:00", To: "24:00"}}},
		{ZoneDepot, "depot", "油库仓储", g.cfg.Depots, []anchor{
			{lat: coreLat, lon: coreLon, sigma: 10000, weight: 0.6}, {weight: 0.4, uniform: true}}, [2]float64{200, 400},
			[]Schedule{{Days: allDays, From: "00:00", To: "24:00"}}},
		{ZoneGovernment, "gov", "党政机关", g.cfg.Government, population(0.8, 0.2, 0), [2]float64{100, 200},
			[]Schedule{{Days: allDays, From: "20:00", To: "08:00"}, {Days: weekends, From: "00:00", To: "24:00"}}},
	}
	for _, s := range specs {
		for i := range s.n {
			var la, lo float64
			var d *District
			if s.kind == ZoneGovernment && i < len(g.c.Districts) {
				// One at each district seat.
				dd := g.c.Districts[i]
				la, lo, d = g.near(dd.Lat, dd.Lon, 300)
			} else {
				la, lo, d = g.place(g.pickAnchor(s.as))
			}
			w := s.size[0] + g.rng.Float64()*(s.size[1]-s.size[0])
			h := w * (0.6 + 0.4*g.rng.Float64())
			g.c.Zones = append(g.c.Zones, Zone{
				ID:        fmt.Sprintf("zone-%s-%03d", s.prefix, i+1),
				Name:      fmt.Sprintf("%s%s%03d", d.Name, s.label, i+1),
				Kind:      s.kind,
				District:  d.Code,
				Ring:      rect(la, lo, w, h, g.rng.Float64()*math.Pi),
				Schedules: s.schedules,
			})
		}
	}
	return nil
}

func (g *generator) cameras() error {
	nA, nB := 0, 0
	// Every zone has two to four Class-A cameras inside its fence.
	for zi := range g.c.Zones {
		z := &g.c.Zones[zi]
		b := ringBox(z.Ring)
		k := 2 + g.rng.IntN(3)
		for range k {
			if nA == g.cfg.CamerasA {
				break
			}
			var la, lo float64
			for {
				la = round6(b.minLat + g.rng.Float64()*(b.maxLat-b.minLat))
				lo = round6(b.minLon + g.rng.Float64()*(b.maxLon-b.minLon))
				if InRing(z.Ring, la, lo) && g.c.DistrictOf(la, lo) != nil {
					break
				}
			}
			nA++
			g.c.Devices = append(g.c.Devices, Device{ID: fmt.Sprintf("cam-a-%05d", nA), Kind: KindCamera, Class: ClassA,
				Lat: la, Lon: lo, District: g.c.DistrictOf(la, lo).Code, Site: "site-" + z.ID, Place: PlaceZone, Zone: z.ID})
		}
	}
	places := []string{PlaceRoad, PlaceStreet, PlaceResidential, PlaceMarket, PlaceStation}
	type classSpec struct {
		class, prefix    string
		n                *int
		want             int
		as               []anchor
		urbanW, rural    []float64
		minSite, maxSite int
	}
	specs := []classSpec{
		{ClassA, "a", &nA, g.cfg.CamerasA, population(0.55, 0.25, 0.13),
			[]float64{0.24, 0.40, 0.25, 0.08, 0.03}, []float64{0.40, 0.32, 0.18, 0.08, 0.02}, 2, 5},
		{ClassB, "b", &nB, g.cfg.CamerasB, population(0.62, 0.25, 0.06),
			[]float64{0.05, 0.35, 0.43, 0.13, 0.04}, []float64{0.10, 0.35, 0.40, 0.13, 0.02}, 1, 4},
	}
	for _, s := range specs {
		nSite := 0
		for *s.n < s.want {
			a := g.pickAnchor(s.as)
			la, lo, _ := g.place(a)
			var place string
			switch {
			case a.uniform:
				place = g.weighted(places[:3], []float64{0.7, 0.1, 0.2})
			case a.urban:
				place = g.weighted(places, s.urbanW)
			default:
				place = g.weighted(places, s.rural)
			}
			nSite++
			siteID := fmt.Sprintf("site-%s-%05d", s.prefix, nSite)
			k := s.minSite + g.rng.IntN(s.maxSite-s.minSite+1)
			for range k {
				if *s.n == s.want {
					break
				}
				cla, clo, d := g.near(la, lo, 25)
				*s.n++
				g.c.Devices = append(g.c.Devices, Device{ID: fmt.Sprintf("cam-%s-%05d", s.prefix, *s.n), Kind: KindCamera,
					Class: s.class, Lat: cla, Lon: clo, District: d.Code, Site: siteID, Place: place})
			}
		}
	}
	return nil
}

// inward walks from a point toward the core until it is inside the city,
// then on for extra metres, and returns where it stops.
func (g *generator) inward(s site, extra float64) (float64, float64, *District) {
	const step = 200.0
	la, lo := s.lat, s.lon
	total := DistanceM(la, lo, coreLat, coreLon)
	inside := -1.0
	for walked := 0.0; walked < total; walked += step {
		f := walked / total
		pla, plo := s.lat+(coreLat-s.lat)*f, s.lon+(coreLon-s.lon)*f
		if g.c.DistrictOf(pla, plo) != nil {
			if inside < 0 {
				inside = walked
			}
			if walked-inside >= extra {
				la, lo = pla, plo
				break
			}
		}
	}
	la, lo = round6(la), round6(lo)
	return la, lo, g.c.DistrictOf(la, lo)
}

// border returns a point on the line from a county seat toward the core,
// inside the county, a little before the county's border.
func (g *generator) border(s site) (float64, float64, *District) {
	home := g.c.DistrictOf(s.lat, s.lon)
	const step = 100.0
	total := DistanceM(s.lat, s.lon, coreLat, coreLon)
	la, lo := s.lat, s.lon
	for walked := 0.0; walked < total; walked += step {
		f := walked / total
		pla, plo := s.lat+(coreLat-s.lat)*f, s.lon+(coreLon-s.lon)*f
		if g.c.DistrictOf(pla, plo) != home {
			break
		}
		if walked >= 500 {
			f := (walked - 500) / total
			la, lo = s.lat+(coreLat-s.lat)*f, s.lon+(coreLon-s.lon)*f
		}
	}
	la, lo = round6(la), round6(lo)
	return la, lo, g.c.DistrictOf(la, lo)
}

func (g *generator) checkpoints() error {
	n := 0
	add := func(class string) func(la, lo float64, d *District) error {
		return func(la, lo float64, d *District) error {
			if d == nil {
				return fmt.Errorf("checkpoint %d lies outside the city", n+1)
			}
			n++
			id := fmt.Sprintf("kk-%03d", n)
			g.c.Devices = append(g.c.Devices, Device{ID: id, Kind: KindCheckpoint, Class: class, Lat: la, Lon: lo, District: d.Code, Site: id})
			return nil
		}
	}
	for _, s := range provincialRoads[:g.cfg.InterProvincial] {
		if err := add(ClassInterProvincial)(g.inward(s, 1000)); err != nil {
			return err
		}
	}
	for i := range g.cfg.InterCounty {
		var la, lo float64
		var d *District
		if i < len(countySeats) {
			la, lo, d = g.border(countySeats[i])
		} else {
			la, lo, d = g.inward(prefectureRoads[i-len(countySeats)], 1000)
		}
		if err := add(ClassInterCounty)(la, lo, d); err != nil {
			return err
		}
	}
	// Electronic checkpoints stand on the urban arterials (three rings and
	// the roads out of the core), in 张湾 and in each county town.
	var spots []site
	for _, ring := range []struct {
		r float64
		k int
	}{{2500, 10}, {5000, 14}, {8000, 18}} {
		for i := range ring.k {
			a := 2 * math.Pi * float64(i) / float64(ring.k)
			la, lo := Offset(coreLat, coreLon, ring.r*math.Cos(a), ring.r*math.Sin(a))
			spots = append(spots, site{lat: la, lon: lo})
		}
	}
	for range 6 {
		spots = append(spots, xiangzhouSeat)
	}
	for _, s := range countySeats {
		for range 5 {
			spots = append(spots, s)
		}
	}
	for i := range g.cfg.Electronic {
		var la, lo float64
		var d *District
		if i < len(spots) {
			sigma := 150.0
			if spots[i].name != "" {
				sigma = 1500
			}
			la, lo, d = g.near(spots[i].lat, spots[i].lon, sigma)
		} else {
			la, lo, d = g.near(coreLat, coreLon, 4000)
		}
		if err := add(ClassElectronic)(la, lo, d); err != nil {
			return err
		}
	}
	return nil
}

func (g *generator) stations() error {
	as := population(0.35, 0.3, 0.3)
	for i := range g.cfg.Stations {
		la, lo, d := g.place(g.pickAnchor(as))
		id := fmt.Sprintf("fs-%04d", i+1)
		term := id + "-t1"
		g.c.Stations = append(g.c.Stations, Station{ID: id, Name: fmt.Sprintf("%s加油站%03d", d.Name, i+1), Lat: la, Lon: lo,
			District: d.Code, Terminals: []string{term}})
		g.c.Devices = append(g.c.Devices, Device{ID: term, Kind: KindFuelTerminal, Lat: la, Lon: lo, District: d.Code, Site: id, Station: id})
	}
	return nil
}

func (g *generator) drones() error {
	// Docks: eight in the core, then two per county town, round robin.
	var docks []site
	for i := range 8 {
		a := 2 * math.Pi * float64(i) / 8
		la, lo := Offset(coreLat, coreLon, 3000*math.Cos(a), 3000*math.Sin(a))
		docks = append(docks, site{lat: la, lon: lo})
	}
	for range 2 {
		docks = append(docks, countySeats...)
	}
	for i := range g.cfg.Drones {
		s := docks[i%len(docks)]
		la, lo, d := g.near(s.lat, s.lon, 500)
		g.c.Devices = append(g.c.Devices, Device{ID: fmt.Sprintf("uav-%02d", i+1), Kind: KindDrone, Lat: la, Lon: lo,
			District: d.Code, Site: fmt.Sprintf("dock-%02d", i+1)})
	}
	return nil
}

func (g *generator) units() error {
	// One unit per circle first, then the rest by tier: a 1-minute circle
	// holds 5, a 3-minute circle 8, a 5-minute circle the remainder.
	nc := len(g.c.Circles)
	counts := make([]int, nc)
	want := map[int]int{1: 5, 3: 8, 5: 9}
	left := g.cfg.Units
	for i := range counts {
		counts[i] = 1
		left--
	}
	for left > 0 {
		progress := false
		for i, ci := range g.c.Circles {
			if left > 0 && counts[i] < want[ci.TierMinutes] {
				counts[i]++
				left--
				progress = true
			}
		}
		if !progress {
			for i := range counts {
				if left == 0 {
					break
				}
				counts[i]++
				left--
			}
		}
	}
	n, platforms := 0, 0
	for i := range g.c.Circles {
		ci := &g.c.Circles[i]
		for k := range counts[i] {
			n++
			class := ClassCar
			// Platforms go first to the 1- and 3-minute circles.
			if k == 0 && platforms < g.cfg.Platforms && ci.TierMinutes < 5 {
				class = ClassPlatform
				platforms++
			}
			r := ci.RadiusM * 0.6 * math.Sqrt(g.rng.Float64())
			a := g.rng.Float64() * 2 * math.Pi
			la, lo := Offset(ci.Lat, ci.Lon, r*math.Cos(a), r*math.Sin(a))
			la, lo = round6(la), round6(lo)
			d := g.c.DistrictOf(la, lo)
			if d == nil {
				la, lo, d = ci.Lat, ci.Lon, g.c.DistrictOf(ci.Lat, ci.Lon)
			}
			id := fmt.Sprintf("unit-%03d", n)
			ci.Units = append(ci.Units, id)
			g.c.Devices = append(g.c.Devices, Device{ID: id, Kind: KindUnit, Class: class, Lat: la, Lon: lo,
				District: d.Code, Site: ci.ID, Circle: ci.ID})
		}
	}
	// Any platforms still owed go to 3-minute circles' second units.
	for i := range g.c.Devices {
		if platforms >= g.cfg.Platforms {
			break
		}
		d := &g.c.Devices[i]
		if d.Kind == KindUnit && d.Class == ClassCar {
			d.Class = ClassPlatform
			platforms++
		}
	}
	return nil
}
