package dispatch

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"citywatch/event"
	"citywatch/internal/city"
)

// benchRegistry places n available units the way a city holds them: four
// in five around the circles (dense in the urban core), the rest anywhere
// in the districts' box.
func benchRegistry(b *testing.B, n int) (*Engine, [][2]float64) {
	e := newTestEngine(b, Config{})
	rng := rand.New(rand.NewPCG(1, 2))
	cs := e.circles.List()
	place := func() (float64, float64) {
		if rng.Float64() < 0.8 {
			c := cs[rng.IntN(len(cs))]
			r := c.RadiusM * math.Sqrt(rng.Float64())
			a := rng.Float64() * 2 * math.Pi
			return city.Offset(c.Lat, c.Lon, r*math.Cos(a), r*math.Sin(a))
		}
		return 31.5 + rng.Float64()*1.2, 110.9 + rng.Float64()*2.0
	}
	for i := range n {
		lat, lon := place()
		pos(e, t0, "unit-"+strconv.Itoa(i), lat, lon, "available", t0)
	}
	pts := make([][2]float64, 1024)
	for i := range pts {
		pts[i][0], pts[i][1] = place()
	}
	return e, pts
}

// BenchmarkRank ranks the 3 fastest units (a critical alert) to a point
// of the city; the candidates buffer is the caller's.
func BenchmarkRank(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("units=%d", n), func(b *testing.B) {
			e, pts := benchRegistry(b, n)
			buf := make([]Candidate, 0, 3)
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				p := pts[i%len(pts)]
				i++
				_, _, area := e.circles.Place(p[0], p[1])
				buf = e.reg.Rank(buf, p[0], p[1], area, t0, 3, 0, nil)
				if len(buf) != 3 {
					b.Fatal("too few candidates")
				}
			}
		})
	}
}

// BenchmarkCoverage measures every circle's coverage (one tick).
func BenchmarkCoverage(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("units=%d", n), func(b *testing.B) {
			e, _ := benchRegistry(b, n)
			var cov []CircleCoverage
			b.ReportAllocs()
			for b.Loop() {
				cov = e.reg.Coverage(cov, e.circles, t0)
			}
		})
	}
}

// BenchmarkAlert is the whole decision for one alert: place, rank, assign,
// encode nothing (the role encodes).
func BenchmarkAlert(b *testing.B) {
	e, pts := benchRegistry(b, 1000)
	var out Out
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p := pts[i%len(pts)]
		a := alertAt("a"+strconv.Itoa(i), event.SeverityMedium, p[0], p[1], t0)
		i++
		e.Alert(t0, a, &out)
		for _, d := range out.Dispatches {
			e.reg.Unit(d.UnitID).Dispatch = "" // keep the fleet available
		}
		out.Reset()
	}
}
