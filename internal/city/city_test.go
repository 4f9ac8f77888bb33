package city

import (
	"bytes"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// defaultCity decodes the embedded city once for the tests that only read it.
var defaultCity = sync.OnceValues(Default)

func mustDefault(t testing.TB) *City {
	t.Helper()
	c, err := defaultCity()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDistricts(t *testing.T) {
	c := mustDefault(t)
	want := map[string]string{
		"420602": "襄城区", "420606": "樊城区", "420607": "襄州区", "420624": "南漳县", "420625": "谷城县",
		"420626": "保康县", "420682": "老河口市", "420683": "枣阳市", "420684": "宜城市",
	}
	got := map[string]string{}
	for _, d := range c.Districts {
		got[d.Code] = d.Name
		for _, p := range d.Polygons {
			for _, r := range p {
				for _, pt := range r {
					if pt[1] < 31.2 || pt[1] > 32.7 || pt[0] < 110.7 || pt[0] > 113.2 {
						t.Fatalf("%s: point %v outside Xiangyang", d.Name, pt)
					}
				}
			}
		}
		// The seat of every district lies in it.
		if in := c.DistrictOf(d.Lat, d.Lon); in == nil || in.Code != d.Code {
			t.Errorf("seat of %s: DistrictOf = %v", d.Name, in)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("districts (-want +got):\n%s", diff)
	}
}

func TestDistrictOfMatchesPolygons(t *testing.T) {
	c := mustDefault(t)
	rng := rand.New(rand.NewPCG(1, 2))
	b := c.idx.box
	inside := 0
	for range 20000 {
		lat := b.minLat - 0.05 + rng.Float64()*(b.maxLat-b.minLat+0.1)
		lon := b.minLon - 0.05 + rng.Float64()*(b.maxLon-b.minLon+0.1)
		var want *District
		for i := range c.Districts {
			if inMulti(c.Districts[i].Polygons, lat, lon) {
				want = &c.Districts[i]
				break
			}
		}
		got := c.DistrictOf(lat, lon)
		if got != want {
			// Only a point on a shared border may differ.
			if want == nil || got == nil || !inMulti(got.Polygons, lat, lon) {
				t.Fatalf("DistrictOf(%v, %v) = %v, want %v", lat, lon, name(got), name(want))
			}
		}
		if got != nil {
			inside++
		}
	}
	if inside < 5000 {
		t.Errorf("only %d of 20000 points inside the city", inside)
	}
}

func name(d *District) string {
	if d == nil {
		return "<nil>"
	}
	return d.Name
}

func TestDistrictOfPlaces(t *testing.T) {
	c := mustDefault(t)
	for _, tc := range []struct {
		name     string
		lat, lon float64
		want     string
	}{
		{"襄阳古城", 32.015, 112.145, "襄城区"},
		{"襄阳站", 32.063, 112.130, "樊城区"},
		{"枣阳", 32.129, 112.772, "枣阳市"},
		{"武汉", 30.59, 114.30, ""},
		{"十堰", 32.63, 110.80, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := c.DistrictOf(tc.lat, tc.lon)
			if got == nil && tc.want != "" || got != nil && got.Name != tc.want {
				t.Errorf("DistrictOf = %s, want %q", name(got), tc.want)
			}
		})
	}
}

func TestGenerateDeterministic(t *testing.T) {
	ds, err := Districts()
	if err != nil {
		t.Fatal(err)
	}
	a, err := Generate(GenerateConfig{}, ds)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := a.Save(filepath.Join(dir, "a.json.gz")); err != nil {
		t.Fatal(err)
	}
	ab, _ := a.Marshal()
	embedded, err := data.ReadFile(defaultCityFile)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := gzipBytes(ab)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gz, embedded) {
		t.Error("the default city generated now differs from the embedded file: run `make city-data` and commit")
	}
	loaded, err := Load(filepath.Join(dir, "a.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	lb, _ := loaded.Marshal()
	if !bytes.Equal(ab, lb) {
		t.Error("a saved and loaded city encodes differently")
	}
	other, err := Generate(GenerateConfig{Seed: 7}, ds)
	if err != nil {
		t.Fatal(err)
	}
	ob, _ := other.Marshal()
	if bytes.Equal(ab, ob) {
		t.Error("two seeds gave the same city")
	}
}

func TestDeviceCounts(t *testing.T) {
	c := mustDefault(t)
	type key struct {
		kind  Kind
		class string
	}
	got := map[key]int{}
	byDistrict := map[string]map[Kind]int{}
	for _, d := range c.Devices {
		got[key{d.Kind, d.Class}]++
		if byDistrict[d.District] == nil {
			byDistrict[d.District] = map[Kind]int{}
		}
		byDistrict[d.District][d.Kind]++
		if dd := c.DistrictOf(d.Lat, d.Lon); dd == nil || dd.Code != d.District {
			t.Fatalf("device %s: district %s, but its position is in %s", d.ID, d.District, name(dd))
		}
	}
	want := map[key]int{
		{KindCamera, ClassA}: 16200, {KindCamera, ClassB}: 12000,
		{KindCheckpoint, ClassInterProvincial}: 3, {KindCheckpoint, ClassInterCounty}: 10, {KindCheckpoint, ClassElectronic}: 97,
		{KindFuelTerminal, ""}: 450, {KindDrone, ""}: 20, {KindUnit, ClassPlatform}: 27, {KindUnit, ClassCar}: 273,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("device counts (-want +got):\n%s", diff)
	}
	// Dense in the urban core, sparse in the counties: the three urban
	// districts hold most cameras, and every district has some of each
	// fixed kind.
	urban := 0
	for _, d := range c.Districts {
		n := byDistrict[d.Code]
		if n[KindCamera] < 300 || n[KindCheckpoint] < 5 || n[KindFuelTerminal] < 20 {
			t.Errorf("%s: %v: too few devices", d.Name, n)
		}
		if d.Urban {
			urban += n[KindCamera]
		}
	}
	if share := float64(urban) / 28200; share < 0.55 || share > 0.8 {
		t.Errorf("urban core holds %.0f%% of the cameras, want 55–80%%", share*100)
	}
	if len(c.Circles) != 39 {
		t.Errorf("%d circles, want 39", len(c.Circles))
	}
	tiers := map[int]int{}
	units := 0
	for _, ci := range c.Circles {
		tiers[ci.TierMinutes]++
		units += len(ci.Units)
		if len(ci.Units) == 0 {
			t.Errorf("circle %s has no units", ci.ID)
		}
	}
	if diff := cmp.Diff(map[int]int{1: 15, 3: 15, 5: 9}, tiers); diff != "" {
		t.Errorf("circles by tier (-want +got):\n%s", diff)
	}
	if units != 300 {
		t.Errorf("%d units in circles, want 300", units)
	}
	sites := c.SiteDevices()
	for _, z := range c.Zones {
		n := 0
		for _, id := range sites["site-"+z.ID] {
			d := c.Device(id)
			if !InRing(z.Ring, d.Lat, d.Lon) {
				t.Errorf("camera %s of zone %s stands outside it", id, z.ID)
			}
			n++
		}
		if n == 0 {
			t.Errorf("zone %s has no camera", z.ID)
		}
	}
}

func TestZoneActive(t *testing.T) {
	z := Zone{Schedules: []Schedule{
		{Days: []string{"mon", "tue", "wed", "thu", "fri"}, From: "22:00", To: "06:00"},
		{Days: []string{"sat"}, From: "08:00", To: "12:00"},
	}}
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, tc := range []struct {
		t    string
		want bool
	}{
		{"2026-11-26T23:00:00+08:00", true},  // Thursday evening
		{"2026-11-27T02:00:00+08:00", true},  // Friday small hours, from Thursday
		{"2026-11-27T06:00:00+08:00", false}, // end is exclusive
		{"2026-11-27T21:59:00+08:00", false},
		{"2026-11-28T02:00:00+08:00", true},  // Saturday small hours, from Friday
		{"2026-11-28T23:00:00+08:00", false}, // Saturday evening
		{"2026-11-29T02:00:00+08:00", false}, // Sunday small hours
		{"2026-11-28T09:00:00+08:00", true},
		{"2026-11-28T01:00:00Z", true}, // 09:00 local
	} {
		if got := z.Active(at(tc.t)); got != tc.want {
			t.Errorf("Active(%s) = %v, want %v", tc.t, got, tc.want)
		}
	}
}

func TestCirclesAndZones(t *testing.T) {
	c := mustDefault(t)
	key := c.Circle("circle-04") // 襄阳古城, tier 1, inside a tier-3 circle
	cs := c.CirclesAt(key.Lat, key.Lon)
	if len(cs) < 2 || cs[0] != key {
		t.Fatalf("CirclesAt(centre of %s) = %d circles, first %v", key.Name, len(cs), cs[0].ID)
	}
	for i := 1; i < len(cs); i++ {
		if cs[i].TierMinutes < cs[i-1].TierMinutes {
			t.Errorf("CirclesAt not sorted by tier: %d after %d", cs[i].TierMinutes, cs[i-1].TierMinutes)
		}
	}
	if got, tier := c.CircleFor(key.Lat, key.Lon); got != key || tier != 1 {
		t.Errorf("CircleFor = %v, %d", got, tier)
	}
	if got, tier := c.CircleFor(31.40, 111.00); got != nil || tier != 5 {
		t.Errorf("CircleFor(remote mountains) = %v, %d; want nil, 5", got, tier)
	}
	z := &c.Zones[0]
	b := ringBox(z.Ring)
	lat, lon := (b.minLat+b.maxLat)/2, (b.minLon+b.maxLon)/2
	if zs := c.ZonesAt(lat, lon); len(zs) == 0 || zs[0] != z {
		t.Errorf("ZonesAt(centre of %s) = %v", z.ID, zs)
	}
	if zs := c.ZonesAt(b.maxLat+0.01, lon); len(zs) != 0 && zs[0] == z {
		t.Errorf("ZonesAt(north of %s) found it", z.ID)
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"not json", "nope"},
		{"unknown field", `{"version":1,"colour":"red"}`},
		{"wrong version", `{"version":9}`},
		{"no districts", `{"version":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(tc.in)); err == nil {
				t.Error("Parse accepted it")
			}
		})
	}
}

func TestConvertEChartsEncoded(t *testing.T) {
	// A unit square at (112, 32) in ECharts' compressed form, scale 1024:
	// offsets are the first point; each pair is a zigzag delta + 64.
	enc := func(v int) rune { return rune((v<<1)^(v>>31)) + 64 }
	pts := [][2]int{{0, 0}, {1024, 0}, {0, 1024}, {-1024, 0}, {0, -1024}}
	var s []rune
	for _, p := range pts {
		s = append(s, enc(p[0]), enc(p[1]))
	}
	js := `{"type":"FeatureCollection","UTF8Encoding":true,"features":[{"type":"Feature","id":"1","properties":{"name":"方","cp":[112.5,32.5]},` +
		`"geometry":{"type":"Polygon","coordinates":[` + quoteJSON(string(s)) + `],"encodeOffsets":[[114688,32768]]}}]}`
	ds, err := ConvertECharts([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]float64{{112, 32}, {113, 32}, {113, 33}, {112, 33}, {112, 32}}
	if diff := cmp.Diff(want, ds[0].Polygons[0][0]); diff != "" {
		t.Errorf("decoded ring (-want +got):\n%s", diff)
	}
}

func quoteJSON(s string) string {
	var b bytes.Buffer
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// devicePoints returns 4,096 points scattered about a kilometre around
// devices of c, where lookups happen.
func devicePoints(c *City) [][2]float64 {
	rng := rand.New(rand.NewPCG(3, 4))
	pts := make([][2]float64, 4096)
	for i := range pts {
		d := &c.Devices[rng.IntN(len(c.Devices))]
		pts[i] = [2]float64{d.Lat + rng.NormFloat64()*0.01, d.Lon + rng.NormFloat64()*0.01}
	}
	return pts
}

func BenchmarkDistrictOf(b *testing.B) {
	c := mustDefault(b)
	pts := devicePoints(c)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p := pts[i%len(pts)]
		c.DistrictOf(p[0], p[1])
	}
}

// TestCircleForMatchesDistances checks the circles' boxes against the
// plain rule (inside by great-circle distance; the lowest tier, then the
// nearest centre, wins) at points scattered over the city and on the rims.
func TestCircleForMatchesDistances(t *testing.T) {
	c := mustDefault(t)
	rng := rand.New(rand.NewPCG(5, 6))
	want := func(lat, lon float64) (*Circle, int) {
		var best *Circle
		bestD := 0.0
		for i := range c.Circles {
			ci := &c.Circles[i]
			d := DistanceM(lat, lon, ci.Lat, ci.Lon)
			if d <= ci.RadiusM && (best == nil || ci.TierMinutes < best.TierMinutes || ci.TierMinutes == best.TierMinutes && d < bestD) {
				best, bestD = ci, d
			}
		}
		if best == nil {
			return nil, 5
		}
		return best, best.TierMinutes
	}
	b := c.idx.box
	var pts [][2]float64
	for range 20000 {
		pts = append(pts, [2]float64{b.minLat + rng.Float64()*(b.maxLat-b.minLat), b.minLon + rng.Float64()*(b.maxLon-b.minLon)})
	}
	for _, ci := range c.Circles {
		// Just inside and just outside the rim, all round.
		for k := range 64 {
			a := 2 * math.Pi * float64(k) / 64
			for _, f := range []float64{0.999, 1.001} {
				r := ci.RadiusM * f
				lat, lon := Offset(ci.Lat, ci.Lon, r*math.Sin(a), r*math.Cos(a))
				pts = append(pts, [2]float64{lat, lon})
			}
		}
	}
	inside := 0
	for _, p := range pts {
		got, tier := c.CircleFor(p[0], p[1])
		w, wtier := want(p[0], p[1])
		if got != w || tier != wtier {
			t.Fatalf("CircleFor(%v, %v) = %v, %d; want %v, %d", p[0], p[1], got, tier, w, wtier)
		}
		if got != nil {
			inside++
		}
	}
	if inside < 1000 {
		t.Errorf("only %d of %d points inside a circle", inside, len(pts))
	}
}

func BenchmarkCircleFor(b *testing.B) {
	c := mustDefault(b)
	pts := devicePoints(c)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p := pts[i%len(pts)]
		c.CircleFor(p[0], p[1])
	}
}
